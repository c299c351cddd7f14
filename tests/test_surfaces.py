"""Loss surfaces through the app (``run_job`` with a Hydra-composed config) against brute-force
evaluations of L(theta + a*delta + b*eta), the surface file read with plain h5py, resume after a
kill, NaN handling and refusal of bad inputs without losing results."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape_exp.app import run_job
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import save_checkpoint
from landscape_exp.models import build_model

from conftest import compose_cfg, mlp_cfg, run_cli

NO_PLOT = ["plot.enabled=false"]


def surface(root: Path, out: Path, overrides: list[str]) -> dict:
    return run_job(compose_cfg(root, overrides), output_dir=out, job={})


def brute_force(ckpt_path, dir_file, coeffs, dataset, split="train", kind="weights", dtype=torch.float64):
    """(mean cross-entropy, accuracy %) of the checkpoint moved by ``coeffs`` along the directions
    stored in ``dir_file``: a freshly loaded model, the file read with h5py, a Python loop over
    the tensors, and one plain-torch forward pass over the whole split."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    model = build_model(ckpt["model_cfg"])
    model.load_state_dict(ckpt["state_dict"])
    model = model.to(dtype).eval()
    tensors = list(model.parameters()) if kind == "weights" else list(model.state_dict().values())
    groups = ["xdirection", "ydirection"][: len(coeffs)]
    with h5py.File(dir_file, "r") as f, torch.no_grad():
        for i, t in enumerate(tensors):
            if not t.is_floating_point():
                continue
            new = t.clone()
            for g, c in zip(groups, coeffs):
                new = new + c * torch.from_numpy(f[g][str(i)][()]).to(dtype)
            t.copy_(new)
    data = dataset.split(split)
    mean = torch.tensor(dataset.mean, dtype=dtype).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, dtype=dtype).view(1, -1, 1, 1)
    x = (data.images.to(dtype) / 255.0 - mean) / std
    with torch.no_grad():
        logits = model(x)
    loss = float(F.cross_entropy(logits.double(), data.targets))
    acc = 100.0 * float((logits.argmax(1) == data.targets).double().mean())
    return loss, acc


def assert_point(ckpt, dir_file, coeffs, digits, got_loss, got_acc, split="train", kind="weights"):
    ref_loss, _ = brute_force(ckpt, dir_file, coeffs, digits, split, kind, torch.float64)
    _, ref_acc = brute_force(ckpt, dir_file, coeffs, digits, split, kind, torch.float32)
    assert abs(got_loss - ref_loss) / abs(ref_loss) < 1e-5, (coeffs, got_loss, ref_loss)
    assert got_acc == pytest.approx(ref_acc, abs=1e-9), (coeffs, got_acc, ref_acc)


def test_surface2d_equals_brute_force_and_file_layout(tmp_path, mlp_ckpts, digits):
    out = tmp_path / "run"
    s = surface(tmp_path, out, [f"checkpoint={mlp_ckpts[0]}", "x=-1:1:5", "y=-0.5:1:4", "eval.splits=[train,test]",
                                *NO_PLOT])
    path = out / "surface.h5"
    assert s["surface_file"] == str(path) and s["points"] == 20 and s["points_done"] == 20
    with h5py.File(path, "r") as f:
        for key in ("xcoordinates", "ycoordinates", "train_loss", "train_acc", "test_loss", "test_acc"):
            assert key in f
        xs, ys = f["xcoordinates"][()], f["ycoordinates"][()]
        z = {k: f[k][()] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
        assert np.asarray(f["done"][()]).all()
    np.testing.assert_array_equal(xs, np.linspace(-1, 1, 5))
    np.testing.assert_array_equal(ys, np.linspace(-0.5, 1, 4))
    assert all(v.shape == (4, 5) for v in z.values())
    dir_file = out / "directions.h5"
    rng = np.random.default_rng(0)
    for k in rng.choice(20, size=3, replace=False):
        j, i = divmod(int(k), 5)
        a, b = float(xs[i]), float(ys[j])
        for split in ("train", "test"):
            assert_point(mlp_ckpts[0], dir_file, (a, b), digits, float(z[f"{split}_loss"][j, i]),
                         float(z[f"{split}_acc"][j, i]), split)
    # The directions in the file: filter-normalized against the checkpoint, biases ignored.
    sd = torch.load(mlp_ckpts[0], weights_only=True)["state_dict"]
    with h5py.File(dir_file, "r") as f:
        dx = [torch.from_numpy(f["xdirection"][str(i)][()]) for i in range(len(sd))]
        dy = [torch.from_numpy(f["ydirection"][str(i)][()]) for i in range(len(sd))]
    for d, w in zip(dx, sd.values()):
        if w.dim() == 1:
            assert torch.count_nonzero(d) == 0
        else:
            torch.testing.assert_close(d.norm(dim=1), w.norm(dim=1), rtol=1e-5, atol=0)
    dot = sum(float((a.double() * b.double()).sum()) for a, b in zip(dx, dy))
    cos = dot / math.sqrt(sum(float((a.double() ** 2).sum()) for a in dx) * sum(float((b.double() ** 2).sum()) for b in dy))
    assert s["cosine_similarity"] == pytest.approx(cos, rel=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["points_done"] == 20


def test_surface1d_and_centre_is_the_checkpoint(tmp_path, mlp_ckpts, digits):
    out = tmp_path / "run"
    s = surface(tmp_path, out, ["task=surface1d", f"checkpoint={mlp_ckpts[1]}", "x=-1:1:5", *NO_PLOT])
    with h5py.File(out / "surface.h5", "r") as f:
        assert "ycoordinates" not in f
        xs, loss, acc = f["xcoordinates"][()], f["train_loss"][()], f["train_acc"][()]
    with h5py.File(out / "directions.h5", "r") as f:
        assert list(f.keys()) == ["xdirection"]
    assert loss.shape == (5,) and acc.shape == (5,)
    for i, a in enumerate(xs):
        assert_point(mlp_ckpts[1], out / "directions.h5", (float(a),), digits, float(loss[i]), float(acc[i]))
    ckpt_metrics = torch.load(mlp_ckpts[1], weights_only=True)["metrics"]
    assert loss[2] == pytest.approx(ckpt_metrics["train_loss"], rel=1e-6)
    assert acc[2] == pytest.approx(ckpt_metrics["train_acc"], abs=1e-9)
    assert s["train_loss/centre"] == pytest.approx(float(loss[2]), rel=0, abs=0)


def test_interp1d_endpoints_are_the_two_checkpoints(tmp_path, mlp_ckpts, digits):
    out = tmp_path / "run"
    surface(tmp_path, out, ["task=interp1d", f"checkpoint={mlp_ckpts[0]}", f"direction.model2={mlp_ckpts[1]}",
                            "x=0:1:3", *NO_PLOT])
    with h5py.File(out / "surface.h5", "r") as f:
        np.testing.assert_array_equal(f["xcoordinates"][()], [0.0, 0.5, 1.0])
        loss, acc = f["train_loss"][()], f["train_acc"][()]
    for i, ck in ((0, mlp_ckpts[0]), (2, mlp_ckpts[1])):
        m = torch.load(ck, weights_only=True)["metrics"]
        assert loss[i] == pytest.approx(m["train_loss"], rel=1e-5)
        assert acc[i] == pytest.approx(m["train_acc"], abs=1e-9)
    # all three points against (1-a) theta1 + a theta2 with the stored difference direction
    for i, a in enumerate((0.0, 0.5, 1.0)):
        assert_point(mlp_ckpts[0], out / "directions.h5", (a,), digits, float(loss[i]), float(acc[i]), kind="states")
    # the stored direction is exactly theta2 - theta1
    s0 = torch.load(mlp_ckpts[0], weights_only=True)["state_dict"]
    s1 = torch.load(mlp_ckpts[1], weights_only=True)["state_dict"]
    with h5py.File(out / "directions.h5", "r") as f:
        for i, k in enumerate(s0):
            assert torch.equal(torch.from_numpy(f["xdirection"][str(i)][()]), s1[k] - s0[k])


def test_plane_through_three_checkpoints(tmp_path, mlp_ckpts, digits):
    out = tmp_path / "run"
    surface(tmp_path, out, ["task=plane", f"checkpoint={mlp_ckpts[0]}", f"direction.model2={mlp_ckpts[1]}",
                            f"direction.model3={mlp_ckpts[2]}", "x=0:1:2", "y=0:1:2", *NO_PLOT])
    with h5py.File(out / "surface.h5", "r") as f:
        loss, acc = f["train_loss"][()], f["train_acc"][()]
    assert loss.shape == (2, 2)
    for (j, i), ck in (((0, 0), mlp_ckpts[0]), ((0, 1), mlp_ckpts[1]), ((1, 0), mlp_ckpts[2])):
        m = torch.load(ck, weights_only=True)["metrics"]
        assert loss[j, i] == pytest.approx(m["train_loss"], rel=1e-5), (j, i)
        assert acc[j, i] == pytest.approx(m["train_acc"], abs=1e-9), (j, i)
    assert_point(mlp_ckpts[0], out / "directions.h5", (1.0, 1.0), digits, float(loss[1, 1]), float(acc[1, 1]), kind="states")


def test_same_dir_gives_cosine_one_and_symmetric_surface(tmp_path, mlp_ckpts):
    out = tmp_path / "run"
    s = surface(tmp_path, out, [f"checkpoint={mlp_ckpts[0]}", "direction.same_dir=true", "x=-1:1:4", "y=-1:1:4", *NO_PLOT])
    assert s["cosine_similarity"] == pytest.approx(1.0, abs=1e-12)
    with h5py.File(out / "directions.h5", "r") as f:
        for name in f["xdirection"]:
            np.testing.assert_array_equal(f["xdirection"][name][()], f["ydirection"][name][()])
    with h5py.File(out / "surface.h5", "r") as f:
        z = f["train_loss"][()]
    np.testing.assert_allclose(z, z.T, rtol=1e-6)  # f(a, b) = L(theta + (a + b) d)


def test_resume_in_process_after_interruption(tmp_path, mlp_ckpts, monkeypatch):
    """Interrupted after 7 of 20 points, a rerun computes only the other 13 and ends with the
    same file as an uninterrupted run."""
    import landscape_exp.surface.measures as surface_mod

    over = [f"checkpoint={mlp_ckpts[0]}", "x=-1:1:5", "y=-1:1:4", *NO_PLOT]
    ref = surface(tmp_path, tmp_path / "ref", over)
    real = surface_mod.evaluate_sums
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(surface_mod, "evaluate_sums", flaky)
    with pytest.raises(KeyboardInterrupt):
        surface(tmp_path, tmp_path / "run", over)
    with h5py.File(tmp_path / "run" / "surface.h5", "r") as f:
        assert int(np.asarray(f["done"][()]).sum()) == 7
        assert int((f["train_loss"][()] == -1).sum()) == 13  # the original tool's marker for "not done"
    monkeypatch.setattr(surface_mod, "evaluate_sums", real)
    s = surface(tmp_path, tmp_path / "run", over)
    assert s["points_computed"] == 13 and ref["points_computed"] == 20
    with h5py.File(tmp_path / "ref" / "surface.h5", "r") as a, h5py.File(tmp_path / "run" / "surface.h5", "r") as b:
        for k in ("train_loss", "train_acc", "done"):
            np.testing.assert_array_equal(a[k][()], b[k][()])
    again = surface(tmp_path, tmp_path / "run", over)
    assert again["points_computed"] == 0


def test_file_from_another_config_is_refused_and_left_intact(tmp_path, mlp_ckpts):
    out = tmp_path / "run"
    over = [f"checkpoint={mlp_ckpts[0]}", "x=-1:1:3", "y=-1:1:3", *NO_PLOT]
    surface(tmp_path, out, over)
    before = {p: (out / p).read_bytes() for p in ("surface.h5", "directions.h5")}
    with pytest.raises(UserError) as e:
        surface(tmp_path, out, over + ["direction.xseed=7"])
    msg = str(e.value)
    assert "\n" not in msg and "different config" in msg and "directions_sha256" in msg
    assert (out / "surface.h5").read_bytes() == before["surface.h5"]
    # the direction file the surface refers to must survive too
    assert (out / "directions.h5").read_bytes() == before["directions.h5"], "directions.h5 was overwritten"


def test_nan_and_inf_are_stored_and_figures_render(tmp_path, mlp_ckpts):
    """Far out along a direction the logits overflow float32: the loss is NaN/inf there, stored
    as such and marked done; figures still render (non-finite values masked)."""
    out = tmp_path / "run"
    s = surface(tmp_path, out, [f"checkpoint={mlp_ckpts[0]}", "x=-1e20:1e20:3", "y=-1:1:3"])
    with h5py.File(out / "surface.h5", "r") as f:
        loss, done = f["train_loss"][()], np.asarray(f["done"][()]).astype(bool)
    assert done.all()
    assert not np.isfinite(loss[:, [0, 2]]).any()
    assert np.isfinite(loss[:, 1]).all()
    assert s["train_loss/nonfinite"] == 6 and s["train_loss/finite"] == 3
    pngs = [Path(p) for p in s["figures"] if p.endswith(".png")]
    assert pngs and all(p.is_file() and p.stat().st_size > 1000 for p in pngs)
    # A rerun sees every point as done (NaN is a result, not a gap).
    again = surface(tmp_path, out, [f"checkpoint={mlp_ckpts[0]}", "x=-1e20:1e20:3", "y=-1:1:3", *NO_PLOT])
    assert again["points_computed"] == 0


def _fixed_state(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".h5"}


@pytest.fixture
def finished_run(tmp_path, mlp_ckpts):
    out = tmp_path / "run"
    surface(tmp_path, out, [f"checkpoint={mlp_ckpts[0]}", "x=-1:1:3", "y=-1:1:3", *NO_PLOT])
    return out


def test_malformed_grid_refused_nothing_lost(tmp_path, mlp_ckpts, finished_run):
    before = _fixed_state(finished_run)
    with pytest.raises(UserError, match=r"x='1:-1:5'") as e:
        surface(tmp_path, finished_run, [f"checkpoint={mlp_ckpts[0]}", "x=1:-1:5", "y=-1:1:3", *NO_PLOT])
    assert "\n" not in str(e.value)
    assert _fixed_state(finished_run) == before


def test_direction_file_of_another_model_refused_nothing_lost(tmp_path, mlp_ckpts, lenet_ckpt, finished_run):
    other = tmp_path / "other"
    surface(tmp_path, other, [f"checkpoint={lenet_ckpt}", "x=-1:1:3", "y=-1:1:3", *NO_PLOT])
    before = _fixed_state(finished_run)
    with pytest.raises(UserError, match="model has") as e:
        surface(tmp_path, finished_run, [f"checkpoint={mlp_ckpts[0]}", f"direction.file={other / 'directions.h5'}",
                                         "x=-1:1:3", "y=-1:1:3", *NO_PLOT])
    assert "\n" not in str(e.value) and "directions.h5" in str(e.value)
    assert _fixed_state(finished_run) == before


def test_reused_direction_file_gives_the_same_surface(tmp_path, mlp_ckpts, finished_run):
    out = tmp_path / "reuse"
    surface(tmp_path, out, [f"checkpoint={mlp_ckpts[0]}", f"direction.file={finished_run / 'directions.h5'}",
                            "x=-1:1:3", "y=-1:1:3", *NO_PLOT])
    with h5py.File(out / "surface.h5", "r") as a, h5py.File(finished_run / "surface.h5", "r") as b:
        np.testing.assert_array_equal(a["train_loss"][()], b["train_loss"][()])


def test_model2_of_another_architecture_refused_nothing_lost(tmp_path, mlp_ckpts, lenet_ckpt, finished_run):
    before = _fixed_state(finished_run)
    with pytest.raises(UserError, match="same architecture") as e:
        surface(tmp_path, finished_run, ["task=interp1d", f"checkpoint={mlp_ckpts[0]}",
                                         f"direction.model2={lenet_ckpt}", "x=0:1:3", *NO_PLOT])
    assert "\n" not in str(e.value) and "'lenet'" in str(e.value)
    assert _fixed_state(finished_run) == before


def test_checkpoint_for_other_inputs_and_unknown_task(tmp_path):
    torch.manual_seed(0)
    cfg3 = mlp_cfg((16,), channels=3)
    rgb = save_checkpoint(tmp_path / "rgb.pt", {"state_dict": build_model(cfg3).state_dict(), "model_cfg": cfg3})
    with pytest.raises(UserError, match=r"'mlp' does not accept 'digits' images of shape 1x8x8"):
        surface(tmp_path, tmp_path / "run", [f"checkpoint={rgb}", "x=-1:1:3", "y=-1:1:3", *NO_PLOT])
    with pytest.raises(UserError, match=r"unknown task 'nope'; allowed: .*surface2d"):
        surface(tmp_path, tmp_path / "run", ["task.name=nope"])


def test_equal_seeds_without_same_dir_refused(tmp_path, mlp_ckpts):
    with pytest.raises(UserError, match="direction.same_dir=true"):
        surface(tmp_path, tmp_path / "run", [f"checkpoint={mlp_ckpts[0]}", "direction.yseed=1", "x=-1:1:3", "y=-1:1:3",
                                             *NO_PLOT])


def test_one_dimensional_task_refuses_y(tmp_path, mlp_ckpts):
    with pytest.raises(UserError, match="one-dimensional"):
        surface(tmp_path, tmp_path / "run", ["task=surface1d", f"checkpoint={mlp_ckpts[0]}", "x=-1:1:3", "y=-1:1:3"])


def _progress(out: Path) -> int:
    """Points done so far: those in the HDF5 file plus those only in the journal."""
    n = 0
    try:
        with h5py.File(out / "surface.h5", "r") as f:
            n += int(f.attrs["num_done"])
    except (OSError, KeyError):
        pass
    j = out / "surface.h5.journal"
    if j.exists():
        n += j.read_bytes().count(b"\n")
    return n


@pytest.mark.slow
def test_kill_and_resume_subprocess(tmp_path, lenet_ckpt):
    """SIGKILL a 21x21 surface part way; the rerun in the same run dir picks up the points
    already done and ends with the same file as an uninterrupted run."""
    # A quarter of the training split (the paper's data_split/split_idx) keeps the three runs short.
    args = ["task=surface2d", f"checkpoint={lenet_ckpt}", "x=-1:1:21", "y=-1:1:21", "eval.data_split=4",
            "eval.split_idx=1", "logger=none", "progress=false", "plot.enabled=false"]
    run_a, run_ref = tmp_path / "a", tmp_path / "ref"
    proc = run_cli(args + [f"hydra.run.dir={run_a}"], tmp_path, popen=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and _progress(run_a) < 40:
            time.sleep(0.02)
        assert proc.poll() is None, "the surface finished before it could be killed: " + proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_at = _progress(run_a)
    assert 40 <= killed_at < 441
    second = run_cli(args + [f"hydra.run.dir={run_a}"], tmp_path, popen=True)
    # The uninterrupted reference, in this process (one thread, as the subprocesses) meanwhile.
    surface(tmp_path, run_ref, [a for a in args if not a.startswith(("logger=", "progress="))])
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    import re

    m = re.search(r"441 points \((\d+) already done, (\d+) to compute\)", out)
    assert m, out
    already, todo = int(m.group(1)), int(m.group(2))
    assert 0 < already <= killed_at and already + todo == 441
    with h5py.File(run_a / "surface.h5", "r") as a, h5py.File(run_ref / "surface.h5", "r") as b:
        assert np.asarray(a["done"][()]).all()
        for k in ("train_loss", "train_acc", "xcoordinates", "ycoordinates"):
            np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)
