#!/usr/bin/env python
"""bf16 against fp32 on this CPU, per kind of network: the measurement behind precision=bf16's
fallback (landscape_exp.engine.precision.resolve_precision).

On a CPU whose oneDNN has bf16 kernels (AVX-512 BW/VL/DQ or avx_ne_convert on x86) bf16 runs them,
fused with the ReLU where the probe found the fused kernel; elsewhere torch emulates bf16 with its
generic kernels, and the tool runs fp32 instead unless ``precision.emulate_bf16=true``. This times
one evaluation forward pass of each network both ways (the engine's evaluation copy: BatchNorm
folded, channels_last where there is oneDNN, fused where the kernels run), alternating in rounds so
that a disturbance of the shared machine hits both, and prints the best rounds and their ratio with
the CPU it ran on.

  python benchmarks/bench_cpu_paths.py --json benchmarks/results/cpu_paths_<cpu>.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/bench_common.py

from landscape_exp.engine.cpu import (
    cpu_features,  # noqa: E402
    cpu_threads,  # noqa: E402
)
from landscape_exp.engine.folding import EvalCopy  # noqa: E402
from landscape_exp.engine.precision import resolve_precision  # noqa: E402
from landscape_exp.models.resnet import cifar_resnet  # noqa: E402

from bench_common import cpu_description, cpu_record, load_average  # noqa: E402


def networks(batch: int) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """A paper ResNet on CIFAR-shaped images, an MLP on MNIST-shaped vectors, a transformer encoder layer."""
    torch.manual_seed(0)
    return {
        "resnet20 (CIFAR 3x32x32)": (cifar_resnet(depth=20, num_classes=10, in_channels=3, image_size=32),
                                     torch.randn(batch, 3, 32, 32)),
        "mlp 784-512-512-10": (nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                             nn.Linear(512, 10)), torch.randn(8 * batch, 784)),
        "transformer layer (d 128, 4 heads, 64 tokens)": (nn.TransformerEncoderLayer(128, 4, 512, batch_first=True),
                                                          torch.randn(batch // 2, 64, 128)),
    }


def forward(model: nn.Module, x: torch.Tensor, bf16: bool) -> Callable[[], torch.Tensor]:
    """The engine's evaluation copy in fp32 or bf16, as a surface point runs it on this CPU."""
    p = resolve_precision("bf16" if bf16 else "fp32", None, False, torch.device("cpu"), fold_bn=True, emulate_bf16=True)
    copy = EvalCopy(model.eval(), fold=True, fuse=True, dtype=p.dtype, channels_last=p.channels_last)
    if x.dim() == 4 and p.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return lambda: copy(x)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default="bench_cpu_paths.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(cpu_threads(args.threads))
    f = cpu_features()
    print(f"CPU {cpu_description()}; {torch.get_num_threads()} threads; bf16 kernels: {f.bf16_kernels}, "
          f"bf16 fusion: {f.fused_conv_bf16}; load average {load_average()}")
    rows = []
    with torch.no_grad():
        for name, (model, x) in networks(args.batch).items():
            calls = {"fp32": forward(model, x, False), "bf16": forward(model, x, True)}
            best = {k: float("inf") for k in calls}
            for r in range(args.rounds + 1):
                for k, call in calls.items():
                    t0 = time.perf_counter()
                    call()
                    if r:  # round 0 warms up
                        best[k] = min(best[k], time.perf_counter() - t0)
            rows.append({"network": name, "fp32_seconds": best["fp32"], "bf16_seconds": best["bf16"],
                         "bf16_over_fp32": best["bf16"] / best["fp32"],
                         "bf16_path": "oneDNN bf16 kernels" if f.bf16_kernels else "emulated (generic kernels)"})
            print(f"  {name:46s} fp32 {best['fp32'] * 1e3:8.1f} ms   bf16 {best['bf16'] * 1e3:8.1f} ms   "
                  f"bf16/fp32 {rows[-1]['bf16_over_fp32']:5.2f}x  ({rows[-1]['bf16_path']})")
    record = {"benchmark": "cpu_paths", "cpu": cpu_record(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "batch": args.batch, "rounds": args.rounds, "results": rows, "load_average_after": load_average(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(args.json).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return record


if __name__ == "__main__":
    main()
