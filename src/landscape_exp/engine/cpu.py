"""What this process's CPU and torch build can run, probed once per process, and how many threads
it may use (:func:`cpu_threads`).

The CPU fast paths (oneDNN's bf16 kernels, the fused convolution + ReLU / + add + ReLU kernels,
channels_last, glibc's allocator setting) were tuned on an Intel Xeon with AVX512-BF16 and AMX;
CI machines and researchers' machines are also AMD EPYCs with AVX2 only and ARM servers. Every
fast path asks :func:`cpu_features` whether it can run here instead of assuming it, and where it
cannot, the caller falls back and says which feature is missing (:func:`bf16_missing`).

Three sources, each checked against the others by the tests: the kernel's ``/proc/cpuinfo`` flags
(what the silicon has), torch's own capability checks (``torch.backends.cpu.get_cpu_capability``,
``torch.ops.mkldnn._is_mkldnn_bf16_supported``: what the build will dispatch to), and a one-batch
trial of each fused kernel against the unfused computation (what actually runs, and runs right).

``LANDSCAPE_CPU_OFF=bf16_kernels,fused_conv,...`` (names of :class:`CpuFeatures` fields) makes
the probe report those features as missing: a fallback can be run on a CPU that has the feature.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from landscape_exp.errors import UserError

# oneDNN's bf16 kernels on x86 (its message: "bf16 path needs the cpu support avx_ne_convert or
# avx512bw, avx512vl and avx512dq"); hardware bf16 dot products are AVX512-BF16 / AMX-BF16.
ONEDNN_BF16_X86 = ("avx512bw", "avx512vl", "avx512dq")
BF16_UNITS_X86 = ("avx512_bf16", "amx_bf16")
OFF_ENV = "LANDSCAPE_CPU_OFF"


def read_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags from ``/proc/cpuinfo`` text: x86 lists ``model
    name`` and ``flags``; ARM lists ``Features`` and often no model name (then "")."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model, flags


def _trial_fused(dtype: torch.dtype) -> tuple[bool, str]:
    """Run oneDNN's fused conv+ReLU and conv+add+ReLU on one small batch in ``dtype`` and compare
    them with the unfused computation: (runs and agrees, why not)."""
    if not torch.backends.mkldnn.is_available():
        return False, "this torch build has no oneDNN (mkldnn)"
    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if op is None:
        return False, "this torch build has no torch.ops.mkldnn._convolution_pointwise"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 6, 6, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    r = torch.randn(2, 8, 6, 6, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(8, 8, 3, 3, generator=g).to(dtype), torch.randn(8, generator=g).to(dtype)
    geometry = ([1, 1], [1, 1], [1, 1], 1)
    try:
        with torch.no_grad():
            one = op.default(x, w, b, *geometry, "relu", [], "")
            two = op.binary(x, r, w, b, *geometry, "add", None, "relu", [], "")
            conv = F.conv2d(x.float(), w.float(), b.float(), padding=1)
    except Exception as e:  # the kernel refuses this CPU (bf16 without AVX-512 or avx_ne_convert, ...)
        return False, str(e).splitlines()[0][:200]
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    ok = (torch.allclose(one.float(), conv.relu(), rtol=tol, atol=tol)
          and torch.allclose(two.float(), (conv + r.float()).relu(), rtol=tol, atol=tol))
    return ok, "" if ok else "the fused kernel's output differs from the unfused convolution"


def _capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an old or unusual build
        return "unknown"


def _onednn_bf16() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else _trial_fused(torch.bfloat16)[0]
    except Exception:
        return False


def _bf16_units() -> bool:
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(f()) for f in probes if f is not None)


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU and this torch build support, as the fast paths need to know it.

    ``bf16_kernels``: oneDNN runs bf16 convolutions and matmuls here (else torch emulates bf16 with
    its generic kernels: 7-11x slower than fp32 on an AVX2 EPYC, docs/engine.md). ``bf16_units``: the CPU computes
    bf16 dot products in hardware (AVX512-BF16, AMX), where bf16 is several times faster than fp32.
    ``fused_conv`` / ``fused_conv_bf16``: oneDNN's conv+ReLU and conv+add+ReLU kernels ran right
    in a trial, in fp32 / bf16. ``glibc``: the C library whose allocator :mod:`resources` tunes.
    ``why``: for each missing feature, the reason the probe found.
    """

    model: str
    machine: str
    flags: frozenset[str] = field(repr=False)
    capability: str
    mkldnn: bool
    bf16_kernels: bool
    bf16_units: bool
    fused_conv: bool
    fused_conv_bf16: bool
    glibc: bool
    why: dict[str, str] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """One line: model, architecture, torch's vector capability and the features that matter."""
        x86 = self.machine in ("x86_64", "AMD64", "i686")
        wide = ("AVX-512" if "avx512f" in self.flags else "no AVX-512") if x86 else ""
        amx = ("AMX" if "amx_tile" in self.flags else "no AMX") if x86 else ""
        bf16 = "bf16 units" if self.bf16_units else "no bf16 units"
        parts = [p for p in (self.machine, f"torch {self.capability}", wide, amx, bf16) if p]
        return f"{self.model or 'unknown CPU'} ({', '.join(parts)})"

    def record(self) -> dict[str, object]:
        """A JSON-ready record for benchmark files and result attributes."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("flags", "why")}
        out["flags"] = sorted(self.flags)
        out["description"] = self.describe()
        return out


def bf16_missing(f: CpuFeatures) -> str:
    """What oneDNN's bf16 kernels need that ``f`` lacks, in words (for a fallback notice)."""
    if not f.mkldnn:
        return "oneDNN, which this torch build lacks"
    if f.machine in ("x86_64", "AMD64", "i686"):
        lacking = [x for x in ONEDNN_BF16_X86 if x not in f.flags]
        if lacking:
            return f"avx512bw, avx512vl and avx512dq, or avx_ne_convert (missing here: {', '.join(lacking)}, avx_ne_convert)"
        return "a bf16 kernel of oneDNN for this CPU (torch's check says none)"
    return f"the bf16 extension on {f.machine} (ARMv8.6 BF16) in oneDNN"


def _switched_off(f: CpuFeatures, names: str) -> CpuFeatures:
    off = {n.strip() for n in names.split(",") if n.strip()}
    known = {x.name for x in fields(CpuFeatures) if x.type in ("bool", bool)}
    bad = off - known
    if bad:
        raise UserError(f"{OFF_ENV}={names!r}: unknown feature {sorted(bad)[0]!r}; allowed: {', '.join(sorted(known))}")
    why = dict(f.why) | {n: f"switched off by {OFF_ENV}" for n in off}
    return replace(f, **{n: False for n in off}, why=why)


def probe(cpuinfo: str | None = None) -> CpuFeatures:
    """Probe now (tests; everything else uses the cached :func:`cpu_features`)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux
            cpuinfo = ""
    model, flags = read_cpuinfo(cpuinfo)
    fused, why_fused = _trial_fused(torch.float32)
    fused16, why_fused16 = _trial_fused(torch.bfloat16)
    kernels = _onednn_bf16()
    why = {k: v for k, v in (("fused_conv", why_fused), ("fused_conv_bf16", why_fused16)) if v}
    f = CpuFeatures(model=model or platform.processor() or "", machine=platform.machine(), flags=flags,
                    capability=_capability(), mkldnn=torch.backends.mkldnn.is_available(), bf16_kernels=kernels,
                    bf16_units=_bf16_units(), fused_conv=fused, fused_conv_bf16=fused16 and kernels,
                    glibc=platform.system() == "Linux" and platform.libc_ver()[0] == "glibc", why=why)
    if not kernels:
        f.why["bf16_kernels"] = f"oneDNN's bf16 kernels need {bf16_missing(f)}"
    off = os.environ.get(OFF_ENV, "")
    return _switched_off(f, off) if off else f


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This process's CPU, probed once (a few milliseconds)."""
    return probe()


def _physical_cores(cpus: set[int], sysfs: Path) -> int:
    """Distinct (package, core) pairs among ``cpus``: hyper-threads of one core count once."""
    cores = set()
    for c in cpus:
        topo = sysfs / f"cpu{c}" / "topology"
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)  # no topology (containers, other systems): logical CPUs
    return len(cores) or len(cpus)


def _cgroup_quota(path: Path) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` quota ("max 100000" or "200000 100000"), if any."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def cpu_threads(requested: int | None = None, *, environ: Mapping[str, str] | None = None,
                sysfs: str | Path = "/sys/devices/system/cpu", cgroup: str | Path = "/sys/fs/cgroup/cpu.max",
                current: int | None = None) -> int:
    """Torch threads for this process: ``requested`` when given; else the physical cores among the
    CPUs it may run on (``os.sched_getaffinity``: taskset, Slurm's binding, cpusets), capped by
    ``OMP_NUM_THREADS``, ``SLURM_CPUS_PER_TASK``, a cgroup CPU quota and the ``current`` torch
    setting (a program or test that already chose fewer keeps them); never the machine's core count."""
    if requested:
        return int(requested)
    env = os.environ if environ is None else environ
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    n = _physical_cores(cpus, Path(sysfs))
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        cap = str(env.get(var, "")).strip()
        if cap.isdigit() and int(cap) > 0:
            n = min(n, int(cap))
    quota = _cgroup_quota(Path(cgroup))
    if quota:
        n = min(n, quota)
    if current is None:
        import torch

        current = torch.get_num_threads()
    return max(1, min(n, current))
