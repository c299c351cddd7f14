"""Surfaces made before the task layer was restructured resume after it.

``tests/data/pre_restructure`` holds files written by commit 29e2362 (its README has the commands):
a checkpoint, and a surface2d and a hessian_surface file each complete and half done (every other
point marked not computed, as a kill leaves it). Resuming the half-done file with today's code must
accept its fingerprint, keep the stored points bit for bit, compute only the others, and end with
the values the old code computed (to float32 rounding: the thread count changes the order of the
sums; the seeded Lanczos start vectors are the same).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import compose_cfg

from landscape_exp.app import run_job

DATA = Path(__file__).parent / "data" / "pre_restructure"
COMMON = ["model=mlp", "model.hidden=[16]", "plot.enabled=false"]
CASES = {
    "surface2d": (["task=surface2d", "x=-1:1:5", "y=-1:1:4", "eval.splits=[train,test]", "precision=fp32"],
                  ("train_loss", "train_acc", "test_loss", "test_acc"), 1e-6),
    "hessian_surface": (["task=hessian_surface", "x=-1:1:3", "y=-1:1:3", "hessian.num_samples=200"],
                        ("lambda_max", "lambda_min", "ratio", "train_loss"), 1e-6),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_surface_made_before_the_restructure_resumes(tmp_path: Path, task: str) -> None:
    overrides, metrics, rtol = CASES[task]
    ckpt = tmp_path / "mlp16_digits.pt"
    shutil.copy(DATA / "mlp16_digits.pt", ckpt)
    surf = tmp_path / f"{task}.h5"
    shutil.copy(DATA / f"{task}_partial.h5", surf)
    with h5py.File(surf, "r") as f:
        kept = f["done"][()].astype(bool)
        before = {m: f[m][()] for m in metrics}
    assert 0 < kept.sum() < kept.size

    cfg = compose_cfg(tmp_path, [*overrides, *COMMON, f"checkpoint={ckpt}", f"surf_file={surf}"])
    summary = run_job(cfg, output_dir=tmp_path / "run", job={})

    assert summary["points_computed"] == int((~kept).sum())  # only the missing points
    with h5py.File(surf, "r") as f, h5py.File(DATA / f"{task}_complete.h5", "r") as old:
        assert f["done"][()].all()
        assert sorted(f.keys()) == sorted(old.keys())
        assert sorted(f.attrs.keys()) == sorted(old.attrs.keys())
        for m in metrics:
            new = f[m][()]
            np.testing.assert_array_equal(new[kept], before[m][kept])  # untouched
            np.testing.assert_allclose(new, old[m][()], rtol=rtol, atol=1e-9)
