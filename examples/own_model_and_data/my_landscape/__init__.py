"""An example of a researcher's own model and data for landscape-exp (see README.md here)."""
