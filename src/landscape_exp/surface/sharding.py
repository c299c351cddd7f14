"""One surface split over many workers: disjoint balanced shards, each in its own file, and the
merge that assembles them (explicit ``task=merge``, or automatic when the last shard finishes)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from landscape_exp.errors import UserError
from landscape_exp.surface.store import SurfaceFile, fingerprint_diff, grid_of, read_surface


class AlreadyMerged(Exception):
    """Another worker merged the same complete shards after this one started: its merge (figures,
    summary, W&B run) stands, and this worker must not publish the surface a second time."""


def check_shard(count: int, index: int) -> None:
    if count < 1 or not 0 <= index < count:
        raise UserError(f"bad shard: shard.count={count} shard.index={index}; need count >= 1 and 0 <= index < count")


def shard_indices(size: int, count: int, index: int) -> list[int]:
    """Flat grid points of shard ``index`` of ``count``: strided, so shard sizes differ by at most
    one and every shard samples the whole plane (cost per point varies smoothly over the grid)."""
    check_shard(count, index)
    return list(range(index, size, count))


def worker_shard(count: int, index: int, workers: int, rank: int) -> tuple[int, int]:
    """``(count, index)`` of worker ``rank`` of ``workers`` when the workers of one job
    (submitit tasks_per_node) split that job's shard ``index`` of ``count`` again: shards
    ``index*workers ... index*workers + workers-1`` of ``count*workers``, one each."""
    check_shard(count, index)
    if workers < 1 or not 0 <= rank < workers:
        raise UserError(f"bad worker rank {rank} of {workers} workers; need 0 <= rank < workers")
    return count * workers, index * workers + rank


def merged_dir_name(overrides: Sequence[str]) -> str:
    """The directory, inside a multirun's sweep directory, where the shards of one surface meet:
    the job's overrides without ``shard.*``, sorted and joined as Hydra's ``override_dirname``
    (``optim.batch_size=32,task=surface2d``), so every shard of a surface names the same one and
    each surface of a sweep its own; ``""`` (the sweep directory itself) when only the shard
    varies. Characters other than letters, digits and ``._=,+-`` become ``_``; a name over 120
    characters keeps its start and a hash of the whole."""
    kept = sorted(o.lstrip("+~") for o in overrides if not o.lstrip("+~").startswith("shard."))
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(kept))
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name


def shard_path(surface_path: str | Path, count: int, index: int) -> Path:
    p = Path(surface_path)
    return p.with_name(f"{p.stem}.shard-{index:04d}-of-{count:04d}{p.suffix}")


def shard_paths(surface_path: str | Path, count: int) -> list[Path]:
    return [shard_path(surface_path, count, i) for i in range(count)]


def merge_shards(surface_path: str | Path, count: int, *, require_complete: bool = True,
                 move_corrupt_aside: bool = False, since: float | None = None) -> Path | None:
    """Assemble ``surface_path`` from its ``count`` shard files.

    Every shard must exist, share the same fingerprint (config, checkpoint, directions, grid) and
    have computed all of its points; otherwise nothing is written and the reason is raised (or,
    with ``require_complete=False``, ``None`` is returned so the caller can wait for the rest).

    ``since`` (a ``time.time()``): raise :class:`AlreadyMerged` when, under the merged file's
    lock, it is found complete and merged at or after that time. Shard workers that finish
    together pass their start time, so exactly one of them merges and publishes, while a later
    rerun (started after the old merge) merges and publishes again.
    """
    surface_path = Path(surface_path)
    paths = shard_paths(surface_path, count)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        if not require_complete:
            return None
        raise UserError(f"cannot merge {str(surface_path)!r}: {len(missing)} shard file(s) missing, e.g. {missing[0]!r}")
    shards = [read_surface(p) for p in paths]
    fps = [json.loads(s["attrs"].get("fingerprint", "{}")) for s in shards]
    for p, fp in zip(paths[1:], fps[1:]):
        diff = fingerprint_diff(fps[0], fp)
        if diff:
            raise UserError(f"cannot merge: shard {str(p)!r} was made with a different config (differs in: {', '.join(diff)})")
    grid = grid_of(shards[0])
    metrics = [k for k in shards[0] if k.endswith(("_loss", "_acc"))]
    for i, s in enumerate(shards):
        own = np.asarray(shard_indices(grid.size, count, i))
        incomplete = int((~s["done"].ravel()[own]).sum())
        if incomplete:
            if not require_complete:
                return None
            raise UserError(f"cannot merge: shard {str(paths[i])!r} still has {incomplete} of {len(own)} points to compute; "
                            "rerun it")
    attrs = {k: v for k, v in shards[0]["attrs"].items() if k not in ("fingerprint", "num_done", "num_points")}
    attrs["merged_from"] = json.dumps([str(p) for p in paths])
    extra = {"dir_file": shards[0]["dir_file"]} if "dir_file" in shards[0] else None
    out = SurfaceFile(surface_path, grid, metrics, fingerprint=fps[0], attrs=attrs, extra_datasets=extra,
                      move_corrupt_aside=move_corrupt_aside)
    with out:
        merged_at = out.found_attrs.get("merged_at")
        if since is not None and merged_at is not None and out.done.all() and float(merged_at) >= since:
            out.attrs["merged_at"] = merged_at  # open() rewrote the file; keep the true merge time
            raise AlreadyMerged(f"{str(surface_path)!r} was merged by another worker at {time.ctime(float(merged_at))}")
        out.attrs["merged_at"] = time.time()
        for i, s in enumerate(shards):
            flat = {m: s[m].ravel() for m in metrics}
            for k in shard_indices(grid.size, count, i):
                if not out.done[k]:
                    out.record(k, {m: float(flat[m][k]) for m in metrics})
    return surface_path


# `<stem>.shard-<index>-of-<count><suffix>`, as written by shard_path
_SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<index>\d+)-of-(?P<count>\d+)(?P<suffix>(\.[^.]*)?)$")


def shard_files(surface_path: str | Path) -> dict[int, list[int]]:
    """Shard files lying next to ``surface_path``: ``{count: sorted indices present}``."""
    surface_path = Path(surface_path)
    found: dict[int, set[int]] = {}
    if not surface_path.parent.is_dir():
        return {}
    for p in surface_path.parent.iterdir():
        m = _SHARD_NAME.match(p.name)
        if m is None or m["stem"] != surface_path.stem or m["suffix"] != surface_path.suffix or not p.is_file():
            continue
        count, index = int(m["count"]), int(m["index"])
        if shard_path(surface_path, count, index).name == p.name:  # exactly our zero-padded form
            found.setdefault(count, set()).add(index)
    return {c: sorted(i) for c, i in sorted(found.items())}


def shard_count(surface_path: str | Path, configured: int = 1) -> int:
    """How many shards make up ``surface_path``: ``shard.count`` when it is given (> 1), else
    read from the shard files' names; a one-line UserError when that is impossible or ambiguous."""
    if configured > 1:
        check_shard(configured, 0)
        return configured
    if configured < 1:
        raise UserError(f"bad shard.count={configured}; need shard.count >= 1 (1: read it from the shard files' names)")
    found = shard_files(surface_path)
    if not found:
        raise UserError(
            f"no shard files next to {str(surface_path)!r} (looked for "
            f"{Path(surface_path).stem}.shard-<i>-of-<N>{Path(surface_path).suffix}); run the shards "
            f"first (shard.count=N shard.index=i) or point surf_file at the surface they belong to"
        )
    if len(found) > 1:
        splits = ", ".join(f"{c} ({len(i)} files)" for c, i in found.items())
        raise UserError(f"shard files of several splits next to {str(surface_path)!r}: counts {splits}; "
                        "choose one with shard.count=N")
    return next(iter(found))
