"""Running a study: its stages from ``sweeps/studies.yaml`` as ``python run.py -m ...`` processes,
chained on Slurm with ``--dependency=afterok``, then ``task=compare`` over the study's directory.
Nothing here imports Hydra."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from landscape_exp.cluster.slurm import ENDED
from landscape_exp.cluster.status import report_status, study_status
from landscape_exp.errors import UserError
from landscape_exp.io.files import write_json

REPO = Path(__file__).resolve().parents[3]  # src/landscape_exp/cluster/study.py
SWEEPS = REPO / "sweeps"
RUN_PY = REPO / "run.py"
DETACH_ENV, RECORD_ENV = "LANDSCAPE_DETACH", "LANDSCAPE_LAUNCH_RECORD"  # read by the launchers
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

