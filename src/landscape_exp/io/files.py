"""Writing files so a kill never leaves half of one, and opening HDF5 files with one-line errors.

Every result file of the project is written through :func:`atomic_path`: the content goes to a
hidden temporary file next to the target (same file system, so the rename is atomic), which then
replaces the target. A reader sees the old file or the new one, never a torn one; a failure while
writing removes the temporary file and leaves the target untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape_exp.errors import UserError

# h5py reports damage past the superblock as KeyError/RuntimeError/ValueError, not only OSError.
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError)


@contextlib.contextmanager
def atomic_path(path: str | Path, tag: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    ``tag`` keeps the temporary names of two writers of one process apart (e.g. ``sharpness``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{'.' + tag if tag else ''}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; removed after a failure


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """``data`` as indented JSON (numpy scalars and arrays as numbers and lists), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=json_default))
    return path


def json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def open_h5(path: str | Path, what: str, *, hint: str = "") -> h5py.File:
    """``path`` opened read-only, or a one-line UserError naming ``what`` it should be
    (``"surface file"``, ``"direction file"``, ...) and why it cannot be read (plus ``hint``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist" if not path.exists() else f"{what} {str(path)!r} is not a file")
    try:
        return h5py.File(path, "r")
    except H5_ERRORS as e:
        raise UserError(f"{what} {str(path)!r} is unreadable or corrupt, not a readable HDF5 file "
                        f"({one_line(e)}){hint}") from None


def one_line(e: BaseException, limit: int = 200) -> str:
    return " ".join(str(e).split())[:limit]


def h5_attr(value: Any) -> Any:
    """An HDF5 attribute value: numbers, strings and arrays as they are, anything else as JSON."""
    return value if isinstance(value, (int, float, str, np.ndarray, np.number)) else json.dumps(value, default=str)


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """An HDF5 object's attributes with bytes decoded to text."""
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
