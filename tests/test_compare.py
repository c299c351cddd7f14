"""task=compare on real runs (a Hydra multirun and single runs): the figures exist, and every
number in the table is the run's own, read independently from its files."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from landscape_exp.compare.discover import find_runs
from landscape_exp.compare.runs import config_differences, flatten_config, load_run_config, run_names
from landscape_exp.compare.tables import rank_correlations
from landscape_exp.errors import UserError

from conftest import ROOT, compose_cfg, run_cli

# One pytest-xdist worker runs this whole module, so that its module fixture's sweep runs once, not once per
# worker.
pytestmark = pytest.mark.xdist_group("compare")

TINY = ["model=mlp", "model.hidden=[16]", "dataset=digits", "optim.epochs=1", "x=-1:1:5", "progress=false",
        "plot.enabled=false"]


def _ensure_sharpness(run_dir: Path) -> None:
    """Surface-based sharpness in the surface file, as the surface tasks store it (kept if there)."""
    from omegaconf import OmegaConf

    from landscape_exp.config.measures import SharpnessSettings
    from landscape_exp.measures.sharpness import sharpness_summary
    from landscape_exp.surface.store import read_surface, store_sharpness

    surface = read_surface(run_dir / "surface.h5")
    if "sharpness" not in surface["attrs"]:
        default = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "sharpness" / "default.yaml"))
        settings = SharpnessSettings.from_mapping({**default, "radii": [0.5, 1.0], "thresholds": [0.1, 1.0], "model": False})
        assert store_sharpness(run_dir / "surface.h5", sharpness_summary(surface, settings))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real two-job multirun of 2D surfaces (train and test splits) and two single 1D runs
    (training split only) made in-process from the same cached checkpoints."""
    from landscape_exp.app import run_job

    root = tmp_path_factory.mktemp("cmp")
    res = run_cli(["-m", "task=surface2d", *TINY, "y=-1:1:5", "seed=0,1", "eval.splits=[train,test]", "logger=none",
                   f"paths.root={root}"], root, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = (root / "outputs" / "multirun").glob("*/*")
    for job in ("0", "1"):
        _ensure_sharpness(sweep / job)
    singles = []
    for seed in (0, 1):
        out = root / "single" / f"seed{seed}"
        cfg = compose_cfg(root, ["task=surface1d", *TINY, f"seed={seed}"])
        run_job(cfg, output_dir=out, job={"name": f"seed={seed}", "multirun": False})
        (out / ".hydra").mkdir()
        OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # what Hydra saves: the unresolved config
        _ensure_sharpness(out)
        singles.append(out)
    return root, sweep, singles


def _compare(root: Path, out: Path, overrides: list[str]) -> dict:
    from landscape_exp.app import run_job

    cfg = compose_cfg(root, ["task=compare", *overrides])
    return run_job(cfg, output_dir=out, job={"name": "compare", "multirun": False})


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _own_numbers(run_dir: Path, suffix: str = "") -> dict[str, float]:
    """What the run itself says, straight from its files (measure names + ``suffix``)."""
    s = json.loads((run_dir / "summary.json").read_text())
    with h5py.File(run_dir / "surface.h5", "r") as f:
        sharp = json.loads(f.attrs["sharpness"])
        ckpt_path = f.attrs["checkpoint"]
    sharp.update({k: v for k, v in s.items() if k.startswith("sharpness/")})
    sharp.update({k: m["value"] for k, m in s.get("measures", {}).items()})  # the flatness measures, where on
    sharp = {k + suffix: v for k, v in sharp.items()}
    if "test_loss/centre" in s:
        own = {k: s[f"{k}/centre"] for k in ("train_loss", "test_loss", "train_acc", "test_acc")}
    else:  # training split only: the analysed checkpoint's own metrics
        own = dict(torch.load(ckpt_path, weights_only=True)["metrics"])
    own["test_error"] = 100.0 - own["test_acc"]
    own["gap"] = own["test_loss"] - own["train_loss"]
    return {**{k: own[k] for k in ("train_loss", "test_loss", "test_acc", "test_error", "gap")}, **sharp}


def test_compare_a_multirun(runs, tmp_path):
    root, sweep, _ = runs
    out = tmp_path / "cmp"
    summary = _compare(root, out, [f"task.sweep_dir={sweep}"])
    assert summary["models"] == 2 and summary["jobs"] == 2
    assert (out / "compare_2d.png").read_bytes()[:4] == b"\x89PNG" and (out / "compare_2d.pdf").is_file()
    assert (out / "measures_vs_gap.png").is_file()
    assert not (out / "compare_1d.png").exists()  # no 1D runs
    assert summary["swept"] == ["seed"] and summary["replicates"] == ["seed"]
    assert not (out / "measures_vs_seed.png").exists()  # seeds are replicates: nothing is drawn against them
    rows = _read_csv(out / "compare.csv")
    assert [r["model"] for r in rows] == ["seed=0", "seed=1"] and [r["jobs"] for r in rows] == ["0", "1"]
    (rep,) = _read_csv(out / "compare_over_replicates.csv")  # one setting, its two seeds
    assert rep["n"] == "2" and float(rep["gap"]) == np.mean([float(r["gap"]) for r in rows])
    for r in rows:
        own = _own_numbers(sweep / r["jobs"])
        assert r["source"] == "surface centre"
        assert any(k.startswith("sharpness/rise_r") for k in own) and any(k.startswith("sharpness/area_t") for k in own)
        for k, v in own.items():
            assert float(r[k]) == v or (math.isnan(v) and math.isnan(float(r[k]))), k
    # two models are too few for a rank correlation: reported, as NaN, with n and why
    corr = _read_csv(out / "correlations.csv")
    metric_names = ("train_loss", "test_loss", "test_acc", "test_error", "gap")
    measures = {k for k in own if "basin_open" not in k and k not in ("sharpness/base_loss", *metric_names)}
    assert {c["measure"] for c in corr} == measures and {c["target"] for c in corr} == {"test_error", "gap"}
    assert all(c["n"] == "2" and math.isnan(float(c["spearman_rho"])) for c in corr)
    assert {c["note"] for c in corr} == {"n=2, too few for a rank correlation"}
    md = (out / "compare.md").read_text()
    assert "| model | seed | train_loss |" in md and "Rank correlations" in md
    assert json.loads((out / "summary.json").read_text())["models"] == 2


def test_compare_a_list_of_runs_1d_and_2d(runs, tmp_path):
    root, sweep, singles = runs
    out = tmp_path / "cmp"
    listed = [*singles, sweep / "0"]
    summary = _compare(root, out, [f"task.runs=[{','.join(str(p) for p in listed)}]"])
    # seed 0's 1D run and the 2D job of seed 0 analyse the same cached checkpoint: one model
    assert summary["models"] == 2 and summary["jobs"] == 3 and summary["swept"] == ["seed"]
    for stem in ("compare_1d", "compare_2d"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.pdf").is_file()
    rows = _read_csv(out / "compare.csv")
    assert [r["jobs"] for r in rows] == ["seed0; 0", "seed1"]
    # loss and accuracy from the best source of each model: seed 0's 2D surface has both splits
    assert [r["source"] for r in rows] == ["surface centre", "checkpoint"]
    metric_names = ("train_loss", "test_loss", "test_acc", "test_error", "gap")
    for r, jobs in zip(rows, ([(singles[0], "surface1d"), (sweep / "0", "surface2d")], [(singles[1], "surface1d")])):
        for d, task in jobs:
            for k, v in _own_numbers(d).items():
                if k in metric_names:
                    if d != singles[0]:  # seed 0's loss and accuracy are its 2D surface's centre
                        assert float(r[k]) == v, (r["model"], k)
                    continue
                # a rise along one direction is not the rise over a plane: one column per task; a
                # measure of the model itself (epsilon sharpness) is the same from both jobs: one column
                col = f"{k} ({task})" if f"{k} ({task})" in r else k
                assert float(r[col]) == v or (math.isnan(v) and math.isnan(float(r[col]))), (r["model"], k)
    assert "sharpness/rise_r0.5 (surface1d)" in rows[0] and "sharpness/epsilon" in rows[0]
    assert "sharpness/rise_r0.5 (surface2d)" in rows[1] and rows[1]["sharpness/rise_r0.5 (surface2d)"] == "nan"


def test_compare_a_study_of_named_jobs_in_stages(runs, tmp_path):
    """The same real jobs laid out as a study names them: stages, named job directories, a failed job."""
    import shutil

    root, sweep, singles = runs
    study = tmp_path / "study"
    for seed in (0, 1):
        shutil.copytree(sweep / str(seed), study / "surfaces" / f"surface2d_seed{seed}")
        shutil.copytree(singles[seed], study / "lines" / f"surface1d_seed{seed}")
    (study / "lines" / "surface1d_seed2" / ".hydra").mkdir(parents=True)
    shutil.copy(singles[0] / ".hydra" / "config.yaml", study / "lines" / "surface1d_seed2" / ".hydra")  # never finished
    out = tmp_path / "cmp"
    summary = _compare(root, out, [f"task.sweep_dir={study}"])
    assert re.search(r"note: skipping .*surface1d_seed2.*no summary.json", (out / "run.log").read_text())
    assert summary["models"] == 2 and summary["jobs"] == 4 and summary["swept"] == ["seed"]
    rows = _read_csv(out / "compare.csv")
    assert [r["jobs"] for r in rows] == ["lines/surface1d_seed0; surfaces/surface2d_seed0",
                                         "lines/surface1d_seed1; surfaces/surface2d_seed1"]
    for r, seed in zip(rows, (0, 1)):
        assert r["source"] == "surface centre" and float(r["gap"]) == _own_numbers(sweep / str(seed))["gap"]
    png = out / "measures_vs_gap.png"  # one point per model (the seed is a replicate: no figure against it)
    assert png.is_file() and plt_image_std(png) > 0.05 and not (out / "measures_vs_seed.png").exists()


def plt_image_std(png: Path) -> float:
    import matplotlib.image as mpimg

    return float(np.asarray(mpimg.imread(png))[..., :3].std())


def test_figures_draw_each_runs_own_values(runs):
    from matplotlib.contour import ContourSet

    from landscape_exp.compare.report import compare_runs
    from landscape_exp.compare.runs import load_run
    from landscape_exp.figures.compare import figure_contour_grid, figure_overlay_1d
    from landscape_exp.figures.levels import LevelSpec

    _, sweep, singles = runs
    one = [load_run(p) for p in singles]
    fig = figure_overlay_1d(one, labels=["a", "b"])
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["a", "b"]  # train loss only: no test split in these
    for ln, r in zip(lines, one):
        np.testing.assert_array_equal(ln.get_xdata(), r.surface["x"])
        np.testing.assert_array_equal(ln.get_ydata(), r.surface["train_loss"])
    two = [load_run(sweep / j) for j in ("0", "1")]
    fig = figure_contour_grid(two, levels=LevelSpec("fixed", 0.5, 3.0, 0.25, 20))
    sets = [c for ax in fig.axes for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    assert len(sets) == 2
    for cs in sets:  # one colour scale for all panels
        np.testing.assert_allclose(cs.levels, np.arange(0.5, 3.0, 0.25))
        assert (cs.norm.vmin, cs.norm.vmax) == (0.5, 3.0)
    # auto: one set of levels from both runs' values pooled, covering the lowest and the highest
    fig = figure_contour_grid(two, levels=LevelSpec("auto", 0.5, 3.0, 0.25, 20))
    sets = [c for ax in fig.axes for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    pooled = np.concatenate([r.surface["train_loss"][r.surface["done"]] for r in two])
    assert np.array_equal(sets[0].levels, sets[1].levels)
    assert sets[0].levels[0] <= pooled.min() and sets[0].levels[-1] >= pooled.max() and len(sets[0].levels) >= 8
    with pytest.raises(UserError, match="unknown compare metric 'train_los'"):
        compare_runs([sweep / "0"], sweep.parent / "x", metric="train_los")


def test_rank_correlation_equals_brute_force_spearman():
    a = np.array([0.3, 1.2, 0.7, 2.5, 0.1, 1.9, 0.5])
    gap = np.array([0.02, 0.05, 0.06, 0.04, 0.01, 0.09, 0.03])

    def ranks(v):
        return np.argsort(np.argsort(v)).astype(float)

    expect = float(np.corrcoef(ranks(a), ranks(gap))[0, 1])
    table = [{"m": float(x), "gap": float(g)} for x, g in zip(a, gap)]
    table.append({"m": math.nan, "gap": 0.5})  # dropped, not ranked
    (c,) = rank_correlations(table, ["m"])
    assert c["n"] == 7 and c["spearman_rho"] == pytest.approx(expect, abs=1e-12) and c["note"] == ""
    # Kendall's tau by counting concordant minus discordant pairs (no ties here)
    pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
    tau = sum(np.sign(a[i] - a[j]) * np.sign(gap[i] - gap[j]) for i, j in pairs) / len(pairs)
    assert c["kendall_tau"] == pytest.approx(tau, abs=1e-12)
    assert math.isnan(rank_correlations(table[:2], ["m"])[0]["spearman_rho"])
    assert math.isnan(rank_correlations([{"m": 1.0, "gap": g} for g in (1, 2, 3)], ["m"])[0]["spearman_rho"])


def test_config_differences_and_flattening(runs):
    _, sweep, _ = runs
    cfg = load_run_config(sweep / "0")
    assert cfg["model.num_classes"] == 10  # ${dataset.num_classes}, resolved
    assert not any(k.startswith(("paths.", "logger.", "hydra.")) for k in cfg)
    assert flatten_config({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
    assert config_differences([{"a": 1, "l": [1, 2]}, {"a": 1, "l": [1, 3]}, {"a": 1, "l": [1, 2], "n": None}]) == ["l", "n"]
    assert run_names([Path("/x/a/0"), Path("/x/b/0"), Path("/x/b/1")]) == ["a/0", "b/0", "b/1"]  # one depth for all


def test_finding_runs(runs, tmp_path, capsys):
    _, sweep, singles = runs
    assert find_runs(sweep) == [sweep / "0", sweep / "1"]
    with pytest.raises(UserError, match="task.sweep_dir=<sweep or study dir> or task.runs"):
        find_runs(None, None)
    with pytest.raises(UserError, match="has no job directories"):
        find_runs(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        find_runs(None, [tmp_path / "nope"])
    with pytest.raises(UserError, match="has no summary.json"):
        find_runs(None, [tmp_path])
    (tmp_path / "0").mkdir()
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "summary.json").write_text("{}")
    (tmp_path / "0" / ".hydra").mkdir()
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("task: {name: train}\n")  # started, never finished
    assert find_runs(tmp_path) == [tmp_path / "1"]
    assert re.search(r"note: skipping .*/0'.*no summary.json", capsys.readouterr().out)
    assert find_runs(None, [singles[0], singles[0]]) == [singles[0]]  # listed twice, compared once


def test_many_overlaid_models_keep_distinct_colours():
    """Past ten models matplotlib's cycle repeats; the overlay gives each of 15 and of 25 curves a colour of its own."""
    from matplotlib.colors import to_rgba

    from landscape_exp.compare.runs import Run
    from landscape_exp.figures.compare import figure_overlay_1d

    x = np.linspace(-1, 1, 5)
    for n in (15, 25):
        runs = [Run(Path(f"/r{i}"), f"r{i}", {}, {}, {"x": x, "y": None, "train_loss": (1 + i) * x**2, "done": np.ones(5, bool)})
                for i in range(n)]
        fig = figure_overlay_1d(runs, labels=[f"m{i}" for i in range(n)])
        solid = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-"]
        assert len(solid) == n and len({to_rgba(ln.get_color()) for ln in solid}) == n
        assert np.array_equal(solid[3].get_ydata(), 4 * x**2)  # each line its own run's values
