#!/usr/bin/env python
"""Surface speed: the original tool's evaluation loop against this engine, side by side.

Times, in one run, on the same model, weights, images, directions and grid points:

  reference  the original loss-landscape loop (plot_surface.py crunch -> net_plotter.set_weights ->
             evaluation.eval_loss): torchvision's CIFAR10 dataset class reading CIFAR-10 pickle files
             (``cifar-10-batches-py``, written here with random images), ToTensor + Normalize,
             DataLoader(batch 128, 2 workers, shuffle=False), model.eval(), ``p.data = w + d`` from
             host tensors at every point, ``.item()`` per batch, default TF32 settings;
  engine     surface.measures.LossMeasure, the code path of ``task=surface2d``, in each variant
             (batch size, BatchNorm folding, channels_last, bf16, torch.compile).

Variants rotate in rounds (reference, v1, v2, ..., reference, v1, ...), so a disturbance of the
shared machine hits every variant alike; each variant's seconds per point is its best round.
Printed and written to JSON: seconds per point, the speed-up over the reference, the largest
relative loss error against the reference, the load average before and after, and a batch-size
sweep of the forward pass. ``--bookkeeping-grid N`` also times the per-point bookkeeping
(journal, HDF5 replace, progress) on an N x N grid of a tiny model, at its start and its end.

  python benchmarks/bench_surface.py                                  # CPU: ResNet-20 and ResNet-56
  python benchmarks/bench_surface.py --model resnet56 --num-samples 50000 --points 6 --rounds 1 \\
      --device cuda --variants previous,fp32,tf32,bf16,bf16_compile --json resnet56_gpu.json   # GPU form
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/bench_common.py

from landscape_exp.config.sections import EvalSettings  # noqa: E402
from landscape_exp.data.datasets import ImageDataset, ImageSplit  # noqa: E402
from landscape_exp.data.device import DeviceData  # noqa: E402
from landscape_exp.engine import cpu  # noqa: E402
from landscape_exp.engine.cpu import cpu_threads  # noqa: E402
from landscape_exp.engine.evaluation import evaluate_sums  # noqa: E402
from landscape_exp.engine.folding import can_fuse  # noqa: E402
from landscape_exp.engine.precision import Precision  # noqa: E402
from landscape_exp.surface.measures import LossMeasure  # noqa: E402
from landscape_exp.weights.directions import create_random_direction  # noqa: E402
from landscape_exp.weights.params import snapshot  # noqa: E402
from landscape_exp.weights.space import WeightSpace  # noqa: E402

from bench_common import bench_model, configured_batch, configured_defaults, cpu_description, cpu_record, load_average, sync  # noqa: E402

# The original tool's CIFAR-10 normalization (cifar10/dataloader.py).
CIFAR_MEAN = tuple(x / 255.0 for x in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(x / 255.0 for x in (63.0, 62.1, 66.7))
PREVIOUS_BATCH = 1024  # the engine's CPU batch before issue 16


# -- the reference ---------------------------------------------------------------------------------

def write_cifar_files(root: Path, num_train: int, num_test: int, seed: int) -> Path:
    """CIFAR-10's python layout under ``root/cifar-10-batches-py`` (data_batch_1..5, test_batch,
    batches.meta: pickled dicts, 3072 uint8 values per image in CHW order), random images."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(name: str, n: int, label: str) -> None:
        entry = {"batch_label": label, "labels": rng.integers(0, 10, n).tolist(),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f)

    sizes = [len(a) for a in np.array_split(np.arange(num_train), 5)]
    for i, n in enumerate(sizes, 1):
        batch(f"data_batch_{i}", n, f"training batch {i} of 5")
    batch("test_batch", num_test, "testing batch 1 of 1")
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": sizes[0], "num_vis": 3072,
                     "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                     "truck"]}, f)
    return root


class LocalCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 over files written by :func:`write_cifar_files`. The class checks
    every file's md5 in its constructor (``download=False`` too), so the real files' checksums are
    replaced by None (the files must exist); loading, PIL conversion and transforms are torchvision's."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


def reference_loader(root: Path, device: torch.device, batch_size: int = 128, workers: int = 2) -> torch.utils.data.DataLoader:
    """The original's train loader (cifar10/dataloader.py): ToTensor + Normalize, no shuffle."""
    transform = T.Compose([T.ToTensor(), T.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD)])
    trainset = LocalCIFAR10(root=str(root), train=True, download=False, transform=transform)
    return torch.utils.data.DataLoader(trainset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       pin_memory=device.type == "cuda")


def reference_surface(net: nn.Module, weights: Sequence[torch.Tensor], directions: Sequence[Sequence[torch.Tensor]],
                      points: Sequence[tuple[float, float]], loader: Any, device: torch.device,
                      accuracies: list[float] | None = None) -> list[float]:
    """plot_surface.crunch's loop: set_weights from host directions, then eval_loss per point.
    Returns the losses; the accuracies (percent) go to ``accuracies`` when given."""
    criterion = nn.CrossEntropyLoss()
    dx, dy = ([d.cpu() for d in ds] for ds in directions)  # the original keeps directions on the host
    losses = []
    for coord in points:
        changes = [d0 * coord[0] + d1 * coord[1] for d0, d1 in zip(dx, dy)]  # net_plotter.set_weights
        for p, w, d in zip(net.parameters(), weights, changes):
            p.data = w + d.to(w.device, w.dtype)
        correct, total_loss, total = 0, 0.0, 0  # evaluation.eval_loss
        net.eval()
        with torch.no_grad():
            for inputs, targets in loader:
                batch_size = inputs.size(0)
                total += batch_size
                inputs, targets = inputs.to(device), targets.to(device)
                outputs = net(inputs)
                loss = criterion(outputs, targets)
                total_loss += loss.item() * batch_size
                _, predicted = torch.max(outputs.data, 1)
                correct += predicted.eq(targets).sum().item()
        losses.append(total_loss / total)
        if accuracies is not None:
            accuracies.append(100.0 * correct / total)
    return losses


# -- the engine ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    label: str
    mode: str = "fp32"
    fold_bn: bool = False
    channels_last: bool = False
    fuse: bool = False  # conv-ReLU(-add) fused into oneDNN convolutions (CPU)
    compile: bool = False
    before: bool = False  # the engine before issue 16: the model itself at batch 1024 (bf16: autocast)
    batch: int = 0  # 0: the configured batch for the device


FAST = dict(fold_bn=True, channels_last=True, fuse=True)
VARIANTS = {
    "previous": Variant("engine fp32, batch 1024 (before)", before=True),
    "fp32": Variant("engine fp32"),
    "fold": Variant("engine fp32 +fold", fold_bn=True),
    "cl": Variant("engine fp32 +channels_last", channels_last=True),
    "fold_cl": Variant("engine fp32 +fold +channels_last", fold_bn=True, channels_last=True),
    "fast": Variant("engine fp32 +fold +channels_last +fuse", **FAST),
    "fast_b64": Variant("engine fp32 +fold +channels_last +fuse", **FAST, batch=64),
    "fast_compile": Variant("engine fp32 +fold +cl +fuse +compile", **FAST, compile=True),
    "tf32": Variant("engine tf32 +fold +channels_last", "tf32", fold_bn=True, channels_last=True),
    "bf16_before": Variant("engine bf16 autocast, batch 1024 (before)", "bf16", before=True),
    "bf16": Variant("engine bf16 +fold +channels_last +fuse", "bf16", **FAST),
    "bf16_compile": Variant("engine bf16 +fold +cl +fuse +compile", "bf16", **FAST, compile=True),
}
CPU_VARIANTS = "previous,fp32,fold,cl,fold_cl,fast,fast_b64,fast_compile,bf16_before,bf16,bf16_compile"


class PointList:
    """``grid.point(k)`` for a list of points (what LossMeasure.points asks of a grid)."""

    def __init__(self, points: Sequence[tuple[float, float]]):
        self.points = list(points)

    def point(self, k: int) -> tuple[float, float]:
        return self.points[k]


class EngineRun:
    """One variant, built once: its own copy of the model moved by a WeightSpace, its measure
    (``surface.measures.LossMeasure``; the engine before issue 16: ``evaluate_sums`` on the model)."""

    def __init__(self, v: Variant, model: nn.Module, split: ImageSplit, dirs: list, batch: int, device: torch.device,
                 configured: Precision | None = None):
        self.v, self.device = v, device
        self.model = copy.deepcopy(model)
        if v.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.space = WeightSpace(self.model, "weights", dirs)
        self.data = DeviceData(split, CIFAR_MEAN, CIFAR_STD, device, channels_last=v.channels_last)
        self.batch = PREVIOUS_BATCH if v.before else v.batch or batch
        self.precision = Precision(v.mode, v.channels_last, v.compile, v.fold_bn)
        self.default = (not v.before and not v.batch and self.precision == configured
                        and v.fuse == can_fuse(device, self.precision.dtype))
        self.note = variant_note(v, device)
        if not v.before:
            self.measure = LossMeasure(self.model, {"train": self.data}, "crossentropy", self.batch, self.precision, (1, 0),
                                       fuse=v.fuse)

    def losses(self, points: Sequence[tuple[float, float]]) -> list[float]:
        out = []
        if self.v.before:
            for pt in points:
                self.space.move_to(pt)
                total, _ = evaluate_sums(self.model, self.data, batch_size=self.batch, precision=self.precision)
                out.append(float(total) / len(self.data))
        else:
            out = [vals["train_loss"] for _, vals in self.measure.points(self.space, PointList(points), list(range(len(points))))]
        sync(self.device)
        self.space.restore()
        return out


def variant_note(v: Variant, device: torch.device) -> str:
    """What this machine changes about a variant: bf16 without bf16 kernels runs emulated here
    (a real run falls back to fp32: precision.resolve_precision), fusion without the kernels is off."""
    f = cpu.cpu_features()
    if device.type != "cpu":
        return ""
    if v.mode == "bf16" and not f.bf16_kernels:
        return "bf16 emulated, unfused: this CPU has no bf16 kernels (precision=bf16 runs fp32 here)"
    if v.fuse and not v.before and not can_fuse(device, torch.bfloat16 if v.mode == "bf16" else None):
        return "unfused: the fused kernels do not run here"
    return ""


def cifar_split(root: Path) -> ImageSplit:
    """The training images of the CIFAR-10 files as the engine holds them (uint8, NCHW)."""
    tv = LocalCIFAR10(root=str(root), train=True, download=False)
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(tv.data.transpose(0, 3, 1, 2))),
                      torch.tensor(tv.targets, dtype=torch.int64))


def _old_world(conn: Any, root: str, model: nn.Module, directions: list, device: str, batch_size: int, workers: int,
               threads: int) -> None:
    if sys.platform == "linux":  # a spawned process inherits "spawn"; the original's loader workers fork
        multiprocessing.set_start_method("fork", force=True)
    torch.set_num_threads(threads)
    dev = torch.device(device)
    loader = reference_loader(Path(root), dev, batch_size, workers)
    net = copy.deepcopy(model).to(dev)
    weights = [p.data for p in net.parameters()]  # net_plotter.get_weights
    before: dict[str, EngineRun] = {}
    while (msg := conn.recv()) is not None:
        key, points = msg
        t0 = time.perf_counter()
        if key == "reference":
            losses = reference_surface(net, weights, directions, points, loader, dev)
        else:
            if key not in before:
                before[key] = EngineRun(VARIANTS[key], model.to(dev), cifar_split(Path(root)), directions, 0, dev)
            losses = before[key].losses(points)
        conn.send((losses, time.perf_counter() - t0))


class OldWorld:
    """The reference and the engine as it was before issue 16, in a process of their own: spawned,
    so a fresh interpreter with the C library's defaults, as the original tool runs (the engine now
    changes how glibc keeps freed memory, for the whole process: engine.memory.keep_freed_memory).
    Serves one timed call at a time, so its rounds alternate with the engine's; only the loop is
    timed, not the messages."""

    def __init__(self, root: Path, model: nn.Module, directions: list, device: torch.device, batch_size: int,
                 workers: int, threads: int):
        ctx = torch.multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_old_world, daemon=False,
                                args=(child, str(root), copy.deepcopy(model).cpu(), [[d.cpu() for d in ds] for ds in directions],
                                      str(device), batch_size, workers, threads))
        self.proc.start()

    def __call__(self, key: str, points: Sequence[tuple[float, float]]) -> tuple[list[float], float]:
        self.conn.send((key, list(points)))
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:  # it is gone already
            pass
        self.proc.join(60)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


# -- measurements ----------------------------------------------------------------------------------

def timed(fn: Callable[[], list[float]]) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def calibrate_batchnorm(model: nn.Module, split: ImageSplit, device: torch.device) -> None:
    """BatchNorm running statistics from the data (cumulative average in train mode), as a trained
    network has them, so folding and the losses are tested away from the identity statistics of
    a fresh init."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    data = DeviceData(split, CIFAR_MEAN, CIFAR_STD, device)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x, _ in data.batches(256):
            model(x)
    for m in norms:
        m.momentum = 0.1
    model.eval()


def batch_sweep(model: nn.Module, split: ImageSplit, sizes: Sequence[int], device: torch.device,
                rounds: int = 2) -> dict[int, float]:
    """Seconds of one fp32 forward pass over the split per batch size (BatchNorm folded, channels_last,
    fused where the device has the kernels: the default)."""
    m = copy.deepcopy(model).to(memory_format=torch.channels_last)
    measure = LossMeasure(m, {}, "crossentropy", 1, Precision("fp32", True, False, True), (1, 0))
    data = DeviceData(split, CIFAR_MEAN, CIFAR_STD, device, channels_last=True)
    best = {b: float("inf") for b in sizes}
    for r in range(rounds + 1):
        for b in sizes:
            t0 = time.perf_counter()
            evaluate_sums(measure.forward, data, batch_size=b)
            sync(device)
            if r:  # round 0 warms up
                best[b] = min(best[b], time.perf_counter() - t0)
    return best


def bench_model_on_cpu_or_gpu(name: str, args: argparse.Namespace, root: Path, device: torch.device, points_n: int,
                              rounds: int, configured: tuple[Precision, EvalSettings]) -> dict[str, Any]:
    split = cifar_split(root)
    ds = ImageDataset("cifar10-format", split, split, 10, CIFAR_MEAN, CIFAR_STD)
    model = bench_model(name, args.checkpoint, ds, args.seed, device)
    if not args.checkpoint:
        calibrate_batchnorm(model, split, device)
    weights = snapshot(model, "weights")
    dirs = [create_random_direction(weights, seed=1), create_random_direction(weights, seed=2)]
    rng = np.random.default_rng(args.seed)
    points = [(0.0, 0.0)] + [tuple(float(v) for v in rng.uniform(-1, 1, 2)) for _ in range(points_n - 1)]
    precision, ev = configured
    batch = args.batch_size or configured_batch(name, ev, device)

    old = OldWorld(root, model, dirs, device, args.ref_batch_size, args.workers, torch.get_num_threads())
    print(f"\n{name}: {len(split)} images (CIFAR-10 files, random pixels), {len(points)} points x {rounds} rounds, "
          f"device {device}, {torch.get_num_threads()} threads, engine batch {batch}", flush=True)
    keys = [k for k in args.variants if not VARIANTS[k].compile or name in args.compile_models]
    runs = {key: EngineRun(VARIANTS[key], model, split, dirs, batch, device, precision) for key in keys
            if not VARIANTS[key].before}
    calls: dict[str, Callable[[list], tuple[list[float], float]]] = {"reference": lambda pts: old("reference", pts)}
    for key in keys:
        if VARIANTS[key].before:
            calls[key] = lambda pts, key=key: old(key, pts)
        else:
            calls[key] = lambda pts, run=runs[key]: timed(lambda: run.losses(pts))
    timings: dict[str, list[float]] = {k: [] for k in calls}
    losses: dict[str, list[float]] = {}
    compile_s: dict[str, float] = {}
    try:
        for r in range(rounds):
            for key, call in calls.items():
                if r == 0:  # a warm-up point outside the timing: loader start, first touch, compilation
                    _, dt0 = call(points[:1])
                    if VARIANTS.get(key, Variant("")).compile:
                        compile_s[key] = dt0
                losses[key], dt = call(points)
                timings[key].append(dt / len(points))
            print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in timings.items()) + " s/pt", flush=True)
    finally:
        old.close()
    ref = np.array(losses["reference"])
    ref_spp = min(timings["reference"])
    rows = [{"variant": f"reference (original loop, batch {args.ref_batch_size}, {args.workers} workers)", "key": "reference",
             "seconds_per_point": ref_spp, "rounds": timings["reference"], "speedup": 1.0,
             "speedup_paired_median": 1.0, "speedup_paired_range": [1.0, 1.0], "max_rel_loss_error": 0.0,
             "max_error_over_loss_range": 0.0, "batch_size": args.ref_batch_size,
             "minutes_51x51": grid_minutes(ref_spp)}]
    for key in keys:
        v, run = VARIANTS[key], runs.get(key)
        spp = min(timings[key])
        diff = np.abs(np.array(losses[key]) - ref)
        # paired within each round (the reference ran just before): robust to the machine's drift
        paired = sorted(t_ref / t for t_ref, t in zip(timings["reference"], timings[key]))
        note = run.note if run is not None else variant_note(v, device)
        rows.append({"variant": v.label + (" [default]" if run is not None and run.default else "")
                     + (f" [{note}]" if note else ""), "key": key, "note": note,
                     "seconds_per_point": spp, "rounds": timings[key], "speedup": ref_spp / spp,
                     "speedup_paired_median": float(np.median(paired)), "speedup_paired_range": [paired[0], paired[-1]],
                     "max_rel_loss_error": float(np.max(diff / np.abs(ref))),
                     "max_error_over_loss_range": float(np.max(diff) / max(np.ptp(ref), 1e-300)),
                     "batch_size": PREVIOUS_BATCH if v.before else v.batch or batch,
                     "num_folded": run.measure.num_folded if run is not None else 0,
                     "num_fused": run.measure.num_fused if run is not None else 0,
                     "minutes_51x51": grid_minutes(spp, compile_s.get(key)),
                     **({"first_point_seconds_with_compile": compile_s[key],
                         "compile_cache": "warm" if args.warm_compile_cache else "cold"} if key in compile_s else {})})
    sweep = batch_sweep(model, split, args.batch_sweep, device) if args.batch_sweep else {}
    return {"model": name, "num_samples": len(split), "points": points, "engine_batch_size": batch,
            "reference_losses": losses["reference"], "results": rows, "batch_sweep_seconds": sweep}


def grid_minutes(seconds_per_point: float, first_point_seconds: float | None = None, points: int = 51 * 51) -> float:
    """Minutes for the paper's 51x51 surface at this rate over the same images; a compiled
    variant's first point (compilation included) counted once."""
    extra = first_point_seconds - seconds_per_point if first_point_seconds is not None else 0.0
    return (points * seconds_per_point + max(extra, 0.0)) / 60


def bookkeeping(n: int, device: torch.device, flush_seconds: float = 5.0) -> dict[str, Any]:
    """Points per second of a whole ``n x n`` surface of a tiny model (16 images, a 4-unit MLP), so
    the per-point bookkeeping (journal line, HDF5 replace every ``flush_seconds``, progress) is all
    there is: over the first and the last 10% of the points."""
    from landscape_exp.data.datasets import load_dataset
    from landscape_exp.surface.grid import parse_grid
    from landscape_exp.surface.loop import compute_surface
    from landscape_exp.surface.store import SurfaceFile

    ds = load_dataset({"name": "synthetic", "num_classes": 10, "channels": 1, "image_size": 4, "num_train": 16,
                       "num_test": 1, "seed": 0})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 10)).eval().to(device)
    w = snapshot(model, "weights")
    space = WeightSpace(model, "weights", [create_random_direction(w, seed=1), create_random_direction(w, seed=2)])
    grid = parse_grid(f"-1:1:{n}", f"-1:1:{n}")
    measure = LossMeasure(model, {"train": DeviceData(ds.train, ds.mean, ds.std, device)}, "crossentropy", 16,
                          Precision(), (1, 0))
    stamps: list[float] = []
    inner = measure.points

    def stamped(*a: Any) -> Any:
        for item in inner(*a):
            yield item
            stamps.append(time.perf_counter())

    measure.points = stamped  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "surface.h5"
        with SurfaceFile(path, grid, measure.metrics, fingerprint={"bench": n}, flush_seconds=flush_seconds,
                         attrs={"config": {"a": 1}}) as store:
            stats = compute_surface(space, grid, store, measure, progress=sys.stderr.isatty(), desc="bookkeeping")
        size = path.stat().st_size
    k = max(1, len(stamps) // 10)
    first = k / (stamps[k] - stamps[0])
    last = k / (stamps[-1] - stamps[-1 - k])
    return {"grid": f"{n}x{n}", "points": grid.size, "points_per_second": stats["points_per_second"],
            "first_10pct_points_per_second": first, "last_10pct_points_per_second": last,
            "last_over_first": last / first, "surface_file_bytes": size}


def print_model(rec: dict[str, Any]) -> None:
    print(f"\n{rec['model']}, {rec['num_samples']} images, {len(rec['points'])} points (seconds per point: best round; "
          f"speed-up: best round over best round, and the median [range] of the rounds' own ratios, each round's "
          f"reference against the variant timed right after it; largest relative loss error; largest error over the "
          f"loss range of the points; minutes for a 51x51 surface over these images at that rate, compilation included)")
    print(f"  {'variant':56s} {'batch':>5s} {'s/pt':>7s} {'speedup':>8s} {'paired median [range]':>22s} {'rel.err':>9s} "
          f"{'err/range':>9s} {'51x51 min':>9s}")
    for r in rec["results"]:
        lo, hi = r["speedup_paired_range"]
        print(f"  {r['variant']:56s} {r['batch_size']:5d} {r['seconds_per_point']:7.3f} {r['speedup']:7.2f}x "
              f"{r['speedup_paired_median']:7.2f}x [{lo:5.2f}, {hi:5.2f}] {r['max_rel_loss_error']:9.1e} "
              f"{r['max_error_over_loss_range']:9.1e} {r['minutes_51x51']:9.1f}")
    for r in rec["results"]:
        if "first_point_seconds_with_compile" in r:
            print(f"  {r['key']}: first point {r['first_point_seconds_with_compile']:.1f} s with compilation "
                  f"({r['compile_cache']} cache), then {r['seconds_per_point']:.3f} s per point")
    if rec["batch_sweep_seconds"]:
        print("  forward pass over the split, fp32 +fold +channels_last +fuse, by batch size: "
              + ", ".join(f"{b}: {s:.2f} s" for b, s in rec["batch_sweep_seconds"].items()))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20,resnet56", help="comma list of conf/model names")
    ap.add_argument("--num-samples", type=int, default=2000, help="training images in the CIFAR-10 files")
    ap.add_argument("--points", default="3,2", help="grid points timed per round, per model (comma list, last repeats)")
    ap.add_argument("--rounds", default="2,2", help="alternating rounds per model (comma list, last repeats)")
    ap.add_argument("--variants", default=None, help=f"engine variants, comma list of: {', '.join(VARIANTS)} "
                    f"(default on CPU: {CPU_VARIANTS})")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="engine batch (default: what a run gets, chosen for the device and model by "
                         "conf/config.yaml's eval section)")
    ap.add_argument("--batch-sweep", default="32,64,128,256,512,1024", help="batch sizes of the forward-pass sweep ('' = none)")
    ap.add_argument("--ref-batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference (the original's 2)")
    ap.add_argument("--bookkeeping-grid", type=int, default=101, help="N: time an N x N surface of a tiny model (0 = skip)")
    ap.add_argument("--compile-models", default="resnet20",
                    help="models that also get the torch.compile variants (comma list; "
                         "compiling ResNet-56 on 2 cores takes minutes)")
    ap.add_argument("--warm-compile-cache", action="store_true",
                    help="keep torch.compile's on-disk cache (default: an empty one, so compile times are cold)")
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint of the (single) model")
    ap.add_argument("--json", default="benchmark_surface.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(cpu_threads(args.threads))
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    default_variants = CPU_VARIANTS if device.type == "cpu" else "previous,fp32,fold_cl,tf32,bf16,bf16_compile"
    args.variants = [v.strip() for v in (args.variants or default_variants).split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    args.compile_models = [m.strip() for m in args.compile_models.split(",")]
    args.batch_sweep = [int(b) for b in str(args.batch_sweep).split(",") if b.strip()]
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    per = lambda s, i: [int(v) for v in s.split(",")][min(i, len(s.split(",")) - 1)]  # noqa: E731
    configured = configured_defaults(device)
    load_before = load_average()
    print(f"load average before: {load_before}; CPU {cpu_description()}")
    record: dict[str, Any] = {
        "benchmark": "surface_speed", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description(),
        "cpu": cpu_record(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "configured_precision": vars(configured[0]) | {}, "load_average_before": load_before, "models": [],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[1:] if argv is None else argv,
    }
    with tempfile.TemporaryDirectory() as tmp:
        if not args.warm_compile_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor-cache")
        root = write_cifar_files(Path(tmp), args.num_samples, 10, args.seed)
        for i, name in enumerate(models):
            rec = bench_model_on_cpu_or_gpu(name, args, root, device, per(args.points, i), per(args.rounds, i), configured)
            record["models"].append(rec)
            print_model(rec)
    if args.bookkeeping_grid:
        record["bookkeeping"] = bk = bookkeeping(args.bookkeeping_grid, device)
        print(f"\nbookkeeping, {bk['grid']} grid of a tiny model: {bk['points_per_second']:.0f} points/s overall, "
              f"{bk['first_10pct_points_per_second']:.0f} over the first 10%, {bk['last_10pct_points_per_second']:.0f} over "
              f"the last 10% (ratio {bk['last_over_first']:.2f}); surface file {bk['surface_file_bytes'] / 1024:.0f} KiB")
    record["load_average_after"] = load_average()
    print(f"load average after: {record['load_average_after']}")
    Path(args.json).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return record


if __name__ == "__main__":
    main()
