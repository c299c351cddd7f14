"""The Hessian tasks' files: ``hessian.h5`` (one spectrum) and ``hessian_trajectory.h5`` (one
row per epoch), written atomically through :func:`landscape_exp.io.files.atomic_path`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape_exp.errors import UserError
from landscape_exp.hessian import density
from landscape_exp.hessian.report import PairSet, SpectrumReport
from landscape_exp.io.files import atomic_path, decode_attrs, h5_attr, open_h5
from landscape_exp.weights.params import ParamSelection

__all__ = ["TRAJECTORY_FIELDS", "TRAJECTORY_LAYOUT", "read_spectrum_file", "read_trajectory", "read_trajectory_file",
           "subspace_overlaps", "trajectory_columns", "write_spectrum_file", "write_trajectory"]

# One value per epoch. The first seven are the layout-1 fields (files written before per-epoch
# eigenvectors were kept); the rest came with layout 2.
TRAJECTORY_FIELDS = ("epoch", "lambda_max", "trace", "trace_stderr", "loss", "num_hvp", "seconds",
                     "grad_norm", "gradient_top_fraction", "bulk_edge", "num_outliers")
_INT_FIELDS = ("epoch", "num_hvp", "num_outliers")
# Layout 2 keeps the top-k eigenvectors, residuals and converged flags of every epoch; a layout-1
# file cannot be extended (its epochs have no eigenvectors to compare with).
TRAJECTORY_LAYOUT = 2


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _pairs(f: h5py.File, prefix: str, pairs: PairSet) -> None:
    f.create_dataset(f"{prefix}_residuals", data=pairs.residuals)
    f.create_dataset(f"{prefix}_converged", data=pairs.converged)
    f.attrs[f"{prefix}_residual_scale"] = pairs.scale


def _padded(rows: list[np.ndarray], width: int, fill: float = math.nan) -> np.ndarray:
    out = np.full((len(rows), width), fill)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def write_spectrum_file(path: str | Path, report: SpectrumReport, selection: ParamSelection, *,
                        datasets: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write ``hessian.h5`` atomically: eigenpairs with their residuals and converged flags, trace,
    density with its bulk edge, block spectra, parameter selection, plus any extra ``datasets``
    and ``attrs`` (non-scalar attributes are stored as JSON)."""
    path = Path(path)
    conv = report.convergence()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("top_eigenvalues", data=report.top.values)
        f.create_dataset("top_eigenvectors", data=report.top.vectors.numpy())
        f.create_dataset("bottom_eigenvalues", data=report.bottom.values)
        f.create_dataset("bottom_eigenvectors", data=report.bottom.vectors.numpy())
        _pairs(f, "top", report.top)
        _pairs(f, "bottom", report.bottom)
        f.create_dataset("trace", data=report.trace)
        f.create_dataset("trace_stderr", data=report.trace_stderr)
        f.create_dataset("trace_samples", data=report.trace_samples)
        f.create_dataset("density_grid", data=report.density_grid)
        f.create_dataset("density", data=report.density)
        f.create_dataset("slq_nodes", data=report.slq_nodes)
        f.create_dataset("slq_weights", data=report.slq_weights)
        f.create_dataset("param_indices", data=np.asarray(selection.indices, dtype=np.int64))
        f.create_dataset("param_names", data=np.array(selection.names, dtype=h5py.string_dtype()))
        if report.blocks:
            b = report.blocks
            width = max(len(x.top.values) for x in b)
            f.create_dataset("block_names", data=np.array([x.name for x in b], dtype=h5py.string_dtype()))
            f.create_dataset("block_dims", data=np.array([x.dim for x in b], dtype=np.int64))
            for part in ("top", "bottom"):
                sets = [getattr(x, part) for x in b]
                f.create_dataset(f"block_{part}_eigenvalues", data=_padded([p.values for p in sets], width))
                f.create_dataset(f"block_{part}_residuals", data=_padded([p.residuals for p in sets], width))
                f.create_dataset(f"block_{part}_converged", data=_padded([p.converged for p in sets], width, 0).astype(bool))
            f.attrs["block_param_names"] = json.dumps({x.name: list(x.param_names) for x in b})
        for k, v in (datasets or {}).items():
            f.create_dataset(k, data=v)
        f.attrs["lambda_max"] = report.lambda_max
        f.attrs["lambda_min"] = report.lambda_min
        f.attrs["ratio"] = report.ratio
        f.attrs["dim"] = selection.dim
        f.attrs["num_hvp"] = json.dumps(report.num_hvp)
        f.attrs["seconds"] = json.dumps(report.seconds)
        f.attrs["tol"] = report.top.tol
        f.attrs["converged"] = conv.converged
        f.attrs["unconverged_pairs"] = json.dumps(list(conv.unconverged))
        if report.bulk is not None:
            f.attrs["bulk_edge"] = report.bulk.edge
            f.attrs["num_outliers"] = report.bulk.num_outliers
            f.attrs["bulk_rule"] = report.bulk.rule
        for k, v in (attrs or {}).items():
            f.attrs[k] = h5_attr(v)
    return path


def _read_all(path: str | Path, what: str) -> dict[str, Any]:
    """Every dataset as numpy (string arrays as lists of str) plus ``attrs``."""
    out: dict[str, Any] = {}
    with open_h5(path, what) as f:
        for k in f:
            v = np.asarray(f[k][()])
            out[k] = [_text(s) for s in v] if v.dtype.kind in "OS" else v
        out["attrs"] = decode_attrs(f.attrs)
    return out


def read_spectrum_file(path: str | Path) -> dict[str, Any]:
    """Every dataset of a ``hessian.h5`` as numpy (strings decoded) plus ``attrs``."""
    return _read_all(path, "hessian file")


def read_trajectory_file(path: str | Path) -> dict[str, Any]:
    """Every dataset of a ``hessian_trajectory.h5`` of any layout as numpy (strings decoded),
    plus ``attrs`` and ``layout`` (1 for files written before eigenvectors were kept)."""
    out = _read_all(path, "trajectory file")
    out["layout"] = int(json.loads(out["attrs"].get("fingerprint", "{}")).get("layout", 1))
    return out


def read_trajectory(path: str | Path, fingerprint: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Rows of an existing ``hessian_trajectory.h5`` keyed by epoch ({} if the file is absent).

    A file made with other settings, or in the older layout without per-epoch eigenvectors, is
    refused (one line naming what differs), never changed."""
    path = Path(path)
    if not path.exists():
        return {}
    with open_h5(path, "trajectory file", hint="; move it away to recompute") as f:
        old = json.loads(f.attrs.get("fingerprint", "{}"))
        new = json.loads(json.dumps({**fingerprint, "layout": TRAJECTORY_LAYOUT}, default=str))
        if old.get("layout", 1) != TRAJECTORY_LAYOUT:
            raise UserError(f"trajectory file {str(path)!r} has layout {old.get('layout', 1)} (written before the top-k "
                            f"eigenvectors, residuals and outlier counts of every epoch were kept); this version writes "
                            f"layout {TRAJECTORY_LAYOUT} and must recompute every epoch: nothing was changed, move the "
                            "file away or use another run directory")
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(f"trajectory file {str(path)!r} was made with other settings (differs in: {', '.join(diff)}); "
                            "nothing was changed: use another run directory or delete it")
        rows: dict[int, dict[str, Any]] = {}
        for i in range(len(f["epoch"])):
            row: dict[str, Any] = {k: f[k][i].item() for k in TRAJECTORY_FIELDS}
            k = int(np.isfinite(f["top_eigenvalues"][i]).sum())
            row["top_eigenvalues"] = np.asarray(f["top_eigenvalues"][i][:k])
            row["top_residuals"] = np.asarray(f["top_residuals"][i][:k])
            row["top_converged"] = np.asarray(f["top_converged"][i][:k], dtype=bool)
            row["top_eigenvectors"] = torch.from_numpy(np.asarray(f["top_eigenvectors"][i][:k]))
            row["checkpoint"] = _text(f["checkpoint"][i])
            row["checkpoint_sha256"] = _text(f["checkpoint_sha256"][i])
            rows[int(row["epoch"])] = row
    return rows


def subspace_overlaps(rows: Mapping[int, Mapping[str, Any]]) -> np.ndarray:
    """For each epoch (sorted), the overlap of its top-k eigenvector subspace with the previous
    epoch's (:func:`landscape_exp.hessian.density.subspace_overlap`); NaN for the first."""
    epochs = sorted(rows)
    out = np.full(len(epochs), math.nan)
    for i in range(1, len(epochs)):
        out[i] = density.subspace_overlap(rows[epochs[i]]["top_eigenvectors"], rows[epochs[i - 1]]["top_eigenvectors"])
    return out


def trajectory_columns(rows: Mapping[int, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The rows as arrays over the sorted epochs: every field, ``overlap`` (consecutive top-k
    subspaces), ``top_eigenvalues`` (epochs, k; NaN-padded), ``lambda_max_residual`` and
    ``converged`` (every top-k pair of the epoch met its tolerance)."""
    epochs = sorted(rows)
    cols = {k: np.array([rows[e][k] for e in epochs]) for k in TRAJECTORY_FIELDS}
    k_max = max((len(rows[e]["top_eigenvalues"]) for e in epochs), default=0)
    cols["top_eigenvalues"] = _padded([np.asarray(rows[e]["top_eigenvalues"]) for e in epochs], k_max)
    cols["lambda_max_residual"] = np.array([float(rows[e]["top_residuals"][0]) for e in epochs])
    cols["converged"] = np.array([bool(np.all(rows[e]["top_converged"])) for e in epochs], dtype=bool)
    cols["overlap"] = subspace_overlaps(rows)
    return cols


def write_trajectory(path: str | Path, rows: Mapping[int, Mapping[str, Any]], *, fingerprint: Mapping[str, Any],
                     attrs: Mapping[str, Any] | None = None) -> Path:
    """Write all rows (sorted by epoch) atomically: one dataset per field, one row per epoch, the
    top-k eigenpairs ``(epochs, k[, dim])`` and the overlap of consecutive top-k subspaces.

    The eigenvectors take ``epochs * k * dim * 4`` bytes (float32), and the whole file is
    rewritten after every epoch."""
    path = Path(path)
    epochs = sorted(rows)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k in TRAJECTORY_FIELDS:
            f.create_dataset(k, data=np.array([rows[e][k] for e in epochs], dtype=np.int64 if k in _INT_FIELDS else np.float64))
        k_max = max((len(rows[e]["top_eigenvalues"]) for e in epochs), default=0)
        f.create_dataset("top_eigenvalues", data=_padded([np.asarray(rows[e]["top_eigenvalues"]) for e in epochs], k_max))
        f.create_dataset("top_residuals", data=_padded([np.asarray(rows[e]["top_residuals"]) for e in epochs], k_max))
        f.create_dataset("top_converged",
                         data=_padded([np.asarray(rows[e]["top_converged"]) for e in epochs], k_max, 0).astype(bool))
        dim = int(rows[epochs[0]]["top_eigenvectors"].shape[1]) if epochs else 0
        vecs = np.full((len(epochs), k_max, dim), np.nan, dtype=np.float32)
        for i, e in enumerate(epochs):
            v = rows[e]["top_eigenvectors"]
            vecs[i, : v.shape[0]] = v.float().numpy()
        f.create_dataset("top_eigenvectors", data=vecs, chunks=(1, max(k_max, 1), max(dim, 1)) if epochs else None)
        f.create_dataset("top_subspace_overlap", data=subspace_overlaps(rows))
        for k in ("checkpoint", "checkpoint_sha256"):
            f.create_dataset(k, data=np.array([str(rows[e][k]) for e in epochs], dtype=h5py.string_dtype()))
        f.attrs["fingerprint"] = json.dumps({**fingerprint, "layout": TRAJECTORY_LAYOUT}, sort_keys=True, default=str)
        for k, v in (attrs or {}).items():
            f.attrs[k] = h5_attr(v)
    return path
