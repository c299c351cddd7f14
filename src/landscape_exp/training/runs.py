"""Training runs: the names of their per-epoch checkpoints, and a run directory as an input (its
epoch files and their epochs).

One reading of "the run to analyse" for every task that walks a training run (``trajectory``,
``hessian_trajectory``): ``run_dir=<a task=train run directory>`` (or its ``checkpoints``
folder), else the folder of ``checkpoint=``, else the cached run of the current config."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from landscape_exp.errors import UserError

# The one spelling of a per-epoch checkpoint's file name: written by the trainer, read by every
# task that walks a run.
_EPOCH = re.compile(r"epoch_(\d+)")


def epoch_of(path: Path, ckpt: Mapping[str, Any] | None = None, fallback: int | None = None) -> int:
    """The epoch a checkpoint records, else the number in its ``epoch_<n>`` file name, else
    ``fallback`` (a one-line error without one)."""
    if ckpt is not None and isinstance(ckpt.get("epoch"), int):
        return int(ckpt["epoch"])
    m = _EPOCH.search(Path(path).name)
    if m:
        return int(m.group(1))
    if fallback is None:
        raise UserError(f"cannot tell the epoch of checkpoint {str(path)!r}: it records none and its name is not epoch_<n>.pt")
    return fallback


def epoch_checkpoints(run_dir: str | Path, start_epoch: int = 0, stride: int = 1) -> list[Path]:
    """Per-epoch checkpoints of a training run (``<run_dir>/checkpoints/epoch_*.pt``, or the
    epoch files directly in ``run_dir``), from ``start_epoch`` on, every ``stride``-th epoch;
    the last epoch (theta_final) is always included."""
    d = Path(str(run_dir)).expanduser()
    if not d.is_dir():
        raise UserError(f"run_dir={str(d)!r} is not a directory; give a training run directory "
                        "(python run.py task=train writes one)")
    files = list_epoch_checkpoints(d / "checkpoints") or list_epoch_checkpoints(d)
    if not files:
        raise UserError(f"run_dir={str(d)!r} holds no per-epoch checkpoints (checkpoints/epoch_*.pt); "
                        "train with task=train, which saves one after every epoch")
    numbered = sorted((epoch_of(p), p) for p in files)
    last = numbered[-1]
    chosen = [(e, p) for e, p in numbered if e >= start_epoch and (e - start_epoch) % stride == 0]
    if not chosen or chosen[-1] != last:
        chosen.append(last)
    return [p for _, p in chosen]


def epoch_path(ckpt_dir: Path, epoch: int) -> Path:
    """Where the trainer writes the checkpoint of ``epoch``."""
    return ckpt_dir / f"epoch_{epoch:03d}.pt"


def list_epoch_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Per-epoch checkpoints of a run, in epoch order (numeric: epoch_1000 after epoch_999)."""
    files = [p for p in Path(ckpt_dir).glob("epoch_*.pt") if _EPOCH.fullmatch(p.stem)]
    return sorted(files, key=lambda p: int(_EPOCH.fullmatch(p.stem).group(1)))  # type: ignore[union-attr]
