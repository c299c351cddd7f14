"""What Slurm says about jobs: their states from ``squeue`` (which every cluster has) or ``sacct``
(where it keeps accounting), and why pending ones wait. Every query tolerates a cluster without
the command (None or ``{}``), so status and waiting never fail on it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence

# squeue states after which a job will not run again (others: it is waiting, running or requeued)
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "NOT_IN_QUEUE")


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


def sacct_states(job_ids: Sequence[str]) -> dict[str, str]:
    if not job_ids or shutil.which("sacct") is None:
        return {}
    res = _slurm_query(["sacct", "--noheader", "--parsable2", "--format=JobID,State", "-X"], job_ids)
    if res is None or res.returncode != 0:
        return {}
    return {a: s.split()[0] for a, s in _pairs(res.stdout) if s}


def pending_reasons(job_ids: Sequence[str]) -> dict[str, str]:
    res = _slurm_query(["squeue", "--noheader", "--array", "--format=%i|%r"], job_ids)
    if res is None:
        return {}
    return {a: r for a, r in _pairs(res.stdout) if r and r != "None"}
