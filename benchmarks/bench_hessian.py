#!/usr/bin/env python
"""Hessian eigenvalues: HVPs and time for lambda_max and the top-k, ours against PyHessian.

Builds the model (LeNet on the 8x8 digits by default: trained for --epochs with the library's
SGD, or --checkpoint, or --epochs 0 for the random init), takes the Hessian of the mean
cross-entropy over --num-samples training images w.r.t. the weights (biases and BN held fixed,
as ignore=biasbn) in fp32, and in one run times

  * one full-data Hessian-vector product (mean of 3, after one warm-up product),
  * lambda_max (k=1) and the top-k by our solver (--method, stop at residual <= --tol x ||H||),
  * the same two by PyHessian's power iteration (``hessian.eigenvalues``: stop when the
    eigenvalue changes by less than --tol relatively, at most --pyhessian-max-iter products per
    eigenvalue), on the same parameters, data and batches,
  * optionally (--bottom) our lambda_min by the shift H - lambda_max I,

and checks every result against a reference top-k (our Lanczos at residual 1e-10 x ||H||),
printing seconds, HVPs and the largest relative eigenvalue error, and writing a JSON record.

PyHessian (Yao et al. 2020) is optional and not a dependency of landscape-exp:

  .venv/bin/pip install pyhessian      # only for this comparison; without it the column is skipped

  python benchmarks/bench_hessian.py                                      # CPU, LeNet on digits
  python benchmarks/bench_hessian.py --model mlp --epochs 0               # an MLP at init
  python benchmarks/bench_hessian.py --model resnet56 --num-samples 10000 --device cuda   # the GPU figure
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/bench_common.py

from landscape_exp import hessian as H  # noqa: E402
from landscape_exp.config.choices import SPECTRAL_METHODS  # noqa: E402
from landscape_exp.data.datasets import load_dataset  # noqa: E402
from landscape_exp.data.device import DeviceData  # noqa: E402
from landscape_exp.hessian import spectral  # noqa: E402
from landscape_exp.weights.params import select_parameters

from bench_common import bench_model, cpu_description, cpu_record, model_cfg, sync  # noqa: E402

PYHESSIAN_HINT = "PyHessian is not installed: `.venv/bin/pip install pyhessian` adds its column (it is not a dependency)"


class CountingBatches:
    """The batches as a re-iterable that counts full passes (one pass = one HVP for PyHessian)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches, self.passes = batches, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.passes += 1
        return iter(self.batches)


def timed(device: torch.device, count: Callable[[], int], fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, seconds, HVPs) of ``fn()``; ``count()`` reads the HVP counter."""
    n0 = count()
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0, count() - n0


def rel_error(values: list[float], reference: np.ndarray) -> float:
    v = np.asarray(values, dtype=float)
    return float(np.max(np.abs(v - reference[: len(v)]) / np.abs(reference[: len(v)])))


def pyhessian_rows(model: torch.nn.Module, batches: list, device: torch.device, k: int, tol: float, max_iter: int,
                   seed: int, reference: np.ndarray) -> list[dict[str, Any]]:
    """PyHessian's power iteration on the same weights (1-D parameters frozen: ignore=biasbn)."""
    import warnings

    from pyhessian import hessian as pyhessian_hessian

    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")  # PyHessian's own call

    frozen = [p for p in model.parameters() if p.dim() <= 1 and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    rows = []
    try:
        data = CountingBatches(batches)
        hc = pyhessian_hessian(model, F.cross_entropy, dataloader=data, cuda=device.type == "cuda")
        for n in (1, k):
            torch.manual_seed(seed)  # PyHessian draws its start vectors from the global generator
            (vals, _), dt, m = timed(device, lambda: data.passes, lambda n=n: hc.eigenvalues(maxIter=max_iter, tol=tol, top_n=n))
            rows.append({"what": f"PyHessian {'lambda_max' if n == 1 else f'top-{n}'}", "seconds": dt, "num_hvp": m,
                         "values": [float(x) for x in vals], "rel_error": rel_error(vals, reference)})
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
    return rows


def trained_model(name: str, ds: Any, epochs: int, seed: int, device: torch.device) -> torch.nn.Module:
    """``name`` trained for ``epochs`` with SGD as ``conf/optim/quick.yaml`` (in a temporary directory)."""
    from landscape_exp.models import build_model
    from landscape_exp.training.loop import train_model

    cfg = model_cfg(name, ds.channels, ds.image_size, ds.num_classes)
    torch.manual_seed(seed)
    model = build_model(cfg)
    optim = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "batch_size": 64,
             "epochs": epochs, "schedule": "step", "milestones": None, "gamma": 0.1}
    with tempfile.TemporaryDirectory() as tmp:
        train_model(model, ds, optim, run_dir=tmp, model_cfg=cfg, device=device, seed=seed, progress=False)
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--num-samples", type=int, default=None,
                    help="images (default: the whole digits training split, 1438; else 1024 on CPU, 10000 on CUDA)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="HVP batch (default 256 CPU / 512 CUDA)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--method", default="lanczos", choices=SPECTRAL_METHODS)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--pyhessian-max-iter", type=int, default=100, help="PyHessian's maxIter per eigenvalue (its default: 100)")
    ap.add_argument("--epochs", type=int, default=3, help="train the digits model this many epochs first (0: random init)")
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
        n = min(args.num_samples or len(ds.train), len(ds.train))
        split = ds.train.subset(torch.arange(n))
    else:
        n = args.num_samples or (1024 if device.type == "cpu" else 10000)
        ds = load_dataset({"name": "synthetic", "num_classes": 10, "channels": 3, "image_size": 32,
                           "num_train": n, "num_test": 1, "seed": args.seed})
        split = ds.train
    if small and args.epochs > 0 and not args.checkpoint:
        model = trained_model(args.model, ds, args.epochs, args.seed, device)
    else:
        model = bench_model(args.model, args.checkpoint, ds, args.seed, device)
    data = DeviceData(split, ds.mean, ds.std, device)
    sel = select_parameters(model, "biasbn")
    batch = args.batch_size or (512 if device.type == "cuda" else 256)
    op = H.make_operator(model, sel, data, batch_size=batch)
    gen = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731
    opts = spectral.SolverOptions(args.method, args.tol, args.max_iter)
    count = lambda: op.num_hvp  # noqa: E731

    rows = []
    with H.fp32(device):
        v = torch.randn(sel.dim, generator=gen(), dtype=torch.float64)
        op.matvec(v)  # warm-up (cuDNN autotune, allocator)
        _, dt, m = timed(device, count, lambda: [op.matvec(v) for _ in range(3)])
        rows.append({"what": "one HVP", "seconds": dt / m, "num_hvp": 1})
        ref = spectral.top_eigenpairs(op.matvec, sel.dim, args.k, options=spectral.SolverOptions("lanczos", 1e-10),
                                      generator=torch.Generator().manual_seed(args.seed + 99), device=device)
        reference = ref.values.numpy()
        for k in (1, args.k):
            res, dt, m = timed(device, count, lambda k=k: spectral.top_eigenpairs(op.matvec, sel.dim, k, options=opts,
                                                                                  generator=gen(), device=device))
            rows.append({"what": f"ours {'lambda_max' if k == 1 else f'top-{k}'}", "seconds": dt, "num_hvp": m,
                         "values": res.values.tolist(), "rel_error": rel_error(res.values.tolist(), reference),
                         "converged": res.all_converged, "max_residual": float(res.residuals.max())})
        if args.bottom:
            res, dt, m = timed(device, count, lambda: spectral.bottom_eigenpairs(op.matvec, sel.dim, 1, float(reference[0]),
                                                                                 options=opts, generator=gen(), device=device))
            rows.append({"what": "ours lambda_min (shift)", "seconds": dt, "num_hvp": m, "values": res.values.tolist(),
                         "converged": res.all_converged})
        if importlib.util.find_spec("pyhessian") is None:
            pyhessian_note = PYHESSIAN_HINT
        else:
            batches = [(x.clone(), y.clone()) for x, y in data.batches(batch)]
            rows += pyhessian_rows(model, batches, device, args.k, args.tol, args.pyhessian_max_iter, args.seed, reference)
            pyhessian_note = f"PyHessian power iteration, tol={args.tol} (relative change), maxIter={args.pyhessian_max_iter}"

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{cpu_description()}, {torch.get_num_threads()} threads")
    trained = args.checkpoint or (f"trained {args.epochs} epoch{'s' * (args.epochs != 1)}" if small and args.epochs > 0
                                  else "random init")
    print(f"\nmodel {args.model} ({trained}; {sel.dim:,} weights in the Hessian), {len(data):,} images, batch {batch}, "
          f"ours: {args.method} stopped at residual <= {args.tol:g} x ||H||; device {device} ({name})")
    print(f"reference top-{args.k} (Lanczos, residual <= 1e-10 x ||H||, {ref.steps} steps): "
          + ", ".join(f"{x:.8g}" for x in reference))
    print(f"{'':24s} {'seconds':>9s} {'HVPs':>6s} {'max rel. error':>15s}  eigenvalues")
    for r in rows:
        vals = ", ".join(f"{x:.6g}" for x in r.get("values", []))
        err = f"{r['rel_error']:.1e}" if "rel_error" in r else ""
        print(f"{r['what']:24s} {r['seconds']:9.3f} {r['num_hvp']:6d} {err:>15s}  {vals}")
    if pyhessian_note == PYHESSIAN_HINT:
        print(f"(PyHessian column skipped: {PYHESSIAN_HINT})")
    record = {"benchmark": "hessian_eigenvalues", "model": args.model, "trained": trained, "dim": sel.dim,
              "num_samples": len(data), "batch_size": batch, "method": args.method, "tol": args.tol,
              "device": str(device), "device_name": name, "cpu": cpu_record(), "torch": torch.__version__,
              "checkpoint": args.checkpoint, "reference": reference.tolist(), "pyhessian": pyhessian_note, "results": rows,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[1:] if argv is None else argv}
    Path(args.json).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return record


if __name__ == "__main__":
    main()
