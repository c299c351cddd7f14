"""Connectivity measures of a path (landscape_exp.measures.paths) against brute force and closed forms,
and through task=interp1d / task=connect into summary.json, the HDF5 files and the figures."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from landscape_exp.app import run_job
from landscape_exp.errors import UserError
from landscape_exp.measures.paths import barrier, curve_stats, mode_connectivity, path_measures

from conftest import compose_cfg

T = np.linspace(-0.5, 1.5, 401)  # interp1d's default grid: the models at t = 0 and 1


def brute_barrier(t, v):
    """Loop over the samples between the models; the line through the two end samples."""
    i0, i1 = int(np.argmin(abs(t - 0.0))), int(np.argmin(abs(t - 1.0)))
    best, where = -math.inf, None
    for i in range(i0, i1 + 1):
        line = v[i0] + (t[i] - t[i0]) / (t[i1] - t[i0]) * (v[i1] - v[i0])
        if v[i] - line > best:
            best, where = v[i] - line, t[i]
    return best, where


def test_barrier_of_a_known_path_equals_brute_force_and_closed_form():
    v = 1.0 + 2.0 * T + 3.0 * np.sin(np.pi * T)  # the line 1 + 2t plus a bump of 3 at t = 1/2
    h, loc = barrier(T, v)
    bh, bloc = brute_barrier(T, v)
    assert h == pytest.approx(bh, abs=1e-12) and loc == bloc
    assert h == pytest.approx(3.0, abs=1e-9) and loc == pytest.approx(0.5, abs=1e-9)
    # Outside [0, 1] the path rises further (v(1.5) = 1 + 3 - 3 = 1, v(-0.5) = -3): never counted.
    skew = v + 10.0 * np.clip(T - 1.0, 0, None)
    assert barrier(T, skew) == (h, loc)
    # A convex path lies below the line: the barrier is 0, at an end.
    assert barrier(T, (T - 0.5) ** 2)[0] == pytest.approx(0.0, abs=1e-12)
    # on [t0, t1] other than [0, 1] (a curve evaluated from 0 to 1 is the same call with defaults)
    t = np.linspace(0, 1, 21)
    assert barrier(t, np.sin(np.pi * t), 0.0, 1.0)[0] == pytest.approx(1.0)


def test_mode_connectivity_is_signed_as_yang_et_al():
    t = np.linspace(0, 1, 41)
    assert mode_connectivity(t, 1.0 + 2.0 * np.sin(np.pi * t)) == pytest.approx((-2.0, 0.5))  # a barrier: negative
    assert mode_connectivity(t, 1.0 - 0.5 * np.sin(np.pi * t)) == pytest.approx((0.5, 0.5))  # a dip: positive
    # The largest deviation from the ends' mean decides, with its sign: a dip of 0.3 and a bump of 0.8.
    v = 1.0 - 0.3 * np.exp(-((t - 0.25) / 0.05) ** 2) + 0.8 * np.exp(-((t - 0.75) / 0.05) ** 2)
    mc, where = mode_connectivity(t, v)
    assert mc == pytest.approx(-0.8, abs=1e-6) and where == pytest.approx(0.75)


def test_curve_statistics_closed_forms():
    v = T**2
    st = curve_stats(T, v)
    inside = T[(T >= 0) & (T <= 1 + 1e-12)]
    assert st["max"] == pytest.approx(1.0) and st["mean"] == pytest.approx(np.mean(inside**2))
    h = 0.005
    assert st["integral"] == pytest.approx(1 / 3 + h**2 / 6, abs=1e-12)  # trapezoid rule on t^2: exact error h^2/6
    assert curve_stats(np.linspace(0, 1, 3), np.array([0.0, 2.0, 0.0]))["integral"] == pytest.approx(1.0)


def test_measures_names_errors_and_refusals():
    t = np.linspace(0, 1, 5)
    m = path_measures(t, {"train_loss": [0.1, 0.5, 0.9, 0.5, 0.1], "train_acc": [100, 80, 50, 80, 100]}, prefix="")
    assert m["barrier_train_loss"].to_json() == {"value": pytest.approx(0.8), "ci_low": None, "ci_high": None,
                                                 "higher_is_sharper": True}
    assert m["barrier_train_error"].value == pytest.approx(50.0)  # error in percent, from the accuracy
    assert m["mc_train_error"].value == pytest.approx(-50.0) and m["mc_train_loss"].higher_is_sharper is False
    assert m["barrier_location_train_loss"].value == 0.5 and m["curve_integral_train_loss"].value == pytest.approx(0.5)
    assert set(m) == {f"{k}_{q}" for q in ("train_loss", "train_error")
                      for k in ("barrier", "barrier_location", "mc", "curve_max", "curve_mean", "curve_integral")}
    with pytest.raises(UserError, match="not sampled at both models"):
        barrier(np.linspace(0.1, 2, 5), np.zeros(5))
    assert all(math.isnan(x) for x in barrier(t, [0, np.nan, 0, 0, 0]))


def test_interp1d_measures_in_summary_file_and_figure(tmp_path, mlp_ckpts):
    out = tmp_path / "run"
    s = run_job(compose_cfg(tmp_path, [
        "task=interp1d", f"checkpoint={mlp_ckpts[0]}", f"direction.model2={mlp_ckpts[1]}", "x=-0.5:1.5:9",
        "eval.splits=[train,test]", "sharpness.model=false", "sharpness.flatness.gaussian=true"]), output_dir=out, job={})
    with h5py.File(out / "surface.h5", "r") as f:
        x, loss, acc = f["xcoordinates"][()], f["train_loss"][()], f["test_acc"][()]
        stored = json.loads(f.attrs["measures"])
    m = s["measures"]
    bh, bloc = brute_barrier(x, loss)
    assert m["barrier_train_loss"]["value"] == pytest.approx(bh, rel=1e-12) and bh > 0.05
    assert m["barrier_location_train_loss"]["value"] == bloc
    assert m["barrier_test_error"]["value"] == pytest.approx(brute_barrier(x, 100 - acc)[0])
    assert stored == json.loads(json.dumps(m))
    from landscape_exp.measures.record import measures_json
    from landscape_exp.surface.store import read_measures, read_surface

    assert measures_json(read_measures(read_surface(out / "surface.h5"))) == stored
    # flatness of the first model rides along
    g = m["gaussian_sharpness"]
    assert g["ci_low"] <= g["value"] <= g["ci_high"] and g["higher_is_sharper"] is True
    assert (out / "surface_1d.png").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["measures"]["mc_train_loss"] == pytest.approx(m["mc_train_loss"])


def test_connect_measures_in_summary_and_curve_file(tmp_path, mlp_ckpts):
    out = tmp_path / "connect"
    s = run_job(compose_cfg(tmp_path, [
        "task=connect", f"checkpoint={mlp_ckpts[0]}", f"connect.model2={mlp_ckpts[1]}", "connect.epochs=1",
        "connect.num_points=5"]), output_dir=out, job={})
    with h5py.File(out / "curve.h5", "r") as f:
        t = f["t"][()]
        curve, seg = f["bezier"]["train_loss"][()], f["segment"]["train_loss"][()]
        stored = json.loads(f.attrs["measures"])
    m = s["measures"]
    assert m["barrier_train_loss"]["value"] == pytest.approx(brute_barrier(t, curve)[0])
    assert m["segment_barrier_train_loss"]["value"] == pytest.approx(brute_barrier(t, seg)[0])
    mid = 0.5 * (curve[0] + curve[-1])
    k = int(np.argmax(abs(curve - mid)))
    assert m["mc_train_loss"]["value"] == pytest.approx(mid - curve[k])
    assert m["curve_max_test_error"]["value"] >= m["curve_mean_test_error"]["value"]
    assert stored["curve_integral_train_loss"]["value"] == pytest.approx(np.trapezoid(curve, t))


def test_figures_mark_the_barrier():
    from landscape_exp.figures import figure_1d, figure_curves
    from landscape_exp.measures.paths import barrier_annotation

    v = 0.1 + 3.0 * np.sin(np.pi * np.clip(T, 0, 1))
    b = barrier_annotation(T, v)
    assert b == {"t0": 0.0, "t1": 1.0, "v0": pytest.approx(0.1), "v1": pytest.approx(0.1),
                 "height": pytest.approx(3.0), "location": pytest.approx(0.5)}
    fig = figure_1d(T, {"train_loss": v}, title="t", barrier=b)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "3" in texts  # the height next to the arrow
    assert any("barrier 3 at t=0.5" in t.get_text() for t in fig.legends[0].get_texts())
    t = np.linspace(0, 1, 11)
    fig = figure_curves(t, {"bezier": {"train_loss": np.sin(np.pi * t)}}, title="c",
                        barriers={"bezier": barrier_annotation(t, np.sin(np.pi * t))})
    assert any("bezier: barrier 1 at t=0.5" in x.get_text() for x in fig.legends[0].get_texts())
    assert barrier_annotation(np.linspace(0.2, 1, 5), np.zeros(5)) is None  # no model at t = 0: nothing to mark
