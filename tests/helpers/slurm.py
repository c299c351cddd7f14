"""Talking to a running Slurm cluster from the tests: shell commands and the default partition."""

from __future__ import annotations

import shutil
import subprocess


def sh(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def cluster() -> tuple[str | None, str]:
    """(default partition, "") when a cluster is up with a usable node, else (None, why not)."""
    if shutil.which("sinfo") is None:
        return None, "no Slurm here (sinfo not found); start a test cluster with `sudo bash scripts/slurm-cluster.sh start`"
    try:
        res = sh("sinfo", "--noheader", "--format=%P|%a|%t", timeout=30)
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer in 30 s (slurmctld not running?)"
    if res.returncode != 0:
        return None, f"sinfo failed: {' '.join(res.stderr.split())[:200]}"
    for line in res.stdout.splitlines():
        part, avail, state = (line.split("|") + ["", "", ""])[:3]
        if part.endswith("*") and avail == "up" and state.rstrip("*~#$@") in ("idle", "mix", "alloc", "comp"):
            return part.rstrip("*"), ""
    return None, f"no default partition with a usable node: {res.stdout.strip()!r}"
