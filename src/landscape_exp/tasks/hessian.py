"""task=hessian | hessian_surface | hessian_trajectory: Hessian spectra of the full-data loss.

* ``hessian``: at one checkpoint, the top-k and bottom-k eigenpairs, the Hutchinson trace, the
  SLQ density and the loss along the top and bottom eigenvectors; the eigenvectors are saved as a
  direction file (``xdirection`` = top, ``ydirection`` = bottom) for ``direction=hessian``.
* ``hessian_surface``: ``lambda_max``, ``lambda_min`` and ``|lambda_min/lambda_max|`` at every
  point of a 2D grid spanned by surface2d's directions (Li et al. 2018, section 6), resumable.
* ``hessian_trajectory``: ``lambda_max`` (and the trace) at every saved epoch of a training run.

Settings live in the top-level ``hessian`` node of the task configs (``conf/task/hessian*.yaml``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from landscape_exp import directions as D
from landscape_exp import hessian as H
from landscape_exp.checkpoint import load_checkpoint, model_from_checkpoint
from landscape_exp.data import DeviceData, ImageDataset
from landscape_exp.errors import UserError, choice_error
from landscape_exp.grid import Axis, parse_axis, parse_grid
from landscape_exp.plotting import plot_2d
from landscape_exp.resources import check_surface_resources
from landscape_exp.surface_file import SurfaceFile, read_surface
from landscape_exp.tasks.common import (
    RunContext,
    check_model_fits_dataset,
    dataset_for,
    dataset_identity,
    ensure_checkpoint,
    eval_batch_size,
    file_sha256,
    load_for_analysis,
    tensors_sha256,
    versions,
)
from landscape_exp.tasks.surfaces import direction_settings, make_directions, save_pending_directions
from landscape_exp.training import list_epoch_checkpoints
from landscape_exp.weight_space import WeightSpace

SPLITS = ("train", "test")
CURVE_POINTS = 51  # points of the automatic 1D range along the eigenvectors


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class HessianConfig:
    """The ``hessian`` config node, checked."""

    split: str
    num_samples: int | None
    seed: int
    batch_size: int
    spectrum: H.SpectrumSettings

    def identity(self) -> dict[str, Any]:
        """What determines the values (the batch size only changes roundoff)."""
        s = self.spectrum
        return {"split": self.split, "num_samples": self.num_samples, "seed": self.seed, "method": s.method,
                "tol": s.tol, "max_iter": s.max_iter}


def hessian_settings(ctx: RunContext) -> HessianConfig:
    """Read and check ``cfg.hessian`` (defaults of :class:`landscape_exp.hessian.SpectrumSettings`
    where a key is absent)."""
    node = ctx.cfg.get("hessian")
    h: dict[str, Any] = dict(ctx.container(node) or {}) if node is not None else {}
    dens = dict(h.get("density") or {})
    split = str(h.get("split", "train"))
    if split not in SPLITS:
        raise choice_error("hessian.split", split, SPLITS)
    bs = h.get("batch_size")
    if bs is None:
        # The double backward keeps about three times the activations of an evaluation pass.
        bs = 512 if ctx.device.type == "cuda" else 256
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise UserError(f"hessian.batch_size={bs!r} must be null or a positive integer")
    num = h.get("num_samples")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise UserError(f"hessian.num_samples={num!r} must be null (the whole split) or a positive integer")
    seed = h.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"hessian.seed={seed!r} must be an integer >= 0")
    d = H.SpectrumSettings()
    tol = h.get("tol", d.tol)
    spectrum = H.SpectrumSettings(
        k=h.get("k", d.k), method=str(h.get("method", d.method)), tol=float(tol) if isinstance(tol, (int, float)) and not isinstance(tol, bool) else tol,
        max_iter=h.get("max_iter", d.max_iter), trace_probes=h.get("trace_probes", d.trace_probes),
        density_probes=dens.get("probes", d.density_probes), density_iters=dens.get("iters", d.density_iters),
        density_points=dens.get("num_points", d.density_points), seed=seed,
    )
    return HessianConfig(split, num, seed, bs, spectrum)


def hessian_data(ctx: RunContext, dataset: ImageDataset, hc: HessianConfig) -> tuple[DeviceData, torch.Tensor]:
    """The samples the loss (and its Hessian) is averaged over, on the device, and their
    indices in the split: the whole ``hessian.split`` or a seeded subset of ``num_samples``."""
    split = dataset.split(hc.split)
    idx = H.sample_subset(len(split), hc.num_samples, hc.seed)
    sub = split if hc.num_samples is None else split.subset(idx)
    return DeviceData(sub, dataset.mean, dataset.std, ctx.device), idx


def _context_lines(hc: HessianConfig, sel: H.ParamSelection, n: int) -> str:
    return (f"Hessian of the mean {hc.split} loss over {n:,} samples w.r.t. {sel.dim:,} parameters "
            f"({len(sel.indices)} tensors), fp32, batch {hc.batch_size}")


def _title(model_name: str, dataset_name: str, what: str) -> str:
    return f"{what}: {model_name} on {dataset_name}"


# ----------------------------------------------------------------------------- task=hessian


def _curve_axis(ctx: RunContext) -> Axis | None:
    spec = ctx.cfg.get("x") or ctx.cfg.task.get("x")
    if ctx.cfg.get("y"):
        raise UserError(f"task {ctx.cfg.task.name!r} draws 1D curves; drop y={ctx.cfg.y}")
    return parse_axis(spec, "x") if spec else None


def run(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    hc = hessian_settings(ctx)
    kind, ignore = direction_settings(ctx)
    if kind != "weights":
        raise UserError(f"task=hessian differentiates the parameters: direction.type={kind!r} is not allowed; use weights")
    axis = _curve_axis(ctx)  # a malformed x fails before any work
    loss_name = str(cfg.eval.loss)
    dataset = dataset_for(ctx)
    data, idx = hessian_data(ctx, dataset, hc)  # a bad subset size fails before any training
    ckpt_path = ensure_checkpoint(ctx)
    model, ckpt = load_for_analysis(ctx, ckpt_path, dataset)
    model_cfg = ckpt.get("model_cfg") or ctx.container(cfg.model)
    sel = H.select_parameters(model, ignore)
    op = H.make_operator(model, sel, data, loss=loss_name, batch_size=hc.batch_size)
    print(_context_lines(hc, sel, len(data)))

    report = H.spectrum_report(op, hc.spectrum)
    print(f"lambda_max = {report.lambda_max:.6g}, lambda_min = {report.lambda_min:.6g}, "
          f"|lambda_min/lambda_max| = {report.ratio:.4g}, trace = {report.trace:.6g} +- {report.trace_stderr:.2g} "
          f"({report.num_hvp['total']} HVPs, {report.seconds['total']:.1f} s)")

    # 1D curves along the top and bottom eigenvectors, against the quadratic model L0 + g.v a + lambda a^2/2.
    with H.fp32(ctx.device):
        loss0 = op.loss()
        grad = op.gradient().double().cpu()
    top_v, bot_v = report.top_vectors[0], report.bottom_vectors[0]
    slopes = (float(grad @ top_v.double()), float(grad @ bot_v.double()))
    if axis is None:
        h = H.curve_half_width(report.lambda_max)
        axis = Axis(-h, h, CURVE_POINTS)
    alphas = axis.coordinates
    t0 = time.perf_counter()
    curve_loss, curve_acc = H.loss_along(model, sel, torch.stack([top_v, bot_v]), alphas, data, loss=loss_name,
                                         batch_size=eval_batch_size(ctx))
    curve_seconds = time.perf_counter() - t0

    # Direction file in the original tool's layout: full model.parameters() lists, zeros on ignored tensors.
    names = [n for n, _ in model.named_parameters()]
    dir_path = ctx.out_dir / "hessian_directions.h5"
    ckpt_abs = str(Path(ckpt_path).resolve())
    D.save_directions(dir_path, {"xdirection": H.vector_to_direction(top_v, model, sel),
                                 "ydirection": H.vector_to_direction(bot_v, model, sel)}, names=names,
                      attrs={"source": "hessian", "type": "weights", "ignore": ignore or "none",
                             "xeigenvalue": report.lambda_max, "yeigenvalue": report.lambda_min,
                             "checkpoint": ckpt_abs, "normalization": "none (unit eigenvectors)"})

    settings = {**hc.identity(), "k": hc.spectrum.k, "trace_probes": hc.spectrum.trace_probes,
                "density": {"probes": hc.spectrum.density_probes, "iters": hc.spectrum.density_iters,
                            "num_points": hc.spectrum.density_points}, "batch_size": hc.batch_size, "ignore": ignore or "none"}
    h5_path = H.write_spectrum_file(
        ctx.out_dir / "hessian.h5", report, sel,
        datasets={"sample_indices": idx.numpy(), "curve_alpha": alphas, "curve_top_loss": curve_loss[0],
                  "curve_bottom_loss": curve_loss[1], "curve_top_acc": curve_acc[0], "curve_bottom_acc": curve_acc[1]},
        attrs={"loss": loss0, "grad_norm": float(grad.norm()), "slope_top": slopes[0], "slope_bottom": slopes[1],
               "num_samples": len(data), "checkpoint": ckpt_abs, "checkpoint_sha256": file_sha256(ckpt_path),
               "model": model_cfg.get("name", "?"), "dataset": dataset.name, "dir_file": str(dir_path.resolve()),
               "settings": settings, "curve_seconds": curve_seconds, "config": ctx.container(cfg),
               "versions": versions(), "device": str(ctx.device)},
    )

    h = max(abs(axis.lo), abs(axis.hi))
    summary: dict[str, Any] = {
        "lambda_max": report.lambda_max, "lambda_min": report.lambda_min, "ratio": report.ratio,
        "top_eigenvalues": report.top_values.tolist(), "bottom_eigenvalues": report.bottom_values.tolist(),
        "trace": report.trace, "trace_stderr": report.trace_stderr, "loss": loss0, "grad_norm": float(grad.norm()),
        "dim": sel.dim, "num_samples": len(data), "num_hvp": report.num_hvp, "hessian_seconds": report.seconds,
        "hessian_file": str(h5_path), "dir_file": str(dir_path),
        "surface_hint": f"python run.py task=surface2d direction=hessian direction.file={dir_path.resolve()} "
                        f"checkpoint={ckpt_abs} x=-{h:.3g}:{h:.3g}:51 y=-{h:.3g}:{h:.3g}:51",
    }
    ctx.tracker.log({f"hessian/{k}": summary[k] for k in ("lambda_max", "lambda_min", "ratio", "trace")})
    if cfg.plot.enabled:
        title = _title(model_cfg.get("name", "?"), dataset.name, "Hessian")
        figs = H.plot_eigenvalues(report.top_values, report.bottom_values, sel.dim, ctx.out_dir / "hessian_eigenvalues",
                                  title=title)
        if len(report.density):
            figs += H.plot_density(report.density_grid, report.density, ctx.out_dir / "hessian_density",
                                   title=f"{title}: spectral density (SLQ)", top=report.top_values,
                                   bottom=report.bottom_values, trace=report.trace)
        figs += H.plot_eigen_curves(alphas, curve_loss[0], curve_loss[1], ctx.out_dir / "hessian_curves",
                                    title=f"{title}: loss along eigenvectors", lambda_max=report.lambda_max,
                                    lambda_min=report.lambda_min, loss0=loss0, slope_top=slopes[0], slope_bottom=slopes[1])
        ctx.tracker.log_images(figs, prefix="hessian/")
        summary["figures"] = [str(f) for f in figs]
    ctx.tracker.log_curve("hessian/curves", alphas, {"top_loss": curve_loss[0], "bottom_loss": curve_loss[1]}, xname="a")
    ctx.tracker.artifact([h5_path, dir_path], name="hessian", kind="hessian")
    return summary


# ----------------------------------------------------------------------------- task=hessian_surface


def _as_surface2d(ctx: RunContext) -> RunContext:
    """The context seen as task=surface2d: ``make_directions`` picks 1D or 2D by task name, and
    this task wants exactly the directions (and direction file) surface2d would use."""
    cfg = copy.deepcopy(ctx.cfg)
    cfg.task.name = "surface2d"
    return dataclasses.replace(ctx, cfg=cfg)


def _levels(values: np.ndarray, done: np.ndarray) -> dict[str, float]:
    """Contour/colour range spanning the computed finite values in about 15 levels."""
    v = np.asarray(values, dtype=float)[np.asarray(done, dtype=bool) & np.isfinite(values)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if not hi > lo:
        pad = max(abs(lo) * 0.05, 1e-12)
        lo, hi = lo - pad, hi + pad
    step = (hi - lo) / 15
    return {"vmin": lo, "vmax": hi + step / 2, "vlevel": step}  # arange excludes vmax: keep the top level


def run_surface(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    hc = hessian_settings(ctx)
    grid = parse_grid(cfg.get("x") or cfg.task.get("x"), cfg.get("y") or cfg.task.get("y"))
    kind, ignore = direction_settings(ctx)
    if OmegaConf.is_missing(cfg.direction, "file"):
        raise UserError(f"direction={cfg.direction.get('name')} needs direction.file=<path> "
                        "(task=hessian writes <run dir>/hessian_directions.h5)")
    surf_path = Path(str(cfg.surf_file)) if cfg.get("surf_file") else ctx.out_dir / "hessian_surface.h5"
    check_surface_resources(grid.size, 6, surf_path, figures=bool(cfg.plot.enabled))
    loss_name = str(cfg.eval.loss)
    dataset = dataset_for(ctx)
    data, idx = hessian_data(ctx, dataset, hc)
    ckpt_path = ensure_checkpoint(ctx)
    model, ckpt = load_for_analysis(ctx, ckpt_path, dataset)
    model_cfg = ckpt.get("model_cfg") or ctx.container(cfg.model)
    dirs, dinfo = make_directions(_as_surface2d(ctx), model, ckpt, kind, ignore, save=False)
    dir_list = [dirs["xdirection"], dirs["ydirection"]]
    sel = H.select_parameters(model, ignore)
    op = H.make_operator(model, sel, data, loss=loss_name, batch_size=hc.batch_size)
    space = WeightSpace(model, kind, dir_list)
    print(_context_lines(hc, sel, len(data)))

    loss_key = f"{hc.split}_loss"
    metrics = ["lambda_max", "lambda_min", "ratio", loss_key, "num_hvp", "seconds"]
    fingerprint = {
        "task": "hessian_surface", "grid": [grid.x.spec(), grid.y.spec()], "model": model_cfg,
        "checkpoint_sha256": file_sha256(ckpt_path), "directions_sha256": tensors_sha256([t for d in dir_list for t in d]),
        "direction_type": kind, "ignore": ignore or "none", "dataset": dataset_identity(ctx), "loss": loss_name,
        "hessian": hc.identity(), "precision": "fp32",
    }
    attrs = {
        "task": "hessian_surface", "model": model_cfg.get("name", "?"), "dataset": dataset.name,
        "normalization": dinfo.get("normalization", "none"), "checkpoint": str(Path(ckpt_path).resolve()),
        "dir_file": dinfo["dir_file"], "direction_info": {k: v for k, v in dinfo.items() if k != "pending_save"},
        "config": ctx.container(cfg), "versions": versions(),
        "precision": "fp32", "num_samples": len(data), "dim": sel.dim,
    }
    store = SurfaceFile(surf_path, grid, metrics, fingerprint=fingerprint, attrs=attrs,
                        extra_datasets={"dir_file": dinfo["dir_file"], "sample_indices": idx.numpy()},
                        move_corrupt_aside=bool(cfg.get("surface_recover", False)))
    t0 = time.perf_counter()
    computed = 0
    with store:
        save_pending_directions(dirs, dinfo)  # only now: the surface file accepted this config
        pending = store.pending()
        print(f"hessian_surface: {grid.size} points ({store.num_done} already done, {len(pending)} to compute) -> {surf_path}")
        bar = tqdm(total=grid.size, initial=store.num_done, desc="hessian surface", unit="pt", disable=not ctx.progress)
        try:
            for k in pending:
                space.move_to(grid.point(k))
                # A seed per point: a resumed run gives the same values as an uninterrupted one.
                res = H.extreme_point(op, method=hc.spectrum.method, tol=hc.spectrum.tol,
                                      max_iter=hc.spectrum.max_iter, seed=hc.seed + k)
                with H.fp32(ctx.device):
                    res[loss_key] = op.loss()
                store.record(k, res)
                computed += 1
                bar.update(1)
        finally:
            bar.close()
            space.restore()
    elapsed = time.perf_counter() - t0

    surface = read_surface(surf_path)
    done = surface["done"]
    centre = int(np.argmin(np.abs(grid.points()).sum(axis=1)))
    flat = {m: np.asarray(surface[m], dtype=float).ravel() for m in metrics}
    summary: dict[str, Any] = {"points": grid.size, "points_done": int(done.sum()), "points_computed": computed,
                               "seconds": elapsed, "surface_file": str(surf_path), "dir_file": dinfo["dir_file"],
                               "dim": sel.dim, "num_samples": len(data)}
    ok = done.ravel()
    for m in ("lambda_max", "lambda_min", "ratio", loss_key):
        summary[f"{m}/centre"] = float(flat[m][centre]) if ok[centre] else math.nan
        fin = ok & np.isfinite(flat[m])
        if fin.any():
            summary[f"{m}/min"], summary[f"{m}/max"] = float(flat[m][fin].min()), float(flat[m][fin].max())
    if ok.any():
        summary["num_hvp/mean_per_point"] = float(flat["num_hvp"][ok].mean())
        summary["seconds/mean_per_point"] = float(flat["seconds"][ok].mean())
    if cfg.plot.enabled:
        figs = _surface_figures(surface, ctx, model_cfg.get("name", "?"), dataset.name, loss_key, dinfo)
        ctx.tracker.log_images(figs, prefix="hessian_surface/")
        summary["figures"] = [str(f) for f in figs]
    ctx.tracker.artifact([surf_path, Path(dinfo["dir_file"])], name="hessian_surface", kind="surface")
    return summary


def _surface_figures(surface: dict[str, Any], ctx: RunContext, model_name: str, dataset_name: str, loss_key: str,
                     dinfo: dict[str, Any]) -> list[Path]:
    """The paper's maps (heat map of |lambda_min/lambda_max| on 0..0.5 as Li et al. Fig. 9), maps of
    lambda_max and lambda_min, and the loss contour of the same grid."""
    x, y, done = surface["x"], surface["y"], surface["done"]
    norm = dinfo.get("normalization")
    base = _title(model_name, dataset_name, "hessian_surface") + (f", {norm}-normalized directions" if norm and norm != "none" else "")
    out = ctx.out_dir
    figs: list[Path] = []
    figs += plot_2d(x, y, surface["ratio"], out / "hessian_surface_ratio", title=f"{base}\n|λmin / λmax|",
                    zlabel="|λmin / λmax|", vmin=0.0, vmax=0.5, vlevel=0.05, done=done, kinds=("heatmap", "contour"))
    for m, label in (("lambda_max", "λmax"), ("lambda_min", "λmin")):
        figs += plot_2d(x, y, surface[m], out / f"hessian_surface_{m}", title=f"{base}\n{label}", zlabel=label,
                        done=done, kinds=("heatmap",), **_levels(surface[m], done))
    plot_cfg = ctx.container(ctx.cfg.plot)
    figs += plot_2d(x, y, surface[loss_key], out / f"hessian_surface_{loss_key}", title=f"{base}\n{loss_key.replace('_', ' ')}",
                    zlabel=loss_key.replace("_", " "), vmin=float(plot_cfg.get("vmin", 0.1)), vmax=float(plot_cfg.get("vmax", 10)),
                    vlevel=float(plot_cfg.get("vlevel", 0.5)), log=bool(plot_cfg.get("log", False)), done=done,
                    kinds=("contour",))
    return figs


# ----------------------------------------------------------------------------- task=hessian_trajectory


def trajectory_checkpoints(ctx: RunContext) -> tuple[Path, list[Path]]:
    """The run's directory and its per-epoch checkpoints, in epoch order: ``task.run_dir`` (a
    training run directory, or its ``checkpoints`` folder), else the folder of ``checkpoint=``,
    else the cached training run of this config (trained now if missing)."""
    given = ctx.cfg.task.get("run_dir")
    if given:
        run_dir = Path(str(given)).expanduser()
        if not run_dir.is_dir():
            raise UserError(f"task.run_dir={str(run_dir)!r} is not a directory; give a training run directory "
                            "(python run.py task=train writes one)")
        folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    else:
        folder = ensure_checkpoint(ctx).parent
    ckpts = list_epoch_checkpoints(folder)
    if not ckpts:
        raise UserError(f"no per-epoch checkpoints (epoch_*.pt) in {str(folder)!r}; train with task=train, "
                        "which saves one after every epoch")
    return folder, ckpts


def _epoch_of(path: Path, ckpt: dict[str, Any]) -> int:
    if ckpt.get("epoch") is not None:
        return int(ckpt["epoch"])
    m = re.search(r"(\d+)", path.stem)
    if not m:
        raise UserError(f"cannot tell the epoch of checkpoint {str(path)!r}")
    return int(m.group(1))


def run_trajectory(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    hc = hessian_settings(ctx)
    _, ignore = direction_settings(ctx)
    loss_name = str(cfg.eval.loss)
    dataset = dataset_for(ctx)
    data, idx = hessian_data(ctx, dataset, hc)
    folder, ckpts = trajectory_checkpoints(ctx)
    s = hc.spectrum
    fingerprint = {"task": "hessian_trajectory", "hessian": hc.identity(), "k": s.k, "trace_probes": s.trace_probes,
                   "ignore": ignore or "none", "dataset": dataset_identity(ctx), "loss": loss_name, "precision": "fp32"}
    path = ctx.out_dir / "hessian_trajectory.h5"
    rows = H.read_trajectory(path, fingerprint)
    attrs = {"task": "hessian_trajectory", "run_dir": str(folder.resolve()), "dataset": dataset.name,
             "num_samples": len(data), "config": ctx.container(cfg), "versions": versions()}
    print(f"hessian_trajectory: {len(ckpts)} epoch checkpoints in {folder} -> {path}")
    computed, model_name = 0, "?"
    bar = tqdm(ckpts, desc="hessian trajectory", unit="epoch", disable=not ctx.progress)
    for p in bar:
        sha = file_sha256(p)
        ckpt = load_checkpoint(p)
        epoch = _epoch_of(p, ckpt)
        model_name = (ckpt.get("model_cfg") or {}).get("name", model_name)
        if epoch in rows and rows[epoch]["checkpoint_sha256"] == sha:
            continue  # done in an earlier run of this task on this very file
        fallback = None if ckpt.get("model_cfg") is not None else ctx.container(cfg.model)
        model = model_from_checkpoint(ckpt, f"checkpoint {str(p)!r}", fallback)
        check_model_fits_dataset(model, dataset, model_name)
        model = model.to(ctx.device).eval()
        sel = H.select_parameters(model, ignore)
        op = H.make_operator(model, sel, data, loss=loss_name, batch_size=hc.batch_size)
        if s.k > sel.dim:
            raise UserError(f"hessian.k={s.k} exceeds the number of parameters the Hessian acts on ({sel.dim})")
        # The same seed at every epoch: common random probes make epochs comparable.
        res = H.top_and_trace(op, k=s.k, method=s.method, tol=s.tol, max_iter=s.max_iter,
                              trace_probes=s.trace_probes, seed=hc.seed)
        with H.fp32(ctx.device):
            loss = op.loss()
        rows[epoch] = {"epoch": epoch, "lambda_max": float(res["top_eigenvalues"][0]), "trace": res["trace"],
                       "trace_stderr": res["trace_stderr"], "loss": loss, "num_hvp": int(res["num_hvp"]),
                       "seconds": res["seconds"], "top_eigenvalues": res["top_eigenvalues"],
                       "checkpoint": str(p.resolve()), "checkpoint_sha256": sha}
        H.write_trajectory(path, rows, fingerprint=fingerprint, attrs=attrs)  # durable after every epoch
        computed += 1
        ctx.tracker.log({"hessian/lambda_max": rows[epoch]["lambda_max"], "hessian/trace": res["trace"], "epoch": epoch})
        bar.set_postfix(epoch=epoch, lambda_max=f"{rows[epoch]['lambda_max']:.4g}")
    bar.close()
    if computed == 0 and rows:
        H.write_trajectory(path, rows, fingerprint=fingerprint, attrs=attrs)  # refresh the attributes only
    epochs = sorted(rows)
    lam = np.array([rows[e]["lambda_max"] for e in epochs])
    tr = np.array([rows[e]["trace"] for e in epochs])
    se = np.array([rows[e]["trace_stderr"] for e in epochs])
    losses = np.array([rows[e]["loss"] for e in epochs])
    summary: dict[str, Any] = {"epochs": epochs, "lambda_max": lam.tolist(), "trace": tr.tolist(),
                               "trace_stderr": se.tolist(), "loss": losses.tolist(), "epochs_computed": computed,
                               "trajectory_file": str(path), "run_dir": str(folder),
                               "num_hvp": int(sum(rows[e]["num_hvp"] for e in epochs))}
    if len(epochs):
        summary["lambda_max/peak_epoch"] = int(epochs[int(np.nanargmax(lam))])
    if cfg.plot.enabled and epochs:
        figs = H.plot_trajectory(np.array(epochs), lam, ctx.out_dir / "hessian_trajectory",
                                 title=_title(model_name, dataset.name, "Hessian along training"),
                                 trace=tr if s.trace_probes else None, trace_stderr=se if s.trace_probes else None,
                                 loss=losses)
        ctx.tracker.log_images(figs, prefix="hessian_trajectory/")
        summary["figures"] = [str(f) for f in figs]
    ctx.tracker.log_curve("hessian/trajectory", epochs, {"lambda_max": lam.tolist(), "trace": tr.tolist()}, xname="epoch")
    ctx.tracker.artifact([path], name="hessian_trajectory", kind="hessian")
    return summary
