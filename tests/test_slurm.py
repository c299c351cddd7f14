"""Real Slurm (issue 7): Hydra multiruns through ``hydra/launcher=submitit_slurm`` on a running
cluster, e.g. the single-node one of ``scripts/slurm-cluster.sh start`` (``.ci/run`` starts it).

Skipped, with the reason, where no cluster answers ``sinfo``. Jobs are kept small (MLP/LeNet on the
bundled digits, tiny grids, one CPU each) and the project's launcher defaults that a test node
cannot meet (a GPU, 4 CPUs, 32 GB) are overridden on the command line, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from landscape_exp.surface.sharding import shard_path

from conftest import run_cli
from helpers.slurm import sh
from helpers.surfaces import assert_same_surface, journal_lines, ok, wait_for_journal

pytestmark = pytest.mark.slurm

GRID = ["x=-1:1:15", "y=-1:1:15"]  # 225 points: a shard runs long enough to be requeued mid-way
SURFACE = ["task=surface2d", *GRID, "optim.epochs=1", "precision=fp32", "plot.enabled=false", "logger=none",
           "progress=false"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LANDSCAPE_ROOT of every run here (Slurm jobs inherit the environment): one checkpoint cache."""
    return tmp_path_factory.mktemp("slurm")


def slurm_launcher(partition: str) -> list[str]:
    return ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={partition}", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20"]


def _array_tasks(sweep: Path) -> dict[str, Path]:
    """submitit's job folders of a sweep: ``{"<array id>_<index>": folder}``."""
    return {p.name: p for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)}


def test_two_job_sweep_is_one_job_array(root: Path, partition: str) -> None:
    sweep = root / "sweep"
    ok(run_cli(["-m", "task=train", "model=mlp", "optim.epochs=1,2", "logger=none", "progress=false",
                 f"hydra.sweep.dir={sweep}", *slurm_launcher(partition)], root, timeout=900))
    for job, epochs in (("0", 1), ("1", 2)):
        assert json.loads((sweep / job / "summary.json").read_text())["final/epoch"] == epochs
    tasks = _array_tasks(sweep)
    assert len(tasks) == 2 and len({t.split("_")[0] for t in tasks}) == 1, sorted(tasks)
    array_id = next(iter(tasks)).split("_")[0]
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    # array_parallelism (64) is capped by submitit at the number of jobs
    for line in ("#SBATCH --array=0-1%2", f"#SBATCH --partition={partition}", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@120", "#SBATCH --time=20", "#SBATCH --cpus-per-task=1"):
        assert line in script, script
    for i in (0, 1):  # each ran inside Slurm as its own array task
        log = (tasks[f"{array_id}_{i}"] / f"{array_id}_{i}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={array_id}_{i}," in log


@pytest.fixture(scope="module")
def reference(root: Path, partition: str) -> Path:
    """One unsharded local run: the surface every Slurm-computed one must equal."""
    ref = root / "reference"
    ok(run_cli([*SURFACE, f"hydra.run.dir={ref}"], root))
    return ref


def test_sharded_surface_with_a_requeued_task(root: Path, partition: str, reference: Path) -> None:
    """shard.count=2 over shard.index=0,1: one job array of two tasks. Task 0 is requeued by
    ``scontrol requeue`` mid-run (as a preemption would): Slurm kills and restarts it, it resumes
    from its journal, the last task merges, and the surface equals a single local run."""
    ref = reference
    sweep = root / "shards"
    proc = run_cli(["-m", *SURFACE, "shard.count=2", "shard.index=0,1", f"direction.file={ref / 'directions.h5'}",
                    f"hydra.sweep.dir={sweep}", *slurm_launcher(partition)], root, popen=True)
    shard0 = shard_path(sweep / "surface.h5", 2, 0)
    journal0 = shard0.with_name(shard0.name + ".journal")
    try:
        seen = wait_for_journal(proc, journal0, 3, timeout=600)
        task0 = next(t for t in _array_tasks(sweep) if t.endswith("_0"))
        worker = int(shard0.with_name(shard0.name + ".lock").read_text().split()[0])
        res = sh("scontrol", "requeue", task0)
        assert res.returncode == 0, res.stderr
        # Slurm now sends SIGTERM, which submitit masks, and SIGKILL only after its grace period
        # (KillWait), during which a fast machine could finish the shard; end the grace period now
        # so the requeue lands mid-shard on any machine.
        with contextlib.suppress(ProcessLookupError):  # it may already have ended on SIGTERM (run.py)
            os.kill(worker, signal.SIGKILL)
        # A requeued job waits out a begin time (about two minutes); let it start as soon as it can.
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            state = sh("squeue", "--noheader", "--format=%T|%r", f"--jobs={task0}").stdout.strip()
            if state.startswith("PENDING"):
                sh("scontrol", "update", f"JobId={task0}", "StartTime=now")
            time.sleep(1)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:  # a failed test must not leave its jobs queued
            proc.kill()
            for task in _array_tasks(sweep):
                sh("scancel", task)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]

    log = (sweep / ".submitit" / task0 / f"{task0}_0_log.out").read_text()
    starts = re.findall(r"shard 0 of 2: 113 of 225 points \((\d+) already done, (\d+) to compute\)", log)
    assert len(starts) == 2 and starts[0] == ("0", "113"), log
    already, todo = map(int, starts[1])
    assert already >= seen and already + todo == 113 and journal_lines(journal0) == 0
    assert_same_surface(sweep / "surface.h5", ref / "surface.h5")


def test_two_workers_in_one_job_share_a_surface(root: Path, partition: str, reference: Path) -> None:
    """hydra.launcher.tasks_per_node=2: srun starts two workers in one Slurm job; each computes
    one shard (its rank from Slurm), and together they produce the single run's surface."""
    sweep = root / "workers"
    ok(run_cli(["-m", *SURFACE, f"direction.file={reference / 'directions.h5'}", f"hydra.sweep.dir={sweep}",
                 *slurm_launcher(partition), "hydra.launcher.tasks_per_node=2"], root, timeout=900))
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out"))
    assert "shard 0 of 2: 113 of 225 points" in logs and "shard 1 of 2: 112 of 225 points" in logs
    for rank in (0, 1):
        assert f"global_rank={rank}(2)" in logs
        assert (sweep / "0" / f"worker-{rank}" / "summary.json").is_file()
    assert_same_surface(sweep / "0" / "surface.h5", reference / "surface.h5")


def test_a_failing_job_fails_the_sweep_promptly(root: Path, partition: str) -> None:
    """A job that stops on a user error must hand its error back to the launching command; on a
    cluster without accounting (no sacct) submitit cannot otherwise tell that it ended and waits
    for ever. The good job of the sweep still completes."""
    sweep = root / "failing"
    t0 = time.monotonic()
    res = run_cli(["-m", "task=surface1d", "x=bad,-1:1:3", "optim.epochs=1", "plot.enabled=false", "logger=none",
                   "progress=false", f"hydra.sweep.dir={sweep}", *slurm_launcher(partition)], root, timeout=240)
    assert res.returncode != 0 and time.monotonic() - t0 < 240
    assert "malformed grid x='bad'" in res.stderr
    assert (sweep / "1" / "summary.json").is_file()


def test_a_cancelled_job_is_noticed_without_accounting(root: Path, partition: str) -> None:
    """``scancel`` of a running job where Slurm keeps no accounting: the waiting command learns
    from ``squeue`` that the job is gone without a result and fails, saying so once, instead of
    polling for ever (submitit alone takes the unknown state for "still running")."""
    sweep = root / "cancelled"
    proc = run_cli(["-m", "task=train", "model=mlp", "optim.epochs=5000", "logger=none", "progress=false",
                    f"hydra.sweep.dir={sweep}", *slurm_launcher(partition)], root, popen=True)
    try:
        deadline = time.monotonic() + 180
        while not (sweep / "0" / "checkpoints" / "epoch_001.pt").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        (job,) = json.loads((sweep / "jobs.json").read_text())["jobs"]
        assert sh("scancel", job["job_id"]).returncode == 0
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=300)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            sh("scancel", json.loads((sweep / "jobs.json").read_text())["jobs"][0]["job_id"])
    assert proc.returncode != 0 and took < 150, (took, err[-2000:])
    assert "has not produced any output" in err, err[-3000:]
    if shutil.which("sacct") and sh("sacct", "-n").returncode != 0:  # no accounting here: said once
        assert err.count("keeps no job accounting") == 1 and "Bypassing sacct error" not in err
    assert f"FAILED: {sweep / '0'}" in out  # the closing line names what failed
    assert json.loads((sweep / "0" / "exit.json").read_text())["exit_code"] == 143  # SIGTERM: an exit record
