"""Mode connectivity: low-loss curves between two minima (Bezier, polygonal chain), their training,
evaluation and files."""
