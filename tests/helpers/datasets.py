"""Fake dataset files on disk: MNIST-style idx files."""

from __future__ import annotations

import struct

import numpy as np


def write_idx(path, array: np.ndarray) -> None:
    """An idx file as in yann.lecun.com/exdb/mnist: magic (0, 0, type 0x08=uint8, ndim), big-endian dims."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
