"""Mode connectivity (Garipov et al. 2018): curve points exactly at the ends and the bend,
gradients, BatchNorm recomputation against brute force, a trained curve beating the segment's
barrier, resumable curve training, curve files, and task=connect / connect_eval end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from landscape_exp.app import run_job
from landscape_exp.connect import curves as C
from landscape_exp.connect.files import curve_from_file, load_curve_file, save_curve
from landscape_exp.data.datasets import ImageSplit, load_dataset
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.batchnorm import recompute_bn_stats
from landscape_exp.engine.evaluation import evaluate
from landscape_exp.errors import UserError
from landscape_exp.measures.paths import barrier
from landscape_exp.models import build_model
from landscape_exp.models.loading import load_model
from landscape_exp.training.loop import train_model

CONF = Path(__file__).resolve().parents[1] / "conf"
MLP = {"_target_": "landscape_exp.models.small.mlp", "name": "mlp", "hidden": [32, 32], "num_classes": 10,
       "in_channels": 1, "image_size": 8}
DIGITS = {"name": "digits", "num_classes": 10, "test_fraction": 0.2, "split_seed": 0}


def _lists(seed: int, shapes=((5, 3), (5,), (2, 3, 3))) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) * 10 for s in shapes]


def test_curve_points_exact_at_ends_and_bend():
    w1, theta, w2 = _lists(0), _lists(1), _lists(2)
    for kind in ("bezier", "polychain", "segment"):
        for a, b in zip(C.curve_point(kind, w1, theta, w2, 0.0), w1):
            assert torch.equal(a, b)
        for a, b in zip(C.curve_point(kind, w1, theta, w2, 1.0), w2):
            assert torch.equal(a, b)
    for a, b in zip(C.polychain_point(w1, theta, w2, 0.5), theta):
        assert torch.equal(a, b)
    for a, b in zip(C.bezier_point(w1, theta, w2, 0.0), w1):
        assert torch.equal(a, b)
    for a, b in zip(C.segment_point(w1, w2, 1.0), w2):
        assert torch.equal(a, b)
    # Closed forms elsewhere (float64 reference).
    for t in (0.1, 0.37, 0.5, 0.8):
        bz = C.bezier_point(w1, theta, w2, t)
        pc = C.polychain_point(w1, theta, w2, t)
        for i in range(len(w1)):
            a, b, c = (x[i].double() for x in (w1, theta, w2))
            torch.testing.assert_close(bz[i].double(), (1 - t) ** 2 * a + 2 * t * (1 - t) * b + t**2 * c, rtol=1e-6, atol=1e-5)
            ref = a + 2 * t * (b - a) if t <= 0.5 else b + (2 * t - 1) * (c - b)
            torch.testing.assert_close(pc[i].double(), ref, rtol=1e-6, atol=1e-5)
    # The Bezier curve with its bend at the midpoint is the segment itself.
    mid = C.midpoint(w1, w2)
    for a, b in zip(C.bezier_point(w1, mid, w2, 0.3), C.segment_point(w1, w2, 0.3)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)
    with pytest.raises(UserError, match="must lie in"):
        C.curve_point("bezier", w1, theta, w2, 1.5)
    with pytest.raises(UserError, match="unknown curve"):
        C.curve_point("spline", w1, theta, w2, 0.5)


def test_curve_model_forward_and_gradient():
    torch.manual_seed(0)
    m1, m2 = build_model(MLP), build_model(MLP)
    w1, w2 = [p.detach() for p in m1.parameters()], [p.detach() for p in m2.parameters()]
    curve = C.CurveModel(m1, w1, w2, "bezier")
    x = torch.randn(7, 1, 8, 8)
    y = torch.randint(0, 10, (7,))
    assert torch.equal(curve(x, 0.0), m1(x)) and torch.equal(curve(x, 1.0), m2(x))
    assert [n for n, p in curve.named_parameters() if p.requires_grad] == [f"bend.{i}" for i in range(len(w1))]
    # d loss / d theta = 2t(1-t) * (d loss / d weights at phi(t)): brute force with a plain model.
    t = 0.3
    loss = nn.functional.cross_entropy(curve(x, t), y)
    loss.backward()
    ref = build_model(MLP)
    with torch.no_grad():
        for p, w in zip(ref.parameters(), curve.weights(t)):
            p.copy_(w)
    nn.functional.cross_entropy(ref(x), y).backward()
    for b, p in zip(curve.bend, ref.parameters()):
        torch.testing.assert_close(b.grad, 2 * t * (1 - t) * p.grad, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in curve.base.parameters())
    # load_point writes the weights into the base model.
    model = curve.load_point(0.5, "segment")
    for p, a, b in zip(model.parameters(), w1, w2):
        torch.testing.assert_close(p, 0.5 * a + 0.5 * b)


def _bn_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 10))


def test_recompute_bn_stats_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    split = ImageSplit(torch.randint(0, 256, (103, 1, 8, 8), generator=gen, dtype=torch.uint8),
                       torch.zeros(103, dtype=torch.long))
    data = DeviceData(split, (0.4,), (0.3,), "cpu")
    net = _bn_net()
    bn = net[1]
    bn.running_mean.fill_(5.0)
    bn.momentum = 0.1
    assert recompute_bn_stats(net, data, batch_size=10) == 1
    x = torch.cat([xb for xb, _ in data.batches(1000)]).flatten(1).double()
    torch.testing.assert_close(bn.running_mean.double(), x.mean(0), rtol=1e-5, atol=1e-6)
    # running_var: batch-size-weighted mean of the (unbiased) batch variances.
    ref = sum(len(xb) * xb.flatten(1).double().var(0, unbiased=True) for xb, _ in data.batches(10)) / len(data)
    torch.testing.assert_close(bn.running_var.double(), ref, rtol=1e-5, atol=1e-6)
    assert not net.training and bn.momentum == 0.1
    # One batch holding everything: the exact statistics of the data.
    recompute_bn_stats(net, data, batch_size=1000)
    torch.testing.assert_close(bn.running_var.double(), x.var(0, unbiased=True), rtol=1e-5, atol=1e-6)
    assert recompute_bn_stats(build_model(MLP), data) == 0


def test_bn_curve_end_points_match_models_with_recomputed_stats():
    """At t = 0 the evaluated network is model 1 with BatchNorm statistics of the training data."""
    ds = load_dataset(DIGITS)
    data = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    torch.manual_seed(0)
    m1, m2 = _bn_net(), _bn_net()
    curve = C.CurveModel(m1, list(m1.parameters()), list(m2.parameters()), "polychain")
    res = C.evaluate_path(curve, [0.0, 0.5, 1.0], data, {"train": data}, batch_size=256)
    for i, m in ((0, m1), (2, m2)):
        recompute_bn_stats(m, data, batch_size=256)
        loss, acc = evaluate(m, data)
        assert res["train_loss"][i] == pytest.approx(loss, rel=1e-6) and res["train_acc"][i] == pytest.approx(acc)


@pytest.fixture(scope="module")
def two_minima(tmp_path_factory):
    """Two small MLPs trained on digits from different seeds."""
    root = tmp_path_factory.mktemp("minima")
    ds = load_dataset(DIGITS)
    optim = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "batch_size": 64,
             "epochs": 12, "schedule": "constant", "milestones": None, "gamma": 0.1}
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out = train_model(build_model(MLP), ds, optim, run_dir=root / f"m{seed}", model_cfg=MLP,
                          device=torch.device("cpu"), seed=seed, progress=False)
        paths.append(Path(out["final_checkpoint"]))
    return ds, paths


def test_trained_curve_beats_segment_barrier(two_minima, tmp_path):
    ds, paths = two_minima
    (m1, _), (m2, _) = load_model(paths[0]), load_model(paths[1])
    train = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    ts = np.linspace(0, 1, 11)
    for kind in ("bezier", "polychain"):
        curve = C.CurveModel(m1, list(m1.parameters()), list(m2.parameters()), kind)
        seg = C.evaluate_path(curve, ts, train, {"train": train}, kind="segment")["train_loss"]
        ends = max(seg[0], seg[-1])
        assert seg.max() > 3 * ends and barrier(ts, seg)[0] > 0.2  # a real barrier on the segment
        hist = C.train_curve(curve, train, epochs=8, lr=0.05, batch_size=64, seed=0)
        assert len(hist) == 8 and hist[-1]["train_loss"] < hist[0]["train_loss"]
        on_curve = C.evaluate_path(curve, ts, train, {"train": train})["train_loss"]
        assert on_curve.max() < 0.5 * seg.max(), (kind, on_curve.max(), seg.max())
        # the end points are untouched by training
        assert on_curve[0] == pytest.approx(seg[0], rel=1e-12) and on_curve[-1] == pytest.approx(seg[-1], rel=1e-12)


def test_curve_training_resumes_exactly(two_minima, tmp_path):
    ds, paths = two_minima
    (m1, _), (m2, _) = load_model(paths[0]), load_model(paths[1])
    train = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    kw = dict(epochs=3, lr=0.05, batch_size=128, seed=4, weight_decay=1e-4, identity={"run": 1})
    straight = C.CurveModel(m1, list(m1.parameters()), list(m2.parameters()), "bezier")
    C.train_curve(straight, train, **kw)

    class Killed(Exception):
        pass

    def kill_after_two(m):
        if m["epoch"] == 2:
            raise Killed

    state = tmp_path / "state.pt"
    first = C.CurveModel(m1, list(m1.parameters()), list(m2.parameters()), "bezier")
    with pytest.raises(Killed):
        C.train_curve(first, train, state_path=state, on_epoch=kill_after_two, **kw)
    resumed = C.CurveModel(m1, list(m1.parameters()), list(m2.parameters()), "bezier")
    hist = C.train_curve(resumed, train, state_path=state, **kw)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    for a, b in zip(resumed.bend, straight.bend):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="another curve"):
        C.train_curve(resumed, train, state_path=state, **{**kw, "identity": {"run": 2}})


def test_curve_file_round_trip(two_minima, tmp_path):
    ds, paths = two_minima
    (m1, c1), (m2, c2) = load_model(paths[0]), load_model(paths[1])
    curve = C.CurveModel(m1, list(m1.parameters()), list(m2.parameters()), "polychain")
    with torch.no_grad():
        for b in curve.bend:
            b.add_(0.01)
    path = save_curve(tmp_path / "curve.pt", curve, end1_state=c1["state_dict"], end2_state=c2["state_dict"],
                        model_cfg=MLP, meta={"dataset": "digits"})
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["curve"] == "polychain" and raw["meta"]["dataset"] == "digits"
    data = load_curve_file(path)
    back = curve_from_file(data, build_model(MLP))
    for t in (0.0, 0.25, 0.5, 1.0):
        for a, b in zip(back.weights(t), curve.weights(t)):
            assert torch.equal(a, b)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a curve file"):
        load_curve_file(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_curve_file(tmp_path / "missing.pt")


def test_garipov_schedule():
    assert C.garipov_lr(0.1, 0, 10) == 0.1 and C.garipov_lr(0.1, 5, 10) == 0.1
    assert C.garipov_lr(0.1, 7, 10) == pytest.approx(0.1 * (1 - 0.2 / 0.4 * 0.99))
    assert (C.garipov_lr(0.1, 9, 10) == pytest.approx(0.001)
            and barrier(np.array([0, 0.5, 1]), np.array([1.0, 3.0, 1.0]))[0] == 2.0)


# ---------------------------------------------------------------------------------------------
# task=connect / connect_eval


def test_connect_and_connect_eval_tasks(tmp_path):
    import h5py

    def go(out: str, *overrides: str) -> dict:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[
                "model=mlp", "model.hidden=[16]", "dataset=digits", "optim.epochs=3", f"paths.root={tmp_path}",
                "logger=none", "progress=false", *overrides])
        return run_job(cfg, output_dir=tmp_path / out)

    summary = go("c", "task=connect", "connect.curve=polychain", "connect.epochs=2", "connect.num_points=5")
    out = tmp_path / "c"
    with h5py.File(out / "curve.h5", "r") as f:
        assert f["t"][()].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert set(f) == {"t", "polychain", "segment"}
        curve_res = {k: f["polychain"][k][()] for k in f["polychain"]}
        seg = {k: f["segment"][k][()] for k in f["segment"]}
    # The ends of both paths are the two checkpoints (no BatchNorm: nothing is recomputed).
    ds = load_dataset(DIGITS)
    for i, key in ((0, "checkpoint1"), (-1, "checkpoint2")):
        model, _ = load_model(summary[key])
        for split in ("train", "test"):
            data = DeviceData(ds.split(split), ds.mean, ds.std, "cpu")
            loss, acc = evaluate(model, data)
            assert seg[f"{split}_loss"][i] == pytest.approx(loss, rel=1e-6) == curve_res[f"{split}_loss"][i]
            assert seg[f"{split}_acc"][i] == pytest.approx(acc)
    assert summary["measures"]["segment_curve_max_train_loss"]["value"] == pytest.approx(float(seg["train_loss"].max()))
    assert not any(k.endswith(("/max", "/barrier")) for k in summary)  # the measures hold them, once
    assert (out / "connect_curves.png").stat().st_size > 10_000 and (out / "curve_training.pt").exists()
    torch.load(out / "curve.pt", weights_only=True)

    again = go("e", "task=connect_eval", f"curve_file={out / 'curve.pt'}", "connect.num_points=5")
    with h5py.File(tmp_path / "e" / "curve.h5", "r") as f:
        for k, v in curve_res.items():
            np.testing.assert_array_equal(f["polychain"][k][()], v)
    assert again["curve"] == "polychain"
    with pytest.raises(UserError, match="needs curve_file"):
        go("e2", "task=connect_eval")
    with pytest.raises(UserError, match="unknown connect.curve"):
        go("c2", "task=connect", "connect.curve=spline")
