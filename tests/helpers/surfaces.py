"""Checks on surface runs in subprocesses: a run's exit, a surface journal's progress, bit-equal surfaces."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def _datasets(path: Path) -> tuple[dict[str, np.ndarray], str]:
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
        return data, str(f.attrs["fingerprint"])


def assert_same_surface(got: Path, want: Path) -> None:
    """Bit-for-bit equal metrics, coordinates and done mask, and the same fingerprint (same
    checkpoint, directions, grid, data and precision); only the direction file's path may differ."""
    a, fa = _datasets(got)
    b, fb = _datasets(want)
    assert sorted(a) == sorted(b)
    for k in a:
        if k == "dir_file":
            continue
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k], equal_nan=True), f"{k} differs: max |diff| {np.nanmax(np.abs(a[k] - b[k]))}"
    assert fa == fb
    assert a["done"].all()


def journal_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_journal(proc: subprocess.Popen, journal: Path, lines: int, timeout: float = 240) -> int:
    """Poll until ``journal`` holds ``lines`` records (the process is mid-surface); returns the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = journal_lines(journal)
        if n >= lines:
            return n
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"run ended (exit {proc.returncode}) before {journal.name} had {lines} points\n"
                        f"{out[-2000:]}\n{err[-2000:]}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"{journal} did not reach {lines} points in {timeout} s")
