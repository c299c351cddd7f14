"""Hessian analysis of a model at a point: the glue between models/data and the spectral math.

:mod:`landscape_exp.hvp` gives ``v -> H v`` for chosen parameters and :mod:`landscape_exp.spectral`
the algorithms on top of it.  This module

* selects the parameters the Hessian is taken with respect to, honouring ``ignore=biasbn``
  (every parameter of at most one dimension - biases and BatchNorm weights - is held fixed, as
  in the original tool's ``plot_hessian_eigen.py``), and builds the operator over device data;
* computes a :class:`SpectrumReport` (top-k and bottom-k eigenpairs, Hutchinson trace with its
  standard error, SLQ spectral density) and, per grid point, ``lambda_max``/``lambda_min``;
* turns flat eigenvectors into direction tensors in ``model.parameters()`` order with zeros on
  the ignored tensors (the original tool's direction-file layout), and back;
* evaluates the loss along eigenvectors and draws the figures (eigenvalue scatter as Sagun et
  al. 2017, log-scale density as Ghorbani et al. 2019, 1D curves, lambda_max against epochs);
* reads and writes the per-epoch trajectory file.

Everything runs in full fp32 (TF32 off on CUDA, no autocast): curvature from reduced precision
is mostly noise.  Spectral vectors are float64 on the model's device.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from landscape_exp import spectral
from landscape_exp.data import DeviceData
from landscape_exp.directions import Direction
from landscape_exp.errors import UserError, choice_error
from landscape_exp.evaluation import LOSSES, evaluate, mean_loss_fn
from landscape_exp.hvp import HessianOperator
from landscape_exp.precision import Precision, precision_context
from landscape_exp.weight_space import WeightSpace

IGNORES = ("biasbn", "none")
FP32 = Precision("fp32")
PNG_DPI = 150


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamSelection:
    """The parameters the Hessian acts on, with where they sit in ``model.parameters()``."""

    indices: tuple[int, ...]  # positions in model.parameters()
    names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    num_tensors: int  # len(list(model.parameters()))

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.params)


def select_parameters(model: nn.Module, ignore: str | None) -> ParamSelection:
    """The trainable parameters of ``model``, without the 1-D ones when ``ignore='biasbn'``.

    ``ignore`` is ``'biasbn'`` or ``None``/``'none'`` (every trainable parameter).
    """
    if ignore in (None, "", "none"):
        ignore = None
    elif ignore != "biasbn":
        raise choice_error("ignore option", ignore, IGNORES)
    named = list(model.named_parameters())
    keep = [i for i, (_, p) in enumerate(named) if p.requires_grad and not (ignore and p.dim() <= 1)]
    if not keep:
        raise UserError(f"the model has no {'multi-dimensional ' if ignore else ''}trainable parameters to take "
                        f"the Hessian with respect to (ignore={ignore or 'none'}); try direction.ignore=none")
    return ParamSelection(tuple(keep), tuple(named[i][0] for i in keep), tuple(named[i][1] for i in keep), len(named))


def vector_to_direction(vec: Tensor, model: nn.Module, selection: ParamSelection) -> Direction:
    """A flat vector over the selected parameters as a full direction: one tensor per
    ``model.parameters()`` entry (the parameter's shape, dtype and device), zeros elsewhere."""
    params = list(model.parameters())
    if len(params) != selection.num_tensors:
        raise UserError(f"the selection is for a model with {selection.num_tensors} parameter tensors, this one has {len(params)}")
    if vec.dim() != 1 or vec.numel() != selection.dim:
        raise UserError(f"eigenvector has shape {tuple(vec.shape)}; the selected parameters hold {selection.dim} numbers")
    out = [torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for p in params]
    offset = 0
    for i in selection.indices:
        n = params[i].numel()
        out[i] = vec[offset:offset + n].detach().reshape(params[i].shape).to(device=params[i].device, dtype=params[i].dtype)
        offset += n
    return out


def direction_to_vector(direction: Sequence[Tensor], selection: ParamSelection) -> Tensor:
    """The selected tensors of a full direction concatenated into one flat vector."""
    if len(direction) != selection.num_tensors:
        raise UserError(f"direction has {len(direction)} tensors; the model has {selection.num_tensors}")
    return torch.cat([direction[i].reshape(-1) for i in selection.indices])


def sample_subset(n: int, num_samples: int | None, seed: int) -> Tensor:
    """Sorted indices of a seeded subset of ``num_samples`` out of ``n`` (all of them for ``None``)."""
    if num_samples is None:
        return torch.arange(n)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= n:
        raise UserError(f"hessian.num_samples={num_samples!r} must be null (all) or an integer in 1..{n} (the split's size)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:num_samples].sort().values


def make_operator(model: nn.Module, selection: ParamSelection, data: DeviceData, *, loss: str = "crossentropy",
                  batch_size: int = 256) -> HessianOperator:
    """The Hessian of the mean ``loss`` over all of ``data`` w.r.t. the selected parameters.

    The model must be in eval mode (BatchNorm with running statistics: the Hessian of a fixed
    function, independent of the batching)."""
    if loss not in LOSSES:
        raise choice_error("loss", loss, LOSSES)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"hessian.batch_size={batch_size!r} must be a positive integer")
    return HessianOperator(model, list(selection.params), lambda: data.batches(batch_size), mean_loss_fn(loss), len(data))


@contextlib.contextmanager
def fp32(device: torch.device) -> Iterator[None]:
    """Full fp32: TF32 off for matmuls and cuDNN convolutions (restored afterwards), no autocast."""
    with precision_context(FP32, device):
        yield


# ----------------------------------------------------------------------------- spectra


@dataclass(frozen=True)
class SpectrumSettings:
    """What :func:`spectrum_report` computes and how hard it tries.

    ``tol`` is the relative residual ``||H v - lambda v|| <= tol |lambda|`` of the Lanczos and
    power methods (ARPACK's relative accuracy for ``eigsh``); ``max_iter`` caps Lanczos steps
    (default ``min(dim, 300)``), power iterations per pair (1000) or ARPACK restarts.
    ``trace_probes=0`` skips the trace, ``density_probes=0`` the density.
    """

    k: int = 5
    method: str = "lanczos"
    tol: float = 1e-4
    max_iter: int | None = None
    trace_probes: int = 50
    density_probes: int = 3
    density_iters: int = 80
    density_points: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        def pos_int(name: str, v: object, zero_ok: bool = False) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
                raise UserError(f"hessian.{name}={v!r} must be an integer >= {0 if zero_ok else 1}")

        pos_int("k", self.k)
        if self.method not in spectral.METHODS:
            raise choice_error("hessian.method", self.method, spectral.METHODS)
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not 0 < self.tol < 1:
            raise UserError(f"hessian.tol={self.tol!r} must be a number in (0, 1), e.g. 1e-4")
        if self.max_iter is not None:
            pos_int("max_iter", self.max_iter)
        pos_int("trace_probes", self.trace_probes, zero_ok=True)
        if self.trace_probes == 1:
            raise UserError("hessian.trace_probes=1 gives no standard error; use 0 (no trace) or >= 2")
        pos_int("density.probes", self.density_probes, zero_ok=True)
        pos_int("density.iters", self.density_iters)
        pos_int("density.num_points", self.density_points)
        if self.density_points < 2:
            raise UserError(f"hessian.density.num_points={self.density_points} must be >= 2")
        pos_int("seed", self.seed, zero_ok=True)


@dataclass
class SpectrumReport:
    """Eigenpairs, trace and density of one Hessian (values float64 numpy, vectors float32 CPU)."""

    top_values: np.ndarray  # (k,) descending
    top_vectors: Tensor  # (k, dim) unit rows
    bottom_values: np.ndarray  # (k,) ascending (the most negative first)
    bottom_vectors: Tensor
    trace: float = math.nan
    trace_stderr: float = math.nan
    trace_samples: np.ndarray = field(default_factory=lambda: np.zeros(0))
    density_grid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    density: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slq_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slq_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    num_hvp: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def lambda_max(self) -> float:
        return float(self.top_values[0])

    @property
    def lambda_min(self) -> float:
        return float(self.bottom_values[0])

    @property
    def ratio(self) -> float:
        return eigen_ratio(self.lambda_min, self.lambda_max)


def eigen_ratio(lambda_min: float, lambda_max: float) -> float:
    """``|lambda_min / lambda_max|`` (Li et al. 2018, section 6); NaN when ``lambda_max`` is 0."""
    return abs(lambda_min / lambda_max) if lambda_max != 0 else math.nan


def canonical_sign(vecs: Tensor) -> Tensor:
    """Rows flipped so each row's entry of largest magnitude is positive (eigenvectors have an
    arbitrary sign; this makes saved directions reproducible)."""
    if vecs.numel() == 0:
        return vecs
    idx = vecs.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vecs.gather(1, idx))
    return vecs * torch.where(signs == 0, torch.ones_like(signs), signs)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def bottom_eigenpairs(matvec: spectral.MatVec, dim: int, k: int, lambda_max: float, *, method: str = "lanczos",
                      tol: float = 1e-4, max_iter: int | None = None, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest eigenpairs of ``H`` (ascending), found on ``H - lambda_max I``.

    The shift leaves eigenvectors unchanged and makes every eigenvalue ``<= 0``, so the wanted
    ones are the largest in magnitude: power iteration then converges to them, and the relative
    stopping tests (``tol * |theta|``) refer to the spread of the spectrum instead of to the
    eigenvalue itself, which is near zero for a trained network and would otherwise never be met.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")

    def shifted(v: Tensor) -> Tensor:
        return matvec(v).to(device=dev, dtype=torch.float64) - lambda_max * v.to(device=dev, dtype=torch.float64)

    vals, vecs = spectral.top_eigenpairs(shifted, dim, k, which="SA", method=method, tol=tol, max_iter=max_iter,
                                         generator=generator, device=dev)
    return vals + lambda_max, vecs


def spectrum_report(op: HessianOperator, settings: SpectrumSettings) -> SpectrumReport:
    """Top-k and bottom-k eigenpairs, Hutchinson trace and SLQ density of ``op``'s Hessian.

    Each stage draws from its own generator (seeds ``seed``, ``seed+1``, ... ), so changing ``k``
    does not change the trace probes.  HVP counts and wall times are recorded per stage.
    """
    s, dim, dev = settings, op.dim, op.device
    if s.k > dim:
        raise UserError(f"hessian.k={s.k} exceeds the number of parameters the Hessian acts on ({dim})")
    num_hvp: dict[str, int] = {}
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        n0, t0 = op.num_hvp, time.perf_counter()
        yield
        _sync(dev)
        num_hvp[name], seconds[name] = op.num_hvp - n0, time.perf_counter() - t0

    kw = dict(method=s.method, tol=s.tol, max_iter=s.max_iter, device=dev)
    with fp32(dev):
        with stage("top"):
            top_vals, top_vecs = spectral.top_eigenpairs(op.matvec, dim, s.k, which="LA", generator=_generator(s.seed), **kw)
        with stage("bottom"):
            bot_vals, bot_vecs = bottom_eigenpairs(op.matvec, dim, s.k, float(top_vals[0]), generator=_generator(s.seed + 1), **kw)
        report = SpectrumReport(
            top_vals.double().numpy(), canonical_sign(top_vecs).float().cpu(),
            bot_vals.double().numpy(), canonical_sign(bot_vecs).float().cpu(),
        )
        if s.trace_probes:
            with stage("trace"):
                tr, se, samples = spectral.hutchinson_trace(op.matvec, dim, s.trace_probes,
                                                            generator=_generator(s.seed + 2), device=dev)
            report.trace, report.trace_stderr, report.trace_samples = tr, se, samples.numpy()
        if s.density_probes:
            with stage("density"):
                grid, dens, nodes, weights = spectral.slq_density(
                    op.matvec, dim, num_probes=s.density_probes, num_iters=min(s.density_iters, dim),
                    num_points=s.density_points, generator=_generator(s.seed + 3), device=dev)
            report.density_grid, report.density = grid.numpy(), dens.numpy()
            report.slq_nodes, report.slq_weights = nodes.numpy(), weights.numpy()
    report.num_hvp = {**num_hvp, "total": sum(num_hvp.values())}
    report.seconds = {**seconds, "total": sum(seconds.values())}
    return report


def extreme_point(op: HessianOperator, *, method: str = "lanczos", tol: float = 1e-4, max_iter: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """``lambda_max``, ``lambda_min`` (shift trick), their ratio, HVPs used and seconds at the
    model's current weights: one point of a ``hessian_surface``."""
    n0, t0 = op.num_hvp, time.perf_counter()
    with fp32(op.device):
        lmax, lmin = spectral.extreme_eigenvalues(op.matvec, op.dim, method=method, min_method="shift", tol=tol,
                                                  max_iter=max_iter, generator=_generator(seed), device=op.device)
    return {"lambda_max": lmax, "lambda_min": lmin, "ratio": eigen_ratio(lmin, lmax),
            "num_hvp": float(op.num_hvp - n0), "seconds": time.perf_counter() - t0}


def top_and_trace(op: HessianOperator, *, k: int = 1, method: str = "lanczos", tol: float = 1e-4,
                  max_iter: int | None = None, trace_probes: int = 0, seed: int = 0) -> dict[str, Any]:
    """Top-k eigenvalues and (``trace_probes >= 2``) the Hutchinson trace: one epoch of a
    ``hessian_trajectory``."""
    n0, t0 = op.num_hvp, time.perf_counter()
    out: dict[str, Any] = {"trace": math.nan, "trace_stderr": math.nan}
    with fp32(op.device):
        vals, _ = spectral.top_eigenpairs(op.matvec, op.dim, k, which="LA", method=method, tol=tol, max_iter=max_iter,
                                          generator=_generator(seed), device=op.device)
        out["top_eigenvalues"] = vals.double().numpy()
        if trace_probes:
            tr, se, _ = spectral.hutchinson_trace(op.matvec, op.dim, trace_probes, generator=_generator(seed + 2),
                                                  device=op.device)
            out["trace"], out["trace_stderr"] = tr, se
    _sync(op.device)
    out.update(num_hvp=op.num_hvp - n0, seconds=time.perf_counter() - t0)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def curve_half_width(lambda_max: float, rise: float = 2.0) -> float:
    """Half-width ``a`` where the quadratic model ``lambda_max a^2 / 2`` rises by ``rise``:
    ``sqrt(2 rise / lambda_max)`` (1 when ``lambda_max <= 0``). Eigenvectors are unit vectors,
    so ``a`` is a distance in weight space."""
    return math.sqrt(2.0 * rise / lambda_max) if lambda_max > 0 and math.isfinite(lambda_max) else 1.0


@torch.no_grad()
def loss_along(model: nn.Module, selection: ParamSelection, vectors: Tensor, alphas: Sequence[float], data: DeviceData,
               *, loss: str = "crossentropy", batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Loss and accuracy (%) of ``model`` moved to ``theta + a v`` for every row ``v`` of
    ``vectors`` (flat, over the selected parameters) and every ``a`` in ``alphas``, in fp32.

    Returns two ``(len(vectors), len(alphas))`` arrays; the model is restored afterwards."""
    dirs = [vector_to_direction(v, model, selection) for v in vectors]
    space = WeightSpace(model, "weights", dirs)
    losses = np.empty((len(dirs), len(alphas)))
    accs = np.empty_like(losses)
    try:
        for i in range(len(dirs)):
            for j, a in enumerate(alphas):
                coeffs = [0.0] * len(dirs)
                coeffs[i] = float(a)
                space.move_to(coeffs)
                losses[i, j], accs[i, j] = evaluate(model, data, loss=loss, batch_size=batch_size, precision=FP32)
    finally:
        space.restore()
    return losses, accs


# ----------------------------------------------------------------------------- files


def _atomic_h5(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _attr(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, np.ndarray, np.number)) else json.dumps(v, default=str)


def write_spectrum_file(path: str | Path, report: SpectrumReport, selection: ParamSelection, *,
                        datasets: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write ``hessian.h5`` atomically: eigenpairs, trace, density, parameter selection, plus
    any extra ``datasets`` and ``attrs`` (non-scalar attributes are stored as JSON)."""
    path, tmp = _atomic_h5(Path(path))
    with h5py.File(tmp, "w") as f:
        f.create_dataset("top_eigenvalues", data=report.top_values)
        f.create_dataset("top_eigenvectors", data=report.top_vectors.numpy())
        f.create_dataset("bottom_eigenvalues", data=report.bottom_values)
        f.create_dataset("bottom_eigenvectors", data=report.bottom_vectors.numpy())
        f.create_dataset("trace", data=report.trace)
        f.create_dataset("trace_stderr", data=report.trace_stderr)
        f.create_dataset("trace_samples", data=report.trace_samples)
        f.create_dataset("density_grid", data=report.density_grid)
        f.create_dataset("density", data=report.density)
        f.create_dataset("slq_nodes", data=report.slq_nodes)
        f.create_dataset("slq_weights", data=report.slq_weights)
        f.create_dataset("param_indices", data=np.asarray(selection.indices, dtype=np.int64))
        f.create_dataset("param_names", data=np.array(selection.names, dtype=h5py.string_dtype()))
        for k, v in (datasets or {}).items():
            f.create_dataset(k, data=v)
        f.attrs["lambda_max"] = report.lambda_max
        f.attrs["lambda_min"] = report.lambda_min
        f.attrs["ratio"] = report.ratio
        f.attrs["dim"] = selection.dim
        f.attrs["num_hvp"] = json.dumps(report.num_hvp)
        f.attrs["seconds"] = json.dumps(report.seconds)
        for k, v in (attrs or {}).items():
            f.attrs[k] = _attr(v)
    os.replace(tmp, path)
    return path


def read_spectrum_file(path: str | Path) -> dict[str, Any]:
    """Every dataset of a ``hessian.h5`` as numpy (strings decoded) plus ``attrs``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"hessian file {str(path)!r} does not exist")
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        for k in f:
            v = f[k][()]
            out[k] = [s.decode() if isinstance(s, bytes) else s for s in v] if k == "param_names" else np.asarray(v)
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out


TRAJECTORY_FIELDS = ("epoch", "lambda_max", "trace", "trace_stderr", "loss", "num_hvp", "seconds")


def read_trajectory(path: str | Path, fingerprint: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Rows of an existing ``hessian_trajectory.h5`` keyed by epoch ({} if the file is absent).

    A file made with other settings is refused (one line naming what differs), never changed."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"trajectory file {str(path)!r} is unreadable ({e}); move it away to recompute") from None
    with f:
        old = json.loads(f.attrs.get("fingerprint", "{}"))
        new = json.loads(json.dumps(dict(fingerprint), default=str))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(f"trajectory file {str(path)!r} was made with other settings (differs in: {', '.join(diff)}); "
                            "nothing was changed: use another run directory or delete it")
        rows: dict[int, dict[str, Any]] = {}
        n = len(f["epoch"])
        for i in range(n):
            row = {k: f[k][i].item() for k in TRAJECTORY_FIELDS}
            row["top_eigenvalues"] = np.asarray(f["top_eigenvalues"][i])
            row["checkpoint"] = f["checkpoint"][i].decode() if isinstance(f["checkpoint"][i], bytes) else str(f["checkpoint"][i])
            row["checkpoint_sha256"] = (f["checkpoint_sha256"][i].decode() if isinstance(f["checkpoint_sha256"][i], bytes)
                                        else str(f["checkpoint_sha256"][i]))
            rows[int(row["epoch"])] = row
    return rows


def write_trajectory(path: str | Path, rows: Mapping[int, Mapping[str, Any]], *, fingerprint: Mapping[str, Any],
                     attrs: Mapping[str, Any] | None = None) -> Path:
    """Write all rows (sorted by epoch) atomically: one dataset per field, one row per epoch."""
    path, tmp = _atomic_h5(Path(path))
    epochs = sorted(rows)
    with h5py.File(tmp, "w") as f:
        for k in TRAJECTORY_FIELDS:
            f.create_dataset(k, data=np.array([rows[e][k] for e in epochs], dtype=np.int64 if k in ("epoch", "num_hvp") else np.float64))
        k_max = max((len(rows[e]["top_eigenvalues"]) for e in epochs), default=0)
        top = np.full((len(epochs), k_max), np.nan)
        for i, e in enumerate(epochs):
            v = np.asarray(rows[e]["top_eigenvalues"], dtype=np.float64)
            top[i, : len(v)] = v
        f.create_dataset("top_eigenvalues", data=top)
        f.create_dataset("checkpoint", data=np.array([str(rows[e]["checkpoint"]) for e in epochs], dtype=h5py.string_dtype()))
        f.create_dataset("checkpoint_sha256", data=np.array([str(rows[e]["checkpoint_sha256"]) for e in epochs],
                                                            dtype=h5py.string_dtype()))
        f.attrs["fingerprint"] = json.dumps(dict(fingerprint), sort_keys=True, default=str)
        for k, v in (attrs or {}).items():
            f.attrs[k] = _attr(v)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- figures


def _figure(figsize: tuple[float, float] = (6.4, 4.6)) -> Figure:
    """A pyplot-free figure on an Agg canvas (no global matplotlib state)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, stem: Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    fig.savefig(png, dpi=PNG_DPI)
    fig.set_layout_engine("none")
    fig.savefig(pdf, metadata={"CreationDate": None})
    return [png, pdf]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def plot_eigenvalues(top: np.ndarray, bottom: np.ndarray, dim: int, out_stem: Path, *, title: str) -> list[Path]:
    """Computed eigenvalues against their index in the ordered spectrum (as Sagun et al. 2017):
    the k largest at indices 1..k, the k smallest at dim-k+1..dim, on a broken index axis."""
    top, bottom = np.asarray(top, dtype=float), np.asarray(bottom, dtype=float)
    k_t, k_b = len(top), len(bottom)
    fig = _figure((7.0, 4.4))
    ax = fig.add_subplot()
    x_top = np.arange(1, k_t + 1)
    x_bot = np.arange(k_t + 2, k_t + 2 + k_b)  # one empty slot marks the unseen bulk
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.scatter(x_top, top, color="tab:blue", zorder=3, label=f"largest {k_t}")
    ax.scatter(x_bot, bottom[::-1], color="tab:red", zorder=3, label=f"smallest {k_b}")
    ax.axvline(k_t + 1, color="0.75", linestyle=":", linewidth=1)
    ax.text(k_t + 1, 0.5, f"bulk\n({max(dim - k_t - k_b, 0):,} not computed)", transform=ax.get_xaxis_transform(),
            ha="center", va="center", fontsize=8, color="0.35", bbox={"facecolor": "white", "edgecolor": "none"})
    labels = [str(i) for i in x_top] + [str(dim - k_b + 1 + i) for i in range(k_b)]
    ax.set_xticks(np.concatenate([x_top, x_bot]), labels, rotation=45 if dim > 9999 else 0, fontsize=8)
    span = max(abs(top).max(initial=0), abs(bottom).max(initial=0))
    # symlog: outliers and the small negative eigenvalues are both readable; a power-of-ten
    # threshold keeps the decade ticks clear of the linear band around zero.
    ax.set_yscale("symlog", linthresh=10.0 ** math.floor(math.log10(max(span * 1e-2, 1e-30))), linscale=1.0)
    ax.margins(y=0.08)
    ax.set_xlabel("eigenvalue index (ordered, largest first)")
    ax.set_ylabel("eigenvalue (symlog scale)")
    ax.set_title(f"{title}\nλmax = {_fmt(top[0])}, λmin = {_fmt(bottom[0])}, "
                 f"|λmin/λmax| = {_fmt(eigen_ratio(bottom[0], top[0]))}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, out_stem)


def plot_density(grid: np.ndarray, density: np.ndarray, out_stem: Path, *, title: str,
                 top: np.ndarray | None = None, bottom: np.ndarray | None = None, trace: float | None = None) -> list[Path]:
    """The SLQ spectral density on a log y-scale (Ghorbani et al. 2019, Fig. 1 style), with the
    extreme eigenvalues found by Lanczos marked."""
    grid, density = np.asarray(grid, dtype=float), np.asarray(density, dtype=float)
    fig = _figure((7.0, 4.4))
    ax = fig.add_subplot()
    floor = max(float(density.max(initial=0)) * 1e-9, 1e-300)
    ax.semilogy(grid, np.maximum(density, floor), color="tab:blue", linewidth=1.2, label="SLQ density")
    for vals, colour, name in ((top, "tab:green", "largest eigenvalues"), (bottom, "tab:red", "smallest eigenvalues")):
        if vals is not None and len(vals):
            for i, v in enumerate(np.asarray(vals, dtype=float)):
                ax.axvline(v, color=colour, linestyle="--", linewidth=0.8, alpha=0.8, label=name if i == 0 else None)
    ax.set_ylim(bottom=floor * 10 if density.max(initial=0) > 0 else None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    extra = f", trace ≈ {_fmt(trace)}" if trace is not None and math.isfinite(trace) else ""
    ax.set_title(f"{title}{extra}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, out_stem)


def plot_eigen_curves(alphas: np.ndarray, top_loss: np.ndarray, bottom_loss: np.ndarray, out_stem: Path, *,
                      title: str, lambda_max: float, lambda_min: float, loss0: float, slope_top: float = 0.0,
                      slope_bottom: float = 0.0) -> list[Path]:
    """Loss along the top and bottom eigenvectors with the quadratic models
    ``L0 + g.v a + lambda a^2 / 2`` drawn dashed."""
    a = np.asarray(alphas, dtype=float)
    fig = _figure((6.6, 4.6))
    ax = fig.add_subplot()
    ax.plot(a, top_loss, color="tab:blue", linewidth=1.6, label=f"along top eigenvector (λ = {_fmt(lambda_max)})")
    ax.plot(a, loss0 + slope_top * a + 0.5 * lambda_max * a ** 2, color="tab:blue", linestyle="--", linewidth=1,
            label="quadratic model (top)")
    ax.plot(a, bottom_loss, color="tab:red", linewidth=1.6, label=f"along bottom eigenvector (λ = {_fmt(lambda_min)})")
    ax.plot(a, loss0 + slope_bottom * a + 0.5 * lambda_min * a ** 2, color="tab:red", linestyle="--", linewidth=1,
            label="quadratic model (bottom)")
    finite = np.concatenate([np.asarray(top_loss)[np.isfinite(top_loss)], np.asarray(bottom_loss)[np.isfinite(bottom_loss)]])
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1e-3) * 0.1
        ax.set_ylim(lo - pad, hi + pad)  # the quadratic models may shoot far off: the data set the scale
    ax.set_xlim(a.min(), a.max())
    ax.set_xlabel("a (distance along the unit eigenvector)")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    ax.grid(True, alpha=0.3)
    return _save(fig, out_stem)


def _value_scale(ax: Any, values: np.ndarray) -> None:
    """Log scale only where positive values span more than about a decade and a half."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all() and v.max() / v.min() > 30:
        ax.set_yscale("log")


def plot_trajectory(epochs: np.ndarray, lambda_max: np.ndarray, out_stem: Path, *, title: str,
                    trace: np.ndarray | None = None, trace_stderr: np.ndarray | None = None,
                    loss: np.ndarray | None = None) -> list[Path]:
    """lambda_max (and the Hutchinson trace with +-1 standard error bars, and the loss) against
    the epoch, one panel each (as Jastrzebski et al. 2019)."""
    from matplotlib.ticker import MaxNLocator

    e = np.asarray(epochs, dtype=float)
    lam = np.asarray(lambda_max, dtype=float)
    has_trace = trace is not None and np.isfinite(np.asarray(trace, dtype=float)).any()
    panels = 1 + int(has_trace) + int(loss is not None)
    fig = _figure((6.4, 1.6 + 1.8 * panels))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(e, lam, marker="o", markersize=4, color="tab:blue")
    _value_scale(ax, lam)
    ax.set_ylabel("λmax")
    ax.set_title(title, fontsize=10)
    i = 1
    if has_trace:
        tr = np.asarray(trace, dtype=float)
        se = np.asarray(trace_stderr, dtype=float) if trace_stderr is not None else None
        axes[i].errorbar(e, tr, yerr=se, marker="o", markersize=4, capsize=3, color="tab:green")
        axes[i].set_ylabel("trace (± s.e.)")
        i += 1
    if loss is not None:
        axes[i].plot(e, loss, marker="o", markersize=4, color="tab:red")
        axes[i].set_ylabel("loss (Hessian data)")
        _value_scale(axes[i], np.asarray(loss, dtype=float))
    for a in axes:
        a.grid(True, alpha=0.3)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("epoch")
    return _save(fig, out_stem)
