"""Where each job of a study is: the launch records of its stages, the queue's states, then the
jobs' own ``exit.json``/``summary.json`` for jobs that have left the queue."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape_exp.cluster.slurm import pending_reasons, sacct_states, squeue_states
from landscape_exp.errors import UserError


def _own_record(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """(state, detail) from the job's own files: exit.json (written when a job ends or is killed
    short of SIGKILL), else summary.json."""
    d = Path(str(job.get("dir") or ""))
    shard = next((o.split("=", 1)[1] for o in job.get("overrides", []) if o.startswith("shard.index=")), None)
    if shard is not None and (d / f"shard-{shard}").is_dir():
        d = d / f"shard-{shard}"
    exit_file, summary = d / "exit.json", d / "summary.json"
    if exit_file.is_file():
        try:
            rec = json.loads(exit_file.read_text())
            code = int(rec.get("exit_code", 1))
            return ("COMPLETED", "") if code == 0 else ("FAILED", f"exit {code}: {rec.get('reason', '')}")
        except (OSError, ValueError, TypeError):
            pass
    if summary.is_file():
        return "COMPLETED", ""
    return None


def study_status(sdir: str | Path) -> list[dict[str, Any]]:
    """One row per job of the study: stage, job id, state, directory. The state comes from
    ``squeue`` (``PENDING (<reason>)`` while waiting), else ``sacct``, else the job's own
    ``exit.json``/``summary.json``; ``UNKNOWN`` when none of them knows."""
    sdir = Path(sdir)
    meta_file = sdir / "study.json"
    if not meta_file.is_file():
        raise UserError(f"{str(sdir)!r} is not a study directory (no study.json); "
                        "run `python -m landscape_exp.study run <study>` first")
    meta = json.loads(meta_file.read_text())
    rows: list[dict[str, Any]] = []
    for st in meta.get("stages", []):
        try:
            rec = json.loads(Path(st["record"]).read_text())
        except (OSError, ValueError):
            rows.append({"stage": st["stage"], "job_id": "-", "state": "UNKNOWN", "dir": st.get("sweep_dir", ""),
                         "detail": "no jobs.json"})
            continue
        for job in rec.get("jobs", []):
            rows.append({"stage": st["stage"], "job_id": str(job.get("job_id")), "dir": job.get("dir") or "",
                         "launcher": rec.get("launcher"), "job": job})
    slurm_ids = [r["job_id"] for r in rows if r.get("launcher") == "slurm"]
    queue = (squeue_states(slurm_ids) or {}) if slurm_ids else {}
    reasons = pending_reasons(slurm_ids) if any(s == "PENDING" for s in queue.values()) else {}
    acct = sacct_states([j for j in slurm_ids if j not in queue])
    for r in rows:
        if "job" not in r:
            continue
        own = _own_record(r["job"])
        jid = r["job_id"]
        if jid in queue:
            r["state"], r["detail"] = queue[jid], ""
            if queue[jid] == "PENDING" and reasons.get(jid):
                r["state"] = f"PENDING ({reasons[jid]})"
        elif jid in acct:
            r["state"], r["detail"] = acct[jid], ""
        elif own is not None:
            r["state"], r["detail"] = own
        else:
            r["state"], r["detail"] = "UNKNOWN", ("not in the queue and no exit record (killed outright?)"
                                                  if r.get("launcher") == "slurm" else "no exit record yet (running?)")
        del r["job"]
    return rows


def format_status(sdir: str | Path, rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"study {Path(sdir).name} ({sdir}):"]
    for r in rows:
        rel = os.path.relpath(r["dir"], sdir) if r.get("dir") else "-"
        lines.append(f"  {r['stage']:<24} {r['job_id']:<12} {r['state']:<28} {rel}"
                     + (f"  {r['detail']}" if r.get("detail") else ""))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"].split()[0]] = counts.get(r["state"].split()[0], 0) + 1
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


def report_status(name: str, sdir: Path, *, finished: bool) -> None:
    """Print the study's status; a user error when a job ended without completing, or will never
    run (a dependency that failed). ``finished``: every job should have ended by now, so one still
    pending or running counts too."""
    rows = study_status(sdir)
    print(format_status(sdir, rows))
    active = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")
    bad = [f"{r['stage']} {r['job_id']} {r['state']}" for r in rows if r["state"] != "COMPLETED" and (
        finished or r["state"].split()[0] not in active or "NeverSatisfied" in r["state"])]
    if bad:
        raise UserError(f"study {name}: {len(bad)} job(s) did not complete ({'; '.join(bad[:4])}); "
                        f"their run.log and exit.json say why")
