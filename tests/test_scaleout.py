"""Scale-out (issue 7): submitit launchers, sharded surfaces, merge, preemption, sweeps.

Every run goes through ``python run.py`` in a subprocess, as a user would start it, with all paths
under one temporary root so the LeNet checkpoint trains once (the checkpoint cache) and every
surface around it is computed from the same weights. The reference for the sharded runs is one
unsharded fp32 run; shards must reproduce it bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from landscape_exp.config.settings import Settings
from landscape_exp.errors import UserError
from landscape_exp.job.context import RunContext
from landscape_exp.surface.grid import parse_grid
from landscape_exp.surface.sharding import AlreadyMerged, merge_shards, shard_files, shard_indices, shard_path
from landscape_exp.surface.store import SurfaceFile, read_surface
from landscape_exp.tasks import merge as merge_task

from conftest import ROOT, compose_cfg, run_cli
from helpers.surfaces import assert_same_surface, journal_lines, ok, wait_for_journal

# One pytest-xdist worker runs this whole module, so that the checkpoint its runs share (one cache for
# the module) is trained once, not once per worker.
pytestmark = pytest.mark.xdist_group("scaleout")

# 80 points: three shards of 27, 27 and 26; both splits, so test metrics are merged too.
GRID = ["x=-1:1:10", "y=-1:1:8"]
NPOINTS = 80
SURFACE = ["task=surface2d", *GRID, "optim.epochs=1", "precision=fp32", "eval.splits=[train,test]",
           "plot.enabled=false", "logger=none", "progress=false"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LANDSCAPE_ROOT of every run in this file: one checkpoint cache for all."""
    return tmp_path_factory.mktemp("scaleout")


@pytest.fixture(scope="module")
def reference(root: Path) -> dict[str, Path]:
    """One unsharded run (it also trains the cached checkpoint every other run reuses)."""
    out = root / "reference"
    ok(run_cli([*SURFACE, f"hydra.run.dir={out}"], root))
    return {"surface": out / "surface.h5", "directions": out / "directions.h5"}


# ---------------------------------------------------------------------------------------------
# launchers


def test_submitit_local_multirun_one_result_per_job(tmp_path: Path) -> None:
    """Out of the box: no sweep dir given, the project's submitit_local defaults; each job runs
    in its own submitit process and gets its own overrides."""
    proc = ok(run_cli(["-m", "task=train", "model=mlp", "optim.epochs=1,2", "hydra/launcher=submitit_local",
                        "logger=none", "progress=false"], tmp_path))
    sweeps = [p.parent for p in (tmp_path / "outputs" / "multirun").glob("*/*/multirun.yaml")]
    assert len(sweeps) == 1, proc.stdout
    sweep = sweeps[0]
    summaries = sorted(sweep.glob("*/summary.json"))
    assert [p.parent.name for p in summaries] == ["0", "1"]
    for job, epochs in (("0", 1), ("1", 2)):
        hist = json.loads((sweep / job / "history.json").read_text())["history"]
        assert [h["epoch"] for h in hist] == list(range(epochs + 1))
        assert json.loads((sweep / job / "summary.json").read_text())["final/epoch"] == epochs
    # one submitit job (own folder, own pickled result) per Hydra job
    results = sorted(sweep.glob(".submitit/*/*_result.pkl"))
    assert len(results) == 2 and len({p.parent for p in results}) == 2
    # the project's defaults reached the launcher
    multirun = OmegaConf.load(sweep / "multirun.yaml")
    assert multirun.hydra.launcher._target_.endswith("LocalLauncher")
    assert multirun.hydra.launcher.timeout_min == 720 and multirun.hydra.launcher.gpus_per_node == 1


def test_launcher_defaults_compose_and_override(tmp_path: Path) -> None:
    """Both launcher configs carry the project's defaults and every key is overridable."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        slurm = compose("config", overrides=["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                                             "hydra.launcher.timeout_min=30", "hydra.launcher.gpus_per_node=4",
                                             "hydra.launcher.tasks_per_node=4", "hydra.launcher.array_parallelism=8"],
                        return_hydra_config=True).hydra.launcher
        local = compose("config", overrides=["hydra/launcher=submitit_local"], return_hydra_config=True).hydra.launcher
    # the project's subclasses of the plugin's launchers (job names, jobs.json, squeue fallback)
    assert slurm._target_ == "hydra_plugins.landscape_launchers.SlurmLauncher"
    assert (slurm.partition, slurm.timeout_min, slurm.gpus_per_node, slurm.tasks_per_node,
            slurm.array_parallelism) == ("gpu", 30, 4, 4, 8)
    assert (slurm.cpus_per_task, slurm.mem_gb, slurm.max_num_timeout, slurm.signal_delay_s) == (4, 32, 10, 120)
    assert local._target_ == "hydra_plugins.landscape_launchers.LocalLauncher"
    assert (local.timeout_min, local.gpus_per_node, local.tasks_per_node) == (720, 1, 1)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cpu = compose("config", overrides=["hydra/launcher=slurm_cpu"], return_hydra_config=True).hydra.launcher
    assert cpu._target_ == slurm._target_ and cpu.gpus_per_node is None  # a CPU partition refuses any gres
    assert (cpu.cpus_per_task, cpu.mem_gb, cpu.additional_parameters.requeue) == (2, 4, True)


# ---------------------------------------------------------------------------------------------
# sharded surfaces


def test_shards_then_merge_equal_single_run(root: Path, reference: dict[str, Path]) -> None:
    """shard.count=3 over shard.index=0,1,2 (same seeds: directions rebuilt in each shard): the
    last shard merges on its own; deleting that and running task=merge rebuilds it; both equal
    the unsharded run point for point."""
    sweep = root / "shards3"
    ok(run_cli(["-m", *SURFACE, "shard.count=3", "shard.index=0,1,2", f"hydra.sweep.dir={sweep}"], root))
    merged = sweep / "surface.h5"
    # disjoint, balanced, strided: shard i holds exactly the points i, i+3, i+6, ...
    sizes = []
    for i in range(3):
        done = read_surface(shard_path(merged, 3, i))["done"].ravel()
        assert np.array_equal(np.flatnonzero(done), np.arange(i, NPOINTS, 3))
        sizes.append(int(done.sum()))
    assert sizes == [27, 27, 26]
    assert_same_surface(merged, reference["surface"])

    for p in (merged, merged.with_name("surface.h5.journal"), merged.with_name("surface.h5.lock")):
        p.unlink(missing_ok=True)
    out = root / "merge3"
    ok(run_cli(["task=merge", f"surf_file={merged}", "plot.enabled=false", "logger=none", f"hydra.run.dir={out}"], root))
    assert_same_surface(merged, reference["surface"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shard_count"] == 3 and summary["points_done"] == NPOINTS and summary["surface_task"] == "surface2d"


def test_killed_shard_rerun_completes_surface(root: Path, reference: dict[str, Path]) -> None:
    """SIGKILL one shard mid-run; once the other shard is done, task=merge names the incomplete
    one in a one-line error; the rerun computes only its missing points, and the merged surface
    equals the single run."""
    surf = root / "killed" / "surface.h5"
    args = [*SURFACE, f"surf_file={surf}", "shard.count=2", f"direction.file={reference['directions']}"]
    shard0 = args + ["shard.index=0", f"hydra.run.dir={root / 'killed' / 'run0'}"]
    shard1 = args + ["shard.index=1", f"hydra.run.dir={root / 'killed' / 'run1'}"]
    journal0 = shard_path(surf, 2, 0).with_name(shard_path(surf, 2, 0).name + ".journal")

    other = run_cli(shard1, root, popen=True)  # alongside, as on a cluster
    proc = run_cli(shard0, root, popen=True)
    seen = wait_for_journal(proc, journal0, 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert journal_lines(journal0) >= seen

    out, err = other.communicate(timeout=600)
    assert other.returncode == 0, out[-3000:] + err[-3000:]
    assert not surf.exists()  # shard 0 is incomplete: nothing merged yet
    res = run_cli(["task=merge", f"surf_file={surf}", "plot.enabled=false", "logger=none",
                   f"hydra.run.dir={root / 'killed' / 'merge'}"], root)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot merge"), res.stderr
    assert shard_path(surf, 2, 0).name in lines[0] and "of 40 points to compute" in lines[0]

    rerun = ok(run_cli(shard0, root))
    m = re.search(r"shard 0 of 2: 40 of 80 points \((\d+) already done, (\d+) to compute\)", rerun.stdout)
    assert m, rerun.stdout
    already, todo = int(m[1]), int(m[2])
    assert already >= seen and already + todo == 40 and todo < 40
    assert json.loads((root / "killed" / "run0" / "summary.json").read_text())["points_computed"] == todo
    assert "merged into" in rerun.stdout
    assert_same_surface(surf, reference["surface"])


def _fake_shards(surf: Path, count: int, n: int, *, only: tuple[int, ...] | None = None,
                 partial: dict[int, int] | None = None) -> None:
    """Shard files of a 1D grid of ``n`` points with loss(k) = 0.5 + k/7, acc(k) = k: shards in
    ``only`` (default all), each complete except ``partial[i]`` points recorded for shard i."""
    grid = parse_grid(f"-1:1:{n}")
    for i in range(count) if only is None else only:
        own = shard_indices(n, count, i)
        with SurfaceFile(shard_path(surf, count, i), grid, ["train_loss", "train_acc"], fingerprint={"case": "fake"},
                         attrs={"task": "surface1d"}, indices=own) as s:
            for k in own[: (partial or {}).get(i, len(own))]:
                s.record(k, {"train_loss": 0.5 + k / 7, "train_acc": float(k)})


def test_workers_finishing_together_merge_once(tmp_path: Path) -> None:
    """Two workers that started at t0 and finish together: the first to take the merged file's lock
    merges (and publishes); the second finds it complete and merged after t0 and stands aside, the
    file's values and merge time untouched. A rerun started after that merge merges again."""
    surf = tmp_path / "surface.h5"
    t0 = time.time()
    _fake_shards(surf, 2, 9)
    assert merge_shards(surf, 2, since=t0) == surf
    first = read_surface(surf)
    assert first["done"].all() and float(first["attrs"]["merged_at"]) >= t0
    with pytest.raises(AlreadyMerged, match="merged by another worker"):
        merge_shards(surf, 2, since=t0)
    again = read_surface(surf)
    assert again["attrs"]["merged_at"] == first["attrs"]["merged_at"]
    assert np.array_equal(again["train_loss"], 0.5 + np.arange(9) / 7)
    later = float(first["attrs"]["merged_at"]) + 1e-3
    assert merge_shards(surf, 2, since=later) == surf  # a rerun: publishes its own merge
    assert float(read_surface(surf)["attrs"]["merged_at"]) >= later
    assert merge_shards(surf, 2) == surf  # task=merge passes no start time: always merges


def test_a_late_sibling_worker_does_not_publish_the_surface_again(tmp_path: Path, lenet_ckpt: Path, capsys) -> None:
    """The shard jobs of one surface, in process: the job that completes the set merges and publishes;
    a sibling started with it (``process_started`` before the merge) that gets to the end later,
    with nothing left to compute, stands aside; a rerun started after the merge publishes again."""
    from landscape_exp.app import run_job

    surf = tmp_path / "s" / "surface.h5"
    base = ["task=surface1d", "x=-1:1:5", f"checkpoint={lenet_ckpt}", f"surf_file={surf}", "shard.count=2",
            "plot.enabled=false", "sharpness=none"]

    def shard(i: int, started: float, name: str) -> dict:
        cfg = compose_cfg(tmp_path, [*base, f"shard.index={i}"])
        return run_job(cfg, output_dir=tmp_path / name, job={"name": name, "multirun": False, "process_started": started})

    t0 = time.time()
    first = shard(0, t0, "a0")
    assert "merged_into" not in first and "merged_by_another" not in first  # shard 1 missing
    assert (f"shard 0 of 2 done; other shards still have points to compute, and the one that completes the set merges them "
            f"into {surf}" in capsys.readouterr().out)
    last = shard(1, t0, "a1")
    assert last["merged_into"] == str(surf.parent)
    merged_at = read_surface(surf)["attrs"]["merged_at"]
    late = shard(0, t0, "a0-late")  # the sibling, started with the others, reaching its merge only now
    assert late["merged_by_another"] == str(surf) and "merged_into" not in late
    assert "all 2 shards done: " in (out := capsys.readouterr().out) and "was merged by another worker at" in out
    assert read_surface(surf)["attrs"]["merged_at"] == merged_at
    rerun = shard(0, time.time(), "b0")  # a new run of a shard: merges and publishes once more
    assert rerun["merged_into"] == str(surf.parent) and read_surface(surf)["attrs"]["merged_at"] > merged_at


def _merge_ctx(surf: Path, out: Path, count: int = 1) -> RunContext:
    cfg = compose_cfg(out, ["task=merge", f"surf_file={surf}", f"shard.count={count}", "plot.enabled=false"])
    settings = Settings.from_config(OmegaConf.to_container(cfg, resolve=True))
    return RunContext(settings=settings, out_dir=out, device=torch.device("cpu"))


def test_merge_task_errors_and_values(tmp_path: Path) -> None:
    """task=merge: the shard count is read from the files' names; a missing or incomplete shard, no
    shards at all, or shards of two different splits each give one line naming the problem; a
    complete set merges to exactly the values the shards hold."""
    surf = tmp_path / "surface.h5"
    with pytest.raises(UserError, match="no shard files next to") as e:
        merge_task.run(_merge_ctx(surf, tmp_path / "m0"))
    assert "\n" not in str(e.value)

    _fake_shards(surf, 3, 11, only=(0, 1), partial={1: 2})
    with pytest.raises(UserError, match=re.escape(shard_path(surf, 3, 2).name)) as e:
        merge_task.run(_merge_ctx(surf, tmp_path / "m1"))
    assert "missing" in str(e.value) and "\n" not in str(e.value)

    _fake_shards(surf, 3, 11, only=(2,))
    with pytest.raises(UserError, match=re.escape(shard_path(surf, 3, 1).name) + ".* 2 of 4 points to compute"):
        merge_task.run(_merge_ctx(surf, tmp_path / "m2"))  # shard 1 has 2 of its 4 points
    assert not surf.exists()

    _fake_shards(surf, 3, 11, only=(1,))
    summary = merge_task.run(_merge_ctx(surf, tmp_path / "m3"))
    s = read_surface(surf)
    k = np.arange(11)
    assert np.array_equal(s["train_loss"], 0.5 + k / 7) and np.array_equal(s["train_acc"], k.astype(float))
    assert s["done"].all() and summary["shard_count"] == 3 and summary["points_done"] == 11
    assert summary["train_loss/min"] == 0.5 and summary["train_acc/max"] == 10.0

    _fake_shards(surf, 2, 11, only=(0,))  # a second split beside the first: ambiguous
    assert shard_files(surf) == {2: [0], 3: [0, 1, 2]}
    with pytest.raises(UserError, match="counts 2 \\(1 files\\), 3 \\(3 files\\); choose one with shard.count=N"):
        merge_task.run(_merge_ctx(surf, tmp_path / "m4"))
    assert merge_task.run(_merge_ctx(surf, tmp_path / "m5", count=3))["shard_count"] == 3


# ---------------------------------------------------------------------------------------------
# several workers per job, and preemption through submitit


def test_workers_per_job_and_preemption_requeue(root: Path, reference: dict[str, Path]) -> None:
    """hydra.launcher.tasks_per_node=2: the job's two workers each compute one shard of its
    surface. SIGUSR2 to worker 0 mid-run (what Slurm sends before a time limit, or submitit on
    preemption) checkpoints and requeues the job through submitit; the requeued workers resume from
    their journals, and the merged surface equals the single run."""
    sweep = root / "workers"
    args = ["-m", *SURFACE, f"direction.file={reference['directions']}", "hydra/launcher=submitit_local",
            "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, root, popen=True)
    shard0 = shard_path(sweep / "0" / "surface.h5", 2, 0)
    wait_for_journal(proc, shard0.with_name(shard0.name + ".journal"), 3)
    worker0 = int(shard0.with_name(shard0.name + ".lock").read_text().split()[0])  # the writer's pid
    os.kill(worker0, signal.SIGUSR2)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]

    log0 = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_0_log.*"))
    assert "this job is preempted" in log0 and "Requeued job" in log0
    starts = re.findall(r"shard 0 of 2: 40 of 80 points \((\d+) already done, (\d+) to compute\)", log0)
    assert len(starts) == 2 and starts[0] == ("0", "40")
    already, todo = map(int, starts[1])
    assert already >= 3 and already + todo == 40
    summaries = [json.loads((sweep / "0" / f"worker-{r}" / "summary.json").read_text()) for r in (0, 1)]
    # each worker reports its shard; the one that finished last merged the surface, and its summary
    # (with figures and W&B run) is the job directory's, where the surface is
    assert sorted(s["shard"] for s in summaries) == [0, 1] and sum("merged_into" in s for s in summaries) == 1
    merged = json.loads((sweep / "0" / "summary.json").read_text())
    assert merged["points"] == NPOINTS and merged["surface_file"] == str(sweep / "0" / "surface.h5")
    assert_same_surface(sweep / "0" / "surface.h5", reference["surface"])


# ---------------------------------------------------------------------------------------------
# ready-made sweeps, scaled down


def test_small_sweep_trains_then_analyses(tmp_path: Path) -> None:
    """sweeps/optim_trajectory_small as documented, through submitit_local: each job trains its
    MLP (SGD or Adam, a checkpoint every epoch) into the checkpoint cache, then projects that
    path on its top-2 PCA directions and draws it on the loss contour."""
    ok(run_cli(["-m", "--config-dir", str(ROOT / "sweeps"), "--config-name", "optim_trajectory_small",
                 "logger=none", "progress=false"], tmp_path, timeout=600))
    study = tmp_path / "outputs" / "studies" / "optim_trajectory_small"
    jobs = {"sgd": study / "sgd_bs64_wd0", "adam": study / "adam_bs64_wd0"}
    assert sorted(p.parent for p in study.glob("*/summary.json")) == sorted(jobs.values())
    sources = set()
    for optim, job in jobs.items():
        summary = json.loads((job / "summary.json").read_text())
        run = Path(summary["source"])  # the cached training run this job made (nothing passed in)
        assert run.parent == tmp_path / ".cache" / "train"
        assert json.loads((run / "identity.json").read_text())["optim"]["name"] == optim
        assert summary["epochs"] == [0, 1, 2, 3, 4] and (job / "trajectory_contour.png").is_file()
        # the path's start-to-end distance, recomputed from the cached epoch checkpoints over the
        # weights the PCA uses (biases ignored: every tensor with more than one dimension)
        first, last = (torch.load(run / "checkpoints" / f"epoch_{e:03d}.pt", map_location="cpu", weights_only=True)["state_dict"]
                       for e in (0, 4))
        dist = sum(float(((last[k] - first[k]) ** 2).sum()) for k in first if first[k].dim() > 1) ** 0.5
        assert summary["distance_start_final"] == pytest.approx(dist, rel=1e-6)
        sources.add(run)
    assert len(sources) == 2
