"""One surface job, for every task that writes a surface (surface1d/2d, interp1d, plane, the
trajectory's PCA plane, hessian_surface): where the file goes and which shard this process
computes, the fingerprint and attributes, the resumable point loop, the merge of shards, and
publishing the result (figures, W&B)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from landscape_exp.data.datasets import ImageDataset
from landscape_exp.engine.precision import cpu_has_bf16_units
from landscape_exp.errors import UserError
from landscape_exp.io.files import atomic_path, write_json
from landscape_exp.io.provenance import file_sha256, tensors_sha256, versions
from landscape_exp.job.context import RunContext
from landscape_exp.job.costs import timed_points
from landscape_exp.job.preflight import check_surface_resources
from landscape_exp.job.tracking import make_tracker, run_id_for, tracked_summary
from landscape_exp.surface.grid import Grid, parse_grid
from landscape_exp.surface.loop import PointMeasure, compute_surface
from landscape_exp.surface.measures import LossMeasure, bn_recompute_data
from landscape_exp.surface.plane import Plane
from landscape_exp.surface.sharding import AlreadyMerged, merge_shards, shard_indices, shard_path, worker_shard
from landscape_exp.surface.store import SurfaceFile, read_surface
from landscape_exp.weights.space import WeightSpace


def grid_for(ctx: RunContext, ndim: int) -> Grid:
    """The ``x=``/``y=`` grid (the task's default where not given); one-line errors for a malformed
    spec or a ``y`` given to a 1D task. surface2d and plane take a single ``y`` value too (a 1xN
    grid such as ``y=0:0:1``, as the original tool did), drawn as a 1D curve."""
    s = ctx.settings
    if ndim == 1:
        if s.y:
            raise UserError(f"task {s.task!r} is one-dimensional; drop y={s.y}")
        return parse_grid(s.x)
    return parse_grid(s.x, s.y, single_y=s.task in ("surface2d", "plane"))


@dataclass(frozen=True)
class Target:
    """The surface file and this process's shard of it."""

    path: Path
    count: int = 1
    index: int = 0

    @property
    def store_path(self) -> Path:
        return shard_path(self.path, self.count, self.index) if self.count > 1 else self.path

    def indices(self, grid: Grid) -> list[int] | None:
        return shard_indices(grid.size, self.count, self.index) if self.count > 1 else None


def surface_target(ctx: RunContext, default_name: str = "surface.h5", *, shardable: bool = True) -> Target:
    """``surf_file``, else, for a multirun over ``shard.index``, the surface's own directory in the
    sweep (``job["surface_home"]``, chosen by run.py: every shard of one surface names the same
    one, each surface of the sweep its own), else the job directory's (shared by the workers of
    one job), else ``<run dir>/<default_name>``. The shard: ``shard.count/index``, split again
    among the workers of one job (submitit tasks_per_node). A merged surface's figures, summary
    and W&B run go next to its file (:func:`surface_result`)."""
    s = ctx.settings
    count, index = s.shard.count, s.shard.index
    if not shardable and count > 1:
        raise UserError(f"task={s.task} computes its surface in one job; drop shard.count (it must be 1)")
    worker = ctx.job.get("worker")
    if worker:
        count, index = worker_shard(count, index, int(worker["count"]), int(worker["rank"]))
    if s.surf_file:
        path = Path(s.surf_file)
    elif s.shard.count > 1 and ctx.job.get("surface_home"):
        path = Path(str(ctx.job["surface_home"])) / default_name
    elif s.shard.count > 1 and ctx.job.get("sweep_dir"):  # a launcher that names no home: all meet here
        path = Path(str(ctx.job["sweep_dir"])) / default_name
    elif count > 1 and ctx.job.get("job_dir"):
        path = Path(str(ctx.job["job_dir"])) / default_name
    else:
        path = ctx.out_dir / default_name
    return Target(path, count, index)


def check_target(ctx: RunContext, target: Target, grid: Grid, num_metrics: int) -> None:
    """Memory, disk and writability, before any expensive work."""
    check_surface_resources(grid.size, num_metrics, target.path, figures=ctx.settings.plot.enabled)


def loss_measure(ctx: RunContext, model: nn.Module, dataset: ImageDataset) -> LossMeasure:
    """Loss and accuracy on ``eval.splits`` with the configured precision; the measure's
    ``model`` is the one to move (``channels_last`` gives a new module)."""
    s = ctx.settings
    precision = ctx.precision
    splits = ctx.eval_splits(dataset, precision)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    bn_data = bn_recompute_data(model, dataset, splits, ctx.device, channels_last=bool(precision.channels_last),
                                full_train=s.eval.data_split == 1) if s.eval.bn_recompute else None
    return LossMeasure(model, splits, s.eval.loss, ctx.eval_batch_size, precision, (s.eval.data_split, s.eval.split_idx),
                       s.eval.points_per_pass, torch.compile(model) if precision.compile else None,
                       bn_data=bn_data, bn_batch_size=ctx.eval_batch_size)


@dataclass(frozen=True)
class Origin:
    """The point the surface is centred on: a checkpoint of a model on a dataset."""

    checkpoint: Path
    model_cfg: Mapping[str, Any]
    dataset_name: str


def fingerprint(ctx: RunContext, grid: Grid, origin: Origin, plane: Plane, measure: PointMeasure) -> dict[str, Any]:
    """Everything that determines the values: a rerun with another fingerprint is refused."""
    return {
        "task": ctx.settings.task, "grid": [grid.x.spec()] + ([grid.y.spec()] if grid.y else []),
        "model": dict(origin.model_cfg), "checkpoint_sha256": file_sha256(origin.checkpoint),
        "directions_sha256": tensors_sha256(plane.tensors), "direction_type": ctx.settings.direction.type,
        "dataset": ctx.settings.dataset_identity(), "loss": ctx.settings.eval.loss, **measure.fingerprint(),
    }


def attributes(ctx: RunContext, origin: Origin, plane: Plane, measure: PointMeasure, normalization: str,
               extra: Mapping[str, Any]) -> dict[str, Any]:
    """The surface file's descriptive attributes (the original tool's plus provenance)."""
    return {
        "task": ctx.settings.task, "model": origin.model_cfg.get("name", "?"), "dataset": origin.dataset_name,
        "normalization": normalization, "checkpoint": str(Path(origin.checkpoint).resolve()),
        "dir_file": str(plane.dir_file), **extra, "config": ctx.config, "versions": versions(),
        **measure.attrs(),
    }


def run_surface(ctx: RunContext, *, target: Target, grid: Grid, origin: Origin, plane: Plane, measure: PointMeasure,
                space: WeightSpace, extra_attrs: Mapping[str, Any] | None = None,
                extra_datasets: Mapping[str, Any] | None = None, normalization: str | None = None,
                desc: str = "surface") -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Compute this process's pending points of the surface and, when every shard is done, merge
    them. Returns ``(surface, stats)``: the surface as :func:`read_surface` gives it, or None
    while other shards still have points to compute."""
    s = ctx.settings
    # A merge of all shards after this process began includes this worker's points, whatever this
    # worker still had to do: its sibling workers (started with it) may be much faster to get here.
    started = float(ctx.job.get("process_started", time.time()))
    store = SurfaceFile(
        target.store_path, grid, measure.metrics, fingerprint=fingerprint(ctx, grid, origin, plane, measure),
        attrs=attributes(ctx, origin, plane, measure, normalization or plane.info.get("normalization", "none"),
                         extra_attrs or {}),
        indices=target.indices(grid), extra_datasets={"dir_file": str(plane.dir_file), **(extra_datasets or {})},
        move_corrupt_aside=s.surface_recover,
    )
    ctx.tracker.attach_training(Path(origin.checkpoint))  # a checkpoint trained elsewhere: its history
    with store:
        plane.save()  # only now: the surface file accepted this config
        todo = len(store.pending())
        what = (f"shard {target.index} of {target.count}: {len(store.indices)} of {grid.size}" if target.count > 1
                else f"{grid.size}")
        print(f"{s.task}: {what} points ({store.num_done} already done, {todo} to compute) -> {target.store_path}")
        stats = compute_surface(space, grid, store, _Announcing(measure, lambda: surface_cheaper(ctx, grid)),
                                progress=ctx.progress, desc=desc)
    if target.count > 1:
        try:
            merged = merge_shards(target.path, target.count, require_complete=False, since=started)
            if merged is None:
                print(f"{s.task}: shard {target.index} of {target.count} done; other shards still have points to "
                      f"compute, and the one that completes the set merges them into {target.path}")
        except UserError as e:  # another shard is merging right now, or a shard is inconsistent
            print(f"not merged yet: {e}")
            merged = None
        except AlreadyMerged as e:  # a worker that finished with this one merged and published
            print(f"all {target.count} shards done: {e}; its figures and summary.json are in {target.path.parent}")
            return None, {"shard": target.index, "shard_count": target.count, "shard_file": str(target.store_path),
                          "merged_by_another": str(target.path), **stats}
        if merged is None:
            return None, {"shard": target.index, "shard_count": target.count, "shard_file": str(target.store_path), **stats}
        print(f"all {target.count} shards done: merged into {target.path}")
    return read_surface(target.path), stats


class _Announcing:
    """``measure`` whose point stream says, after the first point, what the rest will cost."""

    def __init__(self, measure: PointMeasure, cheaper: Callable[[], str]):
        self.measure, self.cheaper, self.metrics = measure, cheaper, measure.metrics

    def points(self, space: WeightSpace, grid: Grid, pending: list[int]) -> Iterator[tuple[int, dict[str, float]]]:
        return timed_points(self.measure.points(space, grid, pending), len(pending), self.cheaper)


@contextlib.contextmanager
def surface_result(ctx: RunContext, target: Target, checkpoint: Path | None = None) -> Iterator[RunContext]:
    """Where a finished surface is summarized, drawn and published: the job's own context, or,
    for a surface merged from shards, its file's directory with a W&B run of its own (id from
    that directory), so figures, ``summary.json`` and the artifact land in one place whichever
    shard finishes last. Pair with :func:`result_summary`."""
    home = target.path.parent
    if target.count == 1 or home.resolve() == ctx.out_dir.resolve():
        yield ctx
        return
    s = ctx.settings
    tags = [s.task, str(s.model.get("name", "")), str(s.dataset.get("name", ""))]
    tracker = make_tracker(s.logger, run_dir=home, config=ctx.config, job_type=s.task, name=f"{home.name} (merged)",
                           group=ctx.job.get("group"), tags=[t for t in tags if t], run_id=run_id_for(home), alongside=True)
    if checkpoint is not None:
        tracker.attach_training(checkpoint)
    try:
        yield dataclasses.replace(ctx, out_dir=home, tracker=tracker)
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()


def result_summary(ctx: RunContext, rctx: RunContext, target: Target, summary: dict[str, Any],
                   stats: Mapping[str, Any]) -> dict[str, Any]:
    """The job's summary. For a merged surface (``rctx`` is not ``ctx``): ``summary`` goes to its
    directory's ``summary.json``, W&B run and ``.hydra/config.yaml`` (the config without the
    shard index, so the directory reads as one run), and the job returns its shard's numbers
    and ``merged_into``."""
    if rctx is ctx:
        return summary
    cfg = dict(ctx.config)
    cfg["shard"] = {"count": ctx.settings.shard.count}
    with atomic_path(rctx.out_dir / ".hydra" / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = {**summary, "merged_shards": target.count}
    write_json(rctx.out_dir / "summary.json", summary)
    rctx.tracker.summary(tracked_summary(summary))  # measures too, as every job's run gets them
    print(f"merged surface, figures and summary.json: {rctx.out_dir}")
    # the target's shard, not shard.index: the workers of one job take their shards by rank
    return {**stats, "shard": target.index, "shard_count": target.count, "merged_into": str(rctx.out_dir)}


def publish(ctx: RunContext, prefix: str, figures: Sequence[Path], artifacts: Sequence[Path], artifact_name: str,
            kind: str = "surface") -> list[str]:
    """Figures and files to the tracker (after they are on disk); returns the figure paths."""
    ctx.tracker.log_images(list(figures), prefix=f"{prefix}/")
    for f in figures:
        if f.suffix == ".html":
            ctx.tracker.log_html(f, f"{prefix}/{f.stem}")
    ctx.tracker.artifact(list(artifacts), name=artifact_name, kind=kind)
    return [str(f) for f in figures]


def grid_work(grid: Grid) -> str:
    shape = f"{grid.x.num}" if grid.y is None else f"{grid.x.num}x{grid.y.num}"
    return f"a {shape} grid ({grid.size:,} points)"


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
