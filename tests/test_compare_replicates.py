"""Seeds in a sweep: models that differ only in a replicate key (``task.replicates``, default
``seed``) are repeats of one setting; compare gives each setting's mean, standard deviation and
Student-t interval over them, and draws those against the other swept parameters."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from landscape_exp.compare.report import compare_runs
from landscape_exp.compare.tables import over_replicates

from helpers.compare_jobs import METRICS, Recorder, model_cfg, plot_settings, write_job, write_surface

T975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def test_mean_sd_and_t_interval_equal_closed_forms() -> None:
    rows = [{"b": 32, "x": 1.0, "y": 5.0}, {"b": 32, "x": 2.0, "y": math.nan}, {"b": 32, "x": 3.0, "y": 7.0},
            {"b": 64, "x": 10.0, "y": 1.0}]
    a, b = over_replicates(rows, ["b"], ["x", "y"])
    assert (a["b"], a["n"], b["b"], b["n"]) == (32, 3, 64, 1)
    half = T975_2 / math.sqrt(3)  # sd of 1, 2, 3 is 1
    assert a["x"] == 2.0 and a["x sd"] == pytest.approx(1.0) and a["x n"] == 3
    assert (a["x ci_low"], a["x ci_high"]) == pytest.approx((2.0 - half, 2.0 + half))
    # y: the NaN replicate is left out; two values 5, 7: sd sqrt(2), t(0.975, 1) = 12.706204736
    assert a["y"] == 6.0 and a["y n"] == 2 and a["y sd"] == pytest.approx(math.sqrt(2))
    assert a["y ci_high"] - 6.0 == pytest.approx(12.706204736174707 * math.sqrt(2) / math.sqrt(2))
    assert b["x"] == 10.0 and math.isnan(b["x sd"]) and math.isnan(b["x ci_low"])  # one replicate: no interval


def _seed_sweep(root: Path) -> dict[tuple[int, int], dict[str, float]]:
    """Training and surface1d jobs of batch sizes 32 and 256, seeds 0, 1, 2 each; numbers per model."""
    truth = {}
    for b in (32, 256):
        for seed in (0, 1, 2):
            t = {"train_loss": 0.05 + 0.001 * b / 32 + 0.01 * seed, "test_loss": 0.3 + 0.002 * b / 32 - 0.02 * seed,
                 "train_acc": 99.0 - seed * 0.1, "test_acc": 95.0 - b / 64 + seed, "rise": 0.1 * b / 32 + 0.05 * seed}
            truth[b, seed] = t
            tdir = root / f"train_b{b}_s{seed}"
            ckpt = tdir / "checkpoints" / "final.pt"
            ckpt.parent.mkdir(parents=True)
            ckpt.write_bytes(f"weights b{b} s{seed}".encode())
            write_job(tdir, model_cfg("train", b, 0.0, seed=seed), {"final_checkpoint": str(ckpt),
                                                                      **{f"final/{k}": t[k] for k in METRICS}})
            sdir = root / f"surface1d_b{b}_s{seed}"
            surf = write_surface(sdir / "surface.h5", ckpt, "surface1d", t["train_loss"], t["rise"])
            write_job(sdir, model_cfg("surface1d", b, 0.0, seed=seed, checkpoint=str(ckpt)),
                      {"surface_file": str(surf), "sharpness/rise_r0.5": t["rise"]})
    return truth


def test_a_seed_sweep_is_one_row_per_setting_with_its_spread(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    truth = _seed_sweep(root)
    jobs = sorted(p for p in root.iterdir())
    s = compare_runs(jobs, tmp_path / "out", plot=plot_settings(tmp_path), root=root)
    assert s["models"] == 6 and s["swept"] == ["optim.batch_size", "seed"] and s["replicates"] == ["seed"]
    with open(s["over_replicates_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["optim.batch_size"], r["n"]) for r in rows] == [("32", "3"), ("256", "3")]
    for r, b in zip(rows, (32, 256)):
        err = np.array([100.0 - truth[b, k]["test_acc"] for k in range(3)])
        rise = np.array([truth[b, k]["rise"] for k in range(3)])
        gap = np.array([truth[b, k]["test_loss"] - truth[b, k]["train_loss"] for k in range(3)])
        for name, x in (("test_error", err), ("sharpness/rise_r0.5", rise), ("gap", gap)):
            half = T975_2 * x.std(ddof=1) / math.sqrt(3)
            assert float(r[name]) == pytest.approx(x.mean(), rel=1e-12)
            assert float(r[f"{name} sd"]) == pytest.approx(x.std(ddof=1), rel=1e-12)
            assert (float(r[f"{name} ci_low"]), float(r[f"{name} ci_high"])) == pytest.approx((x.mean() - half, x.mean() + half))
    md = Path(s["table_md"]).read_text()
    assert "## Over seed: one row per setting" in md and "| optim.batch_size | n | train_loss |" in md
    names = {Path(f).name for f in s["figures"]}
    # against batch size: each setting's mean and interval; nothing drawn against the seed itself
    assert "measures_vs_batch_size.png" in names and "measures_vs_seed.png" not in names
    # the rank correlations stay over models (all six)
    assert {c["n"] for c in s["correlations"] if c["measure"] == "sharpness/rise_r0.5"} == {6}


def test_without_replicates_the_seed_is_a_swept_parameter_like_any(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    _seed_sweep(root)
    s = compare_runs(sorted(root.iterdir()), tmp_path / "out", plot=plot_settings(tmp_path), root=root, replicates=[])
    assert s["replicates"] == [] and s["over_replicates_csv"] is None
    assert "measures_vs_seed.png" in {Path(f).name for f in s["figures"]}
    assert not (tmp_path / "out" / "compare_over_replicates.csv").exists()


def test_the_task_prints_and_logs_the_settings_over_seeds(tmp_path: Path, capsys) -> None:
    import torch
    from omegaconf import OmegaConf

    from landscape_exp.config.settings import Settings
    from landscape_exp.job.context import RunContext
    from landscape_exp.tasks.compare import run

    from conftest import compose_cfg

    root = tmp_path / "sweep"
    _seed_sweep(root)
    cfg = OmegaConf.to_container(compose_cfg(tmp_path, ["task=compare", f"task.sweep_dir={root}"]), resolve=True)
    rec = Recorder()
    summary = run(RunContext(Settings.from_config(cfg), tmp_path / "cmp", torch.device("cpu"), rec))
    text = capsys.readouterr().out
    assert "compare: over seed: 2 settings (mean [95% t-interval]; " in text
    line = next(x for x in text.splitlines() if x.startswith("32 "))
    mean = summary["over_replicates_rows"][0]["test_error"]
    assert line.split()[:3] == ["32", "3", f"{mean:.4g}"]
    cols, rows = rec.tables["compare/over_replicates"]
    assert cols == summary["over_replicates_columns"] and [r[:2] for r in rows] == [[32, 3], [256, 3]]
