"""task=trajectory: an optimization path on the plane of its top-2 principal components
(Li et al. 2018, section 7; the original tool's ``plot_trajectory.py``).

Inputs: a training run directory (``run_dir=``, holding ``checkpoints/epoch_*.pt``), an explicit
list of checkpoints (``checkpoints=[a.pt,b.pt,...]``, the last one is theta_final), or neither:
then the cached training run of the current model/dataset/optim/seed config (trained if missing).
Outputs in the run directory: ``directions.h5`` (the PCA directions, original layout, with the
explained variance), ``projection.h5`` (coordinates of every checkpoint), ``surface.h5`` (the loss
on the PCA plane around theta_final; resumable) and ``trajectory_contour.png/.pdf``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape_exp import directions as D
from landscape_exp import trajectory as T
from landscape_exp.checkpoint import check_state_dict, load_checkpoint
from landscape_exp.errors import UserError
from landscape_exp.figures import render_surface
from landscape_exp.grid import Axis, Grid, parse_axis
from landscape_exp.plotting import plot_path_on_contour
from landscape_exp.resources import check_surface_resources
from landscape_exp.surface import compute_surface
from landscape_exp.surface_file import SurfaceFile, metric_names, read_surface
from landscape_exp.tasks.common import (
    RunContext,
    dataset_for,
    dataset_identity,
    ensure_checkpoint,
    eval_batch_size,
    eval_splits,
    file_sha256,
    load_for_analysis,
    precision_for,
    tensors_sha256,
    versions,
    write_json,
)
from landscape_exp.tasks.surfaces import direction_settings, summarize
from landscape_exp.training import list_epoch_checkpoints
from landscape_exp.weight_space import WeightSpace

# At most this many epoch numbers are written next to the path (more would be unreadable).
MAX_LABELS = 12


# ---------------------------------------------------------------------------------------------
# which checkpoints


def _epoch_of(path: Path, ckpt: dict[str, Any] | None, fallback: int) -> int:
    if ckpt is not None and isinstance(ckpt.get("epoch"), int):
        return int(ckpt["epoch"])
    m = re.search(r"epoch_(\d+)", path.name)
    return int(m.group(1)) if m else fallback


def run_dir_checkpoints(run_dir: str | Path, start_epoch: int = 0, stride: int = 1) -> list[Path]:
    """Per-epoch checkpoints of a training run (``<run_dir>/checkpoints/epoch_*.pt``, or the
    epoch files directly in ``run_dir``), from ``start_epoch`` on, every ``stride``-th epoch;
    the last epoch (theta_final) is always included."""
    d = Path(str(run_dir)).expanduser()
    if not d.is_dir():
        raise UserError(f"run_dir {str(d)!r} is not a directory")
    if stride < 1 or start_epoch < 0:
        raise UserError(f"task.stride={stride} must be >= 1 and task.start_epoch={start_epoch} >= 0")
    files = list_epoch_checkpoints(d / "checkpoints") or list_epoch_checkpoints(d)
    if not files:
        raise UserError(f"run_dir {str(d)!r} holds no per-epoch checkpoints (checkpoints/epoch_*.pt); train with task=train first")
    numbered = sorted((_epoch_of(p, None, i), p) for i, p in enumerate(files))
    last = numbered[-1]
    chosen = [(e, p) for e, p in numbered if e >= start_epoch and (e - start_epoch) % stride == 0]
    if not chosen or chosen[-1] != last:
        chosen.append(last)
    return [p for _, p in chosen]


def checkpoint_paths(ctx: RunContext) -> tuple[list[Path], str]:
    """The path's checkpoints in order (the last is theta_final) and where they came from."""
    cfg = ctx.cfg
    task = cfg.task
    explicit, run_dir = cfg.get("checkpoints"), cfg.get("run_dir")
    if explicit and run_dir:
        raise UserError("give either run_dir=... or checkpoints=[...], not both")
    if explicit:
        if isinstance(explicit, str):
            raise UserError(f"checkpoints={explicit!r} must be a list of paths, e.g. checkpoints=[a.pt,b.pt,c.pt]")
        paths = [Path(str(p)).expanduser() for p in explicit]
        for p in paths:
            if not p.is_file():
                raise UserError(f"checkpoint {str(p)!r} in checkpoints= does not exist" if not p.exists() else f"checkpoint {str(p)!r} is not a file")
        return paths, "checkpoints"
    start, stride = int(task.get("start_epoch", 0)), int(task.get("stride", 1))
    if run_dir:
        return run_dir_checkpoints(run_dir, start, stride), str(Path(str(run_dir)).resolve())
    # The run that produced the analysed checkpoint (cached training run, or checkpoint=...'s dir).
    final = ensure_checkpoint(ctx)
    ckpt_dir = final.parent
    return run_dir_checkpoints(ckpt_dir, start, stride), str(ckpt_dir.parent.resolve())


def load_tensors(path: Path, model: torch.nn.Module, kind: str, model_cfg: dict | None) -> tuple[list[torch.Tensor], int | None]:
    """The tensors a direction of ``kind`` moves, read from checkpoint ``path`` in the model's
    order and on its device, and the checkpoint's epoch (if it records one)."""
    ckpt = load_checkpoint(path)
    other = ckpt.get("model_cfg")
    if other is not None and model_cfg is not None and dict(other) != dict(model_cfg):
        raise UserError(f"checkpoint {str(path)!r} is a {other.get('name', '?')!r} model with another config than the final "
                        f"checkpoint's {model_cfg.get('name', '?')!r}; a trajectory needs one architecture")
    sd = ckpt["state_dict"]
    check_state_dict(model, sd, f"checkpoint {str(path)!r}")
    ref = D.named_tensors(model, kind)
    epoch = ckpt.get("epoch") if isinstance(ckpt.get("epoch"), int) else None
    return [sd[n].to(device=t.device, dtype=t.dtype) for n, t in ref], epoch


# ---------------------------------------------------------------------------------------------
# grid


def auto_axis(values: np.ndarray, margin: float, num: int, name: str, fallback_span: float | None = None) -> Axis:
    """An axis covering ``values`` and 0 (theta_final) with ``margin`` of the span on each side,
    its ends rounded outwards to three significant digits of the span."""
    lo, hi = min(float(np.min(values)), 0.0), max(float(np.max(values)), 0.0)
    span = hi - lo
    if span <= 0:
        span = fallback_span or 1.0
        lo, hi = lo - span / 2, hi + span / 2
    lo, hi = lo - margin * span, hi + margin * span
    step = 10.0 ** (math.floor(math.log10(hi - lo)) - 2)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    return parse_axis(f"{lo:.6g}:{hi:.6g}:{num}", name)


def grid_for(ctx: RunContext, coords: np.ndarray) -> Grid:
    """``x=``/``y=`` when given; otherwise ``task.num`` points per axis around the projected path."""
    task = ctx.cfg.task
    num, margin = int(task.get("num", 21)), float(task.get("margin", 0.2))
    if num < 2 or not margin >= 0:
        raise UserError(f"task.num={num} must be >= 2 and task.margin={margin} >= 0")
    xs, ys = ctx.cfg.get("x"), ctx.cfg.get("y")
    xa = parse_axis(xs, "x") if xs else auto_axis(coords[:, 0], margin, num, "x")
    xspan = float(np.ptp(np.append(coords[:, 0], 0.0))) or None
    ya = parse_axis(ys, "y") if ys else auto_axis(coords[:, 1], margin, num, "y", fallback_span=xspan)
    return Grid(xa, ya)


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


def save_pca_directions(path: Path, dirs: dict[str, list[torch.Tensor]], names: list[str], result: T.PCAResult | None,
                        attrs: dict[str, Any]) -> Path:
    """The direction file (groups ``xdirection``/``ydirection``) with the explained variance both
    as attributes and as the original tool's datasets (``explained_variance_ratio_``,
    ``explained_variance_``, ``singular_values_``), which its ``plot_2D.py`` reads."""
    a = dict(attrs)
    if result is not None:
        a.update(explained_variance_ratio=result.explained_variance_ratio.cpu().numpy(),
                 explained_variance=result.explained_variance.cpu().numpy(),
                 singular_values=result.singular_values.cpu().numpy())
    D.save_directions(path, dirs, names=names, attrs=a)
    if result is not None:
        with h5py.File(path, "a") as f:
            f["explained_variance_ratio_"] = result.explained_variance_ratio.cpu().numpy()
            f["explained_variance_"] = result.explained_variance.cpu().numpy()
            f["singular_values_"] = result.singular_values.cpu().numpy()
    return path


def _read_ratios(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        if "explained_variance_ratio_" in f:
            return np.asarray(f["explained_variance_ratio_"][()], dtype=float)
        if "explained_variance_ratio" in f.attrs:
            return np.asarray(f.attrs["explained_variance_ratio"], dtype=float)
    return np.full(2, np.nan)


def _existing_fingerprint(path: Path) -> str | None:
    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("inputs_fingerprint")
    except OSError:
        return None
    return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)


def write_projection(path: Path, coords: np.ndarray, epochs: list[int], paths: list[Path], ratios: np.ndarray,
                     attrs: dict[str, Any]) -> Path:
    """``projection.h5``: the original's ``proj_xcoord``/``proj_ycoord`` plus epochs, checkpoint
    paths and explained-variance ratios (written atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f["proj_xcoord"] = coords[:, 0]
        f["proj_ycoord"] = coords[:, 1]
        f["epochs"] = np.asarray(epochs, dtype=np.int64)
        f["checkpoints"] = np.array([str(p) for p in paths], dtype=h5py.string_dtype())
        f["explained_variance_ratio_"] = ratios
        for k, v in attrs.items():
            f.attrs[k] = v if isinstance(v, (int, float, str, np.ndarray)) else json.dumps(v, default=str)
    tmp.replace(path)
    return path


def path_labels(epochs: list[int], coords: np.ndarray, x: np.ndarray, y: np.ndarray, min_gap: float = 0.05) -> list[str]:
    """Epoch labels for the path's points: the first and the last always, others in order while
    they are at least ``min_gap`` (in fractions of the plot's width/height) from every labelled
    point, at most :data:`MAX_LABELS` in all -- late epochs crowd around theta_final."""
    n = len(epochs)
    span = np.array([max(float(np.ptp(x)), 1e-300), max(float(np.ptp(y)), 1e-300)])
    pts = np.asarray(coords, dtype=float)[:, :2] / span
    order = [n - 1, 0] + list(range(1, n - 1))
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= MAX_LABELS or not np.all(np.isfinite(pts[i])):
            continue
        if all(np.abs(pts[i] - pts[j]).max() >= min_gap for j in chosen):
            chosen.append(i)
    return [str(e) if i in chosen else "" for i, e in enumerate(epochs)]


def contour_vmax(z: np.ndarray, done: np.ndarray, vmin: float, vmax: float) -> float:
    """``vmax`` lowered to just above the largest computed value, so that the colour bar shows
    only levels that occur (the default range 0.1..10 dwarfs a path whose loss stays below 3)."""
    v = np.asarray(z, dtype=float)[np.asarray(done, dtype=bool)]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return vmax
    top = float(v.max()) * 1.0001
    return min(vmax, top) if top > vmin else vmax


def _pct(r: float) -> str:
    return "n/a" if not math.isfinite(r) else f"{100 * r:.1f} %"


# ---------------------------------------------------------------------------------------------


def run(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    kind, ignore = direction_settings(ctx)
    if int((cfg.get("shard") or {}).get("count", 1)) > 1:
        raise UserError("task=trajectory computes its surface in one job; drop shard.count (it must be 1)")
    paths, source = checkpoint_paths(ctx)
    if len(paths) < 3:
        raise UserError(f"a trajectory needs at least 3 checkpoints for 2 principal components; got {len(paths)} from {source}")
    dataset = dataset_for(ctx)
    final_path = paths[-1]
    model, ckpt = load_for_analysis(ctx, final_path, dataset)
    model_cfg = ckpt.get("model_cfg") or ctx.container(cfg.model)
    names = [n for n, _ in D.named_tensors(model, kind)]
    final = D.snapshot(model, kind)
    mask = T.tensor_mask(final, ignore)

    # The matrix of theta_i - theta_final, one checkpoint in memory at a time.
    rows, epochs = [], []
    for i, p in enumerate(paths):
        tensors, epoch = load_tensors(p, model, kind, ckpt.get("model_cfg"))
        rows.append(T.trajectory_row(tensors, final, mask))
        epochs.append(epoch if epoch is not None else _epoch_of(p, None, i))
        del tensors
    matrix = torch.stack(rows)
    del rows
    print(f"trajectory: {len(paths)} checkpoints from {source}, {matrix.shape[1]:,} weights (type={kind}, ignore={ignore or 'none'})")

    dir_file = ctx.out_dir / "directions.h5"
    fingerprint = _inputs_fingerprint(paths, kind, ignore)
    result: T.PCAResult | None = None
    if cfg.direction.get("file"):
        dfile = Path(str(cfg.direction.file))
        dirs = D.load_directions(dfile, final, ("xdirection", "ydirection"))
        if "ydirection" not in dirs:
            raise UserError(f"direction file {str(dfile)!r} lacks ydirection; task=trajectory needs two directions")
        ratios, dir_source = _read_ratios(dfile), "file"
        dir_file = dfile.resolve()
    elif dir_file.is_file() and _existing_fingerprint(dir_file) == fingerprint:
        dirs = D.load_directions(dir_file, final, ("xdirection", "ydirection"))
        ratios, dir_source = _read_ratios(dir_file), "reused"
        print(f"reusing the PCA directions of {dir_file} (same checkpoints)")
    else:
        result = T.pca(matrix, 2)
        dirs = {g: T.unflatten(result.components[j], final, mask) for j, g in enumerate(("xdirection", "ydirection"))}
        ratios, dir_source = result.explained_variance_ratio.cpu().numpy(), "pca"
        save_pca_directions(dir_file, dirs, names, result, {
            "type": kind, "ignore": ignore or "none", "source": "pca", "centred": "true",
            "checkpoints": json.dumps([str(p.resolve()) for p in paths]), "inputs_fingerprint": fingerprint,
        })
    comps = torch.stack([T.flatten(dirs[g], mask) for g in ("xdirection", "ydirection")])
    coords_t = T.project_rows(matrix, comps)
    coords = coords_t.cpu().numpy()
    cos = D.cosine_similarity(dirs["xdirection"], dirs["ydirection"])
    length = T.path_length(matrix)
    length_2d = T.polyline_length(coords_t)
    start_distance = float(torch.linalg.vector_norm(matrix[0].double()))
    del matrix
    ratios = np.asarray(ratios, dtype=float)
    r1, r2 = (float(ratios[0]), float(ratios[1])) if ratios.size >= 2 else (math.nan, math.nan)
    print(f"explained variance: PC1 {_pct(r1)}, PC2 {_pct(r2)} (together {_pct(r1 + r2)}); a random walk gives "
          f"{_pct(T.RANDOM_WALK_RATIOS[0])} and {_pct(T.RANDOM_WALK_RATIOS[1])} (Antognini & Sohl-Dickstein 2018)")

    grid = grid_for(ctx, coords)
    splits_cfg = list(cfg.eval.splits)
    surf_path = Path(str(cfg.surf_file)) if cfg.get("surf_file") else ctx.out_dir / "surface.h5"
    check_surface_resources(grid.size, 2 * len(splits_cfg), surf_path, figures=bool(cfg.plot.enabled))
    precision = precision_for(ctx)
    splits = eval_splits(ctx, dataset, precision)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    space = WeightSpace(model, kind, [dirs["xdirection"], dirs["ydirection"]])
    forward = torch.compile(model) if precision.compile else None
    surf_fingerprint = {
        "task": "trajectory", "grid": [grid.x.spec(), grid.y.spec()], "model": model_cfg,
        "checkpoint_sha256": file_sha256(final_path),
        "directions_sha256": tensors_sha256(dirs["xdirection"] + dirs["ydirection"]), "direction_type": kind,
        "dataset": dataset_identity(ctx), "splits": list(splits), "loss": str(cfg.eval.loss),
        "data_split": [int(cfg.eval.data_split), int(cfg.eval.split_idx)], "precision": precision.mode,
    }
    attrs = {
        "task": "trajectory", "model": model_cfg.get("name", "?"), "dataset": dataset.name, "normalization": "pca",
        "checkpoint": str(final_path.resolve()), "dir_file": str(dir_file), "proj_file": str((ctx.out_dir / "projection.h5").resolve()),
        "explained_variance_ratio": ratios, "config": ctx.container(cfg), "versions": versions(), "precision": precision.mode,
    }
    store = SurfaceFile(surf_path, grid, metric_names(list(splits)), fingerprint=surf_fingerprint, attrs=attrs,
                        extra_datasets={"dir_file": str(dir_file)})
    with store:
        print(f"trajectory surface: {grid.size} points ({store.num_done} already done) over "
              f"x={grid.x.spec()} y={grid.y.spec()} -> {surf_path}")
        stats = compute_surface(model, space, grid, store, splits, loss=str(cfg.eval.loss), batch_size=eval_batch_size(ctx),
                                precision=precision, progress=ctx.progress, forward=forward,
                                points_per_pass=int(cfg.eval.get("points_per_pass", 1)))

    proj_file = write_projection(ctx.out_dir / "projection.h5", coords, epochs, paths, ratios, {
        "dir_file": str(dir_file), "surf_file": str(surf_path), "type": kind, "ignore": ignore or "none",
        "source": source, "path_length": length, "path_length_projected": length_2d,
    })
    surface = read_surface(surf_path)
    summary: dict[str, Any] = summarize(surface, grid, "trajectory")
    summary.update(stats)
    summary.update({
        "num_checkpoints": len(paths), "epochs": epochs, "source": source, "direction_source": dir_source,
        "explained_variance_ratio": [r1, r2], "explained_variance_ratio/pc1": r1, "explained_variance_ratio/pc2": r2,
        "explained_variance_ratio/total": r1 + r2,
        "random_walk_ratio/pc1": T.RANDOM_WALK_RATIOS[0], "random_walk_ratio/pc2": T.RANDOM_WALK_RATIOS[1],
        "cosine_pc1_pc2": cos, "path_length": length, "path_length_projected": length_2d,
        # how much of the path's length the plane keeps (1: the path lies in the plane)
        "projected_length_fraction": length_2d / length if length > 0 else math.nan,
        "distance_start_final": start_distance, "start_xy": [float(v) for v in coords[0]],
        "grid": [grid.x.spec(), grid.y.spec()], "surface_file": str(surf_path), "dir_file": str(dir_file),
        "proj_file": str(proj_file),
    })
    if result is not None:
        summary["explained_variance"] = [float(v) for v in result.explained_variance]
    if cfg.plot.enabled:
        z_key = "train_loss" if "train_loss" in surface else f"{list(splits)[0]}_loss"
        title = (f"trajectory: {model_cfg.get('name', '?')} on {dataset.name}, {len(paths)} checkpoints\n"
                 f"PC1+PC2 explain {_pct(r1 + r2)} of the path's variance (random walk: "
                 f"{_pct(sum(T.RANDOM_WALK_RATIOS[:2]))})")
        pc = cfg.plot
        vmin, vlevel = float(pc.vmin), float(pc.vlevel)
        vmax = contour_vmax(surface[z_key], surface["done"], vmin, float(pc.vmax))
        if not vmax - vmin >= vlevel:  # fewer than two levels: fall back to the configured range
            vmax = float(pc.vmax)
        figs = plot_path_on_contour(
            surface["x"], surface["y"], surface[z_key], coords, ctx.out_dir / "trajectory_contour", title=title,
            xlabel=f"PC1: {_pct(r1)} variance", ylabel=f"PC2: {_pct(r2)} variance",
            labels=path_labels(epochs, coords, surface["x"], surface["y"]), zlabel=z_key.replace("_", " "),
            vmin=vmin, vmax=vmax, vlevel=vlevel, log=bool(pc.log), done=surface["done"],
        )
        if bool(cfg.task.get("surface_figures", False)):
            figs += render_surface(surface, ctx.out_dir, ctx.container(pc))
        ctx.tracker.log_images(figs, prefix="trajectory/")
        summary["figures"] = [str(f) for f in figs]
    ctx.tracker.artifact([surf_path, dir_file, proj_file], name="trajectory", kind="surface")
    write_json(ctx.out_dir / "trajectory.json", {k: summary[k] for k in (
        "num_checkpoints", "epochs", "explained_variance_ratio", "path_length", "path_length_projected", "start_xy")}
        | {"coordinates": coords.tolist(), "checkpoints": [str(p) for p in paths]})
    return summary
