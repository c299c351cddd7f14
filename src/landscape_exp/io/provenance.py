"""What identifies a result: content hashes of inputs and the versions of the packages used."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensors_sha256(tensors: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    import h5py

    import landscape_exp

    return {"landscape_exp": landscape_exp.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__}
