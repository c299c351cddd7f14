"""The plan a job prints before it starts, and the cost estimates it prints once it has timed the
first unit of work (an epoch, a grid point): a researcher knows within seconds what will run and
roughly how long it will take, and gets cheaper options when that is more than an hour."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from landscape_exp.console import duration
from landscape_exp.context import RunContext
from landscape_exp.data import ImageDataset
from landscape_exp.model_source import planned_model, trusted_targets
from landscape_exp.models import build_model
from landscape_exp.precision import cpu_has_bf16_units
from landscape_exp.sharpness import model_passes
from landscape_exp.surface.grid import Grid

LONG = 3600.0  # seconds past which the estimate comes with cheaper options
# Networks of the paper's CIFAR-10 experiments: on the 8x8 digits default they are almost surely a slip.
CIFAR_NETWORKS = ("vgg", "resnet", "wrn", "densenet")


def print_plan(ctx: RunContext, dataset: ImageDataset, work: str) -> None:
    """One paragraph: what runs on what, where, and the ``work`` (e.g. "a 51x51 surface")."""
    s = ctx.settings
    # checkpoint= may hold another model than model=: the plan names the one that will be analysed
    model_cfg, adopted = planned_model(ctx) if s.task != "train" else (dict(s.model), None)
    name = str(model_cfg.get("name", "?"))
    try:
        with torch.device("meta"):  # counting parameters needs no memory
            params = f"{sum(p.numel() for p in build_model(dict(model_cfg), trusted=trusted_targets(ctx)).parameters()):,} parameters"
    except Exception:  # a model that cannot be built here (bad options, one of the user's own): the real build says why
        params = "parameters unknown"
    if adopted:
        ctx.adopt_model(model_cfg, adopted, quiet=True)  # said below the plan; the batch is this model's
    shape = f"{dataset.channels}x{dataset.image_size}x{dataset.image_size}"
    epochs = s.optim.get("epochs", "?")
    source = f"checkpoint {s.checkpoint}" if s.checkpoint else (
        f"a checkpoint trained first with optim={s.optim.get('name', '?')} ({epochs} epoch{'' if epochs == 1 else 's'}, "
        f"batch {s.optim.get('batch_size', '?')}; reused from the cache when it is there)")
    print(f"plan: {s.task}: {work}\n"
          f"  model {name} ({params}) on {dataset.name} ({len(dataset.train):,} train / {len(dataset.test):,} test images, "
          f"{shape}, {dataset.num_classes} classes)\n"
          + ("" if s.task == "train" else f"  from {source}\n")
          + f"  device {ctx.device}, precision {ctx.precision.mode}, evaluation batch {ctx.eval_batch_size}")
    sh = s.sharpness
    if s.task in ("surface1d", "surface2d", "interp1d", "plane") and sh.enabled and sh.model:
        print(f"  then sharpness at the checkpoint: {model_passes(sh)} passes over the training split "
              "(sharpness.model=false skips them)")
    if s.task in ("surface1d", "surface2d", "interp1d", "plane") and sh.enabled and sh.flatness.passes():
        print(f"  then flatness at the checkpoint: about {sh.flatness.passes()} forward passes over the training split "
              "(sharpness.flatness.gaussian/pac_bayes=false skip them)")
    if s.eval.bn_recompute:
        print("  BatchNorm statistics recomputed at every point (eval.bn_recompute): one more forward pass over the "
              "training split per point")
    for notice in ctx.precision.notices if s.task != "train" else ():
        print(f"note: {notice}")
    if adopted:
        print(f"note: {adopted}")
    if name.startswith(CIFAR_NETWORKS) and dataset.name == "digits":
        print(f"note: {name} is a CIFAR-10 network of the paper, but dataset=digits (the 8x8 default) is selected; "
              "add dataset=cifar10 optim=sgd for the paper's setting")


def grid_work(grid: Grid) -> str:
    shape = f"{grid.x.num}" if grid.y is None else f"{grid.x.num}x{grid.y.num}"
    return f"a {shape} grid ({grid.size:,} points)"


def announce_cost(what: str, unit: str, seconds_per_unit: float, remaining: int, cheaper: Callable[[], str]) -> None:
    """``<what>: about T for N <unit>s (t per <unit>)``, with cheaper options past an hour."""
    total = seconds_per_unit * remaining
    if remaining <= 0 or total < 10:
        return
    print(f"{what}: about {duration(total)} for {remaining:,} {unit}s ({duration(seconds_per_unit)} per {unit}, measured)")
    if total > LONG:
        print(f"warning: {what} will take about {duration(total)}; cheaper: {cheaper()}")


def unit_done(what: str, unit: str, detail: str, seconds: float, left: int, first: bool, cheaper: Callable[[], str]) -> None:
    """A line for a finished unit of work where no progress bar shows (a log file, a batch job):
    ``<what>: <detail> (<time>; N <unit>s left)``, and after the first, the cost of the rest."""
    print(f"{what}: {detail} ({duration(seconds)}; {left} {unit}{'' if left == 1 else 's'} left)")
    if first:
        announce_cost(what, unit, seconds, left, cheaper)


def training_cheaper(ctx: RunContext) -> str:
    return ("fewer epochs (optim.epochs=N), a larger batch (optim.batch_size), a GPU (device=cuda), "
            "or an existing checkpoint (checkpoint=<file>)")


def timed_points(points: Iterator[tuple[int, dict[str, float]]], remaining: int, cheaper: Callable[[], str],
                 what: str = "surface", settle: int = 4, slow: float = 30.0) -> Iterator[tuple[int, dict[str, float]]]:
    """Pass ``points`` through; once ``settle`` points are done (or two seconds have passed) say
    what the rest will cost, at the rate after the first point (which carries the warm-up). A
    first point slower than ``slow`` seconds (a Hessian at each point of a large model) is the
    rate itself: its warm-up is small beside it, and waiting for a second one would leave the
    researcher without a word for as long again."""
    t0 = time.perf_counter()
    t1 = None
    for i, item in enumerate(points):
        yield item
        now = time.perf_counter()
        if i == 0:
            t1 = now
            if now - t0 > slow:
                announce_cost(what, "point", now - t0, remaining - 1, cheaper)
                t1 = None
        if t1 is not None and (i + 1 == min(settle, remaining) or now - t0 > 2.0):
            rate = (now - t1) / i if i > 0 else now - t0
            announce_cost(what, "point", rate, remaining - i - 1, cheaper)
            t1 = None


def surface_cheaper(ctx: RunContext, grid: Grid) -> str:
    """Concrete ways to make a surface cheaper, for the warning."""
    coarse = "x=-1:1:21" + (" y=-1:1:21" if grid.y is not None else "")
    opts = [f"a coarser grid ({coarse}: {21 if grid.y is None else 441} points instead of {grid.size:,})",
            "eval.data_split=10 (a tenth of the data, as the paper's option)"]
    if ctx.device.type == "cpu" and ctx.precision.mode == "fp32" and cpu_has_bf16_units():
        opts.append("precision=bf16 (this CPU has bf16 units: about 4x faster than fp32 on the paper's ResNets, "
                    "relative loss error 1e-3 to 1e-2, see docs/engine.md)")
    if ctx.device.type == "cpu":
        opts.append("a GPU (device=cuda, on a GPU node: hydra/launcher=submitit_slurm)")
    opts.append("sharding over jobs (shard.count=N, see docs/cluster.md)")
    if ctx.config.get("model", {}).get("name", "") not in ("lenet", "mlp"):
        opts.append("a smaller model")
    return "; ".join(opts)
