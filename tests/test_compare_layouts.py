"""task=compare on the directory layouts sweeps and studies leave: numbered and named jobs, a study's
stages, shard jobs, failed and empty jobs. The jobs are made by hand with the project's own writers
(``.hydra/config.yaml``, ``summary.json``, ``surface.h5`` by ``SurfaceFile``) from values chosen here,
so every number the comparison reports is checked against these values, and every correlation
against scipy on the same vectors."""

from __future__ import annotations

import csv
import math
import re
import shutil
from pathlib import Path
from typing import Any

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import kendalltau, spearmanr

from landscape_exp.compare.discover import find_runs
from landscape_exp.compare.report import compare_runs
from landscape_exp.compare.runs import load_run, run_measures
from landscape_exp.compare.tables import rank_correlations
from landscape_exp.config.settings import Settings
from landscape_exp.errors import UserError
from landscape_exp.io.provenance import file_sha256

from conftest import compose_cfg
from helpers.compare_jobs import METRICS, Recorder, model_cfg, plot_settings, write_job, write_surface

BATCHES = (256, 32, 512, 64, 128)  # made in this order: the table must sort them as numbers
DECAYS = (0.0, 0.0005)


def model_numbers(b: int, wd: float) -> dict[str, float]:
    """The chosen truth of model (b, wd): larger batches sharper and worse, weight decay helps."""
    s = math.log2(b)
    return {"train_loss": 0.05 + 0.01 * s, "test_loss": 0.2 + 0.05 * s - 100 * wd, "train_acc": 99.0 - 0.1 * s,
            "test_acc": 96.0 - 0.5 * s + 1000 * wd + 0.07 * (s % 2), "rise": 0.3 * s + 0.1 * (b == 64),
            "gauss": 0.02 * s * s - 50 * wd, "epsilon": 1.0 / s + wd}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A batch-size x weight-decay study as sweeps/batch_wd_*.yaml lay it out: train/bs<B>_wd<W>,
    surfaces/<task>_bs<B>_wd<W> (1D and 2D of each checkpoint), interp/wd<W>; plus a failed job and
    an earlier compare job inside it."""
    root = tmp_path_factory.mktemp("study") / "batch_wd_small"
    ckpts = {}
    for b in BATCHES:
        for wd in DECAYS:
            t = model_numbers(b, wd)
            tdir = root / "train" / f"bs{b}_wd{wd:g}"
            ckpt = tdir / "checkpoints" / "final.pt"
            ckpt.parent.mkdir(parents=True)
            ckpt.write_bytes(f"weights of bs{b} wd{wd}".encode())  # identity is the content's hash
            ckpts[b, wd] = ckpt
            write_job(tdir, model_cfg("train", b, wd), {"final_checkpoint": str(ckpt), **{
                f"final/{k}": t[k] for k in METRICS}})
            for task in ("surface1d", "surface2d"):
                sdir = root / "surfaces" / f"{task}_bs{b}_wd{wd:g}"
                surf = write_surface(sdir / "surface.h5", ckpt, task, t["train_loss"], t["rise"])
                rise = t["rise"] * (2 if task == "surface2d" else 1)
                summary: dict[str, Any] = {"surface_file": str(surf), "train_loss/centre": t["train_loss"],
                                           "sharpness/rise_r0.5": rise, "sharpness/epsilon": t["epsilon"]}
                if task == "surface2d":
                    summary["measures"] = {
                        "gaussian_sharpness": {"value": t["gauss"], "ci_low": t["gauss"] - 0.01,
                                               "ci_high": t["gauss"] + 0.02, "higher_is_sharper": True},
                        "pac_bayes_sigma": {"value": 1.0 / t["gauss"] if t["gauss"] else 0.0, "ci_low": None,
                                            "ci_high": None, "higher_is_sharper": False}}
                write_job(sdir, model_cfg(task, b, wd, checkpoint=str(ckpt)), summary)
    for wd in DECAYS:
        idir = root / "interp" / f"wd{wd:g}"
        surf = write_surface(idir / "surface.h5", ckpts[32, wd], "interp1d", 0.1, 0.5)
        write_job(idir, model_cfg("interp1d", 128, wd, checkpoint=str(ckpts[32, wd]),
                                  direction={"model2": str(ckpts[256, wd])}),
                  {"surface_file": str(surf), "sharpness/rise_r0.5": 9.0, "measures": {
                      "barrier_train_loss": {"value": 0.3 + 100 * wd, "ci_low": None, "ci_high": None, "higher_is_sharper": None},
                      "mc_train_loss": {"value": -0.2 - 100 * wd, "ci_low": -0.3, "ci_high": -0.1, "higher_is_sharper": None}}})
    # a curve from the batch-64 minimum to a second one of its recipe (seed+1, trained into the cache for
    # it, no row): a measure of the batch-64 model, in its row
    other = root.parent / "cache" / "seed1" / "checkpoints" / "final.pt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"weights of bs64 wd0 seed 1")
    write_job(root / "connect" / "bs64_wd0", model_cfg("connect", 64, 0.0, checkpoint=str(ckpts[64, 0.0])), {
        "checkpoint1": str(ckpts[64, 0.0].resolve()), "checkpoint2": str(other.resolve()), "curve": "bezier",
        "measures": {"barrier_train_loss": {"value": 0.14, "ci_low": None, "ci_high": None, "higher_is_sharper": True}}})
    hdir = root / "hessian" / "bs32_wd0"  # a Hessian job of one model: its row gets hessian/* columns
    hdir.mkdir(parents=True)
    with h5py.File(hdir / "hessian.h5", "w") as f:
        f.attrs["checkpoint"] = str(ckpts[32, 0.0].resolve())
        f.attrs["checkpoint_sha256"] = file_sha256(ckpts[32, 0.0])
    write_job(hdir, model_cfg("hessian", 32, 0.0, checkpoint=str(ckpts[32, 0.0])),
              {"lambda_max": 12.5, "lambda_min": -0.5, "trace": 40.0, "trace_stderr": 2.0, "num_hvp": 300,
               "hessian_file": str(hdir / "hessian.h5")})
    (root / "surfaces" / "surface2d_bs999_wd0" / ".hydra").mkdir(parents=True)  # failed: config, no summary
    OmegaConf.save(OmegaConf.create(model_cfg("surface2d", 999, 0.0)),
                   root / "surfaces" / "surface2d_bs999_wd0" / ".hydra" / "config.yaml")
    write_job(root / "compare_old", {"task": {"name": "compare"}}, {"table_csv": "x", "correlations_csv": "y", "runs": 3})
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_study_is_one_row_per_model_sorted_by_the_swept_numbers(study: Path, tmp_path: Path, capsys) -> None:
    jobs = find_runs(study)
    msgs = capsys.readouterr().out
    assert "surface2d_bs999_wd0" in msgs and "no summary.json" in msgs and "compare_old" in msgs
    assert len(jobs) == 10 + 20 + 2 + 2  # train, 1D and 2D surfaces of ten models, two interpolations, a Hessian, a curve
    out = tmp_path / "cmp"
    s = compare_runs(jobs, out, plot=plot_settings(tmp_path), root=study)
    assert s["models"] == 10 and s["jobs"] == 34
    assert s["swept"] == ["optim.batch_size", "optim.weight_decay"]
    rows = _csv(out / "compare.csv")
    order = [(b, wd) for b in sorted(BATCHES) for wd in DECAYS]
    assert [(int(r["optim.batch_size"]), float(r["optim.weight_decay"])) for r in rows] == order
    assert rows[0]["model"] == "batch_size=32, weight_decay=0" and rows[1]["model"] == "batch_size=32, weight_decay=0.0005"
    hessian_row = rows[0]
    assert hessian_row["jobs"] == "train/bs32_wd0; hessian/bs32_wd0; surfaces/surface1d_bs32_wd0; surfaces/surface2d_bs32_wd0"
    assert (float(hessian_row["hessian/lambda_max"]) == 12.5
            and float(hessian_row["hessian/trace ci_low"]) == pytest.approx(40 - 1.96 * 2))
    assert all(math.isnan(float(r["hessian/lambda_max"])) for r in rows[1:])
    curve_row = rows[2]
    assert curve_row["model"] == "batch_size=64, weight_decay=0" and float(curve_row["barrier_train_loss"]) == 0.14
    assert sum(math.isnan(float(r["barrier_train_loss"])) for r in rows) == 9
    for r, (b, wd) in zip(rows, order):
        t = model_numbers(b, wd)
        hess = "hessian/bs32_wd0; " if r is hessian_row else ""
        curve = "; connect/bs64_wd0" if r is curve_row else ""  # jobs that measure between checkpoints come last
        assert r["jobs"] == (f"train/bs{b}_wd{wd:g}; {hess}surfaces/surface1d_bs{b}_wd{wd:g}; "
                             f"surfaces/surface2d_bs{b}_wd{wd:g}{curve}")
        assert r["source"] == "training"  # these surfaces hold only the training split
        assert float(r["test_error"]) == pytest.approx(100 - t["test_acc"], abs=1e-12)
        assert float(r["gap"]) == pytest.approx(t["test_loss"] - t["train_loss"], abs=1e-12)
        # a rise along one direction is not the rise over a plane: one column per task
        assert float(r["sharpness/rise_r0.5 (surface1d)"]) == pytest.approx(t["rise"])
        assert float(r["sharpness/rise_r0.5 (surface2d)"]) == pytest.approx(2 * t["rise"])
        # measures: value and CI columns (the contract with the flatness measures)
        assert float(r["gaussian_sharpness"]) == pytest.approx(t["gauss"])
        assert float(r["gaussian_sharpness ci_low"]) == pytest.approx(t["gauss"] - 0.01)
        assert float(r["gaussian_sharpness ci_high"]) == pytest.approx(t["gauss"] + 0.02)
        assert "pac_bayes_sigma ci_low" not in r  # no interval anywhere: no CI columns
    assert "interp" not in " ".join(r["jobs"] for r in rows)  # between two models: not a row
    pairs = _csv(out / "between_models.csv")
    assert [p["between"] for p in pairs] == [f"batch_size=32, weight_decay={wd:g} -> batch_size=256, weight_decay={wd:g}"
                                             for wd in DECAYS]
    assert [float(p["barrier_train_loss"]) for p in pairs] == [0.3 + 100 * wd for wd in DECAYS]
    assert [float(p["mc_train_loss ci_low"]) for p in pairs] == [-0.3, -0.3] and pairs[0]["job"] == "interp/wd0"
    md = (out / "compare.md").read_text()
    t = model_numbers(32, 0.0)
    assert f"| {t['gauss']:.4g} [{t['gauss'] - 0.01:.4g}, {t['gauss'] + 0.02:.4g}] |" in md

    # correlations over the ten models, equal to scipy's on vectors built from the chosen values
    corr = {(c["measure"], c["target"]): c for c in _csv(out / "correlations.csv")}
    for name, key, scale in (("gaussian_sharpness", "gauss", 1), ("sharpness/rise_r0.5 (surface2d)", "rise", 2)):
        m = np.array([scale * model_numbers(b, wd)[key] for b, wd in order])
        err = np.array([100 - model_numbers(b, wd)["test_acc"] for b, wd in order])
        gap = np.array([model_numbers(b, wd)["test_loss"] - model_numbers(b, wd)["train_loss"] for b, wd in order])
        for target, v in (("test_error", err), ("gap", gap)):
            c = corr[name, target]
            assert int(c["n"]) == 10 and c["note"] == ""
            assert float(c["spearman_rho"]) == pytest.approx(spearmanr(m, v).statistic, abs=1e-12)
            assert float(c["spearman_p"]) == pytest.approx(spearmanr(m, v).pvalue, rel=1e-9)
            assert float(c["kendall_tau"]) == pytest.approx(kendalltau(m, v).statistic, abs=1e-12)
            assert float(c["kendall_p"]) == pytest.approx(kendalltau(m, v).pvalue, rel=1e-9)

    c = corr["hessian/lambda_max", "gap"]  # one model has a Hessian: said, not computed
    assert c["n"] == "1" and c["note"] == "n=1, too few for a rank correlation" and math.isnan(float(c["spearman_rho"]))

    for stem in ("measures_vs_batch_size", "measures_vs_weight_decay", "measures_vs_test_error", "measures_vs_gap",
                 "compare_1d", "compare_interp1d", "compare_2d"):
        png = out / f"{stem}.png"
        assert png.is_file() and (out / f"{stem}.pdf").is_file(), stem
        assert np.asarray(mpimg.imread(png))[..., :3].std() > 0.05, f"{stem}.png is blank"


def test_measure_against_batch_size_is_one_line_per_weight_decay_on_a_log2_axis(study: Path, tmp_path: Path) -> None:
    from landscape_exp.figures.compare import figure_measures_vs_parameter

    s = compare_runs(find_runs(study), tmp_path, root=study)
    rows = s["rows"]
    lines = [f"weight_decay={r['optim.weight_decay']:g}" for r in rows]
    fig = figure_measures_vs_parameter(rows, "optim.batch_size", ["gaussian_sharpness"], lines=lines, name="batch_size")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    drawn = [c.lines[0] for c in ax.containers]  # each errorbar's data line (its caps are lines too)
    assert len(drawn) == 2
    for ln, wd in zip(drawn, DECAYS):
        np.testing.assert_array_equal(ln.get_xdata(), sorted(BATCHES))
        np.testing.assert_allclose(ln.get_ydata(), [model_numbers(b, wd)["gauss"] for b in sorted(BATCHES)])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["weight_decay=0", "weight_decay=0.0005"]


def sharded_model(home: Path, shard_jobs: list[Path], ckpt: Path, b: int) -> None:
    """One surface of model ``b`` computed in two shards: each shard's job says where it was merged
    (``merged_into``); the merged surface, its summary and its config (without the shard index) in
    ``home``, the shard files beside it."""
    t = model_numbers(b, 0.0)
    for i, job in enumerate(shard_jobs):
        shard_file = home / f"surface.shard-{i:04d}-of-0002.h5"
        write_surface(shard_file, ckpt, "surface2d", t["train_loss"], t["rise"], indices=list(range(13 * i, 13 + 12 * i)))
        merged_by_me = {"merged_into": str(home)} if i == 1 else {}  # the shard that finished last merged
        write_job(job, model_cfg("surface2d", b, 0.0, shard={"count": 2, "index": i}),
                  {"shard": i, "shard_count": 2, "shard_file": str(shard_file), **merged_by_me})
    merged = write_surface(home / "surface.h5", ckpt, "surface2d", t["train_loss"], t["rise"])
    write_job(home, model_cfg("surface2d", b, 0.0, shard={"count": 2}), {
        "surface_file": str(merged), "sharpness/rise_r0.5": t["rise"], "merged_shards": 2,
        **{f"{k}/centre": t[k] for k in METRICS}})


def sharded_sweep(root: Path) -> Path:
    """Surfaces computed in two shards each, laid out as run.py lays them out: a numbered multirun
    (jobs 0-3 are shards; each surface's merged result in a directory named by its overrides), a
    study's named job (the merged surface in the job directory, the shards in shard-0/ and shard-1/
    inside it), and a fifth numbered job whose partial shard file has no computed point."""
    sweep = root / "multirun" / "2026-01-01" / "10-00-00"
    ckpts = {}
    for b in (256, 32, 64):
        ckpts[b] = root / "cache" / f"bs{b}" / "final.pt"
        ckpts[b].parent.mkdir(parents=True)
        ckpts[b].write_bytes(f"bs{b}".encode())
    for k, b in enumerate((256, 32)):
        sharded_model(sweep / f"optim.batch_size={b},task=surface2d", [sweep / str(2 * k), sweep / str(2 * k + 1)], ckpts[b], b)
    named = sweep / "surfaces" / "surface2d_bs64_wd0"
    sharded_model(named, [named / "shard-0", named / "shard-1"], ckpts[64], 64)
    empty = sweep / "4" / "surface.shard-0001-of-0002.h5"
    write_surface(empty, ckpts[32], "surface2d", 0.0, 0.0, done=False, indices=list(range(13, 25)))
    write_job(sweep / "4", model_cfg("surface2d", 32, 0.0, shard={"count": 2, "index": 1}), {"surface_file": str(empty)})
    return sweep


def test_a_sharded_sweep_counts_each_model_once(tmp_path: Path, capsys) -> None:
    sweep = sharded_sweep(tmp_path)
    jobs = find_runs(sweep)
    notes = capsys.readouterr().out.splitlines()
    # one line for the four numbered shard jobs; the named job's shards are its own files, not jobs
    assert len(notes) == 1 and re.match(r"note: skipping 4 shard jobs \(0, 1, 2, 3\).* merged in 2 directories", notes[0])
    assert "no merged surface" not in notes[0]  # the first shards' surfaces are merged too (the file is there)
    assert [p.name for p in jobs] == ["4", "optim.batch_size=32,task=surface2d", "optim.batch_size=256,task=surface2d",
                                      "surface2d_bs64_wd0"]
    s = compare_runs(jobs, tmp_path / "cmp", root=sweep)
    assert re.search(r"note: skipping .*/4'.*no computed point", capsys.readouterr().out)
    assert s["models"] == 3 and s["jobs"] == 3 and s["swept"] == ["optim.batch_size"]
    assert [r["optim.batch_size"] for r in s["rows"]] == [32, 64, 256]
    assert [r["jobs"] for r in s["rows"]] == ["optim.batch_size=32,task=surface2d", "surfaces/surface2d_bs64_wd0",
                                              "optim.batch_size=256,task=surface2d"]
    for r in s["rows"]:
        t = model_numbers(r["optim.batch_size"], 0.0)
        assert r["source"] == "surface centre" and r["test_error"] == pytest.approx(100 - t["test_acc"])
        assert r["sharpness/rise_r0.5"] == pytest.approx(t["rise"])
    # a merged surface whose home is the sweep directory itself (only the shard varied): one run
    only = tmp_path / "only"
    sharded_model(only, [only / "0", only / "1"], tmp_path / "cache" / "bs32" / "final.pt", 32)
    assert find_runs(only) == [only]


def test_too_few_models_say_so_and_still_equal_scipy() -> None:
    a, err = [0.3, 1.2, 0.7, 2.5], [4.0, 5.0, 6.5, 6.0]
    (c,) = rank_correlations([{"m": x, "test_error": y} for x, y in zip(a, err)], ["m"], "test_error")
    assert c["n"] == 4 and c["note"] == "n=4, too few to mean anything"
    assert (c["spearman_rho"] == pytest.approx(spearmanr(a, err).statistic)
            and c["spearman_p"] == pytest.approx(spearmanr(a, err).pvalue))
    assert c["kendall_tau"] == pytest.approx(kendalltau(a, err).statistic)
    (c,) = rank_correlations([{"m": 1.0, "gap": 2.0}, {"m": 2.0, "gap": 1.0}, {"m": math.nan, "gap": 0.0}], ["m"])
    assert c["n"] == 2 and math.isnan(c["spearman_rho"]) and c["note"] == "n=2, too few for a rank correlation"
    (c,) = rank_correlations([{"m": 1.0, "gap": g} for g in (1, 2, 3, 4, 5)], ["m"])
    assert math.isnan(c["kendall_tau"]) and c["note"] == "m is the same for every model"


def test_measures_of_a_hand_made_summary_become_values_with_intervals() -> None:
    summary = {"sharpness/epsilon": 0.25, "wall_seconds": 3.0, "measures": {
        "barrier_train_loss": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.9, "higher_is_sharper": None},
        "mc_train_loss": {"value": 1.5, "ci_low": None, "ci_high": None, "higher_is_sharper": True}}}
    m = run_measures(summary)
    assert list(m) == ["barrier_train_loss", "mc_train_loss", "sharpness/epsilon"]  # no bookkeeping (wall_seconds)
    assert (m["barrier_train_loss"].value, m["barrier_train_loss"].ci_low, m["barrier_train_loss"].ci_high) == (0.7, 0.6, 0.9)
    assert m["mc_train_loss"].ci_low is None and m["mc_train_loss"].higher_is_sharper is True
    h = run_measures({"lambda_max": 12.0, "trace": 40.0, "trace_stderr": 2.0}, task="hessian")
    assert h["hessian/lambda_max"].value == 12.0
    assert (h["hessian/trace"].ci_low, h["hessian/trace"].ci_high) == pytest.approx((40 - 3.92, 40 + 3.92))


def test_what_is_not_a_sweep_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data" / "x").mkdir(parents=True)
    with pytest.raises(UserError, match="has no job directories") as e:
        find_runs(tmp_path)
    assert "\n" not in str(e.value)
    write_job(tmp_path / "j", {"task": {"name": "train"}}, {"note": "nothing numeric"})
    with pytest.raises(UserError, match="none of the 1 jobs has anything to compare"):
        compare_runs(find_runs(tmp_path), tmp_path / "out")
    assert load_run(tmp_path / "j").task == "train"


def test_the_task_logs_its_table_correlations_and_figures_to_the_tracker(study: Path, tmp_path: Path, capsys) -> None:
    from landscape_exp.job.context import RunContext
    from landscape_exp.tasks.compare import run

    cfg = OmegaConf.to_container(compose_cfg(tmp_path, ["task=compare", f"task.sweep_dir={study}"]), resolve=True)
    rec = Recorder()
    out = study / "compare"  # where a study's compare stage writes: inside the study, with Hydra's config already there
    (out / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), out / ".hydra" / "config.yaml")
    try:
        summary = run(RunContext(Settings.from_config(cfg), out, torch.device("cpu"), rec))
    finally:
        shutil.rmtree(out)  # the study is shared with the other tests
    text = capsys.readouterr().out
    assert "/compare'" not in text  # its own directory: passed over in silence
    cols, rows = rec.tables["compare/table"]
    assert cols == summary["columns"] and len(rows) == 10 and rows[0][0] == "batch_size=32, weight_decay=0"
    ccols, crows = rec.tables["compare/correlations"]
    assert ccols[:3] == ["measure", "target", "n"] and len(crows) == len(summary["correlations"])
    assert {p.name for p in rec.images} >= {"measures_vs_batch_size.png", "measures_vs_test_error.png", "compare_1d.png"}
    assert all(p.suffix == ".png" for p in rec.images)
    assert "compare: 10 models from 34 jobs; swept: optim.batch_size, optim.weight_decay" in text
    assert "gaussian_sharpness vs test_error: Spearman" in text and "n=10" in text
    assert re.search(r"\nbatch_size=32, weight_decay=0 -> batch_size=256, weight_decay=0 +interp1d +0\.3 ", text)


def test_swept_parameters_are_what_makes_a_model_and_sort_as_numbers() -> None:
    from landscape_exp.compare.models import sort_key, swept_parameters
    from landscape_exp.figures.compare import figure_measures_vs_parameter

    configs = [{"task.name": "surface1d", "x": "-1:1:5", "optim.lr": 0.1, "model.name": "resnet20", "seed": 0},
               {"task.name": "surface2d", "x": "-1:1:9", "optim.lr": 0.05, "model.name": "resnet20_noshort", "seed": 0}]
    assert swept_parameters(configs) == ["optim.lr", "model.name"]  # the task and its grid do not make a model
    assert swept_parameters(configs, order=["model.name", "optim.lr"]) == ["model.name", "optim.lr"]  # the sweep's order
    assert swept_parameters(configs, ignore=["optim"]) == ["model.name"]
    assert sorted(["256", 32, "5e-4", None, "resnet", 8.0], key=sort_key) == ["5e-4", 8.0, 32, "256", "resnet", None]
    rows = [{"model.name": "resnet20", "m": 1.0}, {"model.name": "resnet20_noshort", "m": 2.0}]
    ax = figure_measures_vs_parameter(rows, "model.name", ["m"]).axes[0]
    assert ax.get_xscale() == "linear" and [t.get_text() for t in ax.get_xticklabels()] == ["resnet20", "resnet20_noshort"]
    rows = [{"optim.weight_decay": v, "m": 1.0} for v in (0.0, 0.0005)]
    assert figure_measures_vs_parameter(rows, "optim.weight_decay", ["m"]).axes[0].get_xscale() == "linear"  # 0 is no power of 2


def test_many_measures_go_on_pages_of_twelve_panels(tmp_path: Path) -> None:
    from landscape_exp.compare.report import PAGE

    sweep = tmp_path / "sweep"
    for k, b in enumerate((32, 64, 128)):
        t = model_numbers(b, 0.0)
        ckpt = tmp_path / f"bs{b}.pt"
        ckpt.write_bytes(str(b).encode())
        measures = {f"m{i:02d}": {"value": i * b, "ci_low": None, "ci_high": None, "higher_is_sharper": True} for i in range(20)}
        measures["barrier_location_train_loss"] = {"value": 0.5, "ci_low": None, "ci_high": None, "higher_is_sharper": None}
        write_job(sweep / str(k), model_cfg("train", b, 0.0), {"final_checkpoint": str(ckpt), "measures": measures,
                                                               **{f"final/{q}": t[q] for q in METRICS}})
    s = compare_runs(find_runs(sweep), tmp_path / "out", plot=plot_settings(tmp_path))
    names = sorted(Path(f).name for f in s["figures"] if f.endswith(".png"))
    assert PAGE == 12 and names == ["measures_vs_batch_size.png", "measures_vs_batch_size_2.png",  # 2 + 20 panels
                                    "measures_vs_gap.png", "measures_vs_gap_2.png", "measures_vs_test_error.png",
                                    "measures_vs_test_error_2.png"]  # 20 measures; where a barrier lies is no measure to rank
    assert {c["measure"] for c in s["correlations"]} == {f"m{i:02d}" for i in range(20)}
    assert "barrier_location_train_loss" in s["columns"]
