"""Studies and the launchers' Slurm plumbing without a cluster: names and groups, where a sharded
surface meets, the squeue fallback where sacct fails (fake ``squeue``/``sacct`` on PATH), and the
study's status from its records and the jobs' own exit records."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from landscape_exp.cluster.launches import closing_line, group_for, job_name, write_launch_record
from landscape_exp.cluster.slurm import squeue_states
from landscape_exp.cluster.status import format_status, study_status
from landscape_exp.cluster.study import run_study, studies
from landscape_exp.errors import UserError
from landscape_exp.job.tracking import run_id_for
from landscape_exp.surface.sharding import merged_dir_name


def test_run_id_is_the_job_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    assert run_id_for(a) == run_id_for(a) and run_id_for(a) != run_id_for(b)
    assert len(run_id_for(a)) == 16 and run_id_for(a).isalnum()
    monkeypatch.chdir(tmp_path)
    assert run_id_for("sweep/0") == run_id_for(a)  # relative or absolute: the same directory, the same run


def test_group_and_job_names_are_readable_and_unique_per_stage() -> None:
    assert group_for("/o/studies/batch_wd_small/train") == "batch_wd_small/train"
    assert group_for("/o/studies/batch_wd_small/surfaces") == "batch_wd_small/surfaces"
    assert group_for("/o/studies/batch_wd/train") == "batch_wd/train"  # another study: another group
    assert group_for("/o/studies/depth_skip_small") == "depth_skip_small"
    assert group_for("/o/multirun/2026-11-30/10-00-00-123456") == "multirun/2026-11-30/10-00-00-123456"
    assert group_for("/somewhere/my_sweep") == "somewhere/my_sweep"
    assert job_name("/o/studies/batch_wd_small/train", ["train"]) == "batch_wd_small-train"
    assert job_name("/o/multirun/2026-11-30/10-00-00", ["surface1d", "surface2d", "surface1d"]) == "surface1d+surface2d"


def test_shards_of_one_surface_meet_in_one_directory() -> None:
    s0 = merged_dir_name(["optim.batch_size=32", "shard.index=0"])
    s1 = merged_dir_name(["shard.index=1", "optim.batch_size=32"])
    other = merged_dir_name(["optim.batch_size=256", "shard.index=0"])
    assert s0 == s1 == "optim.batch_size=32" and other == "optim.batch_size=256"
    assert merged_dir_name(["shard.index=3"]) == ""  # only the shard varies: the sweep directory itself
    assert merged_dir_name(["x=-1:1:9", "checkpoint=/a/b.pt"]) == "checkpoint=_a_b.pt,x=-1_1_9"
    long = merged_dir_name([f"k{i}=" + "v" * 20 for i in range(10)])
    assert len(long) == 109 and long != merged_dir_name([f"k{i}=" + "w" * 20 for i in range(10)])


def _fake(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with ``sacct`` failing as on a cluster without accounting and an ``squeue`` that
    answers from ``queue.txt`` (``<job id>|<state>`` lines), logging its calls."""
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "sacct", 'echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1\n')
    _fake(bin_dir, "squeue", f'echo "$@" >> {tmp_path}/squeue.calls\n'
                             f'case "$*" in *%r*) sed "s/|.*/|Dependency/" {tmp_path}/queue.txt; exit 0;; esac\n'
                             f'[ -s {tmp_path}/queue.txt ] || '
                             f'{{ echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; }}\n'
                             f'cat {tmp_path}/queue.txt\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_squeue_states(fake_slurm: Path) -> None:
    (fake_slurm / "queue.txt").write_text("77_0|RUNNING\n77_1|PENDING\n78|COMPLETED\n")
    assert squeue_states(["77_0", "77_1", "78"]) == {"77_0": "RUNNING", "77_1": "PENDING", "78": "COMPLETED"}
    assert "--jobs=77,78" in (fake_slurm / "squeue.calls").read_text()
    (fake_slurm / "queue.txt").write_text("")  # every job gone: squeue refuses the ids
    assert squeue_states(["77_0"]) == {}


def test_a_job_that_leaves_the_queue_without_a_result_is_noticed(fake_slurm: Path, capsys: pytest.CaptureFixture) -> None:
    """sacct fails (no accounting): said once, then squeue decides; a job missing from the queue
    has ended (submitit then reports it has produced no output instead of waiting for ever)."""
    from hydra_plugins.landscape_launchers import _queue_watcher_class

    watcher = _queue_watcher_class()(delay_s=60)

    def done(job: str) -> bool:
        time.sleep(0.01)  # submitit ignores forced looks less than 1 ms apart
        return watcher.is_done(job, mode="force")

    (fake_slurm / "queue.txt").write_text("90_0|RUNNING\n90_1|RUNNING\n")
    for j in ("90_0", "90_1"):
        watcher.register_job(j)
    assert not done("90_0") and not done("90_1")
    (fake_slurm / "queue.txt").write_text("90_0|RUNNING\n")  # 90_1 was scancel'ed, and Slurm forgot it
    assert done("90_1") and watcher.get_state("90_1", mode="cache") == "NOT_IN_QUEUE"
    assert not done("90_0")
    (fake_slurm / "queue.txt").write_text("90_0|COMPLETED\n")
    assert done("90_0")
    err = capsys.readouterr().err
    assert err.count("keeps no job accounting") == 1 and "Slurm accounting storage is disabled" in err
    assert watcher.accounting is False and watcher.num_calls == 5


def test_study_status_from_queue_and_exit_records(fake_slurm: Path, capsys: pytest.CaptureFixture) -> None:
    sdir = fake_slurm / "studies" / "s"
    train, surf = sdir / "train", sdir / "surfaces"
    write_launch_record(train, "slurm", "s-train", [
        {"num": 0, "job_id": "50_0", "dir": str(train / "bs32"), "overrides": ["optim.batch_size=32"]},
        {"num": 1, "job_id": "50_1", "dir": str(train / "bs256"), "overrides": ["optim.batch_size=256"]},
        {"num": 2, "job_id": "50_2", "dir": str(train / "bs512"), "overrides": ["optim.batch_size=512"]}])
    write_launch_record(surf, "slurm", "s-surfaces", [
        {"num": 0, "job_id": "51_0", "dir": str(surf / "a"), "overrides": ["shard.index=0"]}])
    (train / "bs32").mkdir(parents=True)
    (train / "bs32" / "exit.json").write_text(json.dumps({"exit_code": 0}))
    (train / "bs256").mkdir(parents=True)
    (train / "bs256" / "exit.json").write_text(json.dumps({"exit_code": 143, "reason": "SystemExit: 143"}))
    (sdir / "study.json").write_text(json.dumps({"study": "s", "stages": [
        {"stage": "train", "sweep_dir": str(train), "record": str(train / "jobs.json")},
        {"stage": "surfaces", "sweep_dir": str(surf), "record": str(surf / "jobs.json")}]}))
    (fake_slurm / "queue.txt").write_text("51_0|PENDING\n")
    rows = {r["job_id"]: r for r in study_status(sdir)}
    assert rows["50_0"]["state"] == "COMPLETED"  # left the queue: its exit record says so
    assert rows["50_1"]["state"] == "FAILED" and "exit 143" in rows["50_1"]["detail"]
    assert rows["50_2"]["state"] == "UNKNOWN" and "no exit record" in rows["50_2"]["detail"]
    assert rows["51_0"]["state"] == "PENDING (Dependency)"
    text = format_status(sdir, list(rows.values()))
    assert "1 COMPLETED, 1 FAILED, 1 PENDING, 1 UNKNOWN" in text and "train/bs256" in text
    with pytest.raises(UserError, match="not a study directory"):
        study_status(fake_slurm)
    # the status command: exit 2 naming the jobs that ended without completing, not the pending one
    from landscape_exp.cluster.cli import main

    assert main(["status", str(sdir)]) == 2
    err = capsys.readouterr().err
    assert "study s: 2 job(s) did not complete (train 50_1 FAILED; train 50_2 UNKNOWN)" in err and "51_0" not in err
    for d in ("bs256", "bs512"):
        (train / d).mkdir(exist_ok=True)
        (train / d / "exit.json").write_text(json.dumps({"exit_code": 0}))
    assert main(["status", str(sdir)]) == 0  # only a pending job left: not an error


def test_launch_record_keeps_earlier_submissions_and_closing_line(tmp_path: Path) -> None:
    write_launch_record(tmp_path, "slurm", "a", [{"job_id": "1_0", "dir": str(tmp_path / "0")}])
    write_launch_record(tmp_path, "slurm", "a", [{"job_id": "2_0", "dir": str(tmp_path / "0")}],
                        extra_file=str(tmp_path / "x.json"))
    rec = json.loads((tmp_path / "jobs.json").read_text())
    assert rec["jobs"][0]["job_id"] == "2_0" and rec["previous"][0]["jobs"][0]["job_id"] == "1_0"
    assert json.loads((tmp_path / "x.json").read_text())["jobs"] == rec["jobs"]
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "summary.json").write_text(json.dumps({"merged_into": str(tmp_path / "bs32")}))
    line = closing_line(tmp_path, [str(tmp_path / "0"), str(tmp_path / "1")], [str(tmp_path / "0")])
    assert line == (f"results: {tmp_path}/{{0, 1}}; merged surfaces, their figures and summary.json: {tmp_path / 'bs32'}; "
                    f"FAILED: {tmp_path / '0'} (their run.log and exit.json say why)")


def test_every_study_names_existing_sweep_configs() -> None:
    known = studies()
    assert {"batch_wd_small", "depth_skip_small", "width_small"} <= set(known)
    sweeps = Path(__file__).resolve().parents[1] / "sweeps"
    for stages in known.values():
        for stage in stages:
            assert (sweeps / f"{stage}.yaml").is_file(), stage


def test_a_slurm_study_chains_its_stages_and_scopes_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage submitted detached, each after the previous stage's job arrays (afterok), the
    comparison last over the study's directory; ``surfaces:k=v`` reaches only that stage."""
    import landscape_exp.cluster.study as study

    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_stage(args: list[str], env: dict[str, str], record: Path) -> dict:
        calls.append((args, dict(env)))
        n = len(calls)
        sweep = tmp_path / "s" / f"stage{n}"
        return {"sweep_dir": str(sweep), "jobs": [{"job_id": f"{100 + n}_0"}, {"job_id": f"{100 + n}_1"}]}

    monkeypatch.setattr(study, "_run_stage", fake_stage)
    sdir = run_study("batch_wd_small", launcher="slurm_cpu", overrides=["optim.epochs=2", "surfaces:shard.count=2",
                     "hydra.launcher.partition=debug"], wait=False, directory=str(tmp_path / "s"))
    assert sdir == (tmp_path / "s").resolve()
    names = [a[a.index("--config-name") + 1] if "--config-name" in a else "compare" for a, _ in calls]
    assert names == ["batch_wd_train_small", "batch_wd_surfaces_small", "batch_wd_interp_small", "compare"]
    deps = [[o for o in a if "dependency" in o] for a, _ in calls]
    assert deps == [[], ["++hydra.launcher.additional_parameters.dependency=afterok:101"],
                    ["++hydra.launcher.additional_parameters.dependency=afterok:102"],
                    ["++hydra.launcher.additional_parameters.dependency=afterok:103"]]
    assert all(env["LANDSCAPE_DETACH"] == "1" for _, env in calls)
    assert ["shard.count=2" in a for a, _ in calls] == [False, True, False, False]
    assert all("optim.epochs=2" in a for a, _ in calls[:3]) and "optim.epochs=2" not in calls[3][0]
    assert all("hydra.launcher.partition=debug" in a and "hydra/launcher=slurm_cpu" in a for a, _ in calls)
    assert f"task.sweep_dir={sdir}" in calls[3][0] and f"hydra.sweep.dir={sdir}/compare" in calls[3][0]
    meta = json.loads((sdir / "study.json").read_text())
    assert [s["stage"] for s in meta["stages"]] == names and meta["launcher"] == "slurm_cpu"
    with pytest.raises(UserError, match="unknown study 'nope'; known: batch_wd, "):
        run_study("nope", launcher=None, overrides=[], wait=False, directory=None)
    with pytest.raises(UserError, match="--launcher 'basic' is not a submitit launcher"):
        run_study("batch_wd_small", launcher="basic", overrides=[], wait=False, directory=None)
