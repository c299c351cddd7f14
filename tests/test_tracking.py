"""W&B tracking: offline runs written by real tasks, read back from their .wandb files; the
jobs of one sweep as separate runs of one group; W&B failures as warnings, never lost results."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from landscape_exp.errors import UserError
from landscape_exp.job.tracking import Tracker, WandbTracker, make_tracker

from helpers.tracking import TINY, compose, read_finished, run
from helpers.wandb_offline import find_offline_runs, wandb_records

# conf/logger/wandb.yaml: every key the logger section must hold
WANDB = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "logger" / "wandb.yaml").read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two jobs of one sweep, in one process as Hydra's basic launcher runs them: a 1D surface
    that trains its checkpoint (per-epoch metrics), then a 2D surface from the cached one."""
    root = tmp_path_factory.mktemp("track")
    jobs = {}
    for num, (task, extra) in enumerate((("surface1d", []), ("surface2d", ["y=-1:1:5"]))):
        out = root / "sweep" / str(num)
        job = {"name": f"task={task}", "multirun": True, "num": num, "sweep_dir": str(root / "sweep"), "group": "sweep-xyz"}
        summary = run(root, out, [f"task={task}", "logger=wandb", "logger.mode=offline", *extra], job)
        runs = find_offline_runs(out)
        assert len(runs) == 1, runs  # each job its own W&B run, in its own directory
        jobs[task] = {"out": out, "summary": summary, "run": read_finished(runs[0]), "run_dir": runs[0],
                      "cfg": OmegaConf.to_container(compose(root, TINY + [f"task={task}", "logger=wandb", *extra]), resolve=True)}
    return root, jobs


def test_offline_run_holds_config_history_and_summary(sweep):
    root, jobs = sweep
    j = jobs["surface1d"]
    r = j["run"]
    assert r["exit_code"] == 0
    assert (r["job_type"], r["group"], r["name"]) == ("surface1d", "sweep-xyz", "task=surface1d")
    assert {"surface1d", "mlp", "digits"} <= set(r["tags"])
    assert r["project"] == "landscape-exp"
    # the resolved Hydra config
    assert r["config"] == j["cfg"]
    assert r["config"]["optim"]["epochs"] == 2 and r["config"]["model"]["num_classes"] == 10
    # per-epoch training metrics, as the trainer stored them in its checkpoint
    from landscape_exp.io.checkpoint import load_checkpoint

    (last,) = (root / ".cache" / "train").glob("*/checkpoints/last.pt")
    hist = [h for h in load_checkpoint(last)["history"] if h["epoch"] >= 1]
    logged = [row for row in r["history"] if "train/epoch" in row]
    assert [row["train/epoch"] for row in logged] == [1, 2]
    for row, h in zip(logged, hist):
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert row[f"train/{k}"] == h[k]
    # the surface summary, as written to summary.json
    on_disk = json.loads((j["out"] / "summary.json").read_text())
    scalars = {k: v for k, v in on_disk.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    assert "train_loss/centre" in scalars and "train_acc/centre" in scalars
    for k, v in scalars.items():
        assert r["summary"][k] == v, k


def test_offline_run_holds_media_tables_and_artifacts(sweep):
    _, jobs = sweep
    j = jobs["surface1d"]
    r = j["run"]
    files = r["files_dir"]
    from landscape_exp.surface.store import read_surface

    surface = read_surface(j["out"] / "surface.h5")
    # the 1D figure as an image, the curves as a table (with its line plots' tables)
    image = [row for row in r["history"] if "surface1d/surface_1d" in row][0]["surface1d/surface_1d"]
    png = files / image["path"]
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.read_bytes() == (j["out"] / "surface_1d.png").read_bytes()
    table = [row for row in r["history"] if "surface1d/table" in row][0]["surface1d/table"]
    data = json.loads((files / table["path"]).read_text())
    assert data["columns"][0] == "alpha"
    cols = {c: np.array([row[i] for row in data["data"]], dtype=float) for i, c in enumerate(data["columns"])}
    np.testing.assert_array_equal(cols["alpha"], surface["x"])
    np.testing.assert_array_equal(cols["train_loss"], surface["train_loss"])
    assert {"surface1d/train_loss_table", "surface1d/train_acc_table"} <= set(r["summary"])
    # the HDF5 files as an artifact, byte for byte (W&B's digest is the base64 MD5)
    (art,) = [a for a in r["artifacts"] if a["type"] == "surface"]
    assert art["name"] == f"surface1d-surface-{r['id']}"
    for name in ("surface.h5", "directions.h5"):
        md5 = base64.b64encode(hashlib.md5((j["out"] / name).read_bytes()).digest()).decode()
        assert art["files"][name]["digest"] == md5
    for m in r["media"]:
        assert m.is_file() and m.stat().st_size > 0


def test_2d_job_is_its_own_run_with_images_and_html(sweep):
    _, jobs = sweep
    one, two = jobs["surface1d"]["run"], jobs["surface2d"]["run"]
    assert two["id"] != one["id"] and two["exit_code"] == 0
    assert (two["job_type"], two["group"]) == ("surface2d", "sweep-xyz")
    # the second job reused the cached checkpoint: its training history is attached (epochs 0-2,
    # from the cache's last.pt) with a link to the training run; nothing else of the first job leaked
    assert [row["train/epoch"] for row in two["history"] if "train/epoch" in row] == [0, 1, 2]
    assert two["config"]["trained_by"]["run_dir"].endswith(".cache/train/"
                                                           + two["config"]["trained_by"]["run_dir"].split("/")[-1])
    assert not any(k.startswith("surface1d/") for row in two["history"] for k in row)
    assert two["summary"]["points"] == 25 and one["summary"]["points"] == 5
    kinds = ("contour", "contourf", "heatmap", "3dsurface")
    for metric in ("train_loss", "train_acc"):
        for kind in kinds:
            key = f"surface2d/surface_{metric}_{kind}"
            (entry,) = [row[key] for row in two["history"] if key in row]
            assert (two["files_dir"] / entry["path"]).is_file(), key
    (html,) = [row["surface2d/surface_train_loss_3d"] for row in two["history"] if "surface2d/surface_train_loss_3d" in row]
    text = (two["files_dir"] / html["path"]).read_text()
    assert "plotly" in text.lower()


def test_reader_rejects_corruption_and_tolerates_truncation(sweep, tmp_path):
    _, jobs = sweep
    src = next(jobs["surface1d"]["run_dir"].glob("run-*.wandb"))
    full = wandb_records(src)
    cut = tmp_path / "cut.wandb"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) - 50])
    assert 0 < len(wandb_records(cut)) < len(full)
    bad = tmp_path / "bad.wandb"
    b = bytearray(data)
    b[200] ^= 0xFF
    bad.write_bytes(bytes(b))
    with pytest.raises(UserError, match="corrupt"):
        wandb_records(bad)
    (tmp_path / "nope.wandb").write_bytes(b"not a run")
    with pytest.raises(UserError, match="not a W&B run file"):
        wandb_records(tmp_path / "nope.wandb")


def _assert_results_on_disk(out: Path, summary: dict) -> None:
    assert json.loads((out / "summary.json").read_text())["train_loss/centre"] == summary["train_loss/centre"]
    with h5py.File(out / "surface.h5", "r") as f:
        assert bool(np.asarray(f["done"]).all())
    assert (out / "surface_1d.png").is_file() and (out / "surface_1d.pdf").is_file()


def test_wandb_init_failure_is_a_warning(sweep, monkeypatch, capsys):
    import wandb

    root, _ = sweep

    def broken(*a, **kw):
        raise RuntimeError("backend unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    out = root / "init_fails"
    with pytest.warns(RuntimeWarning, match="W&B init failed .*backend unreachable"):
        summary = run(root, out, ["task=surface1d", "logger=wandb"])
    _assert_results_on_disk(out, summary)
    assert "warning: W&B init failed" in capsys.readouterr().err
    assert find_offline_runs(out) == []


def test_wandb_failing_mid_run_costs_nothing(sweep, monkeypatch):
    from wandb.sdk import wandb_run

    root, _ = sweep

    def broken(self, *a, **kw):
        raise OSError("disk quota exceeded in the W&B backend")

    monkeypatch.setattr(wandb_run.Run, "log", broken)
    monkeypatch.setattr(wandb_run.Run, "log_artifact", broken)
    out = root / "log_fails"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run(root, out, ["task=surface1d", "logger=wandb"])
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("W&B image upload failed" in m for m in msgs)
    assert any("W&B artifact upload failed" in m for m in msgs)
    _assert_results_on_disk(out, summary)
    (rdir,) = find_offline_runs(out)
    r = read_finished(rdir)
    assert r["exit_code"] == 0  # the run was still finished, and its summary still set
    assert r["summary"]["train_loss/centre"] == summary["train_loss/centre"]


def test_online_without_login_falls_back_to_offline(tmp_path, monkeypatch):
    import wandb
    from wandb.errors import UsageError

    real = wandb.init
    modes = []

    def init(*a, mode=None, **kw):
        modes.append(mode)
        if mode == "online":
            raise UsageError("No API key configured. Use `wandb login` to log in.")
        return real(*a, mode=mode, **kw)

    monkeypatch.setattr(wandb, "init", init)
    with pytest.warns(RuntimeWarning, match="logging offline instead"):
        t = make_tracker({**WANDB, "mode": "online"}, run_dir=tmp_path, config={"a": 1}, job_type="train")
    assert isinstance(t, WandbTracker) and modes == ["online", "offline"]
    t.log({"loss": 0.5})
    t.finish()
    (rdir,) = find_offline_runs(tmp_path)
    r = read_finished(rdir)
    assert r["history"][0]["loss"] == 0.5 and r["config"] == {"a": 1} and r["exit_code"] == 0


def test_logger_choices(tmp_path):
    t = make_tracker({"name": "none"}, run_dir=tmp_path, config={}, job_type="train")
    assert type(t) is Tracker
    t.log({"a": 1})
    t.finish()  # no-ops
    with pytest.raises(UserError, match="unknown logger 'tensorboard'; allowed: none, wandb"):
        make_tracker({"name": "tensorboard"}, run_dir=tmp_path, config={}, job_type="train")
    with pytest.raises(UserError, match="unknown logger.mode 'offlne'"):
        make_tracker({**WANDB, "mode": "offlne"}, run_dir=tmp_path, config={}, job_type="train")
    d = make_tracker({**WANDB, "mode": "disabled"}, run_dir=tmp_path / "d", config={}, job_type="train")
    d.log({"a": 1})
    d.finish()
    assert find_offline_runs(tmp_path / "d") == []
    shutil.rmtree(tmp_path / "d", ignore_errors=True)
