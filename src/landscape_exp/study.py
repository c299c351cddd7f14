"""A whole study in one command, and where each of its jobs is.

::

    python -m landscape_exp.study run batch_wd_small                              # stages one after another, here
    python -m landscape_exp.study run batch_wd_small --launcher slurm_cpu hydra.launcher.partition=debug
    python -m landscape_exp.study run batch_wd_small surfaces:shard.count=2 'surfaces:shard.index=0,1'
    python -m landscape_exp.study status batch_wd_small                           # or a study directory

Overrides go to every stage; ``<stage>:key=value`` only to the stages whose config name contains
``<stage>`` (``compare:`` to the comparison). A study is a list of stages in ``sweeps/studies.yaml`` (sweep configs of ``sweeps/``), then
``task=compare`` over the study's directory (``<output dir>/studies/<study>``, or ``--dir``). With
a Slurm launcher every stage is submitted at once, each stage's jobs after the previous stage's
have succeeded (``sbatch --dependency=afterok:<job ids>``), and the command returns: ``--wait``
waits and ends with the study's status. With ``submitit_local`` (the ``_small`` forms' default) the
stages run one after another and the command returns when the last has.

Every submission leaves ``<sweep dir>/jobs.json`` (job ids, directories, overrides; written by the
launchers in ``hydra_plugins/landscape_launchers``); ``status`` reads those and asks ``squeue`` (and
``sacct`` where the cluster keeps accounting), then the jobs' own ``exit.json``/``summary.json``
for jobs that have left the queue.

Nothing here imports Hydra: stages run as ``python run.py -m ...`` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from landscape_exp.errors import UserError
from landscape_exp.storage import write_json

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "sweeps"
RUN_PY = REPO / "run.py"
DETACH_ENV, RECORD_ENV = "LANDSCAPE_DETACH", "LANDSCAPE_LAUNCH_RECORD"  # read by the launchers
# squeue states after which a job will not run again (others: it is waiting, running or requeued)
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "NOT_IN_QUEUE")


# ------------------------------------------------------------------------------------------------
# What the launchers call (hydra_plugins/landscape_launchers)
# ------------------------------------------------------------------------------------------------
def squeue_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """``{job id: state}`` from ``squeue`` for the jobs (``123`` or array tasks ``123_4``) still
    known to Slurm, finished ones included while Slurm remembers them (MinJobAge); a job missing
    from the answer has left the queue. None when squeue itself fails (no answer is no news)."""
    if not job_ids:
        return {}
    res = _slurm_query(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T"], job_ids)
    if res is None:
        return None
    if res.returncode != 0:
        # every job asked about is gone: squeue refuses the ids instead of listing nothing
        return {} if "invalid job id" in res.stderr.lower() else None
    return {jid: state.strip() for jid, state in _pairs(res.stdout) if jid and state}


def _slurm_query(argv: list[str], job_ids: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
    """``argv --jobs=<the jobs' base ids>`` (array tasks ``123_4`` asked as ``123``); None when it
    could not run."""
    jobs = ",".join(sorted({str(j).split("_")[0] for j in job_ids}))
    try:
        return subprocess.run([*argv, f"--jobs={jobs}"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _pairs(stdout: str) -> Iterator[tuple[str, str]]:
    """The ``a|b`` lines of a Slurm query, as ``(a, b)``."""
    for line in stdout.splitlines():
        a, _, b = line.strip().partition("|")
        yield a, b


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


# ------------------------------------------------------------------------------------------------
# Studies
# ------------------------------------------------------------------------------------------------
def studies(sweeps: Path = SWEEPS) -> dict[str, list[str]]:
    """``sweeps/studies.yaml``: study name -> its stages (sweep config names)."""
    data = yaml.safe_load((sweeps / "studies.yaml").read_text()) or {}
    return {str(k): [str(s) for s in v] for k, v in data.items()}


def output_root() -> Path:
    """Where studies live, spelled as the sweep configs spell it: ``$LANDSCAPE_OUTPUT``, else
    ``$LANDSCAPE_ROOT/outputs``, else ``./outputs``."""
    if os.environ.get("LANDSCAPE_OUTPUT"):
        return Path(os.environ["LANDSCAPE_OUTPUT"])
    return Path(os.environ.get("LANDSCAPE_ROOT", ".")) / "outputs"


def study_dir(name_or_dir: str) -> Path:
    p = Path(name_or_dir)
    if p.is_dir() and (p / "study.json").is_file():
        return p
    return output_root() / "studies" / name_or_dir


def _run_stage(args: list[str], env: dict[str, str], record: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(RUN_PY), *args]
    print("$ " + " ".join(["python", "run.py", *args]), flush=True)
    res = subprocess.run(cmd, env=env)
    if res.returncode != 0:
        raise UserError(f"stage failed (exit {res.returncode}): python run.py {' '.join(args)}")
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        raise UserError(f"the stage left no launch record ({record}); run stages through a submitit launcher "
                        "(--launcher submitit_local | submitit_slurm | slurm_cpu)") from None


def _scoped(override: str) -> bool:
    """``surfaces:shard.count=2``: an override for the stages whose config name contains ``surfaces``."""
    return bool(re.match(r"^[A-Za-z0-9_]+:[^=]*=", override)) and not override.startswith(("hydra:", "oc."))


def _for_stage(stage: str, overrides: Sequence[str]) -> list[str]:
    return [o.split(":", 1)[1] for o in overrides if _scoped(o) and o.split(":", 1)[0] in stage]


def run_study(name: str, *, launcher: str | None, overrides: Sequence[str], wait: bool, directory: str | None) -> Path:
    """Run (or, on Slurm, submit) every stage of study ``name``, then compare; returns its directory."""
    known = studies()
    if name not in known:
        raise UserError(f"unknown study {name!r}; known: {', '.join(known)} (sweeps/studies.yaml)")
    if launcher not in (None, "submitit_local", "submitit_slurm", "slurm_cpu"):
        raise UserError(f"--launcher {launcher!r} is not a submitit launcher; allowed: submitit_local, submitit_slurm, slurm_cpu")
    sdir = Path(directory).resolve() if directory else study_dir(name).resolve()
    slurm = launcher is not None and "slurm" in launcher
    sdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if slurm:
        env[DETACH_ENV] = "1"
    everywhere = [o for o in overrides if not _scoped(o)]
    common = [f"study={sdir}", *([f"hydra/launcher={launcher}"] if launcher else []), *everywhere]
    stages: list[dict[str, Any]] = []
    after: list[str] = []
    plan = [(stage, ["-m", "--config-dir", str(SWEEPS), "--config-name", stage, *common, *_for_stage(stage, overrides)])
            for stage in known[name]]
    plan.append(("compare", ["-m", "task=compare", f"task.sweep_dir={sdir}", f"hydra.sweep.dir={sdir}/compare",
                             "hydra.sweep.subdir=.", *([f"hydra/launcher={launcher or 'submitit_local'}"]),
                             *[o for o in everywhere if o.startswith(("hydra.launcher.", "logger"))],
                             *_for_stage("compare", overrides)]))
    with tempfile.TemporaryDirectory() as tmp:
        for stage, args in plan:
            record = Path(tmp) / f"{stage}.json"
            env[RECORD_ENV] = str(record)
            dep = [f"++hydra.launcher.additional_parameters.dependency=afterok:{':'.join(after)}"] if slurm and after else []
            rec = _run_stage([*args, *dep], env, record)
            stages.append({"stage": stage, "sweep_dir": rec["sweep_dir"], "record": str(Path(rec["sweep_dir"]) / "jobs.json")})
            after = sorted({str(j["job_id"]).split("_")[0] for j in rec["jobs"]})
            write_json(sdir / "study.json", {"study": name, "launcher": launcher or "submitit_local", "stages": stages})
    if slurm:
        print(f"submitted study {name}: {len(stages)} stages, each after the previous one succeeds; "
              f"status: python -m landscape_exp.study status {sdir}", flush=True)
        if wait:
            while not all(r["state"] in ENDED or "NeverSatisfied" in r["state"] for r in study_status(sdir)):
                time.sleep(10)
            report_status(name, sdir, finished=True)
    print(f"study {name}: results in {sdir} (stages: {', '.join(s['stage'] for s in stages)}); "
          f"comparison in {sdir / 'compare'}", flush=True)
    return sdir


# ------------------------------------------------------------------------------------------------
# Status
# ------------------------------------------------------------------------------------------------
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


def _sacct_states(job_ids: Sequence[str]) -> dict[str, str]:
    if not job_ids or shutil.which("sacct") is None:
        return {}
    res = _slurm_query(["sacct", "--noheader", "--parsable2", "--format=JobID,State", "-X"], job_ids)
    if res is None or res.returncode != 0:
        return {}
    return {a: s.split()[0] for a, s in _pairs(res.stdout) if s}


def study_status(sdir: str | Path) -> list[dict[str, Any]]:
    """One row per job of the study: stage, job id, state, directory. The state comes from
    ``squeue`` (``PENDING (<reason>)`` while waiting), else ``sacct``, else the job's own
    ``exit.json``/``summary.json``; ``UNKNOWN`` when none of them knows."""
    sdir = Path(sdir)
    meta_file = sdir / "study.json"
    if not meta_file.is_file():
        raise UserError(f"{str(sdir)!r} is not a study directory (no study.json); run `python -m landscape_exp.study run <study>` first")
    meta = json.loads(meta_file.read_text())
    rows: list[dict[str, Any]] = []
    for st in meta.get("stages", []):
        try:
            rec = json.loads(Path(st["record"]).read_text())
        except (OSError, ValueError):
            rows.append({"stage": st["stage"], "job_id": "-", "state": "UNKNOWN", "dir": st.get("sweep_dir", ""), "detail": "no jobs.json"})
            continue
        for job in rec.get("jobs", []):
            rows.append({"stage": st["stage"], "job_id": str(job.get("job_id")), "dir": job.get("dir") or "",
                         "launcher": rec.get("launcher"), "job": job})
    slurm_ids = [r["job_id"] for r in rows if r.get("launcher") == "slurm"]
    queue = (squeue_states(slurm_ids) or {}) if slurm_ids else {}
    reasons = _pending_reasons(slurm_ids) if any(s == "PENDING" for s in queue.values()) else {}
    acct = _sacct_states([j for j in slurm_ids if j not in queue])
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


def _pending_reasons(job_ids: Sequence[str]) -> dict[str, str]:
    res = _slurm_query(["squeue", "--noheader", "--array", "--format=%i|%r"], job_ids)
    if res is None:
        return {}
    return {a: r for a, r in _pairs(res.stdout) if r and r != "None"}


def format_status(sdir: str | Path, rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"study {Path(sdir).name} ({sdir}):"]
    for r in rows:
        rel = os.path.relpath(r["dir"], sdir) if r.get("dir") else "-"
        lines.append(f"  {r['stage']:<24} {r['job_id']:<12} {r['state']:<28} {rel}" + (f"  {r['detail']}" if r.get("detail") else ""))
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landscape_exp.study", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run or submit every stage of a study, then compare")
    r.add_argument("study", help=f"one of: {', '.join(studies())}")
    r.add_argument("--launcher", help="submitit_local (the _small forms' default), submitit_slurm or slurm_cpu")
    r.add_argument("--wait", action="store_true", help="on Slurm: wait for every job, then print the status")
    r.add_argument("--dir", help="the study's directory (default: <output dir>/studies/<study>)")
    r.add_argument("overrides", nargs="*", help="key=value overrides for every stage (e.g. hydra.launcher.partition=debug); "
                   "<stage>:key=value for the stages whose name contains <stage> (e.g. surfaces:shard.count=2)")
    s = sub.add_parser("status", help="where each job of a study is")
    s.add_argument("study", help="a study name or directory")
    a, rest = p.parse_known_args(argv)  # overrides may come before and after the options
    bad = [r for r in rest if r.startswith("-") or a.cmd != "run"]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    try:
        if a.cmd == "run":
            run_study(a.study, launcher=a.launcher, overrides=[*a.overrides, *rest], wait=a.wait, directory=a.dir)
        else:
            sdir = study_dir(a.study)
            report_status(sdir.name, sdir, finished=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
