"""A whole batch-size study on real Slurm in one command (issue 13): train, sharded surfaces,
interpolation and compare submitted at once with dependencies, a surface shard requeued mid-run
(``scontrol requeue``), then: every job COMPLETED, each merged surface with its figures in its job
directory, one compare row per model, and still exactly one W&B run per job.

Skipped, with the reason, where no cluster answers ``sinfo`` (``.ci/run`` starts one).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from landscape_exp.cluster.slurm import ENDED
from landscape_exp.cluster.status import study_status
from landscape_exp.job.tracking import run_id_for

from conftest import run_cli
from helpers.slurm import sh
from helpers.wandb_offline import read_offline_run

pytestmark = pytest.mark.slurm

BATCHES = (32, 256)


def _journal_points(path: Path) -> int:
    try:
        return sum(1 for _ in path.open())
    except OSError:
        return 0


def _requeue_a_running_shard(sdir: Path, deadline: float) -> tuple[str, Path]:
    """Wait until a surface shard has journaled a few points, then requeue its Slurm job (as a
    preemption would) and let it start again at once; returns (job id, the shard's own dir)."""
    while time.monotonic() < deadline:
        for journal in sorted((sdir / "surfaces").glob("*/surface.shard-*.h5.journal")):
            if _journal_points(journal) >= 3:
                index = int(re.search(r"shard-(\d+)-of", journal.name).group(1))
                rec = json.loads((sdir / "surfaces" / "jobs.json").read_text())
                job = next(j for j in rec["jobs"]
                           if Path(j["dir"]) == journal.parent and f"shard.index={index}" in j["overrides"])
                res = sh("scontrol", "requeue", job["job_id"])
                assert res.returncode == 0, res.stderr
                return job["job_id"], journal.parent / f"shard-{index}"
        time.sleep(0.2)
    raise AssertionError("no surface shard started in time")


def test_batch_size_study_end_to_end_with_sharded_surfaces_and_a_requeue(tmp_path: Path, partition: str) -> None:
    sdir = tmp_path / "studies" / "bs"
    t0 = time.monotonic()
    res = run_cli(["-m", "landscape_exp.study", "run", "batch_wd_small", "--launcher", "slurm_cpu", "--dir", str(sdir),
                   "optim.weight_decay=0", "optim.epochs=3", "logger=wandb", "logger.mode=offline", "progress=false",
                   "sharpness.model=false", f"hydra.launcher.partition={partition}", "hydra.launcher.cpus_per_task=1",
                   "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20",
                   # the surfaces stage: 2D only, 2 shards each, a grid a shard needs a few seconds for
                   "surfaces:task=surface2d", "surfaces:x=-1:1:31", "surfaces:y=-1:1:31",
                   "surfaces:shard.count=2", "surfaces:shard.index=0,1"],
                  tmp_path, python_args=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert time.monotonic() - t0 < 90  # submitted and returned, nothing waited for
    assert "submitted study batch_wd_small: 4 stages" in res.stdout
    names = {json.loads((sdir / st / "jobs.json").read_text())["name"] for st in ("train", "surfaces", "interp")}
    assert names == {"bs-train", "bs-surfaces", "bs-interp"}  # Slurm job names from the study and stage

    requeued, shard_dir = None, None
    try:
        requeued, shard_dir = _requeue_a_running_shard(sdir, time.monotonic() + 240)
        deadline = time.monotonic() + 300
        while True:
            rows = study_status(sdir)
            if all(r["state"] in ENDED for r in rows) or time.monotonic() > deadline:
                break
            if any(r["job_id"] == requeued and r["state"].startswith("PENDING") for r in rows):
                sh("scontrol", "update", f"JobId={requeued}", "StartTime=now")  # skip the requeue's begin time
            time.sleep(1)
    finally:
        for st in ("train", "surfaces", "interp", "compare"):
            rec = sdir / st / "jobs.json"
            if rec.is_file() and any(r["state"] not in ENDED for r in study_status(sdir)):
                for j in json.loads(rec.read_text())["jobs"]:
                    sh("scancel", str(j["job_id"]))
    took = time.monotonic() - t0
    status = subprocess.run([sys.executable, "-m", "landscape_exp.study", "status", str(sdir)], capture_output=True, text=True)
    assert all(r["state"] == "COMPLETED" for r in rows), status.stdout
    assert status.stdout.splitlines()[-1].strip() == "8 COMPLETED", status.stdout  # 2 train, 4 shards, 1 interp, 1 compare

    # each merged surface, with its figures and summary, in its job directory (whichever shard merged)
    for b in BATCHES:
        home = sdir / "surfaces" / f"surface2d_bs{b}_wd0"
        with h5py.File(home / "surface.h5", "r") as f:
            assert np.asarray(f["done"]).all() and np.asarray(f["train_loss"]).shape == (31, 31)
        assert (home / "surface_train_loss_contour.png").stat().st_size > 0
        summary = json.loads((home / "summary.json").read_text())
        assert summary["merged_shards"] == 2 and summary["surface_file"] == str(home / "surface.h5")
        shard_summaries = [json.loads((home / f"shard-{i}" / "summary.json").read_text()) for i in (0, 1)]
        assert sum("merged_into" in s for s in shard_summaries) == 1  # the last one merged

    # one compare row per model (batch 32 and 256), whatever the number of jobs per model
    with open(sdir / "compare" / "compare.csv") as f:
        rows_csv = list(csv.DictReader(f))
    assert [int(float(r["optim.batch_size"])) for r in rows_csv] == list(BATCHES)

    # W&B: one run (one id) per job directory, also for the requeued shard, which started twice
    job_dirs = [Path(j["dir"]) for st in ("train", "interp", "compare")
                for j in json.loads((sdir / st / "jobs.json").read_text())["jobs"]]
    job_dirs += [sdir / "surfaces" / f"surface2d_bs{b}_wd0" / f"shard-{i}" for b in BATCHES for i in (0, 1)]
    job_dirs += [sdir / "surfaces" / f"surface2d_bs{b}_wd0" for b in BATCHES]  # the merged surfaces' runs
    for d in job_dirs:
        ids = {p.name.rsplit("-", 1)[1] for p in (d / "wandb").glob("offline-run-*")}
        assert ids == {run_id_for(d)}, (d, ids)
    starts = sorted((shard_dir / "wandb").glob("offline-run-*"))
    assert len(starts) >= 2, starts  # killed and started again: two starts of the one run
    # Slurm's SIGTERM also reaches W&B's own service process, which exits at once, so what the
    # killed start wrote may not reach its .wandb file; the job's own exit record is exit.json.
    runs = [read_offline_run(p) for p in starts]
    assert {r["id"] for r in runs if r["id"] is not None} == {run_id_for(shard_dir)}
    assert runs[-1]["exit_code"] == 0 and runs[-1]["name"] == f"{shard_dir.parent.name}/{shard_dir.name}"
    assert runs[-1]["group"] == "bs/surfaces"
    log = (shard_dir / "run.log").read_text()
    first, second = re.findall(r"\((\d+) already done, (\d+) to compute\)", log)[:2]
    assert first[0] == "0" and int(second[0]) >= 3  # the second start resumed from the first one's points
    assert took < 300, f"the study took {took:.0f} s"
