"""Directions (Li et al. 2018, sec. 4) against brute-force loops, their HDF5 files read with
plain h5py, and moving a model along them (WeightSpace)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape_exp.errors import UserError
from landscape_exp.models import build_model
from landscape_exp.weights import directions as D
from landscape_exp.weights.params import named_tensors, snapshot
from landscape_exp.weights.space import WeightSpace, point_weights

from conftest import mlp_cfg


class ConvBN(nn.Module):
    """Conv (with bias) -> BN -> ReLU -> Linear: conv filters, BN buffers and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 5 * 5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def convbn() -> ConvBN:
    torch.manual_seed(0)
    m = ConvBN()
    with torch.no_grad():  # non-trivial BN parameters and running statistics
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.5, 0.5)
        m.train()
        for _ in range(3):
            m(torch.randn(8, 3, 5, 5) * 2 + 1)
    return m.eval()


def _raw(weights, seed):
    return D.random_direction(weights, torch.Generator().manual_seed(seed))


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def test_filter_normalization_brute_force(convbn):
    w = snapshot(convbn, "weights")
    raw = _raw(w, 7)
    d = D.create_random_direction(w, seed=7, norm="filter", ignore="biasbn")
    assert [t.shape for t in d] == [t.shape for t in w]
    checked = 0
    for di, ri, wi in zip(d, raw, w):
        if wi.dim() <= 1:
            continue
        for j in range(wi.shape[0]):  # one filter: a conv output channel / a linear row
            dn = math.sqrt(sum(float(v) ** 2 for v in di[j].flatten()))
            wn = math.sqrt(sum(float(v) ** 2 for v in wi[j].flatten()))
            rn = math.sqrt(sum(float(v) ** 2 for v in ri[j].flatten()))
            assert _rel(dn, wn) < 1e-6
            # same orientation as the Gaussian draw, only rescaled
            torch.testing.assert_close(di[j], ri[j] * (wn / rn), rtol=1e-5, atol=1e-7)
            checked += 1
    assert checked == 4 + 6


def test_layer_normalization_brute_force(convbn):
    w = snapshot(convbn, "weights")
    raw = _raw(w, 3)
    d = D.create_random_direction(w, seed=3, norm="layer", ignore="biasbn")
    for di, ri, wi in zip(d, raw, w):
        if wi.dim() <= 1:
            continue
        dn = math.sqrt(sum(float(v) ** 2 for v in di.flatten()))
        wn = math.sqrt(sum(float(v) ** 2 for v in wi.flatten()))
        rn = math.sqrt(sum(float(v) ** 2 for v in ri.flatten()))
        assert _rel(dn, wn) < 1e-6
        torch.testing.assert_close(di, ri * (wn / rn), rtol=1e-5, atol=1e-7)


def test_weight_normalization_brute_force(convbn):
    w = snapshot(convbn, "weights")
    raw = _raw(w, 4)
    d = D.create_random_direction(w, seed=4, norm="weight", ignore="biasbn")
    for di, ri, wi in zip(d, raw, w):
        if wi.dim() <= 1:
            continue
        flat_d, flat_r, flat_w = di.flatten(), ri.flatten(), wi.flatten()
        for k in range(flat_d.numel()):
            assert float(flat_d[k]) == pytest.approx(float(flat_r[k]) * abs(float(flat_w[k])), rel=1e-6, abs=1e-12)


def test_none_normalization_is_the_raw_draw(convbn):
    w = snapshot(convbn, "weights")
    d = D.create_random_direction(w, seed=5, norm="none", ignore=None)
    for di, ri in zip(d, _raw(w, 5)):
        assert torch.equal(di, ri)


@pytest.mark.parametrize("kind", ["weights", "states"])
@pytest.mark.parametrize("norm", ["filter", "layer", "weight"])
def test_ignore_biasbn_zeroes_every_1d_tensor_otherwise_copies_weights(convbn, kind, norm):
    w = snapshot(convbn, kind)
    ignored = D.create_random_direction(w, seed=1, norm=norm, ignore="biasbn")
    kept = D.create_random_direction(w, seed=1, norm=norm, ignore="none")
    n1d = 0
    for a, b, wi in zip(ignored, kept, w):
        if wi.dim() <= 1:
            n1d += 1
            assert torch.count_nonzero(a) == 0
            if wi.is_floating_point():
                assert torch.equal(b, wi)  # the original tool's convention without --xignore
        else:
            assert torch.equal(a, b)  # the >1-D tensors do not depend on ignore
    # conv bias, bn weight, bn bias, fc bias (+ running_mean, running_var, num_batches_tracked)
    assert n1d == (4 if kind == "weights" else 7)


def test_states_directions_cover_batchnorm_buffers(convbn):
    sd = {k: v.clone() for k, v in convbn.state_dict().items()}  # state_dict() shares storage
    names = [n for n, _ in named_tensors(convbn, "states")]
    assert names == list(sd)
    w = snapshot(convbn, "states")
    d = dict(zip(names, D.create_random_direction(w, seed=2, norm="filter", ignore="none")))
    for buf in ("bn.running_mean", "bn.running_var"):
        assert torch.count_nonzero(d[buf]) == d[buf].numel()
        assert torch.equal(d[buf], sd[buf])
    nbt = d["bn.num_batches_tracked"]
    assert nbt.dtype == torch.int64 and int(nbt) == 0
    # A states direction moves the running statistics, never the batch counter.
    space = WeightSpace(convbn, "states", [list(d.values())])
    space.move_to([0.5])
    assert torch.equal(convbn.bn.running_mean, sd["bn.running_mean"] * 1.5)
    assert int(convbn.bn.num_batches_tracked) == 3
    space.restore()


def test_weights_directions_one_per_parameter_and_buffers_unchanged(convbn):
    params = list(convbn.named_parameters())
    w = snapshot(convbn, "weights")
    assert len(w) == len(params) == 6
    assert [t.shape for t in w] == [p.shape for _, p in params]
    dx = D.create_random_direction(w, seed=1)
    dy = D.create_random_direction(w, seed=2)
    buffers = {k: v.clone() for k, v in convbn.named_buffers()}
    space = WeightSpace(convbn, "weights", [dx, dy])
    space.move_to([0.3, -0.7])
    for k, v in convbn.named_buffers():
        assert torch.equal(v, buffers[k])
    for (_name, p), wi, a, b in zip(params, w, dx, dy):
        torch.testing.assert_close(p.detach(), wi + 0.3 * a - 0.7 * b, rtol=1e-6, atol=1e-7)


def _mlp(hidden=(64, 64), seed=0):
    torch.manual_seed(seed)
    return build_model(mlp_cfg(hidden)).eval()


def test_move_to_equals_point_weights_and_restore_is_exact():
    model = _mlp((16,))
    w = snapshot(model, "weights")
    dx, dy = D.create_random_direction(w, seed=1), D.create_random_direction(w, seed=2)
    space = WeightSpace(model, "weights", [dx, dy])
    for a, b in [(0.5, -0.25), (-1.0, 1.0), (0.1, 0.0), (1 / 3, 2 / 7)]:
        space.move_to([a, b])
        ref = point_weights(w, [dx, dy], [a, b])
        for p, r in zip(model.parameters(), ref):
            assert torch.equal(p.detach(), r), f"move_to({a}, {b}) differs from point_weights"
    space.restore()
    for p, o in zip(model.parameters(), w):
        assert torch.equal(p.detach(), o)


def test_move_to_close_to_float64_formula():
    """Independent of rounding order: within one float32 ulp of the float64 formula."""
    model = _mlp((16,))
    w = snapshot(model, "weights")
    dx, dy = D.create_random_direction(w, seed=1), D.create_random_direction(w, seed=2)
    space = WeightSpace(model, "weights", [dx, dy])
    a, b = 1 / 3, -2 / 7
    space.move_to([a, b])
    for p, o, x, y in zip(model.parameters(), w, dx, dy):
        ref = o.double() + a * x.double() + b * y.double()
        assert (float((p.detach().double() - ref).abs().max())
                <= 2 * float(torch.finfo(torch.float32).eps) * max(1.0, float(ref.abs().max())))
    space.restore()


def test_seeded_directions_reproducible_and_nearly_orthogonal():
    w = snapshot(_mlp(), "weights")
    n = sum(t.numel() for t in w)
    a1 = D.create_random_direction(w, seed=1)
    a2 = D.create_random_direction(w, seed=1)
    b = D.create_random_direction(w, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    assert not all(torch.equal(x, y) for x, y in zip(a1, b))
    cos = D.cosine_similarity(a1, b)
    # brute-force cosine in float64
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a1, b))
    na = math.sqrt(sum(float((x.double() ** 2).sum()) for x in a1))
    nb = math.sqrt(sum(float((y.double() ** 2).sum()) for y in b))
    assert cos == pytest.approx(dot / (na * nb), rel=1e-9)
    assert abs(cos) < 5 / math.sqrt(n)  # independent directions in ~9k dimensions
    assert D.cosine_similarity(a1, a2) == pytest.approx(1.0, abs=1e-12)


def test_difference_direction():
    t1 = snapshot(_mlp((16,), seed=0), "states")
    t2 = snapshot(_mlp((16,), seed=1), "states")
    d = D.difference_direction(t2, t1)
    for di, a, b in zip(d, t2, t1):
        assert torch.equal(di, a - b)
    d_ign = D.difference_direction(t2, t1, ignore="biasbn")
    for di, a, b in zip(d_ign, t2, t1):
        assert torch.equal(di, torch.zeros_like(b) if b.dim() <= 1 else a - b)
    with pytest.raises(UserError, match="shape"):
        D.difference_direction(snapshot(_mlp((8,)), "states"), t1)


def test_save_load_round_trip_and_original_layout(tmp_path):
    model = _mlp((16,))
    w = snapshot(model, "weights")
    names = [n for n, _ in model.named_parameters()]
    dx, dy = D.create_random_direction(w, seed=1), D.create_random_direction(w, seed=2)
    path = D.save_directions(tmp_path / "dirs.h5", {"xdirection": dx, "ydirection": dy}, names=names)
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"xdirection", "ydirection"}
        for group, direction in (("xdirection", dx), ("ydirection", dy)):
            assert sorted(f[group].keys(), key=int) == [str(i) for i in range(len(w))]
            for i, p in enumerate(model.parameters()):  # "i" is the i-th tensor of net.parameters()
                arr = f[group][str(i)][()]
                assert arr.shape == tuple(p.shape)
                np.testing.assert_array_equal(arr, direction[i].numpy())
    back = D.load_directions(path, w)
    for group, direction in (("xdirection", dx), ("ydirection", dy)):
        assert all(torch.equal(a, b) for a, b in zip(back[group], direction))
    only_x = D.load_directions(path, w, groups=("xdirection",))
    assert list(only_x) == ["xdirection"]


def test_direction_file_for_another_model_is_refused(tmp_path):
    small = _mlp((16,))
    w = snapshot(small, "weights")
    path = D.save_directions(tmp_path / "dirs.h5", {"xdirection": D.create_random_direction(w, seed=1)},
                             names=[n for n, _ in small.named_parameters()])
    other = snapshot(_mlp((32,)), "weights")  # same tensor count, other shapes
    with pytest.raises(UserError, match="shape") as e:
        D.load_directions(path, other)
    assert "\n" not in str(e.value) and "dirs.h5" in str(e.value)
    deeper = snapshot(_mlp((16, 16)), "weights")  # other tensor count
    with pytest.raises(UserError, match="tensors"):
        D.load_directions(path, deeper)
    with pytest.raises(UserError, match="does not exist"):
        D.load_directions(tmp_path / "nope.h5", w)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5"):
        D.load_directions(tmp_path / "junk.h5", w)


def test_bad_options_are_user_errors(convbn):
    w = snapshot(convbn, "weights")
    with pytest.raises(UserError, match="'sideways'"):
        D.create_random_direction(w, seed=1, norm="sideways")
    with pytest.raises(UserError, match="'bias'"):
        D.create_random_direction(w, seed=1, ignore="bias")
    with pytest.raises(UserError, match="'grads'"):
        named_tensors(convbn, "grads")
