"""NaN and infinite losses far from the minimum: stored as such (and marked done), counted in
``summary.json`` and on stdout, masked in every figure (static, interactive, ParaView).

That a rerun does not take them for gaps is checked in-process by ``tests/test_surfaces.py``."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import h5py
import numpy as np

from conftest import run_cli

# Unnormalized random directions 1e12 times over: the logits overflow float32 away from the
# centre column (inf - inf = NaN in the softmax), while x = 0 is the checkpoint itself.
ARGS = ["task=surface2d", "normalization=none", "x=-1e12:1e12:5", "y=-1:1:3", "device=cpu", "logger=none",
        "progress=false"]


def test_nonfinite_losses_are_stored_counted_and_masked(tmp_path, lenet_ckpt):
    run = tmp_path / "run"
    args = ARGS + [f"checkpoint={lenet_ckpt}", f"hydra.run.dir={run}"]
    r = run_cli(args, tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    with h5py.File(run / "surface.h5", "r") as f:
        loss = f["train_loss"][()]
        acc = f["train_acc"][()]
        done = np.asarray(f["done"][()]).astype(bool)
    bad = ~np.isfinite(loss)
    n_bad = int(bad.sum())
    assert done.all(), "a non-finite point must count as computed"
    assert 0 < n_bad < loss.size and np.isfinite(loss[:, 2]).all()  # the centre column is finite
    assert not (loss[bad] == -1).any()  # stored as NaN/inf, not as the 'not computed' marker
    assert np.isfinite(acc).all()

    summary = json.loads((run / "summary.json").read_text())
    assert summary["points_done"] == loss.size
    assert summary["train_loss/nonfinite"] == n_bad and summary["train_loss/finite"] == loss.size - n_bad
    assert np.isfinite(summary["train_loss/min"])
    assert f"warning: {n_bad} points have a NaN or infinite training loss" in r.stdout

    # Static figures are written (their masking is unit-tested with the plotting module).
    for kind in ("contour", "contourf", "heatmap", "3dsurface"):
        png = run / f"surface_train_loss_{kind}.png"
        assert png.is_file() and png.stat().st_size > 1000, png
    # Interactive view: masked points are null (a gap), every other point is its value.
    html = (run / "surface_train_loss_3d.html").read_text()
    z = json.loads(re.search(r'"z":(\[\[.*?\]\])', html).group(1))
    assert [[v is None for v in row] for row in z] == bad.tolist()
    # ParaView export: the 'valid' point array marks exactly the finite points.
    root = ET.parse(run / "surface_train_loss.vtp").getroot()
    valid = next(a for a in root.iter("DataArray") if a.get("Name") == "valid")
    assert [int(v) for v in valid.text.split()] == (~bad).astype(int).ravel().tolist()
