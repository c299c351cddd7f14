"""One W&B run per job for its whole life (issue 13): the id comes from the job directory, so a
rerun resumes the run; every end leaves an exit record (finished, Ctrl-C, SIGTERM); a rerun with
nothing new uploads no artifact again; a reused checkpoint brings its training history; the
documented ``wandb sync`` command finds the offline runs of a sweep."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from landscape_exp.job.tracking import run_id_for, training_history

from conftest import run_cli
from helpers.tracking import read_finished, run
from helpers.wandb_offline import find_offline_runs

OFFLINE = ["logger=wandb", "logger.mode=offline"]


def _runs(out: Path) -> list[dict]:
    return sorted((read_finished(d) for d in find_offline_runs(out)), key=lambda r: str(r["files_dir"]))


def test_rerun_resumes_the_same_run_and_uploads_nothing_new(tmp_path: Path) -> None:
    out = tmp_path / "job"
    first = run(tmp_path, out, ["task=surface1d", *OFFLINE])
    second = run(tmp_path, out, ["task=surface1d", *OFFLINE])
    assert first["points_computed"] == 5 and second["points_computed"] == 0
    runs = _runs(out)
    assert len(runs) == 2 and {r["id"] for r in runs} == {run_id_for(out)}  # two starts, one run
    assert [r["exit_code"] for r in runs] == [0, 0]
    surfaces = [[a for a in r["artifacts"] if a["type"] == "surface"] for r in runs]
    # uploaded once, not again by the rerun (under load W&B may file the first start's artifact
    # record in the second start's file: the two files are one run)
    assert sum(len(a) for a in surfaces) == 1
    assert json.loads((out / "exit.json").read_text())["exit_code"] == 0


def test_ctrl_c_leaves_an_exit_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import landscape_exp.surface.job as job

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "compute_surface", interrupted)
    out = tmp_path / "job"
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, out, ["task=surface1d", *OFFLINE])
    (r,) = _runs(out)
    assert r["exit_code"] == 130 and r["id"] == run_id_for(out)
    assert json.loads((out / "exit.json").read_text()) | {"time": 0} == {
        "exit_code": 130, "reason": "KeyboardInterrupt: ", "time": 0}


def test_sigterm_leaves_an_exit_record(tmp_path: Path) -> None:
    """SIGTERM (scancel, scontrol requeue, a time limit) ends the job through its ``finally``
    blocks: the W&B run is finished with exit code 143 and exit.json says so."""
    out = tmp_path / "train"
    proc = run_cli(["task=train", "model=mlp", "optim.epochs=500", "progress=false", *OFFLINE,
                    f"hydra.run.dir={out}"], tmp_path, popen=True, extra_env={"WANDB_MODE": "offline"})
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "epoch_002.pt").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    (r,) = _runs(out)
    assert r["exit_code"] == 143 and r["id"] == run_id_for(out)
    assert json.loads((out / "exit.json").read_text())["exit_code"] == 143
    assert [row["train/epoch"] for row in r["history"] if "train/epoch" in row][:2] == [1, 2]


def test_reused_checkpoint_brings_its_training_history(tmp_path: Path) -> None:
    trained = tmp_path / "train"
    run(tmp_path, trained, ["task=train", "logger=none"])
    final = (trained / "checkpoints" / "final.pt").read_bytes()
    again = run(tmp_path, trained, ["task=train", "logger=none"])  # a finished run started again (a study rerun)
    assert (trained / "checkpoints" / "final.pt").read_bytes() == final  # untouched: surfaces from it resume
    assert again["final/epoch"] == 2
    out = tmp_path / "surface"
    run(tmp_path, out, ["task=surface1d", *OFFLINE, f"checkpoint={trained / 'checkpoints' / 'final.pt'}"])
    (r,) = _runs(out)
    hist, src = training_history(trained / "checkpoints" / "final.pt")
    assert src == trained and [h["epoch"] for h in hist] == [0, 1, 2]
    logged = [row for row in r["history"] if "train/epoch" in row]
    assert [row["train/epoch"] for row in logged] == [0, 1, 2]
    assert [row["train/test_loss"] for row in logged] == [h["test_loss"] for h in hist]
    assert r["config"]["trained_by"] == {"run_dir": str(trained), "wandb_id": run_id_for(trained)}


def test_documented_wandb_sync_command_finds_every_offline_run(tmp_path: Path) -> None:
    """docs/tracking.md: ``wandb sync $(find <dir> -type d -name 'offline-run-*')`` (here with
    --dry-run: no network); `wandb sync <sweep dir>` alone finds nothing, as the issue saw."""
    sweep = tmp_path / "sweep"
    for num in (0, 1):
        run(tmp_path, sweep / str(num), ["task=surface1d", *OFFLINE])
    wandb_cli = str(Path(__import__("sys").executable).with_name("wandb"))
    res = subprocess.run(f"{wandb_cli} sync --dry-run $(find {sweep} -type d -name 'offline-run-*')", shell=True,
                         capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Would sync 2 run(s)" in out, out
    for num in (0, 1):
        assert f"run-{run_id_for(sweep / str(num))}.wandb" in out


def test_measures_reach_the_run_summary_with_their_intervals() -> None:
    """summary.json's ``measures`` (barriers, flatness) go to W&B as flat keys a sweep can chart."""
    from landscape_exp.job.tracking import flatten_mapping, tracked_summary

    summary = {"points": 5, "flag": True, "grid": [1, 2], "surface_file": "s.h5",
               "measures": {"barrier_train_loss": {"value": 2.13, "ci_low": None, "ci_high": None, "higher_is_sharper": True},
                            "gaussian_sharpness": {"value": 5.1e-4, "ci_low": 3.7e-4, "ci_high": 6.5e-4,
                                                   "higher_is_sharper": True}}}
    assert flatten_mapping(tracked_summary(summary)) == {
        "points": 5, "flag": True, "surface_file": "s.h5",
        "measures/barrier_train_loss/value": 2.13, "measures/barrier_train_loss/higher_is_sharper": True,
        "measures/gaussian_sharpness/value": 5.1e-4, "measures/gaussian_sharpness/ci_low": 3.7e-4,
        "measures/gaussian_sharpness/ci_high": 6.5e-4, "measures/gaussian_sharpness/higher_is_sharper": True}
