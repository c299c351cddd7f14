"""Math on a model's tensors: which tensors move and how they flatten (one module), directions and
their files, moving a model along them, PCA of a path."""
