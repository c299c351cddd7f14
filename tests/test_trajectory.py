"""PCA trajectories (Li et al. 2018, section 7): the math against numpy / scikit-learn, the
random-walk caveat (Antognini & Sohl-Dickstein 2018), and task=trajectory end to end."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from landscape_exp.app import run_job
from landscape_exp.data.datasets import load_dataset
from landscape_exp.data.device import DeviceData
from landscape_exp.engine.evaluation import evaluate
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import load_checkpoint
from landscape_exp.models.loading import load_model
from landscape_exp.training.runs import list_epoch_checkpoints
from landscape_exp.weights import pca as T
from landscape_exp.weights.params import flatten, tensor_mask, unflatten

CONF = Path(__file__).resolve().parents[1] / "conf"
SHAPES = [(6, 5), (6,), (3, 2, 2), (4, 6), (4,)]  # weights, bias, conv-like, weights, bias


def _tensors(gen: torch.Generator, scale: float = 1.0) -> list[torch.Tensor]:
    return [scale * torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]


def test_flatten_unflatten_and_biasbn_mask():
    gen = torch.Generator().manual_seed(0)
    ts = _tensors(gen) + [torch.tensor([3, 4])]  # an integer buffer never enters
    mask = tensor_mask(ts, "biasbn")
    assert mask == [True, False, True, True, False, False]
    assert tensor_mask(ts, None) == [True, True, True, True, True, False]
    v = flatten(ts, mask)
    expected = np.concatenate([ts[0].numpy().ravel(), ts[2].numpy().ravel(), ts[3].numpy().ravel()])
    np.testing.assert_array_equal(v.numpy(), expected)
    back = unflatten(v, ts, mask)
    for t, b, m in zip(ts, back, mask):
        assert b.shape == t.shape and b.dtype == t.dtype
        assert torch.equal(b, t) if m else not b.any()
    with pytest.raises(UserError, match="ignore"):
        tensor_mask(ts, "bn")
    with pytest.raises(UserError, match="elements"):
        unflatten(v[:-1], ts, mask)


def test_trajectory_matrix_equals_loops():
    gen = torch.Generator().manual_seed(1)
    final = _tensors(gen)
    thetas = [_tensors(gen) for _ in range(4)]
    mask = tensor_mask(final, "biasbn")
    m = T.trajectory_matrix(thetas, final, mask).numpy()
    for i, th in enumerate(thetas):
        row = []
        for a, b, keep in zip(th, final, mask):
            if keep:
                row += [float(x) - float(y) for x, y in zip(a.numpy().ravel(), b.numpy().ravel())]
        np.testing.assert_allclose(m[i], row, rtol=0, atol=1e-15)


def _synthetic_path(n: int = 40, noise: float = 1e-3, seed: int = 0):
    """theta_i = final + c1_i u1 + c2_i u2 + noise with known orthonormal u1, u2 (zero on the
    1-D tensors, which biasbn leaves out) and centred, uncorrelated c1, c2."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    final = _tensors(gen)
    mask = tensor_mask(final, "biasbn")
    d = int(sum(t.numel() for t, k in zip(final, mask) if k))
    u, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    u1, u2 = u[:, 0], u[:, 1]
    s = np.linspace(0, 1, n)
    c1 = 10.0 * np.exp(-3 * s)  # a decaying approach to the minimum
    c2 = np.sin(3 * np.pi * s)
    basis = np.stack([np.ones(n), c1], axis=1)  # make c2 centred and orthogonal to c1
    c2 = c2 - basis @ np.linalg.lstsq(basis, c2, rcond=None)[0]
    c2 = 1.5 * c2 / np.linalg.norm(c2) * math.sqrt(n)
    thetas = []
    for i in range(n):
        delta = c1[i] * u1 + c2[i] * u2 + noise * rng.standard_normal(d)
        full = unflatten(torch.from_numpy(delta), final, mask)
        # the ignored tensors wander too: they must not influence the PCA
        thetas.append([f + (x if k else 0.3 * torch.randn(f.shape, generator=gen, dtype=f.dtype))
                       for f, x, k in zip(final, full, mask)])
    return thetas, final, mask, u1, u2, c1, c2


def test_pca_recovers_known_axes_and_matches_svd_and_sklearn():
    thetas, final, mask, u1, u2, c1, c2 = _synthetic_path()
    matrix = T.trajectory_matrix(thetas, final, mask)
    res = T.pca(matrix, 2)
    comps = res.components.numpy()
    assert abs(comps[0] @ u1) > 0.99 and abs(comps[1] @ u2) > 0.99
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-12)

    # Independent reference: numpy's SVD of the centred matrix.
    x = matrix.numpy()
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    ratio = s**2 / np.sum(s**2)
    np.testing.assert_allclose(res.explained_variance_ratio.numpy(), ratio[:2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.explained_variance_ratio.numpy(), ratio[:2], rtol=1e-9)
    np.testing.assert_allclose(res.singular_values.numpy(), s[:2], rtol=1e-9)
    np.testing.assert_allclose(res.explained_variance.numpy(), s[:2] ** 2 / (len(x) - 1), rtol=1e-9)
    for j in range(2):
        np.testing.assert_allclose(np.abs(comps[j]), np.abs(vt[j]), atol=1e-8)
        assert np.argmax(np.abs(comps[j])) == np.argmax(np.abs(vt[j])) and comps[j][np.argmax(np.abs(comps[j]))] > 0
    # The known ratios: variances of c1 and c2 over the total (up to the noise).
    total = np.var(c1) + np.var(c2)
    np.testing.assert_allclose(res.explained_variance_ratio.numpy(), [np.var(c1) / total, np.var(c2) / total], rtol=1e-3)

    # And scikit-learn's PCA, which the original plot_trajectory.py used.
    from sklearn.decomposition import PCA

    sk = PCA(n_components=2, svd_solver="full").fit(x)
    np.testing.assert_allclose(res.explained_variance_ratio.numpy(), sk.explained_variance_ratio_, rtol=1e-9)
    np.testing.assert_allclose(res.explained_variance.numpy(), sk.explained_variance_, rtol=1e-9)
    for j in range(2):
        np.testing.assert_allclose(abs(comps[j] @ sk.components_[j]), 1.0, atol=1e-10)

    # Small column blocks (as used for models with millions of weights) give the same result.
    old = T._BLOCK_ELEMENTS
    try:
        T._BLOCK_ELEMENTS = 7 * matrix.shape[0]
        res2 = T.pca(matrix, 2)
    finally:
        T._BLOCK_ELEMENTS = old
    np.testing.assert_allclose(res2.components.numpy(), comps, atol=1e-12)
    np.testing.assert_allclose(res2.explained_variance_ratio.numpy(), res.explained_variance_ratio.numpy(), rtol=1e-12)
    assert T.pca_directions(matrix, 2)[1].tolist() == res.explained_variance_ratio.tolist()


def test_projection_equals_dot_products_and_lstsq():
    thetas, final, mask, u1, u2, c1, c2 = _synthetic_path(n=12)
    matrix = T.trajectory_matrix(thetas, final, mask)
    res = T.pca(matrix, 2)
    dirs = [unflatten(res.components[j], final, mask) for j in range(2)]
    coords = T.project(thetas, final, dirs, mask).numpy()
    x = matrix.numpy()
    np.testing.assert_allclose(coords, x @ res.components.numpy().T, atol=1e-12)
    # theta_i - final is (almost) c1_i u1 + c2_i u2: the coordinates recover c up to the sign.
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(c1), atol=1e-2)
    np.testing.assert_allclose(np.abs(coords[:, 1]), np.abs(c2), atol=1e-2)
    # Non-orthogonal directions: least squares, as numpy's lstsq.
    gen = torch.Generator().manual_seed(5)
    a = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in final]
    b = [p + 0.5 * q for p, q in zip(a, [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in final])]
    got = T.project(thetas, final, [a, b]).numpy()  # no mask: every float tensor
    amat = np.stack([flatten(a).numpy(), flatten(b).numpy()], axis=1)
    rows = T.trajectory_matrix(thetas, final).numpy()
    ref = np.stack([np.linalg.lstsq(amat, r, rcond=None)[0] for r in rows])
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    with pytest.raises(UserError, match="linearly dependent"):
        T.project(thetas, final, [a, [2 * t for t in a]])


def test_path_lengths():
    rows = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [3.0, 4.0, 12.0]])
    assert T.path_length(rows) == pytest.approx(17.0)
    assert T.polyline_length(rows[:, :2]) == pytest.approx(5.0)


def test_random_walk_looks_low_dimensional():
    """Antognini & Sohl-Dickstein (2018): the k-th component of a high-dimensional random walk
    explains about 6 / (pi^2 k^2) of its variance -- 61 % and 15 % for the first two."""
    gen = torch.Generator().manual_seed(0)
    walk = torch.cumsum(torch.randn(120, 6000, generator=gen, dtype=torch.float64), dim=0)
    ratios = T.pca(walk - walk[-1], 2).explained_variance_ratio.numpy()
    np.testing.assert_allclose(ratios, T.RANDOM_WALK_RATIOS[:2], atol=0.03)
    assert T.RANDOM_WALK_RATIOS[0] == pytest.approx(0.6079, abs=1e-4)


def test_pca_rejects_degenerate_paths():
    with pytest.raises(UserError, match="at least 3 checkpoints"):
        T.pca(torch.randn(2, 10), 2)
    with pytest.raises(UserError, match="identical"):
        T.pca(torch.ones(5, 10), 2)
    line = torch.arange(5.0, dtype=torch.float64)[:, None] * torch.randn(1, 10, dtype=torch.float64)
    with pytest.raises(UserError, match="spans only 1"):
        T.pca(line, 2)


# ---------------------------------------------------------------------------------------------
# task=trajectory


@pytest.fixture(scope="module")
def traj_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("traj")

    def go(out: str, *overrides: str) -> dict:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[
                "task=trajectory", "model=mlp", "model.hidden=[16]", "dataset=digits", "optim.epochs=4",
                f"paths.root={root}", "logger=none", "progress=false", "task.num=5", *overrides])
        return cfg, run_job(cfg, output_dir=root / out)

    return root, go


def test_trajectory_task_end_to_end(traj_run):
    root, go = traj_run
    cfg, summary = go("run1")
    out = root / "run1"
    ckpt_dir = next((root / ".cache" / "train").iterdir()) / "checkpoints"
    files = list_epoch_checkpoints(ckpt_dir)
    assert [p.name for p in files] == [f"epoch_{e:03d}.pt" for e in range(5)]
    assert summary["num_checkpoints"] == 5 and summary["epochs"] == [0, 1, 2, 3, 4]

    # Independent recomputation from the checkpoint files: weights only (biases ignored).
    sds = [load_checkpoint(p)["state_dict"] for p in files]
    keys = [k for k in sds[-1] if k.endswith("weight")]
    rows = np.stack([np.concatenate([(sd[k] - sds[-1][k]).numpy().ravel() for k in keys]) for sd in sds]).astype(np.float64)
    xc = rows - rows.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    ratio = s**2 / (s**2).sum()
    np.testing.assert_allclose(summary["explained_variance_ratio"], ratio[:2], atol=1e-6)

    with h5py.File(out / "directions.h5", "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["tensor_names"]]
        dx = [np.asarray(f["xdirection"][str(i)]) for i in range(len(names))]
        dy = [np.asarray(f["ydirection"][str(i)]) for i in range(len(names))]
        np.testing.assert_allclose(f["explained_variance_ratio_"][()], ratio[:2], atol=1e-6)
    for n, a, b in zip(names, dx, dy):
        if n.endswith("bias"):
            assert not a.any() and not b.any()
    flat_x = np.concatenate([a.ravel() for n, a in zip(names, dx) if n.endswith("weight")])
    flat_y = np.concatenate([a.ravel() for n, a in zip(names, dy) if n.endswith("weight")])
    assert np.linalg.norm(flat_x) == pytest.approx(1.0, abs=1e-6) and abs(flat_x @ flat_y) < 1e-6
    assert abs(abs(flat_x @ vt[0]) - 1) < 1e-5 and abs(abs(flat_y @ vt[1]) - 1) < 1e-5

    with h5py.File(out / "projection.h5", "r") as f:
        px, py = f["proj_xcoord"][()], f["proj_ycoord"][()]
        assert f["epochs"][()].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(px, rows @ flat_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(py, rows @ flat_y, rtol=1e-5, atol=1e-6)
    assert px[-1] == 0 and py[-1] == 0  # theta_final is the origin of the plane

    # The grid covers the path, and a grid point is the loss at theta_final + a d1 + b d2.
    with h5py.File(out / "surface.h5", "r") as f:
        xs, ys, z = f["xcoordinates"][()], f["ycoordinates"][()], f["train_loss"][()]
    assert xs.min() < px.min() and xs.max() > px.max() and ys.min() < py.min() and ys.max() > py.max()
    assert len(xs) == len(ys) == 5
    model, _ = load_model(files[-1])
    ds = load_dataset(dict(cfg.dataset))
    data = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    i, j = 4, 1
    with torch.no_grad():
        for p, a, b in zip(model.parameters(), dx, dy):
            p.add_(xs[i] * torch.from_numpy(a) + ys[j] * torch.from_numpy(b))
    loss, _ = evaluate(model.eval(), data)
    assert z[j, i] == pytest.approx(loss, rel=1e-5)
    assert (out / "trajectory_contour.png").stat().st_size > 10_000 and (out / "trajectory_contour.pdf").exists()
    assert 0 < summary["explained_variance_ratio/total"] <= 1
    assert summary["path_length"] >= summary["path_length_projected"] > 0

    # Rerun in the same directory: directions reused, nothing recomputed.
    _, again = go("run1")
    assert again["direction_source"] == "reused" and again["points_computed"] == 0
    np.testing.assert_allclose(again["explained_variance_ratio"], summary["explained_variance_ratio"], rtol=0)

    # Explicit list of checkpoints and run_dir= give the same projection; stride thins the epochs.
    _, listed = go("run2", f"checkpoints=[{','.join(str(p) for p in files)}]", "x=-1:1:3", "y=-1:1:3")
    np.testing.assert_allclose(listed["explained_variance_ratio"], summary["explained_variance_ratio"], rtol=1e-12)
    with h5py.File(root / "run2" / "surface.h5", "r") as f:
        assert f["xcoordinates"][()].tolist() == [-1.0, 0.0, 1.0]
    _, strided = go("run3", f"run_dir={ckpt_dir.parent}", "task.stride=2", "task.start_epoch=1")
    assert strided["epochs"] == [1, 3, 4]


def test_trajectory_task_bad_input(traj_run, tmp_path):
    root, go = traj_run
    with pytest.raises(UserError, match="no per-epoch checkpoints"):
        go("bad1", f"run_dir={tmp_path}")
    with pytest.raises(UserError, match="does not exist"):
        go("bad2", f"checkpoints=[{tmp_path / 'a.pt'},{tmp_path / 'b.pt'},{tmp_path / 'c.pt'}]")


def test_trajectory_honours_surface_recover(traj_run):
    """A corrupt surface file in the run directory is refused, untouched, by default; with
    surface_recover=true it is moved aside (kept) and the surface recomputed, as for every other
    surface-writing task."""
    root, go = traj_run
    out = root / "recover"
    out.mkdir()
    (out / "surface.h5").write_bytes(b"not an HDF5 file")
    with pytest.raises(UserError, match="surface_recover=true"):
        go("recover", "x=-1:1:3", "y=-1:1:3")
    assert (out / "surface.h5").read_bytes() == b"not an HDF5 file"
    _, summary = go("recover", "x=-1:1:3", "y=-1:1:3", "surface_recover=true")
    assert summary["points_computed"] == 9
    aside = list(out.glob("surface.h5.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"not an HDF5 file"
    with h5py.File(out / "surface.h5", "r") as f:
        assert f["done"][()].all()
