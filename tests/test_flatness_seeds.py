"""Several random directions at once (direction.seeds): each seed's surface equals a run with that
xseed alone, and the combined file's mean, spread and measures equal numpy on those files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from landscape_exp.app import run_job
from landscape_exp.errors import UserError
from landscape_exp.measures.surface_shape import loss_rise_at_radii

from conftest import compose_cfg


def test_surface1d_over_three_seeds(tmp_path, mlp_ckpts):
    common = ["task=surface1d", f"checkpoint={mlp_ckpts[0]}", "x=-1:1:5", "sharpness.radii=[0.5,1.0]",
              "sharpness.flatness.gaussian=true"]
    out = tmp_path / "seeds"
    s = run_job(compose_cfg(tmp_path, [*common, "direction.seeds=[1,2,3]"]), output_dir=out, job={})
    run_job(compose_cfg(tmp_path, [*common, "direction.xseed=2", "plot.enabled=false"]),
            output_dir=tmp_path / "alone", job={})
    curves = []
    for k in (1, 2, 3):
        with h5py.File(out / f"seed{k}" / "surface.h5", "r") as f:
            curves.append(f["train_loss"][()])
            x = f["xcoordinates"][()]
    with h5py.File(tmp_path / "alone" / "surface.h5", "r") as f:
        np.testing.assert_array_equal(curves[1], f["train_loss"][()])  # seed 2 is the xseed=2 surface
    stack = np.stack(curves)
    assert not np.allclose(stack[0], stack[1])  # different directions, different curves
    with h5py.File(out / "surface_seeds.h5", "r") as f:
        np.testing.assert_array_equal(f["seeds"][()], [1, 2, 3])
        np.testing.assert_array_equal(f["train_loss"][()], stack)
        np.testing.assert_allclose(f["train_loss_mean"][()], stack.mean(0), rtol=1e-12)
        np.testing.assert_allclose(f["train_loss_std"][()], stack.std(0, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(f["train_loss_max"][()], stack.max(0))
        stored = json.loads(f.attrs["measures"])
    m = s["measures"]
    assert m["surface_seed_spread"]["value"] == pytest.approx(stack.std(0, ddof=1).mean(), rel=1e-12)
    rises = [loss_rise_at_radii(x, c, [1.0])[1.0] for c in curves]
    r = m["seeds_rise_r1"]
    assert r["value"] == pytest.approx(np.mean(rises), rel=1e-9) and r["ci_low"] < r["value"] < r["ci_high"]
    assert "gaussian_sharpness" in m  # the model's flatness, computed once (first seed)
    assert stored["surface_seed_spread"] == pytest.approx(m["surface_seed_spread"])
    assert s["seeds"] == [1, 2, 3] and (out / "surface_seeds_1d.png").is_file()
    assert "sharpness/epsilon" in s  # the first seed's model-based sharpness rides along
    # a rerun resumes every seed (nothing recomputed) and gives the same combination
    again = run_job(compose_cfg(tmp_path, [*common, "direction.seeds=[1,2,3]", "plot.enabled=false"]), output_dir=out, job={})
    assert again["measures"]["surface_seed_spread"] == m["surface_seed_spread"]


def test_seeds_refusals(tmp_path):
    with pytest.raises(UserError, match="direction.seeds=\\[1\\] must be null or a list of 2 or more distinct integers"):
        run_job(compose_cfg(tmp_path, ["task=surface1d", "direction.seeds=[1]"]), output_dir=tmp_path / "a", job={})
    with pytest.raises(UserError, match="direction.seeds is for task=surface1d"):
        run_job(compose_cfg(tmp_path, ["task=surface2d", "direction.seeds=[1,2]"]), output_dir=tmp_path / "b", job={})
    with pytest.raises(UserError, match="direction.seeds computes one whole surface per seed.*drop shard.count"):
        run_job(compose_cfg(tmp_path, ["task=surface1d", "direction.seeds=[1,2]", "shard.count=2"]),
                output_dir=tmp_path / "c", job={})
