"""Finding the jobs of a sweep or study: numbered (``0/``, ``1/``), named (``surface2d_bs32_wd0/``)
or in stages (``train/``, ``surfaces/``, ``interp/``), anywhere under its directory. Not counted:
shard jobs whose surface another job merged, the compare jobs themselves."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape_exp.errors import UserError

_SKIP_DIRS = {"checkpoints", "wandb", "__pycache__"}


_MAX_DEPTH = 4  # study/stage/job is 2 deep; deeper is a data or cache directory


# ------------------------------------------------------------------------------------------------
# Finding jobs
# ------------------------------------------------------------------------------------------------
def _natural(p: Path) -> list[Any]:
    """bs32 before bs256, 2 before 10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", p.name) if t]


def _is_job(p: Path) -> bool:
    return (p / "summary.json").is_file() or (p / ".hydra" / "config.yaml").is_file()


def _job_dirs(root: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    out: list[Path] = []
    skip = {p.resolve() for p in exclude}

    def visit(d: Path, depth: int) -> None:
        if d.resolve() in skip:
            return
        if _is_job(d):
            out.append(d)  # a job's own subdirectories are its files, not more jobs
            return
        if depth >= _MAX_DEPTH:
            return
        for c in sorted((c for c in d.iterdir() if c.is_dir() and not c.is_symlink()), key=_natural):
            if not c.name.startswith(".") and c.name not in _SKIP_DIRS:
                visit(c, depth + 1)

    visit(root, 0)
    return out


def note(msg: str) -> None:
    """A job left out, said once on the console (and run.log)."""
    print(f"note: {msg}")


def read_summary(p: Path) -> dict[str, Any]:
    sp = p / "summary.json"
    try:
        s = json.loads(sp.read_text())
    except FileNotFoundError:
        raise UserError(f"run directory {str(p)!r} has no summary.json") from None
    except ValueError as e:
        raise UserError(f"{str(sp)!r} is not valid JSON ({e})") from None
    if not isinstance(s, dict):
        raise UserError(f"{str(sp)!r} holds a {type(s).__name__}, not a job summary (a JSON object)")
    return s


def _is_shard(summary: Mapping[str, Any]) -> bool:
    """A shard's job: its surface is merged (or still to be merged) by another job."""
    return "shard_count" in summary and "surface_file" not in summary


def _merged_home(summary: Mapping[str, Any]) -> str | None:
    """Where a shard's surface was merged: named by the job that merged it, else the merged file
    beside the shard file (``surface.shard-0000-of-0002.h5`` -> ``surface.h5``) if it exists."""
    if summary.get("merged_into"):
        return str(summary["merged_into"])
    f = Path(str(summary.get("shard_file") or ""))
    merged = f.with_name(re.sub(r"\.shard-\d+-of-\d+(?=\.[^.]*$|$)", "", f.name))
    return str(merged.parent) if summary.get("shard_file") and merged != f and merged.is_file() else None


def _shard_note(shards: Sequence[tuple[Path, Mapping[str, Any]]]) -> str:
    """One line for all shard jobs (a sharded sweep has many)."""
    homes = {h for _, s in shards if (h := _merged_home(s))}
    unmerged = [p.name for p, s in shards if not _merged_home(s)]
    names = ", ".join(p.name for p, _ in shards[:6]) + (", ..." if len(shards) > 6 else "")
    text = f"skipping {len(shards)} shard jobs ({names}): not runs of their own"
    if homes:
        text += (f"; their surfaces are merged in {len(homes)} directories "
                 f"({', '.join(sorted(homes)[:3])}{', ...' if len(homes) > 3 else ''}), counted there")
    if unmerged:
        text += f"; {len(unmerged)} name no merged surface yet (task=merge merges shards by hand)"
    return text


def find_runs(sweep_dir: str | Path | None = None, runs: Sequence[str | Path] | None = None,
              exclude: Sequence[str | Path] = ()) -> list[Path]:
    """Job directories: every job anywhere under ``sweep_dir`` (natural order: bs32 before bs256)
    and/or the directories in ``runs``. A job without ``summary.json`` (failed or still running)
    and a shard whose surface another job merges are skipped with a note; a listed run without
    ``summary.json`` is a UserError. ``exclude``: directories passed over in silence (the compare
    job's own, which a study puts inside the study's directory)."""
    out: list[Path] = []
    if sweep_dir is None and not runs:
        raise UserError("nothing to compare: give task.sweep_dir=<sweep or study dir> or task.runs=[<run dir>,...]")
    if sweep_dir is not None:
        sd = Path(str(sweep_dir)).expanduser()
        if not sd.is_dir():
            raise UserError(f"task.sweep_dir {str(sd)!r} is not a directory")
        jobs = _job_dirs(sd, [Path(str(p)) for p in exclude])
        if not jobs:
            raise UserError(f"task.sweep_dir {str(sd)!r} has no job directories (with .hydra/config.yaml or "
                            f"summary.json) up to {_MAX_DEPTH} levels down; is it a sweep or study directory?")
        shards = []
        for p in jobs:
            if not (p / "summary.json").is_file():
                note(f"skipping {str(p)!r}: no summary.json (the job failed or has not finished)")
                continue
            summary = read_summary(p)
            if "table_csv" in summary and "correlations_csv" in summary:
                note(f"skipping {str(p)!r}: a compare job")
            elif _is_shard(summary):
                shards.append((p, summary))
            else:
                out.append(p)
        if shards:
            note(_shard_note(shards))
    for r in runs or []:
        p = Path(str(r)).expanduser()
        if not p.is_dir():
            raise UserError(f"run directory {str(p)!r} does not exist")
        if not (p / "summary.json").is_file():
            raise UserError(f"run directory {str(p)!r} has no summary.json; give finished run directories")
        out.append(p)
    seen: set[Path] = set()
    unique = [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]
    if not unique:
        raise UserError("no finished runs to compare")
    return unique
