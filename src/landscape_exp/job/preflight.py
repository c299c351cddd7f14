"""Checks made before expensive work starts: is the output writable, do memory and disk suffice;
how many CPU threads this process may use, and how the C allocator treats freed memory."""

from __future__ import annotations

import os
import shutil
import tempfile
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
