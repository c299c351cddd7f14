"""Bytes on disk and code from outside: atomic writes, JSON and HDF5 helpers, content hashes,
checkpoints loaded as data only, the user's own callables."""
