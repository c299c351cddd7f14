"""BatchNorm folding, the evaluation copy the surface engine runs, the evaluation batch size and the
CPU thread count (issue 16)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from landscape_exp.data.datasets import load_dataset
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.cpu import cpu_threads
from landscape_exp.engine.evaluation import evaluate_sums
from landscape_exp.engine.folding import EvalCopy, eval_forward, fold_pairs, folded_conv
from landscape_exp.engine.precision import Precision, resolve_precision
from landscape_exp.surface.grid import parse_grid
from landscape_exp.surface.measures import LossMeasure
from landscape_exp.weights.directions import create_random_direction
from landscape_exp.weights.params import snapshot
from landscape_exp.weights.space import WeightSpace

ROOT = Path(__file__).resolve().parents[1]


def _model(name: str, **extra) -> torch.nn.Module:
    """A zoo model on 3x16x16 inputs with BatchNorm statistics that are not the identity."""
    from landscape_exp.models import densenet, resnet, small, vgg

    builders = {"resnet": resnet.cifar_resnet, "vgg": vgg.vgg9, "densenet": densenet.densenet, "lenet": small.lenet}
    torch.manual_seed(0)
    model = builders[name](num_classes=10, in_channels=3, image_size=16, **extra)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, 16, 16) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


MODELS = [("resnet", {"depth": 8}), ("resnet", {"depth": 8, "shortcut": False}), ("vgg", {}),
          ("densenet", {"blocks": [1, 1, 1, 1], "growth_rate": 4})]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("fuse", [False, True], ids=["folded", "folded+fused"])
@pytest.mark.parametrize("name,extra", MODELS, ids=["resnet8", "resnet8_noshort", "vgg9", "densenet"])
def test_folded_copy_equals_the_unfolded_model(name, extra, fuse):
    model = _model(name, **extra)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = EvalCopy(model, fuse=fuse)
    assert copy.num_folded > 0
    # resnet8: stem + 3 blocks x (conv-relu, conv-add-relu); no-skip: stem + 6 conv-relu; vgg9: 7 convs
    assert copy.num_fused == ({"resnet": 7, "vgg": 7, "densenet": 4}[name] if fuse else 0)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in copy.net.modules()) or name == "densenet"
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        assert _rel(copy(x), model(x)) < 1e-5
        # a move of every tensor, BatchNorm statistics included ("states" directions): refresh follows it
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.mul_(1 + 0.05 * torch.randn_like(t).clamp(-1, 1))
        moved = {k: v.clone() for k, v in model.state_dict().items()}
        copy.refresh()
        assert _rel(copy(x), model(x)) < 1e-5
    for k, v in model.state_dict().items():  # folding never writes into the live model
        assert torch.equal(v, moved[k]) and v.data_ptr() != 0
    assert set(before) == set(model.state_dict())


def test_fold_formula_and_what_is_not_folded():
    conv, bn = torch.nn.Conv2d(3, 4, 3, bias=True).double(), torch.nn.BatchNorm2d(4).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    w, b = folded_conv(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, w, b), bn(conv(x)), rtol=1e-12, atol=1e-12)

    class Pre(torch.nn.Module):  # BatchNorm before the conv (pre-activation), and one in training mode
        def __init__(self):
            super().__init__()
            self.bn0, self.conv, self.bn1 = torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn1(self.conv(self.bn0(x)))

    m = Pre().eval()
    assert [p.norm for p in fold_pairs(torch.fx.symbolic_trace(m))] == ["bn1"]
    m.bn1.train()
    assert fold_pairs(torch.fx.symbolic_trace(m)) == []


def test_models_without_batchnorm_run_as_they_are():
    model = _model("lenet")
    fwd, copy = eval_forward(model, fold=True)
    assert fwd is model and copy is None
    fwd, copy = eval_forward(model, fold=True, fuse=True)  # on a CPU, conv-ReLU still fuses
    assert copy is not None and copy.num_folded == 0 and copy.num_fused == 2
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fwd(x), model(x), rtol=1e-5, atol=1e-6)


def test_loss_measure_folds_once_per_point_and_leaves_the_model(monkeypatch):
    ds = load_dataset({"name": "synthetic", "num_classes": 10, "channels": 3, "image_size": 16, "num_train": 200,
                       "num_test": 1, "seed": 0})
    model = _model("resnet", depth=8)
    w = snapshot(model, "states")
    dirs = [create_random_direction(w, seed=1), create_random_direction(w, seed=2)]
    grid = parse_grid("-0.5:0.5:2", "-0.5:0.5:2")
    data = {"train": DeviceData(ds.train, ds.mean, ds.std, "cpu")}
    results = {}
    for fold in (False, True):
        space = WeightSpace(model, "states", dirs)
        measure = LossMeasure(model, data, "crossentropy", 64, Precision(fold_bn=fold), (1, 0))
        assert measure.num_folded == (9 if fold else 0)  # stem, 3 blocks x 2, 2 projections
        if fold:
            calls = []
            real = measure._copy.refresh
            monkeypatch.setattr(measure._copy, "refresh", lambda calls=calls, real=real: (calls.append(1), real())[1])
        results[fold] = dict(measure.points(space, grid, list(range(grid.size))))
        space.restore()
        if fold:
            assert len(calls) == grid.size
    for k in range(grid.size):
        assert results[True][k]["train_loss"] == pytest.approx(results[False][k]["train_loss"], rel=1e-5)
    for a, b in zip(snapshot(model, "states"), w):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kernels", [True, False], ids=["probe", "forced-without-bf16-fusion"])
def test_bf16_copy_error_is_small_and_reported(monkeypatch, kernels):
    """bf16 copies, fused where this CPU's oneDNN runs bf16 fusion (AVX-512 or avx_ne_convert) and
    unfused (emulated bf16) elsewhere; the branch without it is forced on every machine."""
    from dataclasses import replace

    from landscape_exp.engine import cpu, folding

    features = cpu.cpu_features() if kernels else replace(cpu.cpu_features(), fused_conv_bf16=False)
    monkeypatch.setattr(folding, "cpu_features", lambda: features)
    model = _model("resnet", depth=8)
    x = torch.randn(64, 3, 16, 16)
    for fuse in (False, True):
        copy = EvalCopy(model, dtype=torch.bfloat16, channels_last=True, fuse=fuse)
        assert copy.num_fused == (7 if fuse and features.fused_conv_bf16 else 0)
        with torch.no_grad():
            ref, low = model(x), copy(x).float()
        assert 0 < _rel(low, ref) < 5e-2


def test_compiled_copy_does_not_recompile_per_point(monkeypatch):
    """The copy's tensors are graph inputs written in place: new weights, same graph."""
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    torch._dynamo.reset()
    model = _model("resnet", depth=8)
    copy = EvalCopy(model, compile=True, fuse=True)
    assert copy.num_fused == 4  # conv-ReLU only: the residual form has no fake-tensor kernel
    x = torch.randn(8, 3, 16, 16)
    outs = []
    with torch.no_grad():
        for _ in range(3):
            for p in model.parameters():
                p.mul_(1.01)
            copy.refresh()
            outs.append(copy(x))
            torch.testing.assert_close(outs[-1], model(x), rtol=1e-4, atol=1e-5)
    assert counter.frame_count == 1
    assert not torch.equal(outs[0], outs[-1])
    torch._dynamo.reset()


@pytest.mark.parametrize("loss", ["crossentropy", "mse"])
def test_batch_size_changes_no_loss_beyond_1e6(loss):
    ds = load_dataset({"name": "synthetic", "num_classes": 10, "channels": 3, "image_size": 16, "num_train": 300,
                       "num_test": 1, "seed": 1})
    data = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    model = _model("resnet", depth=8)
    copy = EvalCopy(model, channels_last=True)
    for fwd in (model, copy):
        sums = [evaluate_sums(fwd, data, loss=loss, batch_size=b) for b in (1, 7, 32, 128, 300, 1024)]
        ref_loss, ref_correct = sums[0]
        for total, correct in sums[1:]:
            assert abs(float(total) - float(ref_loss)) <= 1e-6 * abs(float(ref_loss))
            assert int(correct) == int(ref_correct)


def test_batch_is_chosen_for_the_device_and_model(tmp_path):
    """eval.batch_size=null: the largest power of two whose biggest layer output fits the device's
    budget (conf/config.yaml), measured in docs/engine.md: 128 for ResNets on CIFAR-10 on a CPU,
    the whole split for LeNet on 8x8 digits, 4096 on CUDA."""
    from omegaconf import OmegaConf

    from landscape_exp.config.settings import Settings
    from landscape_exp.job.context import RunContext

    from conftest import compose_cfg

    cases = {("model=resnet56", "dataset=cifar10"): (128, 4096), ("model=resnet20", "dataset=cifar10"): (128, 4096),
             ("model=vgg9", "dataset=cifar10"): (32, 4096), ("model=lenet",): (4096, 4096),
             ("model=lenet", "eval.batch_size=77"): (77, 77)}
    for overrides, expected in cases.items():
        s = Settings.from_config(OmegaConf.to_container(compose_cfg(tmp_path, list(overrides)), resolve=True))
        got = tuple(RunContext(settings=s, out_dir=tmp_path, device=torch.device(d)).eval_batch_size for d in ("cpu", "cuda"))
        assert got == expected, overrides


def test_batch_for_memory_and_largest_output():
    from landscape_exp.engine.batch import batch_for_memory, largest_output_bytes

    assert batch_for_memory(65536, 8 * 2**20, 32, 4096) == 128
    assert batch_for_memory(1536, 8 * 2**20, 32, 4096) == 4096
    assert batch_for_memory(2**24, 8 * 2**20, 32, 4096) == 32  # nothing fits: the minimum
    with torch.device("meta"):
        from landscape_exp.models import resnet

        model = resnet.cifar_resnet(depth=8, num_classes=10, in_channels=3, image_size=32)
    assert largest_output_bytes(model, (3, 32, 32)) == 16 * 32 * 32 * 4


def test_precision_defaults_come_from_the_config():
    from omegaconf import OmegaConf

    from landscape_exp.config.reader import Section
    from landscape_exp.config.sections import PrecisionSettings

    for mode in ("auto", "fp32", "tf32", "bf16"):
        p = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "precision" / f"{mode}.yaml"))
        assert PrecisionSettings.read(Section(p, "precision")).fold_bn is True
    auto = resolve_precision("auto", None, False, torch.device("cpu"), fold_bn=True)
    assert auto.mode == "fp32" and auto.fold_bn and auto.dtype is None and not auto.notices
    from landscape_exp.engine.cpu import cpu_features

    assert auto.channels_last == cpu_features().mkldnn  # oneDNN's layout where there is oneDNN


# -- threads -------------------------------------------------------------------------------------

def test_threads_follow_the_affinity_mask(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert cpu_threads(environ={}, current=64) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    topo = tmp_path / "cpu"
    for c, core in enumerate([0, 0, 1, 1]):  # two cores with two hyper-threads each
        (topo / f"cpu{c}" / "topology").mkdir(parents=True)
        (topo / f"cpu{c}" / "topology" / "core_id").write_text(f"{core}\n")
        (topo / f"cpu{c}" / "topology" / "physical_package_id").write_text("0\n")
    none = tmp_path / "no-cgroup"
    detect = functools.partial(cpu_threads, current=64)  # torch's own setting: no cap
    assert detect(environ={}, sysfs=topo, cgroup=none) == 2
    assert detect(environ={}, sysfs=tmp_path / "nothing", cgroup=none) == 4
    assert detect(environ={"SLURM_CPUS_PER_TASK": "3"}, sysfs=tmp_path / "x", cgroup=none) == 3
    assert detect(environ={"OMP_NUM_THREADS": "1"}, sysfs=tmp_path / "x", cgroup=none) == 1
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert detect(environ={}, sysfs=tmp_path / "x", cgroup=quota) == 2
    quota.write_text("max 100000\n")
    assert detect(environ={}, sysfs=tmp_path / "x", cgroup=quota) == 4
    assert cpu_threads(7, environ={"SLURM_CPUS_PER_TASK": "1"}) == 7  # threads=N is taken as given
    # a process (a test, an embedding program) that set fewer torch threads keeps them
    assert cpu_threads(environ={}, sysfs=topo, cgroup=none, current=1) == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2
                    or subprocess.run(["which", "taskset"], capture_output=True).returncode != 0,
                    reason="needs taskset and two CPUs")
def test_threads_under_taskset_in_a_subprocess():
    code = "from landscape_exp.engine.cpu import cpu_threads; print(cpu_threads(current=64))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


# -- bookkeeping ---------------------------------------------------------------------------------

def test_hdf5_replace_takes_a_bounded_share_of_the_time(tmp_path, monkeypatch):
    """The whole surface file is rewritten now and then; a rewrite that took T waits at least
    FLUSH_SHARE x T, so a large grid or a slow file system does not slow every point."""
    from landscape_exp.surface.store import SurfaceFile, read_surface

    grid = parse_grid("-1:1:30", "-1:1:30")
    with SurfaceFile(tmp_path / "s.h5", grid, ["train_loss"], fingerprint={"t": 1}, flush_seconds=0.0) as store:
        writes = []
        real = store._write_h5

        def slow() -> None:  # every replace "takes" 10 s
            real()
            store._flush_cost = 10.0
            writes.append(1)

        monkeypatch.setattr(store, "_write_h5", slow)
        for k in range(grid.size):
            store.record(k, {"train_loss": float(k)})
        assert len(writes) <= 1  # without the bound (flush_seconds=0): one replace per point
    assert read_surface(tmp_path / "s.h5")["done"].all()


