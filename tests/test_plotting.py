"""Tests of the loss-surface figures, the ParaView export and the interactive HTML.

The surface is a closed form, z = x^2 + 3 y^2 + 0.1, on a 21 x 15 grid whose x and y ranges
differ and are not symmetric about 0: a transposed or flipped array changes the numbers
these tests compare against.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib as mpl
import matplotlib.image as mpimg
import numpy as np
import pytest

from landscape_exp.errors import UserError
from landscape_exp.figures import (
    NO_POINTS_TEXT,
    LevelSpec,
    contour_levels,
    export_vtp,
    figure_1d,
    figure_2d,
    figure_curves,
    figure_path_on_contour,
    figure_surface_html,
    mask_invalid,
    render_surface,
    save,
    save_2d,
    save_html,
)

from helpers.vtp import read_vtp

X = np.linspace(-1.0, 2.0, 21)
Y = np.linspace(-0.5, 1.0, 15)


def closed_form(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z[j, i] = x[i]^2 + 3 y[j]^2 + 0.1, built with explicit loops (no meshgrid)."""
    z = np.empty((y.size, x.size))
    for j in range(y.size):
        for i in range(x.size):
            z[j, i] = x[i] ** 2 + 3.0 * y[j] ** 2 + 0.1
    return z


Z = closed_form(X, Y)
# The paper's fixed levels arange(0.1, 10, 0.5), and levels from the data.
FIXED = LevelSpec("fixed", 0.1, 10.0, 0.5, 20)
AUTO = LevelSpec("auto", 0.1, 10.0, 0.5, 20)


def holey() -> np.ndarray:
    """The closed form with one diverged (NaN), one +inf and two not-computed (-1) points."""
    z = Z.copy()
    z[2, 3] = np.nan
    z[7, 15] = np.inf
    z[10, 0] = -1.0
    z[14, 20] = -1.0
    return z


def assert_png_drawn(path: Path, min_side: int = 300) -> np.ndarray:
    """The PNG exists, is a real-sized image and is not blank; returns the pixels."""
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_side and img.shape[1] >= min_side, img.shape
    assert float(img[..., :3].std()) > 0.05, f"{path.name} looks blank"
    return img


def assert_pdf(path: Path) -> None:
    """The PDF exists and is a PDF."""
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 2000, path


def texts(fig) -> list[str]:
    """All text drawn in a figure (titles, labels, annotations)."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]


# ----------------------------------------------------------------------------------------
# masking and levels
# ----------------------------------------------------------------------------------------
def test_mask_invalid_marks_missing_and_diverged() -> None:
    z = np.array([[0.5, -1.0, np.nan], [np.inf, -np.inf, 2.0]])
    m = mask_invalid(z)
    assert m.mask.tolist() == [[False, True, True], [True, True, False]]
    assert np.all(np.isnan(m.data[m.mask]))  # masked data never looks like a real value
    assert m[0, 0] == 0.5 and m[1, 2] == 2.0
    # done is authoritative about computation: a computed -1 stays, an uncomputed 0.5 goes,
    # and a diverged NaN is masked even when computed.
    done = np.array([[False, True, True], [True, True, True]])
    m2 = mask_invalid(z, done)
    assert m2.mask.tolist() == [[True, False, True], [True, True, False]]
    assert m2[0, 1] == -1.0
    assert mask_invalid(z, missing=None).mask.tolist() == [[False, False, True], [True, True, False]]
    pre = np.ma.MaskedArray([1.0, 2.0, 3.0], mask=[False, True, False])
    assert mask_invalid(pre).mask.tolist() == [False, True, False]
    with pytest.raises(UserError, match="done mask has shape"):
        mask_invalid(z, np.ones((3, 2), bool))


def test_contour_levels_linear_and_log() -> None:
    np.testing.assert_array_equal(contour_levels(0.1, 10, 0.5), np.arange(0.1, 10, 0.5))
    lv = contour_levels(0.1, 10, 0.5, log=True)
    assert lv.size == 20
    np.testing.assert_allclose(lv, -1.0 + 0.1 * np.arange(20), atol=1e-12)
    with pytest.raises(UserError, match="vmax must be greater than vmin"):
        contour_levels(5, 1, 0.5)
    with pytest.raises(UserError, match="vlevel must be positive"):
        contour_levels(0.1, 10, 0)
    with pytest.raises(UserError, match="at most 1000"):
        contour_levels(0.0, 10.0, 1e-6)
    with pytest.raises(UserError, match="vmin must be positive"):
        contour_levels(0.0, 10.0, 0.5, log=True)


# ----------------------------------------------------------------------------------------
# 2D figures
# ----------------------------------------------------------------------------------------
def test_plot_2d_writes_every_kind(tmp_path: Path) -> None:
    paths = save_2d(X, Y, Z, tmp_path / "sub" / "surf_x=-1:2:21.h5_train_loss", title="closed form", levels=FIXED)
    names = [p.name for p in paths]
    stem = "surf_x=-1:2:21.h5_train_loss"
    assert names == [
        f"{stem}_{k}.{ext}"
        for k in ("contour", "contourf", "heatmap", "3dsurface")
        for ext in ("png", "pdf")
    ]
    for p in paths:
        assert p.exists()
        if p.suffix == ".png":
            img = assert_png_drawn(p)
            # A filled figure is mostly colour, not white paper.
            if "contourf" in p.name or "heatmap" in p.name:
                non_white = np.any(img[..., :3] < 0.9, axis=-1).mean()
                assert non_white > 0.4, (p.name, non_white)
        else:
            assert_pdf(p)


def test_plot_2d_masked_points_render(tmp_path: Path) -> None:
    z = holey()
    paths = save_2d(X, Y, z, tmp_path / "holey", title="holes", log=True, levels=AUTO)
    assert len(paths) == 8
    for p in paths:
        assert_png_drawn(p) if p.suffix == ".png" else assert_pdf(p)
    fig = figure_2d("contour", X, Y, z, title="holes", levels=AUTO)
    assert "4 of 315 points missing" in fig.axes[0].get_title()


def test_plot_2d_with_done_mask(tmp_path: Path) -> None:
    done = np.zeros(Z.shape, bool)
    done[:8, :] = True  # half-way through a run: only the first 8 rows are computed
    fig = figure_2d("heatmap", X, Y, Z, title="partial", done=done, levels=AUTO)
    assert f"{7 * 21} of 315 points missing" in fig.axes[0].get_title()
    paths = save_2d(X, Y, Z, tmp_path / "partial", title="partial", done=done, kinds=("contourf",), levels=AUTO)
    assert [p.name for p in paths] == ["partial_contourf.png", "partial_contourf.pdf"]
    assert_png_drawn(paths[0])


def test_plot_2d_all_masked_says_so(tmp_path: Path) -> None:
    z = np.full(Z.shape, -1.0)
    paths = save_2d(X, Y, z, tmp_path / "empty", title="nothing yet", levels=AUTO)
    assert len(paths) == 8
    for p in paths:
        assert_png_drawn(p) if p.suffix == ".png" else assert_pdf(p)
    for kind in ("contour", "surface3d"):
        assert NO_POINTS_TEXT in texts(figure_2d(kind, X, Y, z, title="nothing yet", levels=AUTO))


def test_contour_orientation_follows_x() -> None:
    """For z = x every contour line is the vertical line x = level (and for z = y horizontal)."""
    zx = np.tile(X, (Y.size, 1))  # z[j, i] = x[i]
    fig = figure_2d("contour", X, Y, zx, title="z = x", levels=LevelSpec("fixed", -0.9, 2.0, 0.5, 20),
                    minimizer=None)
    cs = fig.axes[0].collections[-1]
    drawn = 0
    for level, segs in zip(cs.levels, cs.allsegs):
        for seg in segs:
            np.testing.assert_allclose(seg[:, 0], level, atol=1e-9)
            drawn += 1
    assert drawn >= 5  # levels -0.9, -0.4, 0.1, 0.6, 1.1, 1.6 all cross the grid

    zy = np.tile(Y[:, None], (1, X.size))  # z[j, i] = y[j]
    fig = figure_2d("contour", X, Y, zy, title="z = y", levels=LevelSpec("fixed", -0.45, 1.0, 0.25, 20),
                    minimizer=None)
    cs = fig.axes[0].collections[-1]
    for level, segs in zip(cs.levels, cs.allsegs):
        for seg in segs:
            np.testing.assert_allclose(seg[:, 1], level, atol=1e-9)


def test_heatmap_pixels_match_closed_form() -> None:
    """The colour at the pixel of grid point (x[i], y[j]) is the colour of z[j, i]."""
    z = holey()
    fig = figure_2d("heatmap", X, Y, z, title="pixels", levels=LevelSpec("fixed", 0.1, 8.0, 0.5, 20),
                    minimizer=None)
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba()).astype(float) / 255.0
    height = buf.shape[0]
    ax = fig.axes[0]
    cmap = mpl.colormaps["viridis"]
    checked = 0
    for i, j in [(0, 0), (20, 0), (0, 14), (19, 13), (3, 12), (17, 4), (10, 7)]:
        px, py = ax.transData.transform((X[i], Y[j]))
        pixel = buf[int(round(height - py)), int(round(px)), :3]
        expected = np.array(cmap((Z[j, i] - 0.1) / (8.0 - 0.1))[:3])
        np.testing.assert_allclose(pixel, expected, atol=3 / 255, err_msg=f"cell ({i}, {j})")
        checked += 1
    # A masked cell is grey, not a colour of the map.
    px, py = ax.transData.transform((X[3], Y[2]))
    np.testing.assert_allclose(buf[int(round(height - py)), int(round(px)), :3], 0.85, atol=2 / 255)
    assert checked == 7


def test_surface3d_axes_span_the_grid() -> None:
    fig = figure_2d("surface3d", X, Y, Z, title="3d", levels=AUTO)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_xlim(), (X.min(), X.max()), atol=0.2)
    np.testing.assert_allclose(ax.get_ylim(), (Y.min(), Y.max()), atol=0.1)
    assert ax.get_zlim()[1] >= Z.max() - 1e-9
    assert ax.get_xlabel() == "alpha (x direction)" and ax.get_ylabel() == "beta (y direction)"


def test_plot_2d_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is z\.reshape\(15, 21\), not z\.T"):
        save_2d(X, Y, Z.T, tmp_path / "t", title="t", levels=AUTO)
    with pytest.raises(UserError, match="unknown 2D plot kind 'pie'"):
        save_2d(X, Y, Z, tmp_path / "t", title="t", kinds=("contour", "pie"), levels=AUTO)
    with pytest.raises(UserError, match="at least 2"):
        save_2d(X[:1], Y, Z[:, :1], tmp_path / "t", title="t", levels=AUTO)
    with pytest.raises(UserError, match="minimizer"):
        figure_2d("contour", X, Y, Z, title="t", minimizer=(0.0,), levels=AUTO)
    with pytest.raises(UserError, match="unknown plot.levels 'some'; allowed: auto, fixed"):
        LevelSpec("some", 0.1, 10.0, 0.5, 20)
    with pytest.raises(UserError, match="plot.num_levels=1 must be"):
        LevelSpec("auto", 0.1, 10.0, 0.5, 1)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------
# path, 1D, curves
# ----------------------------------------------------------------------------------------
def test_path_on_contour(tmp_path: Path) -> None:
    k = 12
    path = np.stack([np.linspace(1.8, 0.0, k), np.linspace(0.9, 0.0, k) ** 2], axis=1)
    path[5] = np.nan  # a missing projection is skipped
    labels = [f"ep{10 * e}" for e in range(k)]
    out = save(figure_path_on_contour(X, Y, Z, path, title="trajectory", xlabel="PC1: 87.3 %",
                                      ylabel="PC2: 5.1 %", labels=labels, levels=FIXED), tmp_path / "proj")
    assert [p.name for p in out] == ["proj.png", "proj.pdf"]
    assert_png_drawn(out[0])
    fig = figure_path_on_contour(X, Y, Z, path, title="trajectory", xlabel="PC1: 87.3 %",
                                 ylabel="PC2: 5.1 %", labels=labels, levels=AUTO)
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label() == "path"]
    keep = np.arange(k) != 5
    np.testing.assert_array_equal(line.get_xdata(), path[keep, 0])
    np.testing.assert_array_equal(line.get_ydata(), path[keep, 1])
    drawn = texts(fig)
    assert "ep0" in drawn and "ep110" in drawn and "ep50" not in drawn
    assert ax.get_xlabel() == "PC1: 87.3 %" and ax.get_ylabel() == "PC2: 5.1 %"
    with pytest.raises(UserError, match="path labels"):
        figure_path_on_contour(X, Y, Z, path, title="t", xlabel="a", ylabel="b", labels=["x"], levels=AUTO)
    with pytest.raises(UserError, match=r"shape \(k, 2\)"):
        figure_path_on_contour(X, Y, Z, path.T, title="t", xlabel="a", ylabel="b", levels=AUTO)


def one_d_metrics(xs: np.ndarray) -> dict[str, np.ndarray]:
    """Closed-form 1D curves with a hole of each kind."""
    m = {
        "train_loss": 3.0 * (xs - 0.2) ** 2 + 0.05,
        "test_loss": 3.0 * (xs - 0.2) ** 2 + 0.3,
        "train_acc": 100.0 - 20.0 * (xs - 0.2) ** 2,
        "test_acc": 90.0 - 20.0 * (xs - 0.2) ** 2,
    }
    m["test_loss"][5:8] = -1.0
    m["train_loss"][30] = np.inf
    m["train_acc"][10] = np.nan
    return m


def test_plot_1d(tmp_path: Path) -> None:
    xs = np.linspace(-0.5, 1.5, 41)
    m = one_d_metrics(xs)
    out = save(figure_1d(xs, m, title="interpolation"), tmp_path / "one")
    out += save(figure_1d(xs, m, title="interpolation", log=True, loss_max=5), tmp_path / "one_log")
    assert [p.name for p in out] == ["one.png", "one.pdf", "one_log.png", "one_log.pdf"]
    assert_png_drawn(out[0])
    assert_png_drawn(out[2])

    fig = figure_1d(xs, m, title="interpolation", loss_max=2.5)
    loss_ax, acc_ax = fig.axes
    lines = {ln.get_label(): ln for ln in loss_ax.lines + acc_ax.lines}
    test_loss = np.asarray(lines["Test loss"].get_ydata(), float)
    assert np.isnan(test_loss[5:8]).all()
    np.testing.assert_allclose(test_loss[8:], 3.0 * (xs[8:] - 0.2) ** 2 + 0.3)
    assert np.isnan(np.asarray(lines["Training loss"].get_ydata(), float)[30])
    assert lines["Test loss"].get_linestyle() == "--"
    assert lines["Training loss"].get_linestyle() == "-"
    assert loss_ax.get_ylim() == (0.0, 2.5)
    assert acc_ax.get_ylim() == (0.0, 100.0)
    log_fig = figure_1d(xs, m, title="log", log=True)
    assert log_fig.axes[0].get_yscale() == "log"
    no_acc = figure_1d(xs, m, title="loss only", acc=False)
    assert len(no_acc.axes) == 1


def test_plot_1d_edge_cases(tmp_path: Path) -> None:
    xs = np.linspace(0.0, 1.0, 5)
    blank = {"train_loss": np.full(5, -1.0), "train_acc": np.full(5, -1.0)}
    out = save(figure_1d(xs, blank, title="not yet"), tmp_path / "blank")
    assert_png_drawn(out[0])
    assert NO_POINTS_TEXT in texts(figure_1d(xs, blank, title="not yet"))
    with pytest.raises(UserError, match="unknown 1D metric 'train_err'"):
        figure_1d(xs, {"train_err": np.zeros(5)}, title="t")
    with pytest.raises(UserError, match=r"train_loss has shape \(4,\)"):
        figure_1d(xs, {"train_loss": np.zeros(4)}, title="t")
    with pytest.raises(UserError, match="loss_max must be positive"):
        figure_1d(xs, {"train_loss": np.ones(5)}, title="t", loss_max=-1)


def test_plot_curves(tmp_path: Path) -> None:
    t = np.linspace(0.0, 1.0, 21)
    bump = np.sin(np.pi * t)
    curves = {
        "bezier": {"train_loss": 0.1 + 0.05 * bump, "test_loss": 0.3 + 0.05 * bump,
                   "train_acc": 99.0 - 2.0 * bump, "test_acc": 92.0 - 3.0 * bump},
        "segment": {"train_loss": 0.1 + 2.0 * bump, "train_err": 1.0 + 40.0 * bump},
    }
    curves["segment"]["train_loss"][4] = -1.0
    out = save(figure_curves(t, curves, title="mode connectivity"), tmp_path / "connect")
    assert [p.name for p in out] == ["connect.png", "connect.pdf"]
    assert_png_drawn(out[0])

    fig = figure_curves(t, curves, title="mode connectivity")
    ax_loss, ax_err = fig.axes[:2]
    err = {ln.get_label(): np.asarray(ln.get_ydata(), float) for ln in ax_err.lines}
    np.testing.assert_allclose(err["bezier (train)"], 1.0 + 2.0 * bump, atol=1e-12)
    np.testing.assert_allclose(err["bezier (test)"], 8.0 + 3.0 * bump, atol=1e-12)
    np.testing.assert_allclose(err["segment (train)"], 1.0 + 40.0 * bump)
    loss = {ln.get_label(): np.asarray(ln.get_ydata(), float) for ln in ax_loss.lines}
    assert np.isnan(loss["segment (train)"][4])
    assert dict((ln.get_label(), ln.get_linestyle()) for ln in ax_loss.lines)["bezier (test)"] == "--"
    with pytest.raises(UserError, match="both train_acc and train_err"):
        figure_curves(t, {"c": {"train_acc": bump, "train_err": bump}}, title="t")
    with pytest.raises(UserError, match="unknown metric of curve 'c' 'loss'"):
        figure_curves(t, {"c": {"loss": bump}}, title="t")


# ----------------------------------------------------------------------------------------
# ParaView export
# ----------------------------------------------------------------------------------------
def test_vtp_points_values_and_polys(tmp_path: Path) -> None:
    out = export_vtp(X, Y, Z, tmp_path / "deep" / "surf.vtp")
    v = read_vtp(out)
    nx, ny = X.size, Y.size
    assert v["n_points"] == nx * ny == v["points"].shape[0]
    for i, j in [(0, 0), (20, 0), (0, 14), (7, 3), (20, 14)]:
        k = j * nx + i
        np.testing.assert_allclose(v["points"][k], [X[i], Y[j], X[i] ** 2 + 3 * Y[j] ** 2 + 0.1])
        assert v["zvalue"][k] == pytest.approx(X[i] ** 2 + 3 * Y[j] ** 2 + 0.1, rel=1e-15)
    assert v["n_polys"] == (nx - 1) * (ny - 1) == v["conn"].shape[0]
    np.testing.assert_array_equal(v["offsets"], 4 * np.arange(1, v["n_polys"] + 1))
    # Each quad spans one grid cell: two distinct x and two distinct neighbouring y values.
    corners = v["points"][v["conn"][37]]
    i0 = int(np.argmin(np.abs(X - corners[:, 0].min())))
    j0 = int(np.argmin(np.abs(Y - corners[:, 1].min())))
    np.testing.assert_allclose(np.sort(np.unique(corners[:, 0])), X[i0 : i0 + 2])
    np.testing.assert_allclose(np.sort(np.unique(corners[:, 1])), Y[j0 : j0 + 2])
    np.testing.assert_allclose(v["cell_avg"][37], Z[j0 : j0 + 2, i0 : i0 + 2].mean())
    assert v["valid"].min() == 1


def test_vtp_masked_points_drop_their_cells(tmp_path: Path) -> None:
    z = holey()
    v = read_vtp(export_vtp(X, Y, z, tmp_path / "holey.vtp", zmax=6.0))
    nx, ny = X.size, Y.size
    assert v["n_points"] == nx * ny
    bad = ~np.isfinite(z) | (z == -1)
    expected = set()
    for j in range(ny - 1):
        for i in range(nx - 1):
            if not (bad[j, i] or bad[j, i + 1] or bad[j + 1, i] or bad[j + 1, i + 1]):
                k = j * nx + i
                expected.add((k, k + 1, k + nx + 1, k + nx))
    got = {tuple(q) for q in v["conn"]}
    assert got == expected and len(got) == v["n_polys"]
    # 4 interior-ish bad points: (2,3) and (7,15) kill 4 cells each, (10,0) kills 2, (14,20) 1.
    assert len(expected) == (nx - 1) * (ny - 1) - 11
    np.testing.assert_array_equal(v["valid"].reshape(ny, nx), (~bad).astype(float))
    # Masked points sit at the clip ceiling; valid ones are clipped at zmax.
    zv = v["zvalue"].reshape(ny, nx)
    assert np.all(zv[bad] == 6.0)
    np.testing.assert_allclose(zv[~bad], np.minimum(Z[~bad], 6.0))


def test_vtp_log_zmax_and_scale(tmp_path: Path) -> None:
    nx = X.size
    v = read_vtp(export_vtp(X, Y, Z, tmp_path / "log.vtp", log=True, zmax=3.0, scale_z=2.0))
    expected = np.log(np.minimum(Z, 3.0) + 0.1)  # the original h52vtp.py transform
    np.testing.assert_allclose(v["zvalue"], expected.ravel(), rtol=1e-14)
    np.testing.assert_allclose(v["points"][:, 2], 2.0 * expected.ravel(), rtol=1e-14)
    k = 14 * nx + 17
    assert Z[14, 17] > 3.0 and v["zvalue"][k] == pytest.approx(np.log(3.1))
    plain_log = read_vtp(export_vtp(X, Y, Z, tmp_path / "plainlog.vtp", log=True))
    np.testing.assert_allclose(plain_log["zvalue"], np.log(Z + 0.1).ravel(), rtol=1e-14)
    # Without zmax, masked points take the largest valid value; no valid points: 0.
    z = holey()
    v2 = read_vtp(export_vtp(X, Y, z, tmp_path / "fill.vtp"))
    bad = (~np.isfinite(z) | (z == -1)).ravel()
    assert np.all(v2["zvalue"][bad] == Z.ravel()[~bad].max())
    v3 = read_vtp(export_vtp(X, Y, np.full(Z.shape, -1.0), tmp_path / "none.vtp"))
    assert v3["n_polys"] == 0 and v3["n_points"] == X.size * Y.size
    assert np.all(v3["zvalue"] == 0.0)
    with pytest.raises(UserError, match="expected"):
        export_vtp(X, Y, Z.T, tmp_path / "bad.vtp")
    with pytest.raises(UserError, match="scale_z"):
        export_vtp(X, Y, Z, tmp_path / "bad.vtp", scale_z=0.0)


# ----------------------------------------------------------------------------------------
# interactive HTML
# ----------------------------------------------------------------------------------------
def html_trace(html: str) -> dict:
    """The first trace, decoded from the JSON data array of the figure's ``Plotly.newPlot``
    call (the last one in the file: the embedded plotly.js library mentions it too)."""
    call = html.rindex("Plotly.newPlot(")
    traces, _ = json.JSONDecoder().raw_decode(html, html.index("[", call))
    return traces[0]


def test_surface_html(tmp_path: Path) -> None:
    z = holey()
    out = save_html(figure_surface_html(X, Y, z, title="interactive", zlabel="train loss"),
                    tmp_path / "html" / "surf.html", plotlyjs="inline")
    html = out.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<html") or "<!doctype html" in html[:200].lower()
    assert "plotly" in html and len(html) > 1_000_000  # plotly.js itself is embedded
    assert 'src="https://cdn' not in html
    assert '"type":"surface"' in html
    data = html_trace(html)
    np.testing.assert_allclose(data["x"], X)
    np.testing.assert_allclose(data["y"], Y)
    got = np.array([[np.nan if v is None else v for v in row] for row in data["z"]])
    assert got.shape == (Y.size, X.size)
    bad = ~np.isfinite(z) | (z == -1)
    assert np.all(np.isnan(got[bad]))
    np.testing.assert_allclose(got[~bad], Z[~bad], rtol=1e-15)
    assert "interactive" in html and "train loss" in html

    log_html = save_html(figure_surface_html(X, Y, Z, title="log", zlabel="train loss", log=True),
                         tmp_path / "log.html", plotlyjs="inline").read_text(encoding="utf-8")
    np.testing.assert_allclose(np.array(html_trace(log_html)["z"], float), np.log10(Z), rtol=1e-14)
    assert "log10(train loss)" in log_html


# ----------------------------------------------------------------------------------------
# every figure of a surface file
# ----------------------------------------------------------------------------------------
def test_render_surface_file_names_and_plot_settings(tmp_path: Path) -> None:
    from types import SimpleNamespace

    plot = SimpleNamespace(enabled=True, levels="auto", num_levels=20, vmin=0.1, vmax=10, vlevel=0.5, log=False,
                           loss_max=5, zmax=3.0, vtp_interp=0, html_plotlyjs="inline", overlay=())
    attrs = {"task": "surface2d", "model": "mlp", "dataset": "digits", "normalization": "filter"}
    two = {"x": X, "y": Y, "train_loss": holey(), "train_acc": 100 - Z, "attrs": attrs}
    names = [p.name for p in render_surface(two, tmp_path / "2d", plot, stem="s")]
    kinds = ("contour", "contourf", "heatmap", "3dsurface")
    assert names == [
        *(f"s_train_loss_{k}.{e}" for k in kinds for e in ("png", "pdf")),
        "s_train_loss_3d.html", "s_train_loss.vtp",
        *(f"s_train_acc_{k}.{e}" for k in kinds for e in ("png", "pdf")),
    ]
    # zmax comes from the plot settings: the VTP values are clipped there
    assert read_vtp(tmp_path / "2d" / "s_train_loss.vtp")["zvalue"].max() == 3.0
    xs = np.linspace(-0.5, 1.5, 41)
    one = {"x": xs, "y": None, **one_d_metrics(xs), "attrs": {**attrs, "task": "interp1d"}}
    out = render_surface(one, tmp_path / "1d", plot)
    assert [p.name for p in out] == ["surface_1d.png", "surface_1d.pdf"]
    assert_png_drawn(out[0])
