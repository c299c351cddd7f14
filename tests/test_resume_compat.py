"""Surfaces made before the task layer was restructured resume after it.

``tests/data/pre_restructure/pre_restructure.json`` holds, as text, the contents of files written
by commit 29e2362 (its README has the commands): a checkpoint, and a surface2d and a
hessian_surface file each complete and half done (every other point marked not computed, as a kill
leaves it). :func:`write_old_files` writes them back with the same datasets, dtypes and attributes.
Resuming the half-done file with today's code must accept its fingerprint, keep the stored points
bit for bit, compute only the others, and end with the values the old code computed (to float32
rounding: the thread count changes the order of the sums; the seeded Lanczos start vectors are the
same).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from landscape_exp.app import run_job

from conftest import compose_cfg

DATA = Path(__file__).parent / "data" / "pre_restructure" / "pre_restructure.json"


def write_old_files(dest: Path) -> None:
    """``mlp16_digits.pt`` and ``<task>_{complete,partial}.h5`` into ``dest``, as the old version
    wrote them. ``torch.save`` does not give the old checkpoint's bytes back (its archive carries
    the old temporary file's name), so the surfaces' stored ``checkpoint_sha256`` is replaced by the
    rewritten checkpoint's: the one value that depends on serialization, not on the old code."""
    spec = json.loads(DATA.read_text())
    ck = dict(spec["checkpoint"])
    old_sha = ck.pop("sha256")
    ck["state_dict"] = {k: torch.tensor(t["values"], dtype=getattr(torch, t["dtype"])).reshape(t["shape"])
                        for k, t in ck["state_dict"].items()}
    ckpt = dest / "mlp16_digits.pt"
    torch.save(ck, ckpt)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    for name, f in spec["files"].items():
        with h5py.File(dest / name, "w") as h5:
            for k, d in f["datasets"].items():
                if "string" in d:
                    h5.create_dataset(k, data=d["string"], dtype=h5py.string_dtype())
                else:
                    h5.create_dataset(k, data=np.array(d["values"], dtype=d["dtype"]).reshape(d["shape"]))
            for k, a in f["attrs"].items():
                h5.attrs[k] = _attr(a, old_sha, sha)


def _attr(a: dict[str, Any], old_sha: str, sha: str) -> Any:
    if "str" in a:
        return a["str"].replace(old_sha, sha)
    return np.int64(a["int"]) if "int" in a else np.float64(a["float"])
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
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    write_old_files(old_dir)
    ckpt = old_dir / "mlp16_digits.pt"
    surf = old_dir / f"{task}_partial.h5"
    with h5py.File(surf, "r") as f:
        kept = f["done"][()].astype(bool)
        before = {m: f[m][()] for m in metrics}
    assert 0 < kept.sum() < kept.size

    cfg = compose_cfg(tmp_path, [*overrides, *COMMON, f"checkpoint={ckpt}", f"surf_file={surf}"])
    summary = run_job(cfg, output_dir=tmp_path / "run", job={})

    assert summary["points_computed"] == int((~kept).sum())  # only the missing points
    with h5py.File(surf, "r") as f, h5py.File(old_dir / f"{task}_complete.h5", "r") as old:
        assert f["done"][()].all()
        assert sorted(f.keys()) == sorted(old.keys())
        assert sorted(f.attrs.keys()) == sorted(old.attrs.keys())
        for m in metrics:
            new = f[m][()]
            np.testing.assert_array_equal(new[kept], before[m][kept])  # untouched
            np.testing.assert_allclose(new, old[m][()], rtol=rtol, atol=1e-9)
