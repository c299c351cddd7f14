"""The fast evaluation engine against the original algorithm (benchmarks/bench_surface.py's
naive reference), and the benchmark script end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_exp.data import DeviceData, load_dataset
from landscape_exp.directions import create_random_direction, snapshot
from landscape_exp.evaluation import evaluate, evaluate_points_sums, evaluate_sums
from landscape_exp.models import build_model
from landscape_exp.precision import Precision
from landscape_exp.surface.weight_space import WeightSpace

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_surface", ROOT / "benchmarks" / "bench_surface.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    ds = load_dataset({"name": "synthetic", "num_classes": 5, "channels": 3, "image_size": 8,
                       "num_train": 300, "num_test": 10, "seed": 3})
    model = build_model({"_target_": "landscape_exp.models.small.lenet", "name": "lenet", "num_classes": 5,
                         "in_channels": 3, "image_size": 8}).eval()
    w = snapshot(model, "weights")
    dx, dy = create_random_direction(w, seed=1), create_random_direction(w, seed=2)
    points = [(0.0, 0.0), (0.5, -0.25), (-1.0, 1.0)]
    return ds, model, w, dx, dy, points


def naive_accuracy(model, loader) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


def test_engine_equals_naive_reference(setup):
    ds, model, w, dx, dy, points = setup
    bench = _bench()
    loader = torch.utils.data.DataLoader(bench.PerSampleDataset(ds.train, ds.mean, ds.std), batch_size=128, num_workers=0)
    ref, _ = bench.naive_surface(model, [t.clone() for t in w], dx, dy, points, loader, torch.device("cpu"))
    ref_acc = []
    for a, b in points:  # accuracy of the naive path at the same weights
        with torch.no_grad():
            for p, w0, d0, d1 in zip(model.parameters(), w, dx, dy):
                p.data = w0 + a * d0 + b * d1
        ref_acc.append(naive_accuracy(model, loader))
    with torch.no_grad():
        for p, w0 in zip(model.parameters(), w):
            p.data = w0.clone()

    data = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    space = WeightSpace(model, "weights", [dx, dy])
    for (a, b), loss_ref, acc_ref in zip(points, ref, ref_acc):
        space.move_to((a, b))
        loss, acc = evaluate(model, data, batch_size=1000)
        assert loss == pytest.approx(loss_ref, rel=1e-5)
        assert acc == pytest.approx(acc_ref, abs=1e-9)
    space.restore()
    for p, w0 in zip(model.parameters(), w):
        assert torch.equal(p.data, w0)


def test_vmap_points_equal_single_points(setup):
    ds, model, w, dx, dy, points = setup
    data = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    space = WeightSpace(model, "weights", [dx, dy])
    single = []
    for pt in points:
        space.move_to(pt)
        single.append(evaluate_sums(model, data, batch_size=128))
    space.restore()
    total, correct = evaluate_points_sums(model, space.stacked_points(torch.tensor(points, dtype=torch.float64)),
                                          data, batch_size=128)
    for i, (t, c) in enumerate(single):
        assert float(total[i]) == pytest.approx(float(t), rel=1e-5)
        assert int(correct[i]) == int(c)


def test_bf16_error_is_small_but_nonzero(setup):
    ds, model, *_ = setup
    data = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    ref, _ = evaluate(model, data)
    low, _ = evaluate(model, data, precision=Precision("bf16"))
    rel = abs(low - ref) / ref
    assert 0 < rel < 5e-2


def test_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    record = _bench().main(["--model", "mlp", "--num-samples", "64", "--points", "2", "--workers", "0",
                            "--precision", "fp32", "--points-per-pass", "1,2", "--threads", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"] == record["results"]
    variants = [r["variant"] for r in saved["results"]]
    assert variants[0].startswith("naive") and "engine fp32" in variants and "engine fp32 vmap x2" in variants
    for r in saved["results"]:
        assert r["points_per_second"] > 0
        assert r["max_rel_loss_error"] < 1e-5
        assert np.isclose(r["speedup"], r["points_per_second"] / saved["results"][0]["points_per_second"])
