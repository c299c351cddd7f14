"""Every CPU fast path decided from what this CPU and torch build support (issue 27): the probe
against /proc/cpuinfo and torch's own checks, and each fallback forced so that both branches run
on every machine (an AVX2-only AMD EPYC, an AVX-512/AMX Xeon, ARM)."""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape_exp.engine import cpu, folding, memory
from landscape_exp.engine.cpu import CpuFeatures, bf16_missing, cpu_features, probe, read_cpuinfo
from landscape_exp.engine.folding import EvalCopy
from landscape_exp.engine.precision import resolve_precision
from landscape_exp.errors import UserError

from conftest import run_cli

CPU = torch.device("cpu")
X86 = platform.machine() in ("x86_64", "AMD64")

EPYC_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma f16c
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma f16c
"""
GRAVITON_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def _features(**changes) -> CpuFeatures:
    """This machine's probe with some features changed: a CPU kind the test machine is not."""
    return replace(cpu_features(), **changes)


def _cpuinfo_flags() -> frozenset[str]:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    return read_cpuinfo(path.read_text())[1]


def test_cpuinfo_is_read_for_x86_and_arm() -> None:
    model, flags = read_cpuinfo(EPYC_CPUINFO)
    assert model == "AMD EPYC" and flags == {"fpu", "sse", "sse2", "avx", "avx2", "fma", "f16c"}
    model, flags = read_cpuinfo(GRAVITON_CPUINFO)
    assert model == "" and "bf16" in flags and "asimd" in flags  # ARM: "Features", no model name


def test_probe_agrees_with_the_cpu_flags_and_torchs_own_checks() -> None:
    """The probe's verdicts against the kernel's flags (what the silicon has) and torch's checks
    (what the build dispatches to), whichever CPU this is."""
    flags, f = _cpuinfo_flags(), probe()
    assert f.flags == flags
    if X86:
        # oneDNN's bf16 kernels: AVX-512 BW/VL/DQ or avx_ne_convert (its own refusal message says so)
        assert f.bf16_kernels == ({"avx512bw", "avx512vl", "avx512dq"} <= flags or "avx_ne_convert" in flags)
        assert f.bf16_units == bool({"avx512_bf16", "amx_bf16"} & flags)
        if "ATEN_CPU_CAPABILITY" not in __import__("os").environ:  # an override would pick a lower level
            assert ("AVX512" in f.capability) == ({"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags)
            assert ("AVX2" in f.capability) == ("avx2" in flags and "AVX512" not in f.capability)
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is not None:
        assert f.bf16_kernels == bool(check())
    # the one-batch trial of bf16 fusion agrees with torch's check; fp32 fusion runs wherever oneDNN is
    assert f.fused_conv_bf16 == (f.bf16_kernels and f.mkldnn)
    assert f.fused_conv == f.mkldnn
    assert f.glibc == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    for name in ("bf16_kernels", "fused_conv", "fused_conv_bf16"):
        assert getattr(f, name) or f.why.get(name)  # a missing feature says why
    assert f.describe().startswith(f.model or "unknown CPU") and f.capability in f.describe()


def test_probe_names_what_is_missing_for_each_cpu_kind() -> None:
    epyc = CpuFeatures("AMD EPYC", "x86_64", read_cpuinfo(EPYC_CPUINFO)[1], "AVX2", True, False, False, True, False, True)
    assert bf16_missing(epyc) == ("avx512bw, avx512vl and avx512dq, or avx_ne_convert "
                                  "(missing here: avx512bw, avx512vl, avx512dq, avx_ne_convert)")
    assert epyc.describe() == "AMD EPYC (x86_64, torch AVX2, no AVX-512, no AMX, no bf16 units)"
    arm = replace(epyc, model="", machine="aarch64", flags=read_cpuinfo(GRAVITON_CPUINFO)[1], capability="DEFAULT")
    assert "ARM" in bf16_missing(arm) and arm.describe().startswith("unknown CPU (aarch64, torch DEFAULT, no bf16")
    assert bf16_missing(replace(epyc, mkldnn=False)) == "oneDNN, which this torch build lacks"


def test_features_can_be_switched_off_for_testing_and_a_typo_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(cpu.OFF_ENV, "bf16_kernels, fused_conv")
    f = probe()
    assert not f.bf16_kernels and not f.fused_conv and f.why["fused_conv"] == f"switched off by {cpu.OFF_ENV}"
    assert f.mkldnn == torch.backends.mkldnn.is_available()  # the others as probed
    monkeypatch.setenv(cpu.OFF_ENV, "avx512")
    with pytest.raises(UserError, match=r"unknown feature 'avx512'; allowed: .*bf16_kernels"):
        probe()


# -- bf16: the fast path where it runs, fp32 with one line where it does not ------------------------

def test_bf16_runs_as_asked_where_the_cpu_has_bf16_kernels() -> None:
    p = resolve_precision("bf16", True, False, CPU, cpu=_features(bf16_kernels=True, fused_conv_bf16=True))
    assert p.mode == "bf16" and p.dtype == torch.bfloat16 and p.notices == ()


def test_bf16_falls_back_to_fp32_with_one_line_naming_the_missing_feature() -> None:
    avx2 = _features(bf16_kernels=False, fused_conv_bf16=False, flags=read_cpuinfo(EPYC_CPUINFO)[1],
                     machine="x86_64", model="AMD EPYC")
    p = resolve_precision("bf16", True, False, CPU, cpu=avx2)
    assert p.mode == "fp32" and p.dtype is None
    (line,) = p.notices
    assert "\n" not in line and line.startswith("precision=bf16 falls back to fp32: this CPU (AMD EPYC)")
    assert "avx512bw, avx512vl and avx512dq, or avx_ne_convert" in line and "precision.emulate_bf16=true" in line
    # asked to keep bf16 anyway: bf16 rounding, said to be emulated and unfused
    e = resolve_precision("bf16", True, False, CPU, cpu=avx2, emulate_bf16=True)
    assert e.mode == "bf16" and len(e.notices) == 1 and "emulated" in e.notices[0] and "unfused" in e.notices[0]
    # fp32 and GPUs are not touched
    assert resolve_precision("fp32", True, False, CPU, cpu=avx2).notices == ()
    assert resolve_precision("bf16", True, False, torch.device("cuda"), cpu=avx2).mode == "bf16"


def test_this_machine_gets_bf16_or_the_fallback_by_its_own_probe() -> None:
    """The real probe decides: a CPU without bf16 kernels (this AVX2 EPYC) falls back, one with them does not."""
    p = resolve_precision("bf16", True, False, CPU)
    assert p.mode == ("bf16" if cpu_features().bf16_kernels else "fp32")
    assert bool(p.notices) != cpu_features().bf16_kernels


def test_unfused_convolutions_are_said_and_channels_last_follows_onednn() -> None:
    p = resolve_precision("fp32", None, False, CPU, cpu=_features(fused_conv=False, why={"fused_conv": "refused"}))
    assert p.notices == ("convolutions run unfused on this CPU (oneDNN's conv+ReLU kernel: refused)",)
    assert resolve_precision("fp32", None, False, CPU, cpu=_features(mkldnn=False)).channels_last is False
    assert resolve_precision("fp32", None, False, torch.device("cuda"), cpu=_features(mkldnn=False)).channels_last


@pytest.mark.parametrize("fused", [True, False], ids=["fused-if-probed", "forced-unfused"])
def test_fp32_fusion_follows_the_probe_with_the_same_values(monkeypatch, fused) -> None:
    from landscape_exp.models.resnet import cifar_resnet

    torch.manual_seed(0)
    model = cifar_resnet(depth=8, num_classes=10, in_channels=3, image_size=16).eval()
    if not fused:
        monkeypatch.setattr(folding, "cpu_features", lambda: _features(fused_conv=False))
    copy = EvalCopy(model, fuse=True, channels_last=True)
    assert copy.num_fused == (7 if fused and cpu_features().fused_conv else 0)
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(copy(x.contiguous(memory_format=torch.channels_last)), model(x), rtol=1e-4, atol=1e-5)


def test_freed_memory_is_kept_only_with_glibc(monkeypatch) -> None:
    monkeypatch.setattr(memory, "_KEPT", False)
    monkeypatch.setattr(cpu, "cpu_features", lambda: _features(glibc=False))
    assert memory.keep_freed_memory() is False  # musl, macOS: no mallopt, no error


# -- end to end: the command, the fallback forced so that it runs the same on every CPU ------

def _surface(run: Path) -> tuple[np.ndarray, dict]:
    (path,) = run.glob("outputs/runs/*/*/surface.h5")
    with h5py.File(path) as f:
        return f["train_loss"][()], {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


@pytest.mark.slow
def test_bf16_without_bf16_kernels_ends_with_a_result_and_one_notice(tmp_path: Path, lenet_ckpt: Path) -> None:
    args = [f"checkpoint={lenet_ckpt}", "task=surface1d", "x=-1:1:3", "plot.enabled=false", "sharpness=none"]
    off = {cpu.OFF_ENV: "bf16_kernels,fused_conv_bf16"}
    runs = {}
    for name, extra, env in (("fp32", ["precision=fp32"], {}), ("fallback", ["precision=bf16"], off),
                             ("emulated", ["precision=bf16", "precision.emulate_bf16=true"], off)):
        (tmp_path / name).mkdir()
        res = run_cli(args + extra, tmp_path / name, extra_env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        runs[name] = (res.stdout, *_surface(tmp_path / name))
    out, loss, attrs = runs["fallback"]
    notes = [line for line in out.splitlines() if "precision=bf16" in line]
    assert len(notes) == 1 and notes[0].startswith("note: precision=bf16 falls back to fp32"), out
    assert "Traceback" not in out and "precision fp32" in out
    assert attrs["precision"] == "fp32" and "falls back to fp32" in attrs["precision_notices"]
    np.testing.assert_array_equal(loss, runs["fp32"][1])  # the fallback is exactly the fp32 run
    out, loss, attrs = runs["emulated"]
    assert attrs["precision"] == "bf16" and "emulated" in attrs["precision_notices"]
    rel = np.abs(loss - runs["fp32"][1]) / np.abs(runs["fp32"][1])
    assert 0 < rel.max() < 5e-2  # bf16 rounding, as asked
