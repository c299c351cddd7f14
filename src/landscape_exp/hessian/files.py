"""The Hessian tasks' files: ``hessian.h5`` (one spectrum) and ``hessian_trajectory.h5`` (one
row per epoch), written atomically through :func:`landscape_exp.storage.atomic_path`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape_exp.errors import UserError
from landscape_exp.hessian.analysis import ParamSelection, SpectrumReport
from landscape_exp.storage import atomic_path, decode_attrs, h5_attr, open_h5

__all__ = ["TRAJECTORY_FIELDS", "read_spectrum_file", "read_trajectory", "write_spectrum_file", "write_trajectory"]

TRAJECTORY_FIELDS = ("epoch", "lambda_max", "trace", "trace_stderr", "loss", "num_hvp", "seconds")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def write_spectrum_file(path: str | Path, report: SpectrumReport, selection: ParamSelection, *,
                        datasets: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write ``hessian.h5`` atomically: eigenpairs, trace, density, parameter selection, plus
    any extra ``datasets`` and ``attrs`` (non-scalar attributes are stored as JSON)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("top_eigenvalues", data=report.top_values)
        f.create_dataset("top_eigenvectors", data=report.top_vectors.numpy())
        f.create_dataset("bottom_eigenvalues", data=report.bottom_values)
        f.create_dataset("bottom_eigenvectors", data=report.bottom_vectors.numpy())
        f.create_dataset("trace", data=report.trace)
        f.create_dataset("trace_stderr", data=report.trace_stderr)
        f.create_dataset("trace_samples", data=report.trace_samples)
        f.create_dataset("density_grid", data=report.density_grid)
        f.create_dataset("density", data=report.density)
        f.create_dataset("slq_nodes", data=report.slq_nodes)
        f.create_dataset("slq_weights", data=report.slq_weights)
        f.create_dataset("param_indices", data=np.asarray(selection.indices, dtype=np.int64))
        f.create_dataset("param_names", data=np.array(selection.names, dtype=h5py.string_dtype()))
        for k, v in (datasets or {}).items():
            f.create_dataset(k, data=v)
        f.attrs["lambda_max"] = report.lambda_max
        f.attrs["lambda_min"] = report.lambda_min
        f.attrs["ratio"] = report.ratio
        f.attrs["dim"] = selection.dim
        f.attrs["num_hvp"] = json.dumps(report.num_hvp)
        f.attrs["seconds"] = json.dumps(report.seconds)
        for k, v in (attrs or {}).items():
            f.attrs[k] = h5_attr(v)
    return path


def read_spectrum_file(path: str | Path) -> dict[str, Any]:
    """Every dataset of a ``hessian.h5`` as numpy (strings decoded) plus ``attrs``."""
    out: dict[str, Any] = {}
    with open_h5(path, "hessian file") as f:
        for k in f:
            v = f[k][()]
            out[k] = [_text(s) for s in v] if k == "param_names" else np.asarray(v)
        out["attrs"] = decode_attrs(f.attrs)
    return out


def read_trajectory(path: str | Path, fingerprint: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Rows of an existing ``hessian_trajectory.h5`` keyed by epoch ({} if the file is absent).

    A file made with other settings is refused (one line naming what differs), never changed."""
    path = Path(path)
    if not path.exists():
        return {}
    with open_h5(path, "trajectory file", hint="; move it away to recompute") as f:
        old = json.loads(f.attrs.get("fingerprint", "{}"))
        new = json.loads(json.dumps(dict(fingerprint), default=str))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(f"trajectory file {str(path)!r} was made with other settings (differs in: {', '.join(diff)}); "
                            "nothing was changed: use another run directory or delete it")
        rows: dict[int, dict[str, Any]] = {}
        for i in range(len(f["epoch"])):
            row = {k: f[k][i].item() for k in TRAJECTORY_FIELDS}
            row["top_eigenvalues"] = np.asarray(f["top_eigenvalues"][i])
            row["checkpoint"] = _text(f["checkpoint"][i])
            row["checkpoint_sha256"] = _text(f["checkpoint_sha256"][i])
            rows[int(row["epoch"])] = row
    return rows


def write_trajectory(path: str | Path, rows: Mapping[int, Mapping[str, Any]], *, fingerprint: Mapping[str, Any],
                     attrs: Mapping[str, Any] | None = None) -> Path:
    """Write all rows (sorted by epoch) atomically: one dataset per field, one row per epoch."""
    path = Path(path)
    epochs = sorted(rows)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k in TRAJECTORY_FIELDS:
            f.create_dataset(k, data=np.array([rows[e][k] for e in epochs], dtype=np.int64 if k in ("epoch", "num_hvp") else np.float64))
        k_max = max((len(rows[e]["top_eigenvalues"]) for e in epochs), default=0)
        top = np.full((len(epochs), k_max), np.nan)
        for i, e in enumerate(epochs):
            v = np.asarray(rows[e]["top_eigenvalues"], dtype=np.float64)
            top[i, : len(v)] = v
        f.create_dataset("top_eigenvalues", data=top)
        for k in ("checkpoint", "checkpoint_sha256"):
            f.create_dataset(k, data=np.array([str(rows[e][k]) for e in epochs], dtype=h5py.string_dtype()))
        f.attrs["fingerprint"] = json.dumps(dict(fingerprint), sort_keys=True, default=str)
        for k, v in (attrs or {}).items():
            f.attrs[k] = h5_attr(v)
    return path
