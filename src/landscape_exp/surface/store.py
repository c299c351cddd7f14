"""The HDF5 surface file: the original tool's layout, written so a killed run loses nothing.

Layout (readable by the original ``plot_1D.py``/``plot_2D.py``): ``xcoordinates`` (and
``ycoordinates``), one dataset per metric (``train_loss``, ``train_acc``, ``test_loss``,
``test_acc``; accuracy in percent) of shape ``(nx,)`` or ``(ny, nx)`` with ``Z[j, i] = f(x_i, y_j)``,
``-1`` where a point is not computed yet, and a ``done`` mask (authoritative: a computed loss may
be NaN or infinite and is stored as such). Attributes hold the resolved config, the direction
file, seeds, package versions and a fingerprint of everything that determines the values.

Durability: each computed point is appended to a journal (``<file>.journal``, one JSON line, a
single ``write``) before the next point starts; the HDF5 file itself is only ever replaced
atomically (write a temporary file, then rename), every few seconds and at the end. A process
killed at any moment leaves a readable HDF5 file plus a journal that the next run replays. A lock
file keeps two processes from writing the same surface.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape_exp.errors import UserError
from landscape_exp.io.files import H5_ERRORS, atomic_path, decode_attrs, h5_attr, open_h5
from landscape_exp.measures.record import Measure, measures_from_json, measures_json
from landscape_exp.surface.grid import Axis, Grid

NOT_DONE = -1.0
FLUSH_SHARE = 20  # an HDF5 replace waits at least this many times as long as the last one took


def metric_names(splits: Sequence[str], quantities: Sequence[str] = ("loss", "acc")) -> list[str]:
    return [f"{s}_{q}" for s in splits for q in quantities]


def fingerprint_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys
            if json.dumps(old.get(k), sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True, default=str)]


def _axis(coordinates: Any) -> Axis:
    c = np.asarray(coordinates, dtype=np.float64)
    return Axis(float(c[0]), float(c[-1]), int(len(c)))


def read_grid(f: h5py.File) -> Grid:
    return Grid(_axis(f["xcoordinates"][()]), _axis(f["ycoordinates"][()]) if "ycoordinates" in f else None)


def grid_of(surface: Mapping[str, Any]) -> Grid:
    """The grid of a surface as :func:`read_surface` returns it."""
    return Grid(_axis(surface["x"]), None if surface.get("y") is None else _axis(surface["y"]))


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def try_lock(path: Path) -> int | None:
    """Take the surface's lock file (``<file>.lock``, holding the writer's pid), or None when
    another process holds it. The file is removed on release; a lock taken on a file that was
    removed meanwhile is dropped and taken again on the new one, so two writers never both win."""
    lp = lock_path(path)
    while True:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(lp).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # released and removed by its holder after we opened it: try the new file


def release_lock(path: Path, fd: int) -> None:
    """Remove the lock file (while still holding it), then release it."""
    try:
        lock_path(path).unlink(missing_ok=True)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class SurfaceFile:
    """A resumable surface result over ``grid``, optionally restricted to a subset of points
    (``indices``: a shard). Use as a context manager; ``record`` each point as it completes."""

    def __init__(
        self,
        path: str | Path,
        grid: Grid,
        metrics: Sequence[str],
        *,
        fingerprint: Mapping[str, Any],
        attrs: Mapping[str, Any] | None = None,
        indices: Iterable[int] | None = None,
        flush_seconds: float = 5.0,
        extra_datasets: Mapping[str, Any] | None = None,
        move_corrupt_aside: bool = False,
    ):
        self.path = Path(path)
        self.grid = grid
        self.metrics = list(metrics)
        self.fingerprint = dict(fingerprint)
        self.attrs = dict(attrs or {})
        self.indices = list(range(grid.size)) if indices is None else sorted(set(int(i) for i in indices))
        self.flush_seconds = flush_seconds
        self.extra_datasets = dict(extra_datasets or {})
        self.move_corrupt_aside = move_corrupt_aside
        self.values = {m: np.full(grid.size, NOT_DONE) for m in self.metrics}
        self.done = np.zeros(grid.size, dtype=bool)
        self.journal = self.path.with_name(self.path.name + ".journal")
        self._lock_fd: int | None = None
        self._journal_fd: int | None = None
        self._last_flush = 0.0
        self._flush_cost = 0.0  # seconds the last HDF5 replace took
        self._dirty = False
        self.found_attrs: dict[str, Any] = {}  # the attributes of the file as open() found it

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> SurfaceFile:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            if self.path.exists():
                self._load_existing()
            self._replay_journal()
            self._write_h5()  # the file is on disk (with any replayed points) before work starts
            self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            self._unlock()
            raise

    def close(self) -> None:
        try:
            if self._journal_fd is not None:
                self.flush(force=True)
                os.close(self._journal_fd)
                self._journal_fd = None
                # flushed: every journaled point is in the HDF5 file, so the empty journal goes
                if self.journal.exists() and self.journal.stat().st_size == 0:
                    self.journal.unlink()
        finally:
            self._unlock()

    def _lock(self) -> None:
        fd = try_lock(self.path)
        if fd is None:
            raise UserError(
                f"surface file {str(self.path)!r} is being written by another process (lock "
                f"{str(lock_path(self.path))!r} is held); wait for it or choose another output"
            )
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            release_lock(self.path, self._lock_fd)
            self._lock_fd = None

    # -- reading ------------------------------------------------------------------------------
    def _load_existing(self) -> None:
        try:
            with h5py.File(self.path, "r") as f:
                old = json.loads(f.attrs.get("fingerprint", "{}"))
                diff = fingerprint_diff(old, self.fingerprint)
                if not diff:
                    self.found_attrs = decode_attrs(f.attrs)
                    shape = read_grid(f).shape
                    done = np.asarray(f["done"][()], dtype=bool).ravel() if "done" in f else None
                    stored = {m: np.asarray(f[m][()], dtype=np.float64).ravel() for m in self.metrics if m in f}
        except H5_ERRORS as e:
            if self.move_corrupt_aside:
                aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
                os.replace(self.path, aside)
                print(f"warning: surface file {str(self.path)!r} was corrupt ({e}); moved to {str(aside)!r}, recomputing")
                return
            raise UserError(
                f"surface file {str(self.path)!r} exists but is unreadable or corrupt ({e}); it was "
                f"left untouched: rerun with surface_recover=true to move it aside and recompute (points "
                f"in its journal are kept), or rebuild it from shard files with task=merge surface_recover=true"
            ) from None
        if diff:
            raise UserError(
                f"surface file {str(self.path)!r} was made with a different config (differs in: "
                f"{', '.join(diff)}); nothing was changed: choose another output or delete it"
            )
        if shape != self.grid.shape:
            raise UserError(f"surface file {str(self.path)!r} has another grid shape; nothing was changed")
        for m, v in stored.items():
            self.values[m] = v.copy()
        if done is None:  # a file from the original tool: -1 marks what is missing
            done = np.all([self.values[m] != NOT_DONE for m in self.metrics], axis=0)
        self.done = done.copy()

    def _replay_journal(self) -> None:
        if not self.journal.exists():
            return
        with open(self.journal, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a record cut short by a kill: its point is simply recomputed
                try:
                    rec = json.loads(raw)
                    k = int(rec["k"])
                    vals = rec["v"]
                except (ValueError, KeyError, TypeError):
                    break
                if 0 <= k < self.grid.size and set(vals) <= set(self.metrics):
                    for m, v in vals.items():
                        self.values[m][k] = float(v)
                    self.done[k] = True
                    self._dirty = True

    # -- progress -----------------------------------------------------------------------------
    def pending(self) -> list[int]:
        return [k for k in self.indices if not self.done[k]]

    @property
    def num_done(self) -> int:
        return int(self.done[self.indices].sum())

    def record(self, k: int, values: Mapping[str, float]) -> None:
        """Store point ``k``; durable (journaled) when this returns."""
        vals = {m: float(values[m]) for m in self.metrics}
        for m, v in vals.items():
            self.values[m][k] = v
        self.done[k] = True
        assert self._journal_fd is not None, "SurfaceFile is not open"
        os.write(self._journal_fd, (json.dumps({"k": int(k), "v": vals}) + "\n").encode())
        self._dirty = True
        # the whole file is rewritten: at most every flush_seconds, and never more than 1/FLUSH_SHARE
        # of the time, however large the grid or slow the file system
        if time.monotonic() - self._last_flush >= max(self.flush_seconds, FLUSH_SHARE * self._flush_cost):
            self.flush()

    def flush(self, force: bool = False) -> None:
        if not (self._dirty or force):
            return
        self._write_h5()
        if self._journal_fd is not None:
            os.ftruncate(self._journal_fd, 0)
        self._dirty = False

    # -- writing ------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {m: v.reshape(self.grid.shape) for m, v in self.values.items()}

    def _write_h5(self) -> None:
        t0 = time.monotonic()
        with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("xcoordinates", data=self.grid.x.coordinates)
            if self.grid.y is not None:
                f.create_dataset("ycoordinates", data=self.grid.y.coordinates)
            for m, arr in self.arrays().items():
                f.create_dataset(m, data=arr)
            f.create_dataset("done", data=self.done.reshape(self.grid.shape).astype(np.uint8))
            for name, data in self.extra_datasets.items():
                f.create_dataset(name, data=data)
            f.attrs["fingerprint"] = json.dumps(self.fingerprint, sort_keys=True, default=str)
            f.attrs["num_done"] = int(self.done.sum())
            f.attrs["num_points"] = int(self.grid.size)
            for k, v in self.attrs.items():
                f.attrs[k] = h5_attr(v)
            f.flush()
            os.fsync(f.id.get_vfd_handle())
        self._last_flush = time.monotonic()
        self._flush_cost = self._last_flush - t0


def read_surface(path: str | Path) -> dict[str, Any]:
    """Everything in a surface file as numpy arrays (``x``, ``y``, metrics, ``done``, ``attrs``)."""
    path = Path(path)
    f = open_h5(path, "surface file")
    out: dict[str, Any] = {"path": path}
    try:
        with f:
            if "xcoordinates" not in f:
                raise UserError(f"{str(path)!r} is not a surface file (no xcoordinates)")
            out["x"] = np.asarray(f["xcoordinates"][()])
            out["y"] = np.asarray(f["ycoordinates"][()]) if "ycoordinates" in f else None
            for name in f:
                if name not in ("xcoordinates", "ycoordinates") and isinstance(f[name], h5py.Dataset):
                    out[name] = np.asarray(f[name][()])
            out["attrs"] = decode_attrs(f.attrs)
    except H5_ERRORS as e:  # damage past the superblock
        raise UserError(f"surface file {str(path)!r} is unreadable or corrupt ({e})") from None
    _original_layout(out)
    if "done" not in out:
        losses = [v for k, v in out.items() if k.endswith("_loss")]
        out["done"] = np.all([v != NOT_DONE for v in losses], axis=0) if losses else None
    else:
        out["done"] = out["done"].astype(bool)
    return out


def _original_layout(out: dict[str, Any]) -> None:
    """The original tool's 2D arrays have shape ``(nx, ny)`` but are filled in
    ``np.meshgrid(x, y).ravel()`` order, so their values are ``reshape(ny, nx)`` (``Z[j, i] =
    f(x_i, y_j)``; a transpose would scramble them). Reshaped in place where the shapes tell the
    layouts apart (nx != ny); a square grid is the same either way."""
    if out.get("y") is None:
        return
    nx, ny = len(out["x"]), len(out["y"])
    if nx == ny:
        return
    for name, value in list(out.items()):
        if isinstance(value, np.ndarray) and value.shape == (nx, ny) and name not in ("x", "y"):
            out[name] = value.reshape(ny, nx)
            out["layout"] = "original (nx, ny), read as reshape(ny, nx)"


def finite_summary(values: np.ndarray, done: np.ndarray) -> dict[str, int]:
    """Counts of computed, finite and non-finite points (NaN/inf are reported, never dropped)."""
    v = values[done]
    return {"computed": int(done.sum()), "finite": int(np.isfinite(v).sum()), "nonfinite": int((~np.isfinite(v)).sum())}


def store_sharpness(path: str | Path, metrics: Mapping[str, float]) -> bool:
    """Store ``metrics`` as the surface file's ``sharpness`` attribute (JSON), atomically.

    The file is copied, the attribute set on the copy and the copy renamed over the file, so a
    kill leaves either the old or the new file. Returns False (and changes nothing) when another
    process holds the surface's lock.
    """
    return _store_json_attr(path, "sharpness", {k: float(v) for k, v in metrics.items()})


def store_measures(path: str | Path, measures: Mapping[str, Measure]) -> bool:
    """Store ``measures`` as the surface file's ``measures`` attribute (their JSON form, as
    ``summary["measures"]``), atomically, like :func:`store_sharpness`."""
    return _store_json_attr(path, "measures", measures_json(measures))


def read_measures(surface_or_attrs: Mapping[str, Any]) -> dict[str, Measure]:
    """The ``measures`` attribute of a surface (``read_surface`` dict or its ``attrs``), or ``{}``."""
    attrs = surface_or_attrs.get("attrs", surface_or_attrs)
    raw = attrs.get("measures") if isinstance(attrs, Mapping) else None
    try:
        return measures_from_json(json.loads(raw)) if raw is not None else {}
    except (ValueError, TypeError):
        return {}


def _store_json_attr(path: str | Path, name: str, payload: Any) -> bool:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"surface file {str(p)!r} does not exist")
    lock = try_lock(p)
    if lock is None:
        return False
    try:
        with atomic_path(p, tag=name) as tmp:
            shutil.copyfile(p, tmp)
            with h5py.File(tmp, "a") as f:
                f.attrs[name] = json.dumps(payload)
                f.flush()
        return True
    finally:
        release_lock(p, lock)


def read_sharpness(surface_or_attrs: Mapping[str, Any]) -> dict[str, float]:
    """The ``sharpness`` attribute of a surface (``read_surface`` dict or its ``attrs``), or ``{}``."""
    attrs = surface_or_attrs.get("attrs", surface_or_attrs)
    raw = attrs.get("sharpness") if isinstance(attrs, Mapping) else None
    if raw is None:
        return {}
    try:
        return {str(k): float(v) for k, v in json.loads(raw).items()}
    except (ValueError, TypeError, AttributeError):
        return {}
