"""What a multirun leaves behind: the Slurm job name after the study and stage, the launch record
``<sweep dir>/jobs.json`` the status command reads, the closing ``results:`` line, and the W&B
group of the sweep's jobs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape_exp.io.files import write_json


def job_name(sweep_dir: str | Path, tasks: Sequence[str]) -> str:
    """The Slurm job name of a sweep's jobs: ``<study>-<stage>`` for a study's stage (from its
    directory, ``studies/batch_wd_small/train`` -> ``batch_wd_small-train``), else the tasks
    (``surface2d``, ``surface1d+surface2d``)."""
    parts = Path(sweep_dir).resolve().parts
    if "studies" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("studies")
        return "-".join(parts[i + 1:])
    return "+".join(dict.fromkeys(str(t) for t in tasks)) or "landscape"


def write_launch_record(sweep_dir: str | Path, executor: str, name: str, jobs: Sequence[Mapping[str, Any]],
                        extra_file: str | None = None) -> Path:
    """``<sweep dir>/jobs.json``: what was submitted (the latest submission; earlier ones are
    kept in its ``previous`` list), also written to ``extra_file`` when given."""
    path = Path(sweep_dir) / "jobs.json"
    previous: list[Any] = []
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            previous = [*old.pop("previous", []), old][-10:]
        except (OSError, ValueError):
            previous = []
    record = {"sweep_dir": str(Path(sweep_dir).resolve()), "launcher": executor, "name": name,
              "submitted": time.time(), "jobs": list(jobs), "previous": previous}
    write_json(path, record)
    if extra_file:
        write_json(Path(extra_file), record)
    return path


def closing_line(sweep_dir: str | Path, dirs: Sequence[str], failed: Sequence[str]) -> str:
    """One line at the end of a sweep: where its results are (merged surfaces named), and what failed."""
    sweep = Path(sweep_dir)
    names = [n for n in (os.path.relpath(d, sweep) for d in dirs) if n != "."]  # "." : the job is the sweep dir
    merged = []
    for d in dirs:
        for f in sorted(Path(d).glob("**/summary.json"))[:8]:
            try:
                into = json.loads(f.read_text()).get("merged_into")
            except (OSError, ValueError):
                continue
            if into and into not in merged:
                merged.append(into)
    shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    line = f"results: {sweep}/{{{shown}}}" if names else f"results: {sweep}"
    if merged:
        line += "; merged surfaces, their figures and summary.json: " + ", ".join(merged)
    if failed:
        line += f"; FAILED: {', '.join(failed)} (their run.log and exit.json say why)"
    return line


def group_for(sweep_dir: str | Path) -> str:
    """The W&B group of a multirun: ``<study>/<stage>`` for a study's stage (a sweep directory
    under ``studies/``, e.g. ``batch_wd_small/train``; ``<study>`` when the study is one stage),
    else the sweep directory from ``multirun/`` on (``multirun/2026-11-30/10-00-00-123456``), else
    its last two path components. Readable, and different for every study, stage and sweep."""
    parts = Path(sweep_dir).resolve().parts
    for anchor, keep in (("studies", False), ("multirun", True)):
        if anchor in parts[:-1]:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[i if keep else i + 1:])
    return "/".join(parts[-2:])
