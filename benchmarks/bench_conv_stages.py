#!/usr/bin/env python
"""Where a surface point's fp32 time goes: each convolution shape's rate against this machine's
own fp32 matrix-multiply rate, measured side by side in one run.

The engine's default CPU forward (the copy ``task=surface2d`` evaluates: BatchNorm folded,
channels_last, conv-ReLU fused) runs over ``--num-samples`` CIFAR-shaped images, one graph node at
a time, each node timed. Convolutions are grouped by shape; for each group it prints the count,
seconds per pass, the share of the pass, and the GFLOP/s, also as a fraction of a large fp32
matmul's rate timed in the same rounds (``--matmul-size``), which stands for what the cores' FMA
units can do. The last lines bound what is left: the pass's time if every convolution ran at the
fastest group's rate, or at the matmul's.

  python benchmarks/bench_conv_stages.py --model resnet56
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/bench_common.py

from landscape_exp.engine.cpu import cpu_threads  # noqa: E402
from landscape_exp.engine.folding import EvalCopy, can_fuse  # noqa: E402
from landscape_exp.models import build_model  # noqa: E402

from bench_common import configured_batch, configured_defaults, cpu_description, cpu_record, load_average, model_cfg  # noqa: E402

FUSED = (torch.ops.mkldnn._convolution_pointwise.default, torch.ops.mkldnn._convolution_pointwise.binary)


def matmul_gflops(n: int) -> float:
    """fp32 GFLOP/s of one ``n x n`` by ``n x n`` product (after a warm-up product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - t) / 1e9


class NodeTimer(fx.Interpreter):
    """Runs a traced network node by node; adds each convolution's seconds and multiply-accumulates
    to ``convs[shape]`` and every other node's seconds to ``other``."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.modules = dict(gm.named_modules())
        self.convs: dict[str, dict[str, float]] = defaultdict(lambda: {"count": 0, "seconds": 0.0, "macs": 0})
        self.other = 0.0

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("placeholder", "get_attr", "output"):
            return super().run_node(n)
        t = time.perf_counter()
        out = super().run_node(n)
        dt = time.perf_counter() - t
        weight = self._conv_weight(n)
        if weight is None:
            self.other += dt
            return out
        x = self.env[n.args[0]] if isinstance(n.args[0], fx.Node) else n.args[0]
        cout, cin_g, kh, kw = weight.shape
        key = f"{cin_g}->{cout} ch {kh}x{kw}, {x.shape[2]}x{x.shape[3]} -> {out.shape[2]}x{out.shape[3]}"
        g = self.convs[key]
        g["count"] += 1
        g["seconds"] += dt
        g["macs"] += out.numel() * cin_g * kh * kw  # every output element: Cin/groups x kh x kw MACs
        return out

    def _conv_weight(self, n: fx.Node) -> torch.Tensor | None:
        if n.op == "call_module" and isinstance(self.modules.get(str(n.target)), nn.Conv2d):
            return self.modules[str(n.target)].weight
        if n.op == "call_function" and n.target in FUSED:
            w = n.args[1] if n.target is FUSED[0] else n.args[2]
            return self.env[w] if isinstance(w, fx.Node) else w
        return None


def run(model_name: str, num_samples: int, rounds: int, matmul_size: int, batch: int | None) -> dict[str, Any]:
    device = torch.device("cpu")
    precision, ev = configured_defaults(device)
    batch = batch or configured_batch(model_name, ev, device)
    torch.manual_seed(0)
    model = build_model(model_cfg(model_name, 3, 32, 10)).eval()
    twin = EvalCopy(model, fold=precision.fold_bn, fuse=can_fuse(device), channels_last=precision.channels_last)
    if not isinstance(twin.net, fx.GraphModule):
        raise SystemExit(f"{model_name}: the evaluation copy is not a traced graph; nothing to time node by node")
    fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
    images = torch.randn(num_samples, 3, 32, 32).contiguous(memory_format=fmt)
    best: NodeTimer | None = None
    best_wall, mm = float("inf"), 0.0
    with torch.no_grad():
        for _ in range(rounds):
            mm = max(mm, matmul_gflops(matmul_size))
            timer = NodeTimer(twin.net)
            t = time.perf_counter()
            for s in range(0, num_samples, batch):
                timer.run(images[s:s + batch])
            wall = time.perf_counter() - t
            if wall < best_wall:
                best, best_wall = timer, wall
    assert best is not None
    conv_s = sum(g["seconds"] for g in best.convs.values())
    forwards = -(-num_samples // batch)
    rows = []
    for key, g in sorted(best.convs.items(), key=lambda kv: -kv[1]["seconds"]):
        rate = 2 * g["macs"] / g["seconds"] / 1e9
        rows.append({"shape": key, "per_forward": int(g["count"]) // forwards, "seconds": g["seconds"],
                     "share": g["seconds"] / best_wall, "gmac": g["macs"] / 1e9, "gflops": rate, "of_matmul": rate / mm})
    fastest = max(r["gflops"] for r in rows)
    macs = sum(g["macs"] for g in best.convs.values())
    return {
        "model": model_name, "num_samples": num_samples, "batch": batch, "threads": torch.get_num_threads(),
        "rounds": rounds, "pass_seconds": best_wall, "conv_seconds": conv_s, "other_seconds": best.other,
        "matmul_size": matmul_size, "matmul_gflops": mm, "convolutions": rows,
        "conv_gmac": macs / 1e9, "conv_gflops": 2 * macs / conv_s / 1e9,
        "pass_if_all_at_fastest": best_wall - conv_s + 2 * macs / fastest / 1e9,
        "pass_if_all_at_matmul": best_wall - conv_s + 2 * macs / mm / 1e9,
    }


def report(r: dict[str, Any]) -> None:
    print(f"\n{r['model']}: {r['num_samples']} images, batch {r['batch']}, {r['threads']} threads, best of {r['rounds']} "
          f"passes: {r['pass_seconds']:.3f} s (convolutions {r['conv_seconds']:.3f} s, the rest {r['other_seconds']:.3f} s); "
          f"fp32 matmul {r['matmul_size']}^3 in the same rounds: {r['matmul_gflops']:.0f} GFLOP/s")
    print("n: convolutions of the shape in one forward; s/pass and share: over the whole pass")
    print(f"{'convolution':<36} {'n':>3} {'s/pass':>7} {'share':>6} {'GMAC':>6} {'GFLOP/s':>8} {'of matmul':>9}")
    for c in r["convolutions"]:
        print(f"{c['shape']:<36} {c['per_forward']:>3} {c['seconds']:>7.3f} {c['share']:>6.1%} {c['gmac']:>6.1f} "
              f"{c['gflops']:>8.0f} {c['of_matmul']:>9.0%}")
    print(f"all convolutions: {r['conv_gmac']:.1f} GMAC at {r['conv_gflops']:.0f} GFLOP/s "
          f"({r['conv_gflops'] / r['matmul_gflops']:.0%} of the matmul's rate)")
    print(f"the pass if every convolution ran at the fastest group's rate: {r['pass_if_all_at_fastest']:.3f} s "
          f"({r['pass_seconds'] / r['pass_if_all_at_fastest']:.2f}x faster); at the matmul's: "
          f"{r['pass_if_all_at_matmul']:.3f} s ({r['pass_seconds'] / r['pass_if_all_at_matmul']:.2f}x)")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="resnet20, resnet56, ... (repeatable; default both)")
    ap.add_argument("--num-samples", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="default: the batch a run gets (eval.batch_size=null)")
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="default: engine.cpu.cpu_threads()")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(cpu_threads(args.threads))
    print(f"CPU: {cpu_description()}; torch {torch.__version__}; load average {load_average()}")
    results = [run(m, args.num_samples, args.rounds, args.matmul_size, args.batch)
               for m in (args.model or ["resnet20", "resnet56"])]
    for r in results:
        report(r)
    print(f"load average after: {load_average()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu_record(), "torch": torch.__version__, "results": results}, indent=1))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
