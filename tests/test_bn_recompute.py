"""eval.bn_recompute: BatchNorm running statistics recomputed from training data at every grid
point, checked against a from-scratch recomputation (a fresh model at that point, statistics reset
and averaged cumulatively over the data), with and without BatchNorm folding, and end to end on an
interpolation whose interpolated running variances go negative."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_exp.app import run_job
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.precision import Precision
from landscape_exp.errors import UserError
from landscape_exp.models.resnet import cifar_resnet
from landscape_exp.surface.grid import parse_grid
from landscape_exp.surface.measures import LossMeasure
from landscape_exp.weights import directions as D
from landscape_exp.weights.params import snapshot
from landscape_exp.weights.space import WeightSpace

from conftest import compose_cfg, train_checkpoint

RESNET8 = {"_target_": "landscape_exp.models.resnet.cifar_resnet", "name": "resnet8", "depth": 8, "width": 1,
           "shortcut": True, "num_classes": 10, "in_channels": 1, "image_size": 8}


def from_scratch(model: nn.Module, names: list[str], point: list[torch.Tensor], data: DeviceData, batch: int):
    """Mean cross-entropy and accuracy of a fresh copy of ``model`` with parameters ``point``: every
    BatchNorm reset and given ``momentum=None`` (PyTorch's cumulative average over batches), one
    train-mode pass over ``data`` in batches of ``batch``, then evaluated in float64."""
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        params = dict(fresh.named_parameters())
        for n, w in zip(names, point):
            params[n].copy_(w)
    for m in fresh.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    fresh.train()
    with torch.no_grad():
        for s in range(0, len(data), batch):
            fresh(data.normalize(data.images[s:s + batch]))
    fresh.eval().double()
    with torch.no_grad():
        logits = fresh(data.normalize(data.images).double())
    return float(F.cross_entropy(logits, data.targets)), 100.0 * float((logits.argmax(1) == data.targets).double().mean())


@pytest.mark.parametrize("fold", [False, True], ids=["plain", "folded"])
def test_recomputed_points_equal_a_from_scratch_recomputation(digits, fold):
    torch.manual_seed(0)
    model = cifar_resnet(depth=8, num_classes=10, in_channels=1, image_size=8).eval()
    with torch.no_grad():  # logits of order one (the original's init makes them ~0: every loss log 10)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.5)
    train = DeviceData(digits.train, digits.mean, digits.std, torch.device("cpu"))
    direction = D.create_random_direction(snapshot(model, "weights"), seed=3, norm="filter", ignore="biasbn")
    origin_buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    n = len(train)
    batch = n // 2 if n % 2 == 0 else n  # equal batches: the size-weighted and the per-batch averages agree
    measure = LossMeasure(model, {"train": train}, "crossentropy", 512, Precision(fold_bn=fold), (1, 0),
                          bn_data=train, bn_batch_size=batch)
    assert (measure.num_folded > 0) == fold
    grid = parse_grid("-1:1:5")
    space = WeightSpace(model, "weights", [direction])
    names = [n for n, _ in model.named_parameters()]
    origin = [p.detach().clone() for p in model.parameters()]
    got = dict(measure.points(space, grid, [0, 1, 3]))
    for k in (0, 1, 3):
        a = grid.point(k)[0]
        point = [o + a * d for o, d in zip(origin, direction)]  # biases and BN parameters: d = 0 (biasbn)
        loss, acc = from_scratch(model, names, point, train, batch)
        assert got[k]["train_loss"] == pytest.approx(loss, rel=2e-5), (k, got[k], loss)
        assert got[k]["train_acc"] == pytest.approx(acc, abs=0.1)
    # the origin's running statistics are back once the points are done
    space.restore()
    for k, v in model.state_dict().items():
        if k in origin_buffers:
            assert torch.equal(v, origin_buffers[k]), k
    assert measure.fingerprint()["bn_recompute"] is True and measure.attrs()["bn_recompute"] == "true"
    with pytest.raises(UserError, match="eval.bn_recompute=true evaluates one point at a time"):
        LossMeasure(model, {"train": train}, "crossentropy", 512, Precision(), (1, 0), points_per_pass=4, bn_data=train)


def test_single_batch_statistics_are_the_data_mean_and_variance(digits):
    """With one batch the recomputed running statistics of the first BatchNorm are exactly the
    mean and unbiased variance of its input over the whole split."""
    torch.manual_seed(1)
    model = cifar_resnet(depth=8, num_classes=10, in_channels=1, image_size=8).eval()
    train = DeviceData(digits.train, digits.mean, digits.std, torch.device("cpu"))
    measure = LossMeasure(model, {"train": train}, "crossentropy", 4096, Precision(), (1, 0), bn_data=train,
                          bn_batch_size=len(train))
    direction = D.create_random_direction(snapshot(model, "weights"), seed=5, norm="filter", ignore="biasbn")
    space = WeightSpace(model, "weights", [direction])
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen = {}
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    for _k, _ in measure.points(space, parse_grid("0:1:3"), [1]):
        seen["mean"], seen["var"] = bn.running_mean.clone(), bn.running_var.clone()
        with torch.no_grad():
            z = conv(train.normalize(train.images)).double()
    assert torch.allclose(seen["mean"].double(), z.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert torch.allclose(seen["var"].double(), z.var((0, 2, 3), unbiased=True), rtol=1e-5, atol=1e-6)


def test_interp1d_states_nan_without_and_finite_with_recomputation(tmp_path, digits):
    base = tmp_path / "ckpts"
    ck = [train_checkpoint(base / f"s{s}", RESNET8, digits, seed=s, epochs=1) for s in (0, 1)]
    common = ["task=interp1d", f"checkpoint={ck[0]}", f"direction.model2={ck[1]}", "x=-2:3:6", "eval.batch_size=2048",
              "plot.enabled=false", "sharpness=none"]
    # fold_bn=false: the model as written (folded and fused into oneDNN's conv-ReLU kernels on a CPU,
    # a NaN from a negative variance came out as a large finite loss when this test was written)
    plain = run_job(compose_cfg(tmp_path, [*common, "precision.fold_bn=false"]), output_dir=tmp_path / "plain", job={})
    fixed = run_job(compose_cfg(tmp_path, [*common, "eval.bn_recompute=true"]), output_dir=tmp_path / "fixed", job={})
    with h5py.File(tmp_path / "plain" / "surface.h5", "r") as f:
        v_plain = f["train_loss"][()]
    with h5py.File(tmp_path / "fixed" / "surface.h5", "r") as f:
        x, v_fixed = f["xcoordinates"][()], f["train_loss"][()]
        assert f.attrs["bn_recompute"] == "true"
    # Interpolated running variances (1-a) v1 + a v2 go negative for a = -2 or 3 where one model's
    # variance is over 2/3 (or 3/2) of the other's: NaN losses there; recomputed, every point is finite.
    assert not np.isfinite(v_plain).all(), v_plain
    assert np.isfinite(v_fixed).all(), v_fixed
    assert plain["train_loss/nonfinite"] > 0 and fixed.get("train_loss/nonfinite", 0) == 0
    # the models themselves (a = 0, 1) are unchanged up to the statistics' recomputation
    ckpt = torch.load(ck[1], weights_only=True)
    model = cifar_resnet(depth=8, num_classes=10, in_channels=1, image_size=8)
    model.load_state_dict(ckpt["state_dict"])
    names = [n for n, _ in model.named_parameters()]
    train = DeviceData(digits.train, digits.mean, digits.std, torch.device("cpu"))
    loss, _ = from_scratch(model, names, [p.detach() for p in model.parameters()], train, len(train))
    assert v_fixed[list(np.round(x, 6)).index(1.0)] == pytest.approx(loss, rel=2e-5)


def test_a_negative_running_variance_gives_nan_on_every_evaluation_path(digits):
    torch.manual_seed(0)
    model = cifar_resnet(depth=8, num_classes=10, in_channels=1, image_size=8).eval()
    with torch.no_grad():
        model.bn1.running_var[1] = -1.0  # what an interpolated variance outside the models' segment can be
    train = DeviceData(digits.train, digits.mean, digits.std, torch.device("cpu"))
    assert torch.isnan(model(train.normalize(train.images[:4]))).all()  # the model as written
    for fold in (False, True):
        for fuse in (False, True):
            measure = LossMeasure(model, {"train": train}, "crossentropy", 2048, Precision(fold_bn=fold), (1, 0), fuse=fuse)
            space = WeightSpace(model, "weights", [[torch.zeros_like(p) for p in model.parameters()]])
            (_, values), = measure.points(space, parse_grid("0:1:2"), [0])
            assert np.isnan(values["train_loss"]), (fold, fuse, values)
