"""Several random directions at once (``task=surface1d direction.seeds=[1,2,3]``): one 1D surface
per seed, each in ``seed<k>/`` of the run directory (resumable like any surface), then their
mean and spread in one file, ``surface_seeds.h5``, a figure with a band
(``surface_seeds_1d.png``) and measures, so a claim about flatness is not one random draw.

The spread is a property of the random-direction method, not of the model: for seed ``k`` the
curve is ``f_k(a) = L(theta + a d_k)``; ``surface_seed_spread`` is the mean over the grid of the
across-seed standard deviation of the training loss (``ddof=1``), and each surface-based
sharpness measure ``sharpness/<m>`` of the seeds is reported as ``seeds_<m>``: their mean with a
Student-t interval over the seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape_exp.config.choices import SPLIT_METRICS
from landscape_exp.errors import UserError
from landscape_exp.io.files import atomic_path, h5_attr
from landscape_exp.job.context import RunContext
from landscape_exp.measures.flatness import t_interval
from landscape_exp.measures.record import Measure, measures_from_json, measures_json
from landscape_exp.surface.store import read_surface


def seed_context(ctx: RunContext, seed: int, first: bool) -> RunContext:
    """The context of seed ``seed``'s surface: ``direction.xseed=seed``, no seeds list, the run
    directory's ``seed<seed>/``. Model-based sharpness and flatness depend on the model only, so
    only the ``first`` seed computes them."""
    s = ctx.settings
    split = "shard.count" if s.shard.count > 1 else "surf_file" if s.surf_file else \
        "hydra.launcher.tasks_per_node" if ctx.job.get("worker") else None
    if split:
        raise UserError(f"direction.seeds computes one whole surface per seed in the run directory; drop {split} "
                        "(or compute one seed per job with direction.xseed)")
    sharp = s.sharpness
    if not first and sharp.enabled:
        flat = dataclasses.replace(sharp.flatness, gaussian=False, pac_bayes=False)
        sharp = dataclasses.replace(sharp, model=False, flatness=flat)
    settings = dataclasses.replace(s, direction=dataclasses.replace(s.direction, xseed=int(seed), seeds=None),
                                   sharpness=sharp)
    out = ctx.out_dir / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(ctx, settings=settings, out_dir=out)


def stack_surfaces(files: Sequence[str | Path]) -> dict[str, Any]:
    """``{"x": (n,), metric: (k, n)}`` of 1D surface files sharing x; points not computed are NaN."""
    out: dict[str, Any] = {}
    rows: dict[str, list[np.ndarray]] = {}
    for f in files:
        s = read_surface(Path(f))
        if s.get("y") is not None:
            raise UserError(f"{str(f)!r} is a 2D surface; direction.seeds takes 1D surfaces")
        if "x" in out and (s["x"].shape != out["x"].shape or not np.allclose(s["x"], out["x"])):
            raise UserError(f"{str(f)!r} has other x coordinates than {str(files[0])!r}")
        out.setdefault("x", s["x"])
        done = np.ravel(s["done"]).astype(bool)
        for m in SPLIT_METRICS:
            if m in s:
                rows.setdefault(m, []).append(np.where(done, np.ravel(s[m]), np.nan))
    out.update({m: np.stack(v) for m, v in rows.items() if len(v) == len(files)})
    return out


def seed_measures(stack: Mapping[str, Any], summaries: Sequence[Mapping[str, Any]],
                  confidence: float = 0.95) -> dict[str, Measure]:
    """``surface_seed_spread`` and ``seeds_<m>`` (see the module) from stacked surfaces and the seeds' summaries."""
    out: dict[str, Measure] = {}
    if "train_loss" in stack and stack["train_loss"].shape[0] >= 2:
        sd = np.nanstd(stack["train_loss"], axis=0, ddof=1)
        out["surface_seed_spread"] = Measure(float(np.nanmean(sd)) if np.isfinite(sd).any() else math.nan)
    keys = [k for k in summaries[0] if k.startswith("sharpness/") and "basin_open" not in k
            and all(k in s for s in summaries)]
    for k in keys:
        vals = [float(s[k]) for s in summaries]
        if len(vals) >= 2 and all(math.isfinite(v) for v in vals):
            m, lo, hi = t_interval(vals, confidence)
            out[f"seeds_{k.split('/', 1)[1]}"] = Measure(m, lo, hi, k.split("/", 1)[1].startswith("rise"))
    return out


def write_seeds_file(path: Path, seeds: Sequence[int], stack: Mapping[str, Any], files: Sequence[str],
                     measures: Mapping[str, Measure]) -> Path:
    """``surface_seeds.h5``: ``xcoordinates``, ``seeds``, and per metric the ``(k, n)`` curves and
    their ``_mean``, ``_std`` (ddof=1), ``_min``, ``_max`` over the seeds; the seeds' surface files
    and the measures as attributes. Atomic."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["xcoordinates"] = np.asarray(stack["x"])
        f["seeds"] = np.asarray(seeds, dtype=np.int64)
        for m in SPLIT_METRICS:
            if m not in stack:
                continue
            v = np.asarray(stack[m])
            f[m] = v
            with np.errstate(all="ignore"):
                for name, fn in (("mean", np.nanmean), ("min", np.nanmin), ("max", np.nanmax)):
                    f[f"{m}_{name}"] = fn(v, axis=0)
                f[f"{m}_std"] = np.nanstd(v, axis=0, ddof=1)
        f.attrs["surface_files"] = h5_attr(list(files))
        f.attrs["measures"] = h5_attr(measures_json(measures))
    return path


def seeds_summary(ctx: RunContext, seeds: Sequence[int], summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine the seeds' surfaces (``summaries``: what each seed's job returned, in ``seeds``
    order): the file, the band figure, the measures; the first seed's model-based numbers kept."""
    from landscape_exp.figures import figure_1d_overlay, save, surface_title

    files = [str(s["surface_file"]) for s in summaries]
    stack = stack_surfaces(files)
    measures = {**measures_from_json(summaries[0].get("measures")), **seed_measures(stack, summaries)}
    path = write_seeds_file(ctx.out_dir / "surface_seeds.h5", seeds, stack, files, measures)
    out: dict[str, Any] = {k: v for k, v in summaries[0].items() if k not in ("figures", "measures")}
    out.update({"seeds": list(seeds), "seed_surface_files": files, "surface_seeds_file": str(path),
                "measures": measures_json(measures)})
    spread = measures["surface_seed_spread"].value if "surface_seed_spread" in measures else math.nan
    print(f"{len(seeds)} random directions (seeds {', '.join(map(str, seeds))}): mean across-seed standard deviation "
          f"of the training loss {spread:.4g}; curves, mean and spread in {path}")
    if ctx.settings.plot.enabled and len(seeds) >= 2:
        metrics = [{m: stack[m][i] for m in SPLIT_METRICS if m in stack} for i in range(len(seeds))]
        fig = figure_1d_overlay(stack["x"], metrics, title=surface_title(read_surface(Path(files[0]))["attrs"]),
                                log=ctx.settings.plot.log, loss_max=ctx.settings.plot.loss_max)
        figs = save(fig, ctx.out_dir / "surface_seeds_1d")
        ctx.tracker.log_images(figs, prefix="surface1d/")
        out["figures"] = [str(f) for f in figs]
    return out
