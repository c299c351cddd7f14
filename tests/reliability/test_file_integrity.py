"""The surface file under damage, in-process (no model needed: synthetic values on a small grid).

* metadata corrupted inside an HDF5 file that still opens: reported in one line naming the file,
  left byte-identical, and moved aside (kept) with ``surface_recover=true``;
* a corrupt merged surface rebuilt from its shard files by ``task=merge``, the corrupt file kept;
* a writer killed between points (``os._exit``) with a torn last journal line: every complete
  record, NaN and infinities included, is replayed, the torn one recomputed;
* the disk filling up during a run: the error reaches the caller, the file stays readable and
  the run resumes where it stopped.
"""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

import landscape_exp.surface.store as sf
from landscape_exp.app import run_job
from landscape_exp.errors import UserError
from landscape_exp.surface.grid import parse_grid
from landscape_exp.surface.sharding import shard_indices, shard_path
from landscape_exp.surface.store import SurfaceFile, read_surface

from conftest import ROOT, compose_cfg

GRID = parse_grid("-1:1:5", "-1:1:4")
METRICS = ["train_loss", "train_acc"]
FP = {"test": "reliability"}


def value(k: int) -> dict[str, float]:
    return {"train_loss": 0.25 * k + 0.125, "train_acc": float(k % 7)}


def write_surface(path: Path, indices: list[int] | None = None) -> None:
    with SurfaceFile(path, GRID, METRICS, fingerprint=FP, attrs={"task": "surface2d"}, indices=indices) as s:
        for k in s.pending():
            s.record(k, value(k))


def expected(metric: str) -> np.ndarray:
    return np.array([value(k)[metric] for k in range(GRID.size)]).reshape(GRID.shape)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


def corrupt_metadata(good: bytes, scratch: Path) -> bytes:
    """``good`` with 256 bytes zeroed where the superblock still opens but reading the surface
    fails (object headers / symbol tables, not raw data). Found by trying windows in order, so it
    follows whatever layout this HDF5 version writes."""
    for start in range(96, len(good) - 256, 64):
        data = good[:start] + b"\0" * 256 + good[start + 256:]
        scratch.write_bytes(data)
        try:
            f = h5py.File(scratch, "r")
        except OSError:
            continue  # not this kind of damage: the file does not even open
        try:
            with f:
                for name in ("xcoordinates", "ycoordinates", *METRICS, "done"):
                    f[name][()]
                dict(f.attrs)
        except Exception:
            return data
    pytest.fail("no window of the file gives an HDF5 file that opens but cannot be read")


def test_corrupt_metadata_is_reported_kept_and_recoverable(tmp_path):
    path = tmp_path / "surface.h5"
    write_surface(path)
    bad = corrupt_metadata(path.read_bytes(), tmp_path / "scratch.h5")
    path.write_bytes(bad)

    with pytest.raises(UserError) as e:
        SurfaceFile(path, GRID, METRICS, fingerprint=FP).open()
    msg = one_line(e)
    assert str(path) in msg and "corrupt" in msg and "surface_recover=true" in msg, msg
    assert path.read_bytes() == bad
    with pytest.raises(UserError) as e:
        read_surface(path)  # what task=plot / merge use
    assert str(path) in one_line(e)

    with SurfaceFile(path, GRID, METRICS, fingerprint=FP, move_corrupt_aside=True) as s:
        assert s.num_done == 0 and len(s.pending()) == GRID.size
    aside = sorted(tmp_path.glob("surface.h5.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bad


def test_merge_rebuilds_a_corrupt_surface_from_its_shards(tmp_path):
    surf = tmp_path / "sweep" / "surface.h5"
    for i in range(2):
        write_surface(shard_path(surf, 2, i), shard_indices(GRID.size, 2, i))

    def merge(*extra: str) -> dict:
        cfg = compose_cfg(tmp_path, ["task=merge", f"surf_file={surf}", "plot.enabled=false", *extra])
        return run_job(cfg, output_dir=tmp_path / "merge_run", job={})

    assert merge()["points_done"] == GRID.size
    whole = surf.read_bytes()
    broken = whole[: len(whole) // 2]
    surf.write_bytes(broken)

    def corrupt_bytes_survive() -> bool:
        kept = [surf] + sorted(surf.parent.glob("surface.h5.corrupt-*"))
        return any(p.is_file() and p.read_bytes() == broken for p in kept)

    # Without surface_recover: refused with the way out named, or rebuilt with the corrupt file
    # moved aside; never silently overwritten.
    try:
        merge()
    except UserError as e:
        assert str(surf) in str(e) and "surface_recover=true" in str(e) and "\n" not in str(e), str(e)
    assert corrupt_bytes_survive()
    # With surface_recover=true (what the refusal says): rebuilt from the shards, corrupt file kept.
    summary = merge("surface_recover=true")
    assert summary["points_done"] == GRID.size
    got = read_surface(surf)
    for m in METRICS:
        np.testing.assert_array_equal(got[m], expected(m))
    assert corrupt_bytes_survive() and surf.read_bytes() != broken


KILLED_WRITER = r"""
import math, os, sys
from landscape_exp.surface.grid import parse_grid
from landscape_exp.surface.store import SurfaceFile
path = sys.argv[1]
special = {3: math.nan, 4: math.inf, 5: -math.inf}
s = SurfaceFile(path, parse_grid("-1:1:5", "-1:1:4"), ["train_loss", "train_acc"],
                fingerprint={"test": "reliability"}, flush_seconds=1e9)
s.open()
for k in range(10):
    s.record(k, {"train_loss": special.get(k, 0.25 * k + 0.125), "train_acc": float(k % 7)})
with open(path + ".journal", "ab") as j:  # the next record, cut short by the kill
    j.write(b'{"k": 10, "v": {"train_loss": 2.6')
os._exit(137)
"""


def test_killed_writer_journal_is_replayed_nan_and_torn_line_included(tmp_path):
    path = tmp_path / "surface.h5"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 137, r.stderr[-2000:]
    with h5py.File(path, "r") as f:  # readable: written whole before the first point
        assert int(np.asarray(f["done"][()]).sum()) == 0
    with SurfaceFile(path, GRID, METRICS, fingerprint=FP) as s:
        assert s.num_done == 10
        assert s.pending() == list(range(10, GRID.size))  # the torn record is recomputed
        loss = s.values["train_loss"]
        assert math.isnan(loss[3]) and loss[4] == math.inf and loss[5] == -math.inf
        assert loss[6] == value(6)["train_loss"]
    got = read_surface(path)  # the replayed points are now in the HDF5 file itself
    assert int(got["done"].sum()) == 10 and math.isnan(got["train_loss"].ravel()[3])
    journal = tmp_path / "surface.h5.journal"
    assert not journal.exists() or journal.read_bytes() == b""  # folded into the file on close


def test_disk_full_mid_run_keeps_file_readable_and_resumable(tmp_path, monkeypatch):
    """ENOSPC on the journal write of the 8th point (simulated: this module's ``os.write`` only)."""
    path = tmp_path / "surface.h5"
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        if data.startswith(b'{"k"'):  # a journal record
            calls["n"] += 1
            if calls["n"] >= 8:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    fake_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake_os.write = write
    monkeypatch.setattr(sf, "os", fake_os)
    with pytest.raises(OSError) as e:
        with SurfaceFile(path, GRID, METRICS, fingerprint=FP) as s:
            for k in s.pending():
                s.record(k, value(k))
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    with h5py.File(path, "r") as f:
        done = np.asarray(f["done"][()]).astype(bool).ravel()
        loss = np.asarray(f["train_loss"][()]).ravel()
    assert done[:7].all(), "points journaled before the disk filled up were lost"
    assert (loss[done] == expected("train_loss").ravel()[done]).all()  # nothing half-written
    write_surface(path)  # resumes: only the rest is computed
    got = read_surface(path)
    for m in METRICS:
        np.testing.assert_array_equal(got[m], expected(m))
