"""The Hessian tasks end to end (``run_job`` on Hydra-composed configs) against exact Hessians.

The reference is built independently of the library: the checkpoint loaded with ``torch.load``,
the model in float64, the samples normalised by hand, the loss as a function of one flat vector of
the multi-dimensional parameters (``torch.func.functional_call``), ``torch.autograd.functional
.hessian`` and ``numpy.linalg.eigh``.  Models are MLPs with 16 hidden units on the 8x8 digits
(1,184 parameters without biases), so the exact Hessian is small.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape_exp import hessian as H
from landscape_exp.app import run_job
from landscape_exp.config.hessian import SpectrumSettings
from landscape_exp.data.datasets import load_dataset
from landscape_exp.data.device import DeviceData
from landscape_exp.errors import UserError
from landscape_exp.models import build_model
from landscape_exp.weights.params import direction_to_vector, select_parameters, vector_to_direction

from conftest import compose_cfg, lenet_cfg, mlp_cfg

BASE = ["model=mlp", "model.hidden=[16]", "optim.epochs=2"]
SUB = ["hessian.num_samples=128", "hessian.k=3"]
NO_PLOT = ["plot.enabled=false"]


def eigvalsh(m) -> np.ndarray:
    """Ascending eigenvalues of a symmetric matrix (torch's LAPACK: numpy's is up to 20x slower
    under this suite's thread settings)."""
    return torch.linalg.eigvalsh(torch.as_tensor(np.asarray(m))).numpy()


def job(root: Path, out: Path, overrides: list[str]) -> dict:
    return run_job(compose_cfg(root, BASE + overrides), output_dir=out, job={})


def load_model64(ckpt_path: str | Path) -> nn.Module:
    ckpt = torch.load(ckpt_path, weights_only=True)
    model = build_model(ckpt["model_cfg"])
    model.load_state_dict(ckpt["state_dict"])
    return model.double().eval()


def digits_inputs(dataset, indices: np.ndarray | None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    data = dataset.split(split)
    if indices is not None:
        data = data.subset(torch.as_tensor(indices))
    mean = torch.tensor(dataset.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, dtype=torch.float64).view(1, -1, 1, 1)
    return (data.images.double() / 255.0 - mean) / std, data.targets


def exact_hessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Hessian of the mean cross-entropy w.r.t. every parameter of more than one dimension."""
    named = [(n, p.detach()) for n, p in model.named_parameters() if p.dim() > 1]
    sizes = [p.numel() for _, p in named]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = flat.split(sizes)
        ps = {n: part.view(p.shape) for (n, p), part in zip(named, parts)}
        return F.cross_entropy(functional_call(model, ps, (X,)), y)

    flat = torch.cat([p.reshape(-1) for _, p in named])
    return torch.autograd.functional.hessian(loss, flat, vectorize=True).numpy()


def move(model: nn.Module, dir_file: Path, coeffs: tuple[float, ...]) -> None:
    """theta <- theta + sum_k c_k d_k with the directions read from the file by hand."""
    groups = ("xdirection", "ydirection")[: len(coeffs)]
    with h5py.File(dir_file, "r") as f, torch.no_grad():
        for i, p in enumerate(model.parameters()):
            for g, c in zip(groups, coeffs):
                p += c * torch.from_numpy(f[g][str(i)][()]).double()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hessian_tasks")


@pytest.fixture(scope="module")
def hess(root: Path) -> tuple[Path, dict]:
    """task=hessian on a seeded subset of 128 training samples, figures on."""
    out = root / "hessian"
    return out, job(root, out, ["task=hessian", *SUB])


@pytest.fixture(scope="module")
def exact(hess, digits) -> dict:
    """Exact Hessian of the same checkpoint, samples and parameter subset, and its spectrum."""
    out, _ = hess
    with h5py.File(out / "hessian.h5", "r") as f:
        ckpt, idx = f.attrs["checkpoint"], f["sample_indices"][()]
    X, y = digits_inputs(digits, idx)
    Hm = exact_hessian(load_model64(ckpt), X, y)
    return {"H": Hm, "evals": eigvalsh(Hm), "checkpoint": ckpt, "indices": idx}


# ----------------------------------------------------------------------------- task=hessian


def test_hessian_task_equals_exact_spectrum(hess, exact):
    out, s = hess
    ev = exact["evals"]
    top, bottom = ev[::-1][:3], ev[:3]
    np.testing.assert_allclose(s["top_eigenvalues"], top, rtol=1e-4)
    np.testing.assert_allclose(s["bottom_eigenvalues"], bottom, rtol=1e-4)
    assert s["lambda_max"] == pytest.approx(ev[-1], rel=1e-4)
    assert s["lambda_min"] == pytest.approx(ev[0], rel=1e-4)
    assert s["ratio"] == pytest.approx(abs(ev[0] / ev[-1]), rel=2e-4)
    assert s["dim"] == exact["H"].shape[0] == 64 * 16 + 16 * 10 and s["num_samples"] == 128
    # The seeded subset: 128 distinct sorted indices, the same for the same seed.
    idx = exact["indices"]
    assert len(idx) == 128 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, H.sample_subset(1438, 128, 0).numpy())
    # Hutchinson's trace within three standard errors of the exact trace.
    tr = float(np.trace(exact["H"]))
    assert s["trace_stderr"] > 0 and abs(s["trace"] - tr) <= 3 * s["trace_stderr"], (s["trace"], tr, s["trace_stderr"])

    Hm = exact["H"]
    with h5py.File(out / "hessian.h5", "r") as f:
        tv, bv = f["top_eigenvectors"][()].astype(np.float64), f["bottom_eigenvectors"][()].astype(np.float64)
        grid, dens = f["density_grid"][()], f["density"][()]
        nodes, weights = f["slq_nodes"][()], f["slq_weights"][()]
        assert json.loads(f.attrs["num_hvp"])["total"] == s["num_hvp"]["total"] > 0
        np.testing.assert_array_equal(f["param_indices"][()], [0, 2])  # fc weights; biases ignored
        assert f.attrs["loss"] == pytest.approx(s["loss"])
    # Eigenvectors: unit, orthogonal, and H v = lambda v (residual relative to lambda_max); the
    # stored residuals are ||H v - lambda v|| of the exact Hessian, every pair converged.
    with h5py.File(out / "hessian.h5", "r") as f:
        stored = {p: (f[f"{p}_residuals"][()], f[f"{p}_converged"][()]) for p in ("top", "bottom")}
        assert f.attrs["converged"] and json.loads(f.attrs["unconverged_pairs"]) == [] and f.attrs["tol"] == 1e-5
        assert f.attrs["bottom_residual_scale"] == pytest.approx(ev[-1] - ev[0], rel=1e-5)
        assert np.isfinite(f.attrs["bulk_edge"]) and f.attrs["num_outliers"] >= 1 and "bulk edge" in f.attrs["bulk_rule"]
    for part, vecs, vals in (("top", tv, s["top_eigenvalues"]), ("bottom", bv, s["bottom_eigenvalues"])):
        np.testing.assert_allclose(vecs @ vecs.T, np.eye(3), atol=1e-5)
        exact_res = [np.linalg.norm(Hm @ v - lam * v) for v, lam in zip(vecs, vals)]
        assert max(exact_res) <= 1.1e-5 * (ev[-1] - ev[0])
        np.testing.assert_allclose(stored[part][0], exact_res, rtol=0, atol=2e-7 * ev[-1])
        np.testing.assert_allclose(s[f"{part}_residuals"], stored[part][0])
        assert stored[part][1].all() and s[f"{part}_converged"] == [True] * 3
    assert s["converged"] is True and s["unconverged_pairs"] == [] and s["max_residual_relative"] < 1e-5
    # The density integrates to one, and its mass sits on the exact spectrum.
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-9)
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    assert nodes.min() >= ev[0] - 1e-4 * ev[-1] and nodes.max() <= ev[-1] + 1e-4 * ev[-1]
    inside = (grid >= ev[0] - 0.05 * ev[-1]) & (grid <= ev[-1] + 0.05 * ev[-1])
    assert np.trapezoid(np.where(inside, dens, 0.0), grid) > 0.99
    # Most eigenvalues of a trained net sit near zero (the bulk): so does most of the SLQ mass.
    near0 = np.abs(grid) <= 0.1 * ev[-1]
    frac_exact = np.mean(np.abs(ev) <= 0.1 * ev[-1])
    assert np.trapezoid(np.where(near0, dens, 0.0), grid) == pytest.approx(frac_exact, abs=0.1)
    for name in ("hessian_eigenvalues", "hessian_density", "hessian_curves"):
        assert (out / f"{name}.png").stat().st_size > 10_000 and (out / f"{name}.pdf").is_file()


def test_hessian_curves_and_direction_file(hess, exact, digits):
    out, s = hess
    ckpt = exact["checkpoint"]
    model = load_model64(ckpt)
    with h5py.File(out / "hessian.h5", "r") as f:
        alphas, top_loss = f["curve_alpha"][()], f["curve_top_loss"][()]
        bottom_loss, top_vec = f["curve_bottom_loss"][()], f["top_eigenvectors"][0]
    # Automatic range: the quadratic model rises by 2 at the ends.
    h = math.sqrt(4.0 / s["lambda_max"])
    np.testing.assert_allclose(alphas, np.linspace(-h, h, 51), rtol=1e-12)
    assert top_loss[25] == pytest.approx(s["loss"], rel=1e-6) == bottom_loss[25]
    # The direction file: the eigenvectors in model.parameters() layout, zeros on the biases.
    with h5py.File(out / "hessian_directions.h5", "r") as f:
        x = [f["xdirection"][str(i)][()] for i in range(4)]
        assert [a.shape for a in x] == [tuple(p.shape) for p in model.parameters()]
        assert not x[1].any() and not x[3].any()
        np.testing.assert_array_equal(np.concatenate([x[0].ravel(), x[2].ravel()]), top_vec)
        assert f.attrs["xeigenvalue"] == s["lambda_max"] and f.attrs["yeigenvalue"] == s["lambda_min"]
    # One curve point by hand: theta + a v with the direction file, float64 loss on the subset.
    X, y = digits_inputs(digits, exact["indices"])
    move(model, out / "hessian_directions.h5", (float(alphas[40]),))
    with torch.no_grad():
        ref = float(F.cross_entropy(model(X), y))
    assert top_loss[40] == pytest.approx(ref, rel=1e-5)


def test_eigenvector_directions_drive_surface_tasks(root, hess):
    """direction=hessian direction.file=...: the loss along the top eigenvector bends like
    lambda_max, along the bottom one like lambda_min.  The surfaces average over the whole
    training split, so the Hessian here does too.  ``normalization`` (filter by default) does not
    apply to file directions: the curvature would be off by orders of magnitude if it did."""
    ckpt = hess[1]["surface_hint"].split("checkpoint=")[1].split()[0]
    hd = root / "hessian_full"
    s = job(root, hd, ["task=hessian", f"checkpoint={ckpt}", "hessian.k=1", "hessian.trace_probes=0",
                       "hessian.density.probes=0", *NO_PLOT])
    dfile = hd / "hessian_directions.h5"
    h = 0.03
    common = ["direction=hessian", f"direction.file={dfile}", f"checkpoint={ckpt}", *NO_PLOT]
    job(root, root / "s1", ["task=surface1d", f"x=-{h}:{h}:3", *common])
    job(root, root / "s2", ["task=surface2d", f"x=-{h}:{h}:3", f"y=-{h}:{h}:3", *common])
    with h5py.File(root / "s1" / "surface.h5", "r") as f:
        z1 = f["train_loss"][()]
    with h5py.File(root / "s2" / "surface.h5", "r") as f:
        z2 = f["train_loss"][()]
        assert json.loads(f.attrs["direction_info"])["source"] == "file"
    np.testing.assert_allclose(z2[1], z1, rtol=1e-6)  # the y=0 row is the 1D curve
    lmax, lmin = s["lambda_max"], s["lambda_min"]
    d2x = (z1[0] - 2 * z1[1] + z1[2]) / h**2
    d2y = (z2[0, 1] - 2 * z2[1, 1] + z2[2, 1]) / h**2
    assert d2x == pytest.approx(lmax, rel=0.02), (d2x, lmax)
    assert abs(d2y - lmin) <= 0.05 * lmax, (d2y, lmin, lmax)
    assert lmin < 0 and abs(d2y) < 0.1 * d2x


def test_unconverged_run_says_so(root, hess, capsys):
    """hessian.max_iter=6: the eigenpairs cannot converge; the files, the summary, the printed
    line and the figure all say so (the values alone would look plausible)."""
    out = root / "unconverged"
    s = job(root, out, ["task=hessian", *SUB, "hessian.max_iter=6", "hessian.trace_probes=0", "hessian.density.probes=0"])
    printed = capsys.readouterr().out
    assert "WARNING:" in printed and "did NOT converge" in printed and "hessian.max_iter" in printed
    assert s["converged"] is False and "bottom 1" in s["unconverged_pairs"] and s["max_residual_relative"] > 1e-5
    assert s["bottom_converged"] == [False] * 3
    with h5py.File(out / "hessian.h5", "r") as f:
        assert not f.attrs["converged"] and not f["bottom_converged"][()].any()
        assert json.loads(f.attrs["unconverged_pairs"]) == s["unconverged_pairs"]
        np.testing.assert_allclose(f["bottom_residuals"][()], s["bottom_residuals"])
    assert (out / "hessian_eigenvalues.png").stat().st_size > 10_000
    good = json.loads((hess[0] / "summary.json").read_text())
    assert good["converged"] is True


def test_gauss_newton_task_with_block_spectra(root, hess, exact, digits):
    """hessian.curvature=ggn hessian.blocks=2: the top eigenvalues of J^T H_out J and of its two
    layer blocks, against the GGN built from the exact Jacobian of the logits."""
    out = root / "ggn"
    s = job(root, out, ["task=hessian", *SUB[:1], "hessian.k=2", "hessian.curvature=ggn", "hessian.blocks=2",
                        "hessian.trace_probes=0", "hessian.density.probes=0", *NO_PLOT])
    model = load_model64(exact["checkpoint"])
    X, y = digits_inputs(digits, exact["indices"])
    named = [(n, p.detach()) for n, p in model.named_parameters() if p.dim() > 1]
    sizes = [p.numel() for _, p in named]
    J = torch.autograd.functional.jacobian(
        lambda flat: functional_call(model, {n: part.view(p.shape) for (n, p), part in zip(named, flat.split(sizes))}, (X,)),
        torch.cat([p.reshape(-1) for _, p in named]), vectorize=True)  # (N, C, P)
    p = torch.softmax(model(X), dim=1).detach()
    A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    G = torch.einsum("ncp,ncd,ndq->pq", J, A, J).numpy() / len(y)
    ev = eigvalsh(G)
    assert ev[0] > -1e-10 * ev[-1]  # positive semidefinite, unlike the Hessian
    np.testing.assert_allclose(s["top_eigenvalues"], ev[::-1][:2], rtol=1e-4)
    assert s["lambda_min"] == pytest.approx(ev[0], abs=1e-5 * ev[-1]) and s["curvature"] == "ggn"
    assert list(s["blocks"]) == ["net.0", "net.2"]
    for name, sl in (("net.0", slice(0, 1024)), ("net.2", slice(1024, 1184))):
        b, bev = s["blocks"][name], eigvalsh(G[sl, sl])
        np.testing.assert_allclose(b["top_eigenvalues"], bev[::-1][:2], rtol=1e-4)
        assert b["dim"] == sl.stop - sl.start and all(b["top_converged"])
    with h5py.File(out / "hessian.h5", "r") as f:
        assert f.attrs["curvature"] == "ggn"
        assert [n.decode() for n in f["block_names"][()]] == ["net.0", "net.2"]
        np.testing.assert_allclose(f["block_top_eigenvalues"][()][:, :2],
                                   [s["blocks"][n]["top_eigenvalues"] for n in ("net.0", "net.2")])


# ----------------------------------------------------------------------------- task=hessian_surface


def test_hessian_surface_exact_resumable(root, hess, exact, digits):
    out = root / "hsurf"
    over = ["task=hessian_surface", *SUB[:1], "hessian.tol=1e-4", "x=-0.5:0.5:3", "y=-0.5:0.5:3"]
    s = job(root, out, over)
    assert s["points"] == 9 and s["points_done"] == 9 and s["points_computed"] == 9
    path = out / "hessian_surface.h5"
    with h5py.File(path, "r") as f:
        lmax, lmin, ratio = f["lambda_max"][()], f["lambda_min"][()], f["ratio"][()]
        loss, nhvp = f["train_loss"][()], f["num_hvp"][()]
        assert lmax.shape == (3, 3) and f["done"][()].all()
        np.testing.assert_array_equal(f["xcoordinates"][()], [-0.5, 0.0, 0.5])
        dir_file = Path(f["dir_file"][()].decode())
        first = {k: f[k][()] for k in ("lambda_max", "lambda_min", "ratio", "train_loss")}
    # The centre is the checkpoint: task=hessian's values (same samples, same parameters).
    hs = hess[1]
    assert lmax[1, 1] == pytest.approx(hs["lambda_max"], rel=1e-4)
    assert lmin[1, 1] == pytest.approx(hs["lambda_min"], rel=1e-4)
    assert loss[1, 1] == pytest.approx(hs["loss"], rel=1e-7)
    # Everywhere: lambda_min <= lambda_max and ratio = |lambda_min / lambda_max| >= 0.
    assert np.all(lmin <= lmax) and np.all(ratio >= 0) and np.all(nhvp > 0)
    np.testing.assert_allclose(ratio, np.abs(lmin / lmax), rtol=1e-12)
    # An off-centre point (a, b) = (0.5, -0.5): exact Hessian of the moved weights (random,
    # filter-normalized directions as surface2d makes them, read from the run's file).
    model = load_model64(exact["checkpoint"])
    move(model, dir_file, (0.5, -0.5))
    ev = eigvalsh(exact_hessian(model, *digits_inputs(digits, exact["indices"])))
    assert lmax[0, 2] == pytest.approx(ev[-1], rel=1e-4)
    assert lmin[0, 2] == pytest.approx(ev[0], rel=1e-4)
    # Resume: a second run in the same place computes nothing and leaves the values alone.
    s2 = job(root, out, over + NO_PLOT)
    assert s2["points_computed"] == 0 and s2["points_done"] == 9
    with h5py.File(path, "r") as f:
        for k, v in first.items():
            np.testing.assert_array_equal(f[k][()], v)
    # The paper's maps were drawn (first run): ratio on 0..0.5, lambda_max, lambda_min, the loss.
    for stem in ("ratio_heatmap", "ratio_contour", "lambda_max_heatmap", "lambda_min_heatmap", "train_loss_contour"):
        assert (out / f"hessian_surface_{stem}.png").stat().st_size > 10_000
    # Other hessian settings on the same file are refused; the files are left untouched.
    stamps = {p: p.stat().st_mtime_ns for p in (path, dir_file)}
    with pytest.raises(UserError, match="different config"):
        job(root, out, over[:-2] + ["hessian.num_samples=64", "x=-0.5:0.5:3", "y=-0.5:0.5:3", *NO_PLOT])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


# ----------------------------------------------------------------------------- task=hessian_trajectory


def test_hessian_trajectory_per_epoch(root, hess, digits, capsys):
    out = root / "htraj"
    over = ["task=hessian_trajectory", *SUB, "hessian.trace_probes=10", "hessian.density.iters=40"]
    s = job(root, out, over)
    assert s["epochs"] == [0, 1, 2] and s["epochs_computed"] == 3
    # Without a progress bar (not a terminal), a line per epoch with its numbers and what is left.
    said = capsys.readouterr().out
    for i, left in zip(range(3), ("2 epochs", "1 epoch", "0 epochs")):
        line = (re.escape(f"hessian_trajectory: epoch {i}: lambda_max = {s['lambda_max'][i]:.6g}, trace = {s['trace'][i]:.6g} (")
                + r"[0-9.]+ m?s; " + re.escape(f"{left} left)"))
        assert re.search(line, said), said
    assert len(s["lambda_max"]) == len(s["trace"]) == 3 and all(math.isfinite(t) for t in s["trace"])
    # The last epoch is the checkpoint task=hessian analysed: the same lambda_max.
    assert s["lambda_max"][2] == pytest.approx(hess[1]["lambda_max"], rel=1e-4)
    with h5py.File(out / "hessian_trajectory.h5", "r") as f:
        np.testing.assert_array_equal(f["epoch"][()], [0, 1, 2])
        ckpts = [c.decode() for c in f["checkpoint"][()]]
        np.testing.assert_allclose(f["lambda_max"][()], s["lambda_max"])
        vecs = f["top_eigenvectors"][()].astype(np.float64)
        assert vecs.shape == (3, 3, 1184) and f["top_converged"][()].all()
        np.testing.assert_allclose(f["top_subspace_overlap"][()], s["overlap"], equal_nan=True)
        assert json.loads(f.attrs["fingerprint"])["layout"] == H.TRAJECTORY_LAYOUT
    assert ckpts[0].endswith("epoch_000.pt") and s["converged"] == [True] * 3 and s["num_classes"] == 10
    # Every epoch against its exact Hessian and gradient on the same samples: the top-3 values,
    # the overlap of consecutive exact top-3 subspaces, the gradient's share of the exact top-3
    # subspace and the outliers above the reported bulk edge.
    X, y = digits_inputs(digits, H.sample_subset(len(digits.train), 128, 0).numpy())
    U_prev = None
    for i, c in enumerate(ckpts):
        model = load_model64(c)
        ev, U = (t.numpy() for t in torch.linalg.eigh(torch.from_numpy(exact_hessian(model, X, y))))
        U3 = U[:, ::-1][:, :3]
        np.testing.assert_allclose(s["top_eigenvalues"][i], ev[::-1][:3], rtol=1e-4)
        assert s["lambda_max"][i] == pytest.approx(ev[-1], rel=1e-4)
        assert np.linalg.svd(vecs[i] @ U3, compute_uv=False).min() > 0.999
        weights = [p for p in model.parameters() if p.dim() > 1]
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(F.cross_entropy(model(X), y), weights)]).numpy()
        assert s["gradient_top_fraction"][i] == pytest.approx(float(np.sum((U3.T @ g) ** 2) / (g @ g)), abs=1e-4)
        if U_prev is None:
            assert math.isnan(s["overlap"][0])
        else:
            assert s["overlap"][i] == pytest.approx(float(np.sum((U3.T @ U_prev) ** 2)) / 3, abs=1e-3)
        U_prev = U3
        assert abs(s["num_outliers"][i] - int((ev > s["bulk_edge"][i]).sum())) <= 1
    assert (out / "hessian_trajectory.png").stat().st_size > 10_000
    assert (out / "hessian_trajectory_curvature.png").stat().st_size > 10_000
    # Rerun on the same run directory given explicitly: nothing recomputed.
    s2 = job(root, out, over + [f"run_dir={Path(ckpts[0]).parent.parent}", *NO_PLOT])
    assert s2["epochs_computed"] == 0 and s2["lambda_max"] == s["lambda_max"] and s2["overlap"][1:] == s["overlap"][1:]


def test_trajectory_file_of_the_older_layout_is_refused_but_readable(root, hess):
    """A hessian_trajectory.h5 written before eigenvectors were kept (layout 1: no ``layout`` in its
    fingerprint) cannot be extended: the job says why and leaves it alone; it still reads."""
    out = root / "htraj_old"
    out.mkdir()
    path = out / "hessian_trajectory.h5"
    with h5py.File(path, "w") as f:
        for k in ("epoch", "lambda_max", "trace", "trace_stderr", "loss", "num_hvp", "seconds"):
            f.create_dataset(k, data=np.array([0, 1]) if k in ("epoch", "num_hvp") else np.array([1.0, 2.0]))
        f.create_dataset("top_eigenvalues", data=np.array([[1.0], [2.0]]))
        for k in ("checkpoint", "checkpoint_sha256"):
            f.create_dataset(k, data=np.array(["a", "b"], dtype=h5py.string_dtype()))
        f.attrs["fingerprint"] = json.dumps({"task": "hessian_trajectory"})
    stamp = path.stat().st_mtime_ns
    with pytest.raises(UserError, match="layout 1.*move the file away") as e:
        job(root, out, ["task=hessian_trajectory", *SUB[:1], *NO_PLOT])
    assert "\n" not in str(e.value) and path.stat().st_mtime_ns == stamp
    old = H.read_trajectory_file(path)
    assert old["layout"] == 1 and old["lambda_max"].tolist() == [1.0, 2.0] and old["checkpoint"] == ["a", "b"]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("overrides, match", [
    (["task=hessian", "hessian.method=arnoldi"], "hessian.method"),
    (["task=hessian", "hessian.num_samples=100000"], "num_samples"),
    (["task=hessian", "hessian.tol=0"], "hessian.tol"),
    (["task=hessian", "hessian.trace_probes=1"], "trace_probes"),
    (["task=hessian", "hessian.split=val"], "hessian.split"),
    (["task=hessian", "direction.type=states"], "direction.type"),
    (["task=hessian", "x=1:-1:5"], "grid x"),
    (["task=hessian_surface", "direction=hessian"], "direction.file"),
    (["task=hessian", "hessian.curvature=fisher_true"], "hessian.curvature"),
    (["task=hessian", "hessian.blocks=-1"], "hessian.blocks"),
])
def test_bad_input_is_one_line(root, hess, overrides, match):
    with pytest.raises(UserError, match=match) as e:
        job(root, root / "bad", overrides + NO_PLOT)
    assert "\n" not in str(e.value)


def test_trajectory_without_checkpoints(root, tmp_path):
    with pytest.raises(UserError, match="no per-epoch checkpoints"):
        job(root, tmp_path / "o", ["task=hessian_trajectory", f"run_dir={tmp_path}", *NO_PLOT])


# ----------------------------------------------------------------------------- library glue


def test_parameter_selection_and_direction_layout():
    model = build_model(lenet_cfg())
    params = list(model.parameters())
    sel = select_parameters(model, "biasbn")
    assert list(sel.indices) == [i for i, p in enumerate(params) if p.dim() > 1]
    assert sel.dim == sum(params[i].numel() for i in sel.indices)
    everything = select_parameters(model, "none")
    assert list(everything.indices) == list(range(len(params)))
    vec = torch.randn(sel.dim, dtype=torch.float64)
    d = vector_to_direction(vec, model, sel)
    assert [t.shape for t in d] == [p.shape for p in params] and all(t.dtype == torch.float32 for t in d)
    off = 0
    for i, (t, p) in enumerate(zip(d, params)):
        if i in sel.indices:
            torch.testing.assert_close(t, vec[off:off + p.numel()].view(p.shape).float())
            off += p.numel()
        else:
            assert not t.any()
    torch.testing.assert_close(direction_to_vector(d, sel), vec.float())
    with pytest.raises(UserError, match="eigenvector has shape"):
        vector_to_direction(vec[:-1], model, sel)
    with pytest.raises(UserError, match="ignore option"):
        select_parameters(model, "bias")


def test_sample_subset_and_sign():
    a = H.sample_subset(100, 10, 3)
    assert torch.equal(a, H.sample_subset(100, 10, 3)) and not torch.equal(a, H.sample_subset(100, 10, 4))
    assert len(a.unique()) == 10 and torch.all(a[1:] > a[:-1]) and int(a.max()) < 100
    assert torch.equal(H.sample_subset(7, None, 0), torch.arange(7))
    with pytest.raises(UserError, match="num_samples"):
        H.sample_subset(7, 8, 0)
    v = torch.tensor([[0.1, -0.9, 0.3], [0.5, 0.2, 0.0]])
    torch.testing.assert_close(H.canonical_sign(v), torch.tensor([[-0.1, 0.9, -0.3], [0.5, 0.2, 0.0]]))
    torch.testing.assert_close(H.canonical_sign(-v), H.canonical_sign(v))
    assert H.eigen_ratio(-1.0, 4.0) == 0.25 and math.isnan(H.eigen_ratio(1.0, 0.0))


@pytest.fixture(scope="module")
def tiny():
    """A 9-6-3 ReLU MLP on 64 seeded synthetic 3x3 images (54 + 18 = 72 weights without biases),
    its weights doubled: an indefinite Hessian whose extreme eigenvalues are far enough apart for
    power iteration to converge in a few hundred products."""
    ds = load_dataset({"name": "synthetic", "num_classes": 3, "channels": 1, "image_size": 3,
                       "num_train": 64, "num_test": 2, "seed": 4})
    torch.manual_seed(1)
    model = build_model(mlp_cfg((6,), image_size=3, num_classes=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    data = DeviceData(ds.train, ds.mean, ds.std, "cpu")
    sel = select_parameters(model, "biasbn")
    m64 = build_model(mlp_cfg((6,), image_size=3, num_classes=3)).double().eval()
    m64.load_state_dict(model.state_dict())
    X, y = digits_inputs(ds, None)
    Hm = exact_hessian(m64, X, y)
    return model, data, sel, Hm, eigvalsh(Hm)


@pytest.mark.parametrize("method", ["lanczos", "eigsh", "power"])
def test_spectrum_report_every_method(tiny, method):
    model, data, sel, Hm, ev = tiny
    assert ev[0] < -0.1 * ev[-1]  # indefinite: the bottom pairs are negative
    op = H.make_operator(model, sel, data, batch_size=40)  # 64 = 40 + 24: the batching is exact
    settings = SpectrumSettings(k=2, method=method, tol=1e-4 if method == "power" else 1e-6, trace_probes=100,
                                  density_probes=2, density_iters=30, density_points=400, seed=1)
    r = H.spectrum_report(op, settings)
    np.testing.assert_allclose(r.top.values, ev[::-1][:2], rtol=1e-4)
    np.testing.assert_allclose(r.bottom.values, ev[:2], rtol=1e-4)
    for ps in (r.top, r.bottom):
        exact_res = [np.linalg.norm(Hm @ v - lam * v) for v, lam in zip(ps.vectors.double().numpy(), ps.values)]
        assert max(exact_res) <= 2e-3 * ev[-1]
        # Every method reports the true residual (float32 vectors: up to ~1e-6 of the scale off).
        np.testing.assert_allclose(ps.residuals, exact_res, rtol=0, atol=1e-6 * ev[-1])
        if method != "eigsh":  # ARPACK's own test is on the eigenvalue, not the residual
            assert ps.converged.all()
    assert abs(r.trace - np.trace(Hm)) <= 3 * r.trace_stderr
    assert np.trapezoid(r.density, r.density_grid) == pytest.approx(1.0, abs=1e-9)
    assert r.num_hvp["total"] == op.num_hvp == sum(v for k, v in r.num_hvp.items() if k != "total")
    assert r.num_hvp["trace"] == 100 and r.num_hvp["density"] == 60


def test_settings_are_checked():
    with pytest.raises(UserError, match="hessian.k"):
        SpectrumSettings(k=0)
    with pytest.raises(UserError, match="max_iter"):
        SpectrumSettings(max_iter=-1)
    with pytest.raises(UserError, match="density.probes"):
        SpectrumSettings(density_probes=-2)
