"""Checkpoints: a state_dict plus the resolved model config, so a file alone rebuilds its model.

Files are written atomically and always read with ``torch.load(..., weights_only=True)``: a
checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.io.files import atomic_path

FORMAT = "landscape-exp/checkpoint/v1"


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (must hold ``state_dict`` and ``model_cfg``) atomically."""
    data = dict(payload)
    data.setdefault("format", FORMAT)
    return save_torch(path, data)


def save_torch(path: str | Path, data: Mapping[str, Any]) -> Path:
    """``torch.save`` of ``data`` (as a plain dict) to ``path``, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(data), tmp)
    return path


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(..., weights_only=True)`` without torch's pickle-protocol warning (a file it
    warns about is read as plain data or refused all the same)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location=map_location, weights_only=True)


def refusal_reason(e: BaseException) -> str:
    """Why the weights-only unpickler refused a file, in a few words: torch's own message carries
    terminal escape codes and advice to load the file unsafely, neither of which we pass on."""
    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if m:
        return f"it references {m.group(1)}"
    m = re.search(r"Unsupported operand (\d+)", text)
    if m:
        return f"unsupported pickle operation {m.group(1)}"
    return type(e).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; every failure is one line naming the file."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise UserError(f"checkpoint {str(p)!r} does not exist")
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} is not a file")
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":  # a surface, direction or Hessian file given by mistake
        raise UserError(f"checkpoint {str(p)!r} is an HDF5 file (a surface, direction or Hessian result), not a "
                        "torch checkpoint; give a .pt file written by task=train (checkpoints/final.pt)")
    try:
        data = safe_torch_load(p, map_location)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"checkpoint {str(p)!r} was refused: it holds objects other than tensors and plain data "
            f"({refusal_reason(e)}), which could run code when loaded"
        ) from None
    except Exception as e:  # truncated zip, not a torch file, permissions...
        raise UserError(f"checkpoint {str(p)!r} is unreadable ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if isinstance(data, dict) and "state_dict" not in data and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        # A bare state_dict (e.g. from another tool): usable when the model comes from config.
        data = {"state_dict": data}
    if not isinstance(data, dict) or "state_dict" not in data:
        raise UserError(f"checkpoint {str(p)!r} has no 'state_dict' entry")
    return data


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise one clear line if ``state_dict`` does not fit ``model`` (names the keys)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        raise UserError(f"{source} does not fit the model: " + "; ".join(parts))


def config_hash(parts: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-able config (the checkpoint cache key)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
