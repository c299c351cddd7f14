"""Fast full-data forward passes: the evaluation batch, precision modes, BatchNorm folding and
fused kernels, BatchNorm recomputation, the CPU's capabilities."""
