"""Faults during a surface run, driven as a user would (``python run.py ...`` in a subprocess):

* killed (SIGKILL and SIGTERM) at seeded random moments and restarted: the HDF5 file opens
  with plain h5py after every kill, every point already on disk is kept and never recomputed,
  and the final file equals an uninterrupted run's point for point;
* a second process on the same output file is refused by the lock and changes nothing;
* a truncated surface file is refused in one line and left byte-identical, then moved aside
  (kept) and recomputed with ``surface_recover=true``.

All three compare against one uninterrupted run (the module's ``reference``), started first and
computed while the kills happen.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_cli

NX = NY = 15
TOTAL = NX * NY
METRICS = ("train_loss", "train_acc")
# Half the training split per point (the paper's data_split/split_idx) keeps each run short while
# a run still lasts long enough for three kills to land inside it.
START_LINE = re.compile(r"(\d+) points \((\d+) already done, (\d+) to compute\)")


def surface_args(ckpt: Path) -> list[str]:
    # device=cpu: on a GPU the whole surface could finish between two polls of the test.
    return ["task=surface2d", f"checkpoint={ckpt}", f"x=-1:1:{NX}", f"y=-1:1:{NY}", "eval.data_split=2",
            "eval.split_idx=0", "device=cpu", "plot.enabled=false", "logger=none", "progress=false"]


# -- reading what is on disk, independently of the library --------------------------------------

def journal_records(h5: Path) -> list[tuple[int, dict[str, float]]]:
    """Complete records of ``<h5>.journal`` in file order (a line cut short by a kill is not a
    record: it has no newline yet)."""
    j = h5.with_name(h5.name + ".journal")
    if not j.exists():
        return []
    out = []
    for raw in j.read_bytes().split(b"\n")[:-1]:
        rec = json.loads(raw)  # NaN/Infinity are Python-JSON literals, which json.loads accepts
        out.append((int(rec["k"]), {m: float(v) for m, v in rec["v"].items()}))
    return out


def h5_points(h5: Path) -> dict[int, dict[str, float]]:
    """Points marked done in the HDF5 file, opened with plain h5py (fails if it is unreadable)."""
    with h5py.File(h5, "r") as f:
        done = np.asarray(f["done"][()]).astype(bool).ravel()
        vals = {m: np.asarray(f[m][()], dtype=np.float64).ravel() for m in METRICS}
        assert f["train_loss"].shape == (NY, NX)
    return {int(k): {m: float(vals[m][k]) for m in METRICS} for k in np.flatnonzero(done)}


def points_on_disk(h5: Path) -> dict[int, dict[str, float]]:
    """Every durable point: the HDF5 file's plus the journal's (what a restart will replay)."""
    pts = h5_points(h5)
    for k, v in journal_records(h5):
        pts[k] = v
    return pts


def progress(h5: Path) -> int:
    """Points on disk so far, for polling (0 before the file exists). The union matters: after a
    restart the journal still holds the replayed records that the HDF5 file now holds too."""
    try:
        return len(points_on_disk(h5))
    except (OSError, KeyError):
        return 0


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc={proc.returncode}) before {what}:\n{out[-1500:]}\n{err[-1500:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    """Make sure a child we started is gone (continued first, in case it was stopped)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.communicate()


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def assert_same_surface(path: Path, ref: Path) -> None:
    with h5py.File(path, "r") as a, h5py.File(ref, "r") as b:
        assert np.asarray(a["done"][()]).all()
        for k in (*METRICS, "done", "xcoordinates", "ycoordinates"):
            np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)


class Reference:
    """An uninterrupted run, started in the background when the module's first test asks."""

    def __init__(self, root: Path, ckpt: Path):
        self.dir = root / "reference"
        self.proc = run_cli(surface_args(ckpt) + [f"hydra.run.dir={self.dir}"], root, popen=True)
        self._values: dict[str, np.ndarray] | None = None

    @property
    def path(self) -> Path:
        if self.proc.returncode is None:
            out, err = self.proc.communicate(timeout=600)
            assert self.proc.returncode == 0, err[-3000:]
            m = START_LINE.search(out)
            assert m and (int(m[1]), int(m[2]), int(m[3])) == (TOTAL, 0, TOTAL), out
        return self.dir / "surface.h5"

    def value(self, k: int, metric: str) -> float:
        if self._values is None:
            with h5py.File(self.path, "r") as f:
                self._values = {m: np.asarray(f[m][()], dtype=np.float64).ravel() for m in METRICS}
        return float(self._values[metric][k])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, lenet_ckpt):
    ref = Reference(tmp_path_factory.mktemp("surface_ref"), lenet_ckpt)
    yield ref
    stop(ref.proc)


def test_killed_runs_resume_without_loss_or_recomputation(tmp_path, lenet_ckpt, reference):
    """SIGKILL, SIGTERM, SIGKILL at seeded random points of one surface, then a clean rerun."""
    rng = random.Random(9)  # GitHub issue 9
    out = tmp_path / "run"
    h5 = out / "surface.h5"
    args = surface_args(lenet_ckpt) + [f"hydra.run.dir={out}"]
    plan = [(signal.SIGKILL, rng.uniform(0.08, 0.30)), (signal.SIGTERM, rng.uniform(0.38, 0.60)),
            (signal.SIGKILL, rng.uniform(0.68, 0.90))]
    on_disk: dict[int, dict[str, float]] = {}
    for sig, fraction in plan:
        target = int(fraction * TOTAL)
        proc = run_cli(args, tmp_path, popen=True)
        try:
            wait_until(lambda target=target: progress(h5) >= target, proc, f"{target} points were on disk")
            time.sleep(rng.uniform(0.0, 0.03))  # land anywhere inside a point, a write or a flush
            assert proc.poll() is None, "the run finished before it could be killed"
            proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            stop(proc)
        # SIGTERM becomes SystemExit(143) so the surface file is flushed on the way out.
        assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 143), stderr[-2000:]
        m = START_LINE.search(stdout)
        assert m, stdout
        # The restart replayed exactly what the previous process left and computes only the rest.
        assert (int(m[1]), int(m[2]), int(m[2]) + int(m[3])) == (TOTAL, len(on_disk), TOTAL)

        journal = [k for k, _ in journal_records(h5)]
        assert len(journal) == len(set(journal)), "a point was journaled twice"
        now = points_on_disk(h5)  # plain h5py: the file is readable after every kill
        assert set(on_disk) <= set(now), "points that were on disk were lost"
        assert len(now) >= target
        for k, v in now.items():  # every durable value is already the final one
            for metric in METRICS:
                assert v[metric] == reference.value(k, metric), (k, metric)
        if sig == signal.SIGTERM:  # flushed: everything is in the HDF5 file, the journal is empty
            assert set(h5_points(h5)) == set(now) and journal == []
        print(f"{signal.Signals(sig).name} at >= {target} points: rc {proc.returncode}, {m[0]!r} before, "
              f"{len(now)} on disk after")  # shown with pytest -s
        on_disk = now

    # The last run is left alone to finish.
    final = run_cli(args, tmp_path, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    m = START_LINE.search(final.stdout)
    assert m and (int(m[2]), int(m[2]) + int(m[3])) == (len(on_disk), TOTAL), final.stdout
    print(f"final run: {m[0]!r}")
    assert 0 < len(on_disk) < TOTAL
    assert_same_surface(h5, reference.path)
    assert journal_records(h5) == []  # a clean finish folds the journal into the file


def test_second_process_on_the_same_file_is_locked_out(tmp_path, lenet_ckpt, reference):
    """While one run writes ``surf_file``, a second one on the same file exits with the lock
    message and touches nothing; the first then finishes with an uninterrupted run's values.

    The first run is paused (SIGSTOP, lock still held) while the second starts, so the overlap
    does not depend on how fast this machine is."""
    surf = tmp_path / "shared" / "surface.h5"
    args = surface_args(lenet_ckpt) + [f"surf_file={surf}"]
    first = run_cli(args + [f"hydra.run.dir={tmp_path / 'first'}"], tmp_path, popen=True)
    try:
        wait_until(lambda: progress(surf) >= 10, first, "the first run had written 10 points")
        first.send_signal(signal.SIGSTOP)
        files = lambda: {p.name: p.read_bytes() for p in surf.parent.iterdir()}  # noqa: E731
        before = files()
        second = run_cli(args + [f"hydra.run.dir={tmp_path / 'second'}"], tmp_path, timeout=300)
        after = files()
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    finally:
        stop(first)
    assert second.returncode == 2, second.stderr[-3000:]
    line = error_line(second.stderr)
    assert str(surf) in line and "another process" in line and ".lock" in line, line
    assert after == before, "the refused process changed the surface, its journal or its lock"
    assert first.returncode == 0, err[-3000:]
    assert_same_surface(surf, reference.path)


def test_truncated_surface_is_refused_then_recovered(tmp_path, lenet_ckpt, reference):
    """Half a surface file: refused in one line naming it and the way out, byte-identical
    afterwards; with ``surface_recover=true`` it is moved aside (kept) and the surface rebuilt
    from the checkpoint."""
    surf = tmp_path / "t" / "surface.h5"
    surf.parent.mkdir()
    whole = reference.path.read_bytes()
    broken = whole[: len(whole) // 2]
    surf.write_bytes(broken)
    with pytest.raises(OSError):
        h5py.File(surf, "r")  # the premise: plain h5py cannot read it
    args = surface_args(lenet_ckpt) + [f"surf_file={surf}"]

    refused = run_cli(args + [f"hydra.run.dir={tmp_path / 'r1'}"], tmp_path, timeout=300)
    assert refused.returncode == 2, refused.stderr[-3000:]
    line = error_line(refused.stderr)
    assert str(surf) in line and "corrupt" in line and "surface_recover=true" in line, line
    assert surf.read_bytes() == broken, "the corrupt file was modified"

    rebuilt = run_cli(args + ["surface_recover=true", f"hydra.run.dir={tmp_path / 'r2'}"], tmp_path, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    aside = sorted(surf.parent.glob("surface.h5.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == broken, sorted(p.name for p in surf.parent.iterdir())
    assert str(aside[0]) in rebuilt.stdout  # the user is told where it went
    m = START_LINE.search(rebuilt.stdout)
    assert m and (int(m[2]), int(m[3])) == (0, TOTAL), rebuilt.stdout
    assert_same_surface(surf, reference.path)
