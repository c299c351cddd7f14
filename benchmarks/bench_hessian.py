#!/usr/bin/env python
"""Hessian eigenvalues: time and Hessian-vector products for lambda_max and the top-k.

Builds the model (random init, or --checkpoint), puts --num-samples images on the device (digits
for lenet/mlp, CIFAR-shaped synthetic images otherwise), takes the Hessian of the mean
cross-entropy w.r.t. the weights (biases and BN held fixed, as ignore=biasbn) in fp32, and times

  * one full-data Hessian-vector product (mean of 3, after one warm-up product),
  * lambda_max (k=1) and the top-k by --method, to relative residual --tol,
  * optionally (--bottom) lambda_min by the shift H - lambda_max I,

printing seconds and the number of HVPs for each and writing a JSON record.

  python benchmarks/bench_hessian.py                                      # CPU, mlp on digits
  python benchmarks/bench_hessian.py --model resnet56 --num-samples 10000 --device cuda   # the GPU figure
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/bench_common.py

from bench_common import bench_model, sync  # noqa: E402

from landscape_exp import hessian as H  # noqa: E402
from landscape_exp import spectral  # noqa: E402
from landscape_exp.data import DeviceData, load_dataset  # noqa: E402
from landscape_exp.hvp import HessianOperator  # noqa: E402


def timed(op: HessianOperator, device: torch.device, fn) -> tuple[object, float, int]:
    """(result, seconds, HVPs) of ``fn()``."""
    n0 = op.num_hvp
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0, op.num_hvp - n0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--num-samples", type=int, default=None, help="images (default: 1024 on CPU, 10000 on CUDA; digits: at most 1438)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="HVP batch (default 256 CPU / 512 CUDA)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--method", default="lanczos", choices=spectral.METHODS)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--bottom", action="store_true", help="also lambda_min (shift by lambda_max)")
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint (the spectrum of a trained net differs from init)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="benchmark_hessian.json")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    small = args.model in ("lenet", "mlp")
    if small:
        ds = load_dataset({"name": "digits"})
        n = min(args.num_samples or 1024, len(ds.train))
        split = ds.train.subset(torch.arange(n))
    else:
        n = args.num_samples or (1024 if device.type == "cpu" else 10000)
        ds = load_dataset({"name": "synthetic", "num_classes": 10, "channels": 3, "image_size": 32,
                           "num_train": n, "num_test": 1, "seed": args.seed})
        split = ds.train
    model = bench_model(args.model, args.checkpoint, ds, args.seed, device)
    data = DeviceData(split, ds.mean, ds.std, device)
    sel = H.select_parameters(model, "biasbn")
    batch = args.batch_size or (512 if device.type == "cuda" else 256)
    op = H.make_operator(model, sel, data, batch_size=batch)
    gen = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731
    kw = dict(method=args.method, tol=args.tol, max_iter=args.max_iter, device=device)

    rows = []
    with H.fp32(device):
        v = torch.randn(sel.dim, generator=gen(), dtype=torch.float64)
        op.matvec(v)  # warm-up (cuDNN autotune, allocator)
        _, dt, m = timed(op, device, lambda: [op.matvec(v) for _ in range(3)])
        rows.append({"what": "one HVP", "seconds": dt / m, "num_hvp": 1})
        (vals1, _), dt, m = timed(op, device, lambda: spectral.top_eigenpairs(op.matvec, sel.dim, 1, generator=gen(), **kw))
        rows.append({"what": "lambda_max", "seconds": dt, "num_hvp": m, "values": vals1.tolist()})
        (valsk, _), dt, m = timed(op, device, lambda: spectral.top_eigenpairs(op.matvec, sel.dim, args.k, generator=gen(), **kw))
        rows.append({"what": f"top-{args.k}", "seconds": dt, "num_hvp": m, "values": valsk.tolist()})
        if args.bottom:
            (valsb, _), dt, m = timed(op, device, lambda: H.bottom_eigenpairs(op.matvec, sel.dim, 1, float(vals1[0]),
                                                                               generator=gen(), **kw))
            rows.append({"what": "lambda_min (shifted)", "seconds": dt, "num_hvp": m, "values": valsb.tolist()})

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"\nmodel {args.model} ({sel.dim:,} weights in the Hessian), {len(data):,} images, batch {batch}, "
          f"{args.method} tol={args.tol}, device {device} ({name})")
    print(f"{'':22s} {'seconds':>10s} {'HVPs':>6s}  eigenvalues")
    for r in rows:
        vals = ", ".join(f"{x:.5g}" for x in r.get("values", []))
        print(f"{r['what']:22s} {r['seconds']:10.3f} {r['num_hvp']:6d}  {vals}")
    record = {"benchmark": "hessian_eigenvalues", "model": args.model, "dim": sel.dim, "num_samples": len(data),
              "batch_size": batch, "method": args.method, "tol": args.tol, "device": str(device), "device_name": name,
              "torch": torch.__version__, "checkpoint": args.checkpoint, "results": rows,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[1:] if argv is None else argv}
    Path(args.json).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return record


if __name__ == "__main__":
    main()
