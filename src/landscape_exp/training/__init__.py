"""Producing checkpoints: the training loop with its per-epoch checkpoints, and a training run read
back (its epochs)."""
