"""The plane of an optimization path (Li et al. 2018, section 7; the original ``plot_trajectory.py``):
its checkpoints, the matrix of ``theta_i - theta_final``, the top-2 PCA directions (computed, reused
from an earlier run with the same inputs, or read from a direction file), the path's coordinates,
and the files: ``directions.h5`` (original layout, with the explained variance) and ``projection.h5``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import check_state_dict, load_checkpoint
from landscape_exp.io.files import atomic_path, h5_attr, open_h5
from landscape_exp.job.checkpoints import check_same_architecture, ensure_checkpoint
from landscape_exp.job.context import RunContext
from landscape_exp.surface.plane import GROUPS, Plane
from landscape_exp.training.runs import epoch_checkpoints, epoch_of
from landscape_exp.weights import directions as D
from landscape_exp.weights import pca as T
from landscape_exp.weights.params import flatten, named_tensors, snapshot, tensor_mask, unflatten


def checkpoint_paths(ctx: RunContext) -> tuple[list[Path], str]:
    """The path's checkpoints in order (the last is theta_final) and where they came from:
    ``checkpoints=[...]``, else ``run_dir=``, else the run that produced the analysed checkpoint."""
    s, t = ctx.settings, ctx.settings.trajectory
    assert t is not None
    if t.checkpoints and s.run_dir:
        raise UserError("give either run_dir=... or checkpoints=[...], not both")
    if t.checkpoints:
        paths = [Path(p).expanduser() for p in t.checkpoints]
        for p in paths:
            if not p.is_file():
                raise UserError(f"checkpoint {str(p)!r} in checkpoints= does not exist" if not p.exists()
                                else f"checkpoint {str(p)!r} is not a file")
        return paths, "checkpoints"
    if s.run_dir:
        return epoch_checkpoints(s.run_dir, t.start_epoch, t.stride), str(Path(s.run_dir).resolve())
    ckpt_dir = ensure_checkpoint(ctx).parent  # the cached training run, or checkpoint='s folder
    return epoch_checkpoints(ckpt_dir, t.start_epoch, t.stride), str(ckpt_dir.parent.resolve())


def _load_tensors(path: Path, model: nn.Module, kind: str, model_cfg: dict | None) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The tensors a direction of ``kind`` moves, read from checkpoint ``path`` in the model's
    order and on its device, and the checkpoint."""
    ckpt = load_checkpoint(path)
    check_same_architecture("checkpoint", path, ckpt.get("model_cfg"), model_cfg, "the final checkpoint")
    sd = ckpt["state_dict"]
    check_state_dict(model, sd, f"checkpoint {str(path)!r}")
    return [sd[n].to(device=t.device, dtype=t.dtype) for n, t in named_tensors(model, kind)], ckpt


@dataclass
class PathPlane:
    """The path's plane and the path on it."""

    plane: Plane
    coords: np.ndarray  # (checkpoints, 2): theta_i - theta_final projected
    epochs: list[int]
    ratios: np.ndarray  # explained-variance ratios (NaN when unknown)
    source: str  # pca | reused | file
    result: T.PCAResult | None
    path_length: float
    path_length_projected: float
    start_distance: float


def path_plane(ctx: RunContext, model: nn.Module, model_cfg: dict | None, paths: list[Path]) -> PathPlane:
    """PCA directions of the path through ``paths`` (``model`` is at the last, theta_final)."""
    kind, ignore = ctx.settings.direction.type, ctx.settings.direction.ignore
    final = snapshot(model, kind)
    mask = tensor_mask(final, ignore)
    rows, epochs = [], []
    for i, p in enumerate(paths):  # one checkpoint in memory at a time
        tensors, ckpt = _load_tensors(p, model, kind, model_cfg)
        rows.append(T.trajectory_row(tensors, final, mask))
        epochs.append(epoch_of(p, ckpt, fallback=i))
        del tensors
    matrix = torch.stack(rows)
    del rows
    print(f"trajectory: {len(paths)} checkpoints, {matrix.shape[1]:,} weights (type={kind}, ignore={ignore or 'none'})")

    dir_file = ctx.out_dir / "directions.h5"
    fingerprint = _inputs_fingerprint(paths, kind, ignore)
    result: T.PCAResult | None = None
    info: dict[str, Any] = {"type": kind, "ignore": ignore or "none"}
    if ctx.settings.direction.file:
        dir_file = Path(ctx.settings.direction.file)
        dirs = D.load_directions(dir_file, final, GROUPS)
        if "ydirection" not in dirs:
            raise UserError(f"direction file {str(dir_file)!r} lacks ydirection; task=trajectory needs two directions")
        ratios, source, dir_file = _read_ratios(dir_file), "file", dir_file.resolve()
    elif dir_file.is_file() and _existing_fingerprint(dir_file) == fingerprint:
        dirs = D.load_directions(dir_file, final, GROUPS)
        ratios, source = _read_ratios(dir_file), "reused"
        print(f"reusing the PCA directions of {dir_file} (same checkpoints)")
    else:
        result = T.pca(matrix, 2)
        dirs = {g: unflatten(result.components[j], final, mask) for j, g in enumerate(GROUPS)}
        ratios, source = result.explained_variance_ratio.cpu().numpy(), "pca"
        _save_pca_directions(dir_file, dirs, [n for n, _ in named_tensors(model, kind)], result, {
            **info, "source": "pca", "centred": "true",
            "checkpoints": json.dumps([str(p.resolve()) for p in paths]), "inputs_fingerprint": fingerprint,
        })
    coords_t = T.project_rows(matrix, torch.stack([flatten(dirs[g], mask) for g in GROUPS]))
    plane = Plane([dirs["xdirection"], dirs["ydirection"]], {**info, "source": source}, dir_file)
    return PathPlane(plane, coords_t.cpu().numpy(), epochs, np.asarray(ratios, dtype=float), source, result,
                     T.path_length(matrix), T.polyline_length(coords_t), float(torch.linalg.vector_norm(matrix[0].double())))


def pct(r: float) -> str:
    return "n/a" if not math.isfinite(r) else f"{100 * r:.1f} %"


# ---------------------------------------------------------------------------------------------
# files


def _inputs_fingerprint(paths: list[Path], kind: str, ignore: str | None) -> str:
    """What determines the PCA directions: the checkpoint files (path, size, mtime) and settings.
    A directions.h5 left by an earlier run with the same fingerprint is reused, so a resumed
    surface sees bit-identical directions."""
    files = []
    for p in paths:
        st = p.stat()
        files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return json.dumps({"files": files, "type": kind, "ignore": ignore or "none"}, sort_keys=True)


def _save_pca_directions(path: Path, dirs: dict[str, list[torch.Tensor]], names: list[str], result: T.PCAResult,
                         attrs: dict[str, Any]) -> Path:
    """The direction file with the explained variance both as attributes and as the original
    tool's datasets (``explained_variance_ratio_``, ``explained_variance_``, ``singular_values_``),
    which its ``plot_2D.py`` reads."""
    stats = {"explained_variance_ratio": result.explained_variance_ratio.cpu().numpy(),
             "explained_variance": result.explained_variance.cpu().numpy(),
             "singular_values": result.singular_values.cpu().numpy()}
    D.save_directions(path, dirs, names=names, attrs={**attrs, **stats})
    with h5py.File(path, "a") as f:
        for k, v in stats.items():
            f[k + "_"] = v
    return path


def _read_ratios(path: Path) -> np.ndarray:
    with open_h5(path, "direction file") as f:
        if "explained_variance_ratio_" in f:
            return np.asarray(f["explained_variance_ratio_"][()], dtype=float)
        if "explained_variance_ratio" in f.attrs:
            return np.asarray(f.attrs["explained_variance_ratio"], dtype=float)
    return np.full(2, np.nan)


def _existing_fingerprint(path: Path) -> str | None:
    try:
        with open_h5(path, "direction file") as f:
            v = f.attrs.get("inputs_fingerprint")
    except UserError:
        return None
    return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)


def write_projection(path: Path, pp: PathPlane, paths: list[Path], attrs: dict[str, Any]) -> Path:
    """``projection.h5``: the original's ``proj_xcoord``/``proj_ycoord`` plus epochs, checkpoint
    paths and explained-variance ratios (written atomically)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["proj_xcoord"] = pp.coords[:, 0]
        f["proj_ycoord"] = pp.coords[:, 1]
        f["epochs"] = np.asarray(pp.epochs, dtype=np.int64)
        f["checkpoints"] = np.array([str(p) for p in paths], dtype=h5py.string_dtype())
        f["explained_variance_ratio_"] = pp.ratios
        for k, v in attrs.items():
            f.attrs[k] = h5_attr(v)
    return path
