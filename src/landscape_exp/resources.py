"""Checks made before expensive work starts: is the output writable, do memory and disk suffice;
how many CPU threads this process may use, and how the C allocator treats freed memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from landscape_exp.errors import UserError

# Figures of one surface (PNG+PDF, a ~5 MB self-contained HTML, VTP) stay well under this.
FIGURE_BYTES = 64 * 1024 * 1024


def check_writable(directory: str | Path, hint: str = "hydra.run.dir=... or paths.output_dir=...") -> None:
    """Create ``directory`` and a temporary file in it, or raise one clear line."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"output directory {str(d)!r} is not writable ({e.strerror or e}); choose another with {hint}") from None


def surface_bytes(points: int, metrics: int) -> int:
    """Upper estimate of a surface file plus its journal (float64 per metric, done mask, JSON lines)."""
    return points * (metrics * 8 + 1) + points * (40 + 30 * metrics)


def available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_surface_resources(points: int, metrics: int, path: str | Path, *, figures: bool = True) -> None:
    """Refuse a surface that cannot fit in memory or on disk, before any work is done."""
    need_mem = points * metrics * 8 * 4  # values, done mask, copies while writing
    if need_mem > available_memory():
        raise UserError(
            f"a surface of {points:,} points needs about {need_mem / 2**30:.1f} GiB of memory but "
            f"{available_memory() / 2**30:.1f} GiB is available; use fewer points (x=min:max:num) or shard it"
        )
    directory = Path(path).parent
    check_writable(directory, hint="surf_file=... (or hydra.run.dir=... when surf_file is not set)")
    need_disk = 2 * surface_bytes(points, metrics) + (FIGURE_BYTES if figures else 0)  # x2: atomic replace
    free = shutil.disk_usage(directory).free
    if need_disk > free:
        raise UserError(
            f"not enough disk space in {str(directory)!r}: the surface and its figures need about "
            f"{need_disk / 2**20:.0f} MiB but {free / 2**20:.0f} MiB is free"
        )


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


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_MAX = 32 * 2**20  # the largest mmap threshold glibc's mallopt accepts on 64-bit systems
_KEPT = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks (up to 32 MiB each) for reuse instead of handing them back to
    the kernel, which zero-fills every page again at its next touch.

    A CPU forward pass frees and allocates the same activation buffers batch after batch; with
    glibc's defaults part of them goes back to the kernel each time (the heap top is trimmed, large
    blocks are unmapped), and a ResNet-56 evaluation at batch 128 spends ~15% of its CPU time in
    page faults (docs/engine.md). The process keeps its peak memory instead. Once per process;
    a no-op (False) without glibc."""
    global _KEPT
    if _KEPT:
        return True
    from landscape_exp.cpu import cpu_features

    if not cpu_features().glibc:  # musl, macOS, Windows: their allocators have no such knobs
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # both together: setting either one alone turns glibc's adaptive mmap threshold off
        _KEPT = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_MMAP_MAX))
                     and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**30)))
    except (OSError, AttributeError):
        return False
    return _KEPT
