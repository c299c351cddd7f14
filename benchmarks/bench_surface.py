#!/usr/bin/env python
"""Surface evaluation: the original tool's algorithm against this engine, side by side.

Times, in one run, on the same model, data and grid points:
  (a) ``naive``: the original loss-landscape code path -- a torch Dataset with per-sample
      transforms (ToTensor + Normalize) behind a DataLoader at batch 128, ``.item()`` per batch,
      and the weights set from host tensors at every point (``p.data = w + d``), fp32;
  (b) this engine (device-resident uint8 data normalized on the fly, large batches, sums kept on
      the device, fused in-place weight updates) in each requested precision mode, optionally
      with several points per pass (vmap).
Prints points per second, the speed-up over (a) and the relative loss error against (a), and
writes a JSON record.

  python benchmarks/bench_surface.py                                   # CPU, LeNet on digits
  python benchmarks/bench_surface.py --model resnet56 --num-samples 50000 --points 6 \\
      --device cuda --precision fp32,tf32,bf16 --compile                # the GPU measurement
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/bench_common.py

from bench_common import bench_model, sync  # noqa: E402

from landscape_exp.data import DeviceData, ImageSplit, load_dataset  # noqa: E402
from landscape_exp.directions import create_random_direction, snapshot  # noqa: E402
from landscape_exp.evaluation import evaluate_points_sums, evaluate_sums  # noqa: E402
from landscape_exp.precision import Precision  # noqa: E402
from landscape_exp.surface.weight_space import WeightSpace  # noqa: E402


class PerSampleDataset(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 + transforms does: one HWC uint8 image at a time."""

    def __init__(self, split: ImageSplit, mean: tuple[float, ...], std: tuple[float, ...]):
        self.images = split.images.permute(0, 2, 3, 1).numpy()  # HWC, as torchvision keeps it
        self.targets = split.targets.tolist()
        self.transform = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.targets[i]


def naive_surface(model, weights, dx, dy, points, loader, device) -> tuple[list[float], float]:
    """The original evaluation loop (net_plotter.set_weights + evaluation.eval_loss)."""
    criterion = torch.nn.CrossEntropyLoss()
    host_dx = [d.cpu() for d in dx]
    host_dy = [d.cpu() for d in dy]
    losses = []
    t0 = time.perf_counter()
    for a, b in points:
        changes = [d0 * a + d1 * b for d0, d1 in zip(host_dx, host_dy)]  # on the host
        with torch.no_grad():
            for p, w, d in zip(model.parameters(), weights, changes):
                p.data = w + d.to(w.device)
        total_loss, total = 0.0, 0
        with torch.no_grad():
            for inputs, targets in loader:
                bs = inputs.size(0)
                total += bs
                inputs, targets = inputs.to(device), targets.to(device)
                outputs = model(inputs)
                total_loss += criterion(outputs, targets).item() * bs
                outputs.max(1)[1].eq(targets).sum().item()
        losses.append(total_loss / total)
    return losses, time.perf_counter() - t0


def engine_surface(model, space, points, data, precision, batch_size, ppp, device, forward=None) -> tuple[list[float], float]:
    fwd = forward or model
    # one warm-up point (cuDNN autotune, compile) outside the timing
    space.move_to(points[0])
    evaluate_sums(fwd, data, batch_size=batch_size, precision=precision)
    sync(device)
    losses: list[float] = []
    t0 = time.perf_counter()
    if ppp <= 1:
        for pt in points:
            space.move_to(pt)
            total, _ = evaluate_sums(fwd, data, batch_size=batch_size, precision=precision)
            losses.append(float(total) / len(data))
    else:
        for s in range(0, len(points), ppp):
            coeffs = torch.tensor(points[s : s + ppp], dtype=torch.float64)
            total, _ = evaluate_points_sums(model, space.stacked_points(coeffs), data, batch_size=batch_size, precision=precision)
            losses += (total / len(data)).tolist()
    sync(device)
    dt = time.perf_counter() - t0
    space.restore()
    return losses, dt


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--dataset", default="auto", help="digits | synthetic | auto (digits for lenet/mlp, else CIFAR-shaped synthetic)")
    ap.add_argument("--num-samples", type=int, default=None, help="evaluation images (synthetic data; digits: at most 1437)")
    ap.add_argument("--points", type=int, default=8, help="grid points timed (the same for every variant)")
    ap.add_argument("--precision", default="fp32,bf16", help="comma list of fp32, tf32, bf16")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile for each precision")
    ap.add_argument("--points-per-pass", default="1", help="comma list, e.g. 1,8 (vmap over points)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="engine batch (default 1024 CPU / 2500 CUDA)")
    ap.add_argument("--naive-batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the naive reference (original default 2)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint (errors are then on a trained model)")
    ap.add_argument("--json", default="benchmark_surface.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    small = args.model in ("lenet", "mlp")
    ds_name = args.dataset if args.dataset != "auto" else ("digits" if small else "synthetic")
    if ds_name == "digits":
        ds = load_dataset({"name": "digits"})
        split = ds.train if args.num_samples is None else ds.train.subset(torch.arange(min(args.num_samples, len(ds.train))))
    else:
        n = args.num_samples or (2048 if device.type == "cpu" else 50000)
        size, ch = (8, 1) if small else (32, 3)
        ds = load_dataset({"name": "synthetic", "num_classes": 10, "channels": ch, "image_size": size,
                           "num_train": n, "num_test": 1, "seed": args.seed})
        split = ds.train
    model = bench_model(args.model, args.checkpoint, ds, args.seed, device)
    weights = snapshot(model, "weights")
    dx = create_random_direction(weights, seed=1)
    dy = create_random_direction(weights, seed=2)
    rng = np.random.default_rng(args.seed)
    points = [(0.0, 0.0)] + [tuple(float(v) for v in rng.uniform(-1, 1, 2)) for _ in range(args.points - 1)]
    batch = args.batch_size or (2500 if device.type == "cuda" else 1024)

    loader = torch.utils.data.DataLoader(PerSampleDataset(split, ds.mean, ds.std), batch_size=args.naive_batch_size,
                                         shuffle=False, num_workers=args.workers, persistent_workers=args.workers > 0)
    # warm-up the naive path too (worker start-up is part of neither timing)
    naive_surface(model, weights, dx, dy, points[:1], loader, device)
    ref_losses, ref_dt = naive_surface(model, [w.clone() for w in weights], dx, dy, points, loader, device)
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.data = w.clone()
    ref_pps = len(points) / ref_dt
    rows = [{"variant": "naive (original algorithm, fp32, batch %d)" % args.naive_batch_size, "points_per_second": ref_pps,
             "seconds_per_point": 1 / ref_pps, "speedup": 1.0, "max_rel_loss_error": 0.0}]

    variants = []
    for mode in [m.strip() for m in args.precision.split(",") if m.strip()]:
        for comp in ([False, True] if args.compile else [False]):
            for ppp in [int(v) for v in args.points_per_pass.split(",")]:
                if comp and ppp > 1:
                    continue
                variants.append((mode, comp, ppp))
    for mode, comp, ppp in variants:
        prec = Precision(mode, channels_last=args.channels_last, compile=comp)
        m = model.to(memory_format=torch.channels_last) if args.channels_last else model
        data = DeviceData(split, ds.mean, ds.std, device, channels_last=args.channels_last)
        space = WeightSpace(m, "weights", [dx, dy])
        fwd = torch.compile(m) if comp else None
        losses, dt = engine_surface(m, space, points, data, prec, batch, ppp, device, forward=fwd)
        err = float(np.max(np.abs(np.array(losses) - np.array(ref_losses)) / np.abs(np.array(ref_losses))))
        pps = len(points) / dt
        name = f"engine {mode}" + (" channels_last" if args.channels_last else "") + (" compile" if comp else "") + (f" vmap x{ppp}" if ppp > 1 else "")
        rows.append({"variant": name, "points_per_second": pps, "seconds_per_point": 1 / pps, "speedup": pps / ref_pps,
                     "max_rel_loss_error": err})

    print(f"\nmodel {args.model}, {len(split)} images ({ds_name}), {len(points)} points, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({torch.get_num_threads()} threads)"))
    print(f"{'variant':58s} {'pts/s':>9s} {'s/pt':>9s} {'speedup':>8s} {'rel.err':>9s} {'51x51':>9s}")
    for r in rows:
        full = 2601 * r["seconds_per_point"]
        print(f"{r['variant']:58s} {r['points_per_second']:9.2f} {r['seconds_per_point']:9.4f} {r['speedup']:7.1f}x "
              f"{r['max_rel_loss_error']:9.2e} {full / 60:7.1f}min")
    record = {
        "benchmark": "surface_evaluation", "model": args.model, "dataset": ds_name, "num_samples": len(split),
        "points": points, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "engine_batch_size": batch,
        "naive_batch_size": args.naive_batch_size, "workers": args.workers, "results": rows,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[1:] if argv is None else argv,
    }
    Path(args.json).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return record


if __name__ == "__main__":
    main()
