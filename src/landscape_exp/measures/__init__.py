"""Scalar measures of a minimum or a path, as one record: sharpness (surface- and model-based),
flatness, connectivity (barrier, mc)."""
