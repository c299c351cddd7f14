"""The fast evaluation engine against the original algorithm (benchmarks/bench_surface.py's
naive reference), and the benchmark script end to end."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_exp.data.datasets import ImageSplit, load_dataset
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.evaluation import evaluate, evaluate_points_sums, evaluate_sums
from landscape_exp.engine.precision import Precision
from landscape_exp.models import build_model
from landscape_exp.models.resnet import cifar_resnet
from landscape_exp.surface.measures import LossMeasure
from landscape_exp.weights.directions import create_random_direction
from landscape_exp.weights.params import snapshot
from landscape_exp.weights.space import WeightSpace

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str = "bench_surface"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
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


def test_engine_equals_the_original_loop_on_cifar_files(tmp_path):
    """The benchmark's faithful reference (torchvision CIFAR10 over CIFAR-10 pickle files, the
    original's transforms, loader and set_weights) and the surface engine's measure, with its
    default speed options (BatchNorm folded, channels_last), agree on loss and accuracy."""
    bench = _bench()
    root = bench.write_cifar_files(tmp_path, 150, 10, seed=0)
    loader = bench.reference_loader(root, torch.device("cpu"), workers=0)
    tv = loader.dataset
    assert len(tv) == 150 and tv.data.shape == (150, 32, 32, 3)
    split = ImageSplit(torch.from_numpy(np.ascontiguousarray(tv.data.transpose(0, 3, 1, 2))), torch.tensor(tv.targets))
    torch.manual_seed(0)
    model = cifar_resnet(depth=8, num_classes=10, in_channels=3, image_size=32)
    bench.calibrate_batchnorm(model, split, torch.device("cpu"))
    w = snapshot(model, "weights")
    dirs = [create_random_direction(w, seed=1), create_random_direction(w, seed=2)]
    points = [(0.0, 0.0), (0.5, -0.25), (-1.0, 1.0)]
    ref_model = copy.deepcopy(model)
    ref_acc: list[float] = []
    ref = bench.reference_surface(ref_model, [p.data for p in ref_model.parameters()], dirs, points, loader,
                                  torch.device("cpu"), ref_acc)

    engine_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    data = DeviceData(split, bench.CIFAR_MEAN, bench.CIFAR_STD, "cpu", channels_last=True)
    measure = LossMeasure(engine_model, {"train": data}, "crossentropy", 64, Precision("fp32", True, False, True), (1, 0))
    assert measure.num_folded == 9
    space = WeightSpace(engine_model, "weights", dirs)
    got = dict(measure.points(space, bench.PointList(points), [0, 1, 2]))
    space.restore()
    for k, (loss_ref, acc_ref) in enumerate(zip(ref, ref_acc)):
        assert got[k]["train_loss"] == pytest.approx(loss_ref, rel=1e-5)
        assert got[k]["train_acc"] == pytest.approx(acc_ref, abs=1e-9)
    for p, w0 in zip(engine_model.parameters(), w):
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
    record = _bench().main(["--model", "lenet", "--num-samples", "40", "--points", "2", "--rounds", "1", "--workers", "0",
                            "--variants", "previous,fp32,fold_cl,bf16", "--batch-sweep", "16,32", "--threads", "1",
                            "--bookkeeping-grid", "6", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["models"] == json.loads(json.dumps(record["models"]))
    (rec,) = saved["models"]
    keys = [r["key"] for r in rec["results"]]
    assert keys == ["reference", "previous", "fp32", "fold_cl", "bf16"]
    ref = rec["results"][0]["seconds_per_point"]
    for r in rec["results"]:
        assert r["seconds_per_point"] > 0
        assert np.isclose(r["speedup"], ref / r["seconds_per_point"])
        # one round: the paired ratio is that round's reference time over the variant's
        assert np.isclose(r["speedup_paired_median"], rec["results"][0]["rounds"][0] / r["rounds"][0])
        assert r["speedup_paired_range"] == [r["speedup_paired_median"]] * 2
        assert r["max_rel_loss_error"] < (5e-2 if r["key"] == "bf16" else 1e-5)
        assert np.isclose(r["minutes_51x51"], 2601 * r["seconds_per_point"] / 60)
    # the CPU it ran on, and what it changed about bf16 there (emulated and unfused without bf16 kernels)
    from landscape_exp.engine.cpu import cpu_features

    f = cpu_features()
    assert saved["cpu"]["description"] == f.describe() and saved["cpu"]["flags"] == sorted(f.flags)
    bf16 = next(r for r in rec["results"] if r["key"] == "bf16")
    assert ("bf16 emulated" in bf16["note"]) == (not f.bf16_kernels)
    assert (bf16["num_fused"] > 0) == f.fused_conv_bf16
    assert set(rec["batch_sweep_seconds"]) == {"16", "32"}
    assert saved["bookkeeping"]["points"] == 36 and saved["load_average_before"] and saved["load_average_after"]


def test_cpu_paths_benchmark_times_both_precisions_as_this_cpu_runs_them(tmp_path):
    from landscape_exp.engine.cpu import cpu_features

    record = _bench("bench_cpu_paths").main(["--batch", "4", "--rounds", "1", "--threads", "1",
                                             "--json", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text())["cpu"]["description"] == cpu_features().describe()
    assert [r["network"].split()[0] for r in record["results"]] == ["resnet20", "mlp", "transformer"]
    for r in record["results"]:
        assert r["bf16_over_fp32"] == pytest.approx(r["bf16_seconds"] / r["fp32_seconds"])
        assert r["bf16_path"].startswith("oneDNN" if cpu_features().bf16_kernels else "emulated")


def test_51x51_extrapolation_counts_compilation_once():
    grid_minutes = _bench().grid_minutes
    assert grid_minutes(0.5) == pytest.approx(2601 * 0.5 / 60)
    # a compiled variant: its first point took 30 s (compilation), every later one 0.1 s
    assert grid_minutes(0.1, 30.0) == pytest.approx((30.0 + 2600 * 0.1) / 60)


def test_conv_stage_benchmark_counts_every_convolution_and_its_multiply_adds(tmp_path):
    """bench_conv_stages times the engine's folded, fused ResNet-20 node by node: every convolution
    of the model must be there once per forward, with the multiply-accumulates that forward hooks
    on the unfolded model count."""
    record = _bench("bench_conv_stages").main(["--model", "resnet20", "--num-samples", "24", "--batch", "8", "--rounds", "1",
                                               "--matmul-size", "128", "--threads", "1", "--json", str(tmp_path / "c.json")])
    (r,) = record
    torch.manual_seed(0)
    model = cifar_resnet(depth=20, num_classes=10, in_channels=3, image_size=32).eval()
    macs, convs = [0], 0

    def hook(m, inp, out):
        macs[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
            convs += 1
    with torch.no_grad():
        model(torch.randn(24, 3, 32, 32))
    assert convs == 21  # 19 3x3 layers and 2 1x1 projections
    assert sum(c["per_forward"] for c in r["convolutions"]) == convs
    assert r["conv_gmac"] * 1e9 == pytest.approx(macs[0], rel=1e-12)
    assert 0 < r["conv_seconds"] <= r["pass_seconds"] and sum(c["share"] for c in r["convolutions"]) <= 1
    assert 0 < r["pass_if_all_at_fastest"] <= r["pass_seconds"]
    assert json.loads((tmp_path / "c.json").read_text())["results"][0]["conv_gmac"] == r["conv_gmac"]
