"""Figures a new user can read (tracker issue 17): contour levels from the data, colour scales
that follow z, named anchor models, labels that do not pile up, 1xN grids, the original tool's
(nx, ny) arrays, VTP upsampling, several 1D directions overlaid, and HTML without plotly.js.

The surfaces are closed forms; the checks rasterize the figures and count colours, or read the
levels and artists back, and compare with numbers worked out by hand.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest
from omegaconf import OmegaConf

from landscape_exp.app import run_job
from landscape_exp.config.settings import Settings
from landscape_exp.errors import UserError
from landscape_exp.figures import (
    KINDS_2D,
    LevelSpec,
    auto_levels,
    export_vtp,
    figure_1d,
    figure_1d_overlay,
    figure_2d,
    figure_path_on_contour,
    figure_surface_html,
    render_surface,
    save,
    save_2d,
    save_html,
)
from landscape_exp.figures.trajectory import figure_trajectory
from landscape_exp.surface.grid import parse_grid
from landscape_exp.surface.store import read_surface

from conftest import compose_cfg
from helpers.vtp import read_vtp

AUTO = LevelSpec("auto", 0.1, 10.0, 0.5, 20)
FIXED = LevelSpec("fixed", 0.1, 10.0, 0.5, 20)  # the paper's arange(0.1, 10, 0.5)
X = np.linspace(-1.0, 1.0, 31)
Y = np.linspace(-1.0, 1.0, 25)
BOWL = 50.0 + X[None, :] ** 2 + Y[:, None] ** 2  # far from a minimum: a ResNet-56 after one epoch


def plot_settings(**over) -> SimpleNamespace:
    """The ``plot`` settings as conf/plot/default.yaml has them, with ``over`` changed."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "plot" / "default.yaml"))
    return SimpleNamespace(**{**cfg, "overlay": tuple(cfg["overlay"]), **over})


def plot_area_colours(png: Path, fig) -> int:
    """Distinct colours (not white or grey, each on >= 0.3 % of the pixels) inside the axes of
    ``fig`` (the first axes) in the saved ``png``."""
    img = mpimg.imread(png)[..., :3]
    h, w = img.shape[:2]
    box = fig.axes[0].get_position()  # figure fractions, frozen by save()
    crop = img[int((1 - box.y1) * h) + 2 : int((1 - box.y0) * h) - 2, int(box.x0 * w) + 2 : int(box.x1 * w) - 2]
    px = crop.reshape(-1, 3)
    coloured = px[(px.max(axis=1) - px.min(axis=1)) > 0.08]
    if not coloured.size:
        return 0
    _, counts = np.unique(np.round(coloured * 31).astype(int), axis=0, return_counts=True)
    return int((counts >= 0.003 * len(px)).sum())


def nonempty_levels(fig) -> int:
    """Contour levels of the first axes that have at least one line."""
    (cs,) = [c for c in fig.axes[0].collections if hasattr(c, "allsegs")]
    return sum(1 for segs in cs.allsegs if any(len(s) >= 2 for s in segs))


# ----------------------------------------------------------------------------------------
# levels and colours
# ----------------------------------------------------------------------------------------
def test_auto_levels_values() -> None:
    # 50 + x^2 + y^2 on [-1, 1]^2: values 50..52, less than a decade: round, evenly spaced
    levels, log_spaced = auto_levels(BOWL, 20)
    assert not log_spaced
    np.testing.assert_allclose(levels, 50.0 + 0.1 * np.arange(21), atol=1e-9)
    # 0.01..10: three decades of a positive loss: log-spaced round values, 10 per decade
    levels, log_spaced = auto_levels(np.geomspace(0.01, 10.0, 50), 20)
    assert log_spaced
    np.testing.assert_allclose(levels[:6], [0.01, 0.012, 0.015, 0.02, 0.025, 0.03])
    assert levels[0] <= 0.01 and levels[-1] >= 10.0 and levels.size == 31
    # accuracy (geometric=False) stays linear; a constant surface gets levels around it
    assert not auto_levels(np.geomspace(1.0, 99.0, 50), 20, geometric=False)[1]
    flat, _ = auto_levels(np.full(9, 2.0), 20)
    assert flat.size == 3 and flat[0] < 2.0 < flat[-1]
    # a zero-ish minimum does not spread the levels over ten decades
    levels, _ = auto_levels(np.array([1e-9, 1.0, 10.0]), 20)
    assert levels[0] >= 10.0 / 1e4 / 10 and levels[-1] >= 10.0


@pytest.mark.parametrize("kind", KINDS_2D)
def test_far_from_a_minimum_is_not_blank(tmp_path: Path, kind: str, capsys) -> None:
    """Centre loss 50: every kind shows many colours with levels from the data; with the paper's
    fixed levels (0.1..9.6) the flat kinds are blank or one colour and a one-line warning says so."""
    fig = figure_2d(kind, X, Y, BOWL, title="far", levels=AUTO)
    (png, _) = save(fig, tmp_path / f"auto_{kind}")
    assert plot_area_colours(png, fig) >= 8, kind
    if kind == "contour":
        assert nonempty_levels(fig) >= 15  # levels 50.1 .. 51.9 all cross the grid
    if kind == "surface3d":  # the colour scale is z's: 50..52, not 0.1..10
        (surf,) = [c for c in fig.axes[0].collections if c.get_array() is not None]
        assert surf.norm.vmin == pytest.approx(50.0) and surf.norm.vmax == pytest.approx(52.0)
        assert len(np.unique(np.round(surf.get_facecolors(), 3), axis=0)) >= 50

    paths = save_2d(X, Y, BOWL, tmp_path / "fixed", title="far", levels=FIXED, kinds=(kind,))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "train loss lies in [50, 52], outside the fixed contour levels 0.1..9.6" in out[0]
    fixed_fig = figure_2d(kind, X, Y, BOWL, title="far", levels=FIXED)
    if kind == "contour":
        assert nonempty_levels(fixed_fig) == 0
    elif kind != "surface3d":
        assert plot_area_colours(paths[0], fixed_fig) <= 2  # the control: one colour (+ the star)
        assert any("outside the fixed contour levels" in t.get_text() for t in fixed_fig.axes[0].texts)
    else:
        assert plot_area_colours(paths[0], fixed_fig) >= 8  # 3D follows z in either mode


def test_log_plot_and_colour_scale_follow_the_data() -> None:
    z = 0.01 * np.exp(7.0 * (X[None, :] ** 2 + Y[:, None] ** 2) / 2)  # 0.01 .. ~11
    fig = figure_2d("contourf", X, Y, z, title="log", levels=AUTO)
    (cs,) = [c for c in fig.axes[0].collections if hasattr(c, "levels")]
    assert type(cs.norm).__name__ == "LogNorm" and cs.levels[0] <= 0.01 and cs.levels[-1] >= z.max()
    # plot.log: log10 values, evenly spaced levels over their range
    fig = figure_2d("contour", X, Y, z, title="log", levels=AUTO, log=True)
    (cs,) = [c for c in fig.axes[0].collections if hasattr(c, "levels")]
    assert cs.levels[0] <= -2.0 and cs.levels[-1] >= np.log10(z.max())
    assert np.allclose(np.diff(cs.levels), cs.levels[1] - cs.levels[0])
    assert nonempty_levels(fig) >= 10


def test_contour_labels_do_not_pile_up() -> None:
    """A surface that is steep in one corner: at most 8 labels, each 0.12 of the axes apart."""
    steep = np.exp(4.0 * (X[None, :] + Y[:, None]))
    fig = figure_2d("contour", X, Y, steep, title="steep", levels=LevelSpec("auto", 0, 1, 1, 60))
    ax = fig.axes[0]
    (cs,) = [c for c in ax.collections if hasattr(c, "labelTexts")]
    pos = np.array([t.get_position() for t in cs.labelTexts])
    assert 3 <= len(pos) <= 8
    rel = (pos - [-1.0, -1.0]) / 2.0
    gaps = [np.abs(rel[i] - rel[j]).max() for i in range(len(rel)) for j in range(i)]
    assert min(gaps) >= 0.12
    assert np.all((rel > 0.03) & (rel < 0.97))  # none on the edges
    assert np.abs(rel - 0.5).max(axis=1).min() >= 0.12  # none on the star at (0, 0)


def test_trajectory_levels_separate_late_epochs() -> None:
    """Late epochs near the minimum (losses 0.066, 0.029, 0.013, 0.0066, 0.0039, 0.0028) each fall
    into a band of their own; the paper's levels (0.1, 0.6, ...) put them all below the first."""
    x, y = np.linspace(-3, 1, 41), np.linspace(-1, 1, 21)
    z = 0.002 + 2.0 * (x[None, :] ** 2 + y[:, None] ** 2)
    epochs = list(range(12))
    path = np.stack([-np.geomspace(2.5, 0.02, 12), np.zeros(12)], axis=1)
    surface = {"x": x, "y": y, "train_loss": z, "done": np.ones(z.shape, bool)}
    late = 0.002 + 2.0 * path[6:, 0] ** 2  # epochs 6..11
    bands = {}
    for mode in ("auto", "fixed"):
        fig = figure_trajectory(surface, "train_loss", path, epochs, plot_settings(levels=mode), title="t",
                                xlabel="PC1", ylabel="PC2")
        (cs,) = [c for c in fig.axes[0].collections if hasattr(c, "levels")]
        bands[mode] = np.searchsorted(cs.levels, late).tolist()
    assert bands == {"auto": [9, 7, 5, 3, 2, 1], "fixed": [0] * 6}
    # labels keep off the path
    fig = figure_path_on_contour(x, y, z, path, title="t", xlabel="a", ylabel="b", levels=AUTO)
    (cs,) = [c for c in fig.axes[0].collections if hasattr(c, "labelTexts")]
    for t in cs.labelTexts:
        d = np.abs((np.array(t.get_position()) - path) / [4.0, 2.0]).max(axis=1)
        assert d.min() >= 0.12


# ----------------------------------------------------------------------------------------
# anchors
# ----------------------------------------------------------------------------------------
def test_plane_and_interpolation_name_their_models(tmp_path: Path) -> None:
    xs = np.linspace(-0.5, 1.5, 21)
    z = 0.1 + np.minimum.reduce([(xs[None, :] - a) ** 2 + (xs[:, None] - b) ** 2 for a, b in ((0, 0), (1, 0), (0, 1))])
    attrs = {"task": "plane", "model": "mlp", "dataset": "digits"}
    render_surface({"x": xs, "y": xs, "train_loss": z, "attrs": attrs}, tmp_path / "plane", plot_settings(html_plotlyjs="none"))
    anchors = {"theta1": (0.0, 0.0), "theta2": (1.0, 0.0), "theta3": (0.0, 1.0)}
    for kind in ("contour", "surface3d"):
        fig = figure_2d(kind, xs, xs, z, title="plane", levels=AUTO, minimizer=None, anchors=anchors)
        names = [t.get_text().strip() for t in fig.axes[0].texts]
        assert [n for n in names if n.startswith("theta")] == ["theta1", "theta2", "theta3"], kind
        if kind == "contour":
            marks = [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in fig.axes[0].lines]
            assert marks == [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    assert (tmp_path / "plane" / "surface_train_loss_contour.png").is_file()

    xs1 = np.linspace(-0.5, 1.5, 41)
    fig = figure_1d(xs1, {"train_loss": 1 + np.sin(np.pi * xs1) ** 2}, title="interp",
                    anchors={"model 1": 0.0, "model 2": 1.0, "outside": 3.0})
    ax = fig.axes[0]
    vlines = sorted(float(ln.get_xdata()[0]) for ln in ax.lines if ln.get_linestyle() == ":")
    assert vlines == [0.0, 1.0]
    (top,) = [a for a in ax.child_axes]
    assert [t.get_text() for t in top.xaxis.get_ticklabels()] == ["model 1", "model 2"]


# ----------------------------------------------------------------------------------------
# 1xN grids and the original tool's (nx, ny) arrays
# ----------------------------------------------------------------------------------------
def test_one_by_n_grid_parses_and_draws_as_a_curve(tmp_path: Path) -> None:
    g = parse_grid("-1:1:5", "0:0:1", single_y=True)
    assert g.shape == (1, 5) and g.points().tolist() == [[-1, 0], [-0.5, 0], [0, 0], [0.5, 0], [1, 0]]
    with pytest.raises(UserError, match=r"y='0:1:1'.*or v:v:1 for the single value v"):
        parse_grid("-1:1:5", "0:1:1", single_y=True)
    with pytest.raises(UserError, match=r"y='0:0:1'"):
        parse_grid("-1:1:5", "0:0:1")  # hessian_surface etc.: two values at least
    xs = np.linspace(-1, 1, 9)
    surf = {"x": xs, "y": np.array([0.0]), "train_loss": (1 + xs**2)[None, :], "train_acc": (90 - xs**2)[None, :],
            "done": np.ones((1, 9), bool), "attrs": {"task": "surface2d"}}
    out = render_surface(surf, tmp_path, plot_settings())
    assert [p.name for p in out] == ["surface_1d.png", "surface_1d.pdf"]


def test_surface2d_with_one_y_value_end_to_end(tmp_path: Path, mlp_ckpts) -> None:
    s = run_job(compose_cfg(tmp_path, [f"checkpoint={mlp_ckpts[0]}", "x=-1:1:5", "y=0:0:1", "sharpness.model=false",
                                       "plot.html_plotlyjs=none"]), output_dir=tmp_path / "run", job={})
    assert "sharpness/width_t0.1" in s and "sharpness/area_t0.1" not in s  # measured as the 1D slice it is
    with h5py.File(tmp_path / "run" / "surface.h5", "r") as f:
        assert f["ycoordinates"][()].tolist() == [0.0] and f["train_loss"].shape == (1, 5)
        centre = float(f["train_loss"][0, 2])
    assert centre == pytest.approx(s["train_loss/centre"])
    assert sorted(Path(p).name for p in s["figures"]) == ["surface_1d.pdf", "surface_1d.png"]


def write_original(path: Path, x: np.ndarray, y: np.ndarray, f) -> None:
    """A surface file as the original plot_surface.py writes it: arrays of shape (nx, ny) filled
    in np.meshgrid(x, y).ravel() order."""
    xx, yy = np.meshgrid(x, y)
    losses = -np.ones((len(x), len(y)))
    for k, (a, b) in enumerate(zip(xx.ravel(), yy.ravel())):
        losses.ravel()[k] = f(a, b)
    with h5py.File(path, "w") as h:
        h["xcoordinates"], h["ycoordinates"], h["train_loss"], h["dir_file"] = x, y, losses, "dirs.h5"


def test_original_tool_file_with_nx_ne_ny(tmp_path: Path, capsys) -> None:
    x, y = np.linspace(-1, 2, 7), np.linspace(-0.5, 0.5, 4)

    def f(a: float, b: float) -> float:
        return 1.0 + a**2 + 3.0 * b + 0.1 * a * b

    write_original(tmp_path / "orig.h5", x, y, f)
    s = read_surface(tmp_path / "orig.h5")
    want = np.array([[f(a, b) for a in x] for b in y])  # (ny, nx), z[j, i] = f(x_i, y_j)
    np.testing.assert_allclose(s["train_loss"], want, rtol=1e-14)
    assert s["done"].shape == (4, 7) and s["done"].all()
    # the hint for a caller holding the raw array: reshape, not transpose
    raw = want.reshape(7, 4)
    with pytest.raises(UserError, match=r"z\.reshape\(4, 7\), not z\.T"):
        figure_2d("contour", x, y, raw, title="t", levels=AUTO)
    res = run_job(compose_cfg(tmp_path, ["task=plot", f"surf_file={tmp_path / 'orig.h5'}", "plot.html_plotlyjs=none"]),
                  output_dir=tmp_path / "plot", job={})
    assert "read as reshape(ny, nx)" in capsys.readouterr().out
    assert (tmp_path / "plot" / "surface_train_loss_contour.png").is_file() and len(res["figures"]) == 9


# ----------------------------------------------------------------------------------------
# VTP upsampling
# ----------------------------------------------------------------------------------------
def test_vtp_interp_matches_the_analytic_surface(tmp_path: Path) -> None:
    x, y = np.linspace(-1.0, 2.0, 13), np.linspace(-0.5, 1.0, 9)

    def f(a, b):
        return np.sin(a) * np.cos(2 * b) + a**2 + 1.0

    z = f(x[None, :], y[:, None])
    v = read_vtp(export_vtp(x, y, z, tmp_path / "fine.vtp", interp=40))
    assert v["n_points"] == 1600 and v["n_polys"] == 39 * 39
    px, py = v["points"][:, 0], v["points"][:, 1]
    np.testing.assert_allclose(np.unique(px), np.linspace(-1.0, 2.0, 40))
    np.testing.assert_allclose(np.unique(py), np.linspace(-0.5, 1.0, 40))
    assert np.abs(v["zvalue"] - f(px, py)).max() < 2e-3  # cubic spline through a 13x9 grid
    # the coarse grid points are reproduced (an interpolating spline)
    # a hole: fine points in the four cells around it are dropped, the rest stays close
    zh = z.copy()
    zh[4, 6] = np.nan
    vh = read_vtp(export_vtp(x, y, zh, tmp_path / "holey.vtp", interp=40))
    valid = vh["valid"].astype(bool)
    near = (np.abs(px - x[6]) < x[1] - x[0]) & (np.abs(py - y[4]) < y[1] - y[0])
    assert not valid[near].any() and valid[~near].all()
    assert np.abs(vh["zvalue"][valid] - f(px, py)[valid]).max() < 0.05
    with pytest.raises(UserError, match="interp=1 must be 2..1000"):
        export_vtp(x, y, z, tmp_path / "bad.vtp", interp=1)


# ----------------------------------------------------------------------------------------
# several 1D directions overlaid
# ----------------------------------------------------------------------------------------
def _one_d(path: Path, x: np.ndarray, k: float) -> Path:
    with h5py.File(path, "w") as h:
        h["xcoordinates"] = x
        h["train_loss"] = 0.1 + k * x**2
        h["train_acc"] = 100 - 10 * k * x**2
        h.attrs["task"], h.attrs["model"], h.attrs["dataset"] = "surface1d", "mlp", "digits"
    return path


def test_overlay_of_random_directions(tmp_path: Path) -> None:
    x = np.linspace(-1, 1, 21)
    ks = [1.0, 2.0, 4.0]
    surfaces = [{"x": x, "train_loss": 0.1 + k * x**2, "train_acc": 100 - 10 * k * x**2} for k in ks]
    fig = figure_1d_overlay(x, surfaces, title="overlay")
    loss_ax, acc_ax = fig.axes
    mean = [ln for ln in loss_ax.lines if ln.get_label().endswith("mean")]
    assert len(mean) == 1 and mean[0].get_linewidth() == 2.0
    np.testing.assert_allclose(mean[0].get_ydata(), 0.1 + np.mean(ks) * x**2)
    thin = [ln for ln in loss_ax.lines if ln.get_linewidth() < 1]
    assert len(thin) == 3
    (band,) = loss_ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.1) and ys.max() == pytest.approx(0.1 + 4.0)
    assert acc_ax.get_ylim() == (0.0, 100.0)
    with pytest.raises(UserError, match="at least 2 surfaces"):
        figure_1d_overlay(x, surfaces[:1], title="t")

    files = [_one_d(tmp_path / f"d{i}.h5", x, k) for i, k in enumerate(ks)]
    res = run_job(compose_cfg(tmp_path, ["task=plot", f"plot.overlay=[{','.join(map(str, files))}]"]),
                  output_dir=tmp_path / "ov", job={})
    assert [Path(p).name for p in res["figures"]] == ["overlay_1d.png", "overlay_1d.pdf"]
    img = mpimg.imread(tmp_path / "ov" / "overlay_1d.png")
    assert float(img[..., :3].std()) > 0.05
    other = _one_d(tmp_path / "other.h5", np.linspace(-2, 2, 21), 1.0)
    for over, msg in ((f"plot.overlay=[{files[0]}]", "names one file"),
                      (f"plot.overlay=[{files[0]},{other}]", "other x coordinates")):
        with pytest.raises(UserError, match=msg):
            run_job(compose_cfg(tmp_path, ["task=plot", over]), output_dir=tmp_path / "bad", job={})


# ----------------------------------------------------------------------------------------
# HTML with plotly.js inline, once per directory, or none; settings
# ----------------------------------------------------------------------------------------
def test_html_plotlyjs_modes(tmp_path: Path) -> None:
    fig = figure_surface_html(X, Y, BOWL, title="html", zlabel="train loss")
    inline = save_html(fig, tmp_path / "inline" / "a.html", plotlyjs="inline")
    assert inline.stat().st_size > 3_000_000 and not (tmp_path / "inline" / "plotly.min.js").exists()
    a = save_html(fig, tmp_path / "dir" / "a.html", plotlyjs="directory")
    b = save_html(fig, tmp_path / "dir" / "b.html", plotlyjs="directory")
    bundle = tmp_path / "dir" / "plotly.min.js"
    assert bundle.stat().st_size > 3_000_000
    for page in (a, b):
        text = page.read_text(encoding="utf-8")
        srcs = re.findall(r'<script[^>]*src="([^"]*)"', text)
        assert page.stat().st_size < 100_000 and srcs == ["plotly.min.js"] and "cdn" not in text.lower()
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    names = [p.name for p in render_surface({"x": X, "y": Y, "train_loss": BOWL, "attrs": {}}, tmp_path / "none",
                                            plot_settings(html_plotlyjs="none", vtp_interp=16))]
    assert not [n for n in names if n.endswith(".html")] and "surface_train_loss.vtp" in names
    assert read_vtp(tmp_path / "none" / "surface_train_loss.vtp")["n_points"] == 16 * 16  # plot.vtp_interp
    with pytest.raises(UserError, match="allowed: directory, inline"):
        save_html(fig, tmp_path / "x.html", plotlyjs="cdn")


def test_plot_settings_are_read_and_checked(tmp_path: Path) -> None:
    def settings(*over: str) -> Settings:
        return Settings.from_config(OmegaConf.to_container(compose_cfg(tmp_path, list(over)), resolve=True))

    p = settings().plot
    assert (p.levels, p.num_levels, p.vtp_interp, p.html_plotlyjs, p.overlay) == ("auto", 20, 0, "inline", ())
    assert settings("plot.overlay=[a.h5,b.h5]", "plot.vtp_interp=101").plot.overlay == ("a.h5", "b.h5")
    for over, named in (("plot.levels=paper", r"unknown plot\.levels 'paper'; allowed: auto, fixed"),
                        ("plot.html_plotlyjs=cdn", r"plot\.html_plotlyjs 'cdn'; allowed: directory, inline, none"),
                        ("plot.vtp_interp=1", r"plot\.vtp_interp=1 must be 0 \(off\) or 2\.\.1000"),
                        ("plot.num_levels=1", r"plot\.num_levels=1 must be")):
        with pytest.raises(UserError, match=named) as e:
            settings(over)
        assert "\n" not in str(e.value)


def test_1d_loss_max_below_the_whole_curve_is_ignored(capsys) -> None:
    xs = np.linspace(-1, 1, 11)
    fig = figure_1d(xs, {"train_loss": 57.0 + xs**2}, title="far", loss_max=5)
    assert "all above plot.loss_max=5" in capsys.readouterr().out
    lo, hi = fig.axes[0].get_ylim()
    assert hi >= 58.0
