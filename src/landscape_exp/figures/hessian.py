"""Hessian figures: the eigenvalue scatter with residual error bars (Sagun et al. 2017), the
log-scale spectral density with its bulk edge (Ghorbani et al. 2019), per-layer block spectra,
the loss along eigenvectors, lambda_max along training (Jastrzebski et al. 2019), the top-k
subspace, gradient fraction and outlier count along training (Gur-Ari et al. 2018; Sagun et al.
2017) and the ``hessian_surface`` maps (Li et al. 2018, Fig. 9)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from landscape_exp.figures.base import new_figure, save
from landscape_exp.figures.levels import LevelSpec
from landscape_exp.figures.surface2d import save_2d

if TYPE_CHECKING:
    from landscape_exp.config.sections import PlotSettings

__all__ = [
    "figure_blocks",
    "figure_curvature_along_training",
    "figure_density",
    "figure_eigen_curves",
    "figure_eigenvalues",
    "figure_lambda_max",
    "hessian_surface_figures",
    "hessian_title",
    "spectrum_figures",
    "surface_levels",
]


def hessian_title(model_name: str, dataset_name: str, what: str) -> str:
    return f"{what}: {model_name} on {dataset_name}"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _symlog(ax: Axes, values: np.ndarray) -> None:
    """symlog: outliers and small negative eigenvalues both readable; a power-of-ten threshold
    keeps the decade ticks clear of the linear band around zero."""
    span = float(np.nanmax(np.abs(values), initial=0))
    ax.set_yscale("symlog", linthresh=10.0 ** math.floor(math.log10(max(span * 1e-2, 1e-30))), linscale=1.0)


class PairSet(Protocol):
    """Eigenpairs as the figures read them (``landscape_exp.hessian.report.PairSet`` is one):
    values, their residuals and which met their tolerance."""

    values: np.ndarray
    residuals: np.ndarray

    @property
    def converged(self) -> np.ndarray: ...


class BlockSpectrum(Protocol):
    """One layer's diagonal-block spectrum (``landscape_exp.hessian.report.BlockSpectrum``)."""

    name: str
    dim: int
    top: PairSet
    bottom: PairSet


class SpectrumReport(Protocol):
    """What :func:`spectrum_figures` draws of a ``landscape_exp.hessian.report.SpectrumReport``."""

    top: PairSet
    bottom: PairSet
    trace: float
    density_grid: np.ndarray
    density: np.ndarray
    bulk: Any
    blocks: list[Any]

    @property
    def lambda_max(self) -> float: ...

    @property
    def lambda_min(self) -> float: ...

    @property
    def ratio(self) -> float: ...


def _pairs_with_bars(ax: Axes, x: np.ndarray, pairs: PairSet, colour: str, label: str, order: slice = slice(None)) -> None:
    """Eigenvalues at ``x`` with error bars of +-residual (each value lies within its residual
    of an eigenvalue); pairs that missed their tolerance drawn hollow."""
    vals, res, ok = pairs.values[order], pairs.residuals[order], pairs.converged[order]
    ax.errorbar(x, vals, yerr=res, fmt="none", ecolor=colour, elinewidth=1.2, capsize=3, zorder=2)
    if ok.any():
        ax.scatter(x[ok], vals[ok], color=colour, zorder=3, label=label)
    if (~ok).any():
        ax.scatter(x[~ok], vals[~ok], facecolors="white", edgecolors=colour, zorder=3,
                   label=f"{label}: NOT converged")


def figure_eigenvalues(top: PairSet, bottom: PairSet, dim: int, *, title: str, ratio: float) -> Figure:
    """Computed eigenvalues against their index in the ordered spectrum (as Sagun et al. 2017):
    the k largest at indices 1..k, the k smallest at dim-k+1..dim, on a broken index axis, with
    +-residual error bars and hollow markers for pairs that did not converge; ``ratio`` is
    ``|lambda_min / lambda_max|`` (in the title)."""
    k_t, k_b = len(top.values), len(bottom.values)
    fig = new_figure((7.0, 4.4))
    ax = fig.add_subplot()
    x_top = np.arange(1, k_t + 1)
    x_bot = np.arange(k_t + 2, k_t + 2 + k_b)  # one empty slot marks the unseen bulk
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    _pairs_with_bars(ax, x_top, top, "tab:blue", f"largest {k_t}")
    if k_b:
        _pairs_with_bars(ax, x_bot, bottom, "tab:red", f"smallest {k_b}", slice(None, None, -1))
    ax.axvline(k_t + 1, color="0.75", linestyle=":", linewidth=1)
    ax.text(k_t + 1, 0.5, f"bulk\n({max(dim - k_t - k_b, 0):,} not computed)", transform=ax.get_xaxis_transform(),
            ha="center", va="center", fontsize=8, color="0.35", bbox={"facecolor": "white", "edgecolor": "none"})
    labels = [str(i) for i in x_top] + [str(dim - k_b + 1 + i) for i in range(k_b)]
    ax.set_xticks(np.concatenate([x_top, x_bot]), labels, rotation=45 if dim > 9999 else 0, fontsize=8)
    _symlog(ax, np.concatenate([top.values, bottom.values]))
    ax.margins(y=0.08)
    ax.set_xlabel("eigenvalue index (ordered, largest first)")
    ax.set_ylabel("eigenvalue (symlog scale, ± residual)")
    lmin = bottom.values[0] if k_b else math.nan
    bad = int((~top.converged).sum() + (~bottom.converged).sum())
    note = f"\n{bad} of {k_t + k_b} pairs NOT converged (hollow): each only known to ± its residual" if bad else ""
    ax.set_title(f"{title}\nλmax = {_fmt(top.values[0])}, λmin = {_fmt(lmin)}, "
                 f"|λmin/λmax| = {_fmt(ratio)}{note}", fontsize=10,
                 color="tab:red" if bad else "black")
    ax.legend(loc="best", fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


def figure_blocks(blocks: list[BlockSpectrum], *, title: str) -> Figure:
    """Per-layer (block) spectra: each layer's top eigenvalues and its smallest one, with
    +-residual error bars (hollow: not converged), on a symlog scale."""
    fig = new_figure((max(5.0, 1.2 + 0.9 * len(blocks)), 4.4))
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    for i, b in enumerate(blocks):
        first = i == 0
        _pairs_with_bars(ax, np.full(len(b.top.values), float(i)), b.top, "tab:blue",
                         f"top {len(b.top.values)}" if first else "_")
        if len(b.bottom.values):
            _pairs_with_bars(ax, np.full(1, float(i)), b.bottom, "tab:red", "smallest" if first else "_")
    _symlog(ax, np.concatenate([np.concatenate([b.top.values, b.bottom.values]) for b in blocks]))
    ax.set_xticks(np.arange(len(blocks)), [f"{b.name}\n({b.dim:,})" for b in blocks], fontsize=8)
    ax.set_xlim(-0.6, len(blocks) - 0.4)
    ax.set_xlabel("layer (parameters in its block)")
    ax.set_ylabel("eigenvalue of the diagonal block (symlog, ± residual)")
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if not lab.startswith("_")]
    fig.legend([h for h, _ in keep], [lab for _, lab in keep], loc="outside lower center", ncols=2, fontsize=8,
               frameon=False)
    ax.grid(True, alpha=0.3)
    return fig


def figure_density(grid: np.ndarray, density: np.ndarray, *, title: str, top: np.ndarray | None = None,
                   bottom: np.ndarray | None = None, trace: float | None = None, bulk_edge: float | None = None,
                   num_outliers: int | None = None) -> Figure:
    """The SLQ spectral density on a log y-scale (Ghorbani et al. 2019, Fig. 1 style), with the
    extreme eigenvalues found by Lanczos and the bulk's upper edge marked."""
    grid, density = np.asarray(grid, dtype=float), np.asarray(density, dtype=float)
    fig = new_figure((7.0, 4.4))
    ax = fig.add_subplot()
    floor = max(float(density.max(initial=0)) * 1e-9, 1e-300)
    ax.semilogy(grid, np.maximum(density, floor), color="tab:blue", linewidth=1.2, label="SLQ density")
    for vals, colour, name in ((top, "tab:green", "largest eigenvalues"), (bottom, "tab:red", "smallest eigenvalues")):
        if vals is not None and len(vals):
            for i, v in enumerate(np.asarray(vals, dtype=float)):
                ax.axvline(v, color=colour, linestyle="--", linewidth=0.8, alpha=0.8, label=name if i == 0 else None)
    if bulk_edge is not None and math.isfinite(bulk_edge):
        ax.axvline(bulk_edge, color="black", linestyle=":", linewidth=1.2,
                   label=f"bulk edge ({num_outliers} outliers above)" if num_outliers is not None else "bulk edge")
    ax.set_ylim(bottom=floor * 10 if density.max(initial=0) > 0 else None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    extra = f", trace ≈ {_fmt(trace)}" if trace is not None and math.isfinite(trace) else ""
    ax.set_title(f"{title}{extra}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


def figure_eigen_curves(alphas: np.ndarray, top_loss: np.ndarray, bottom_loss: np.ndarray, *, title: str,
                        lambda_max: float, lambda_min: float, loss0: float, slope_top: float = 0.0,
                        slope_bottom: float = 0.0) -> Figure:
    """Loss along the top and bottom eigenvectors with the quadratic models
    ``L0 + g.v a + lambda a^2 / 2`` drawn dashed."""
    a = np.asarray(alphas, dtype=float)
    fig = new_figure((6.6, 4.6))
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
    return fig


def _value_scale(ax: Axes, values: np.ndarray) -> None:
    """Log scale only where positive values span more than about a decade and a half."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all() and v.max() / v.min() > 30:
        ax.set_yscale("log")


def figure_lambda_max(epochs: np.ndarray, lambda_max: np.ndarray, *, title: str, trace: np.ndarray | None = None,
                      trace_stderr: np.ndarray | None = None, loss: np.ndarray | None = None,
                      residual: np.ndarray | None = None, top: np.ndarray | None = None) -> Figure:
    """lambda_max (± its residual; the other top-k eigenvalues thin), the Hutchinson trace with ±1
    standard error bars, and the loss against the epoch, one panel each (as Jastrzebski et al. 2019)."""
    e = np.asarray(epochs, dtype=float)
    lam = np.asarray(lambda_max, dtype=float)
    has_trace = trace is not None and np.isfinite(np.asarray(trace, dtype=float)).any()
    panels = 1 + int(has_trace) + int(loss is not None)
    fig = new_figure((6.4, 1.6 + 1.8 * panels))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    if top is not None and np.asarray(top).ndim == 2 and np.asarray(top).shape[1] > 1:
        ax.plot(e, np.asarray(top, dtype=float)[:, 1:], color="tab:blue", linewidth=0.6, alpha=0.35)
    ax.errorbar(e, lam, yerr=residual, marker="o", markersize=4, capsize=3, color="tab:blue")
    _value_scale(ax, lam)
    ax.set_ylabel("λmax" + (" (top-k thin)" if top is not None and np.asarray(top).ndim == 2 else ""))
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
    return fig


def figure_curvature_along_training(epochs: np.ndarray, overlap: np.ndarray, gradient_fraction: np.ndarray, *,
                                    k: int, dim: int, title: str, num_outliers: np.ndarray | None = None,
                                    num_classes: int | None = None) -> Figure:
    """Against the epoch (Gur-Ari et al. 2018; Sagun et al. 2017): the overlap of each epoch's
    top-k eigenvector subspace with the previous epoch's (1: unchanged; ``k/dim``: random), the
    fraction ``||P g||^2/||g||^2`` of the full-data gradient in the top-k subspace, and the number
    of outlier eigenvalues above the bulk against the number of classes."""
    e = np.asarray(epochs, dtype=float)
    has_out = num_outliers is not None and (np.asarray(num_outliers) >= 0).any()
    panels = 2 + int(has_out)
    fig = new_figure((6.4, 1.6 + 1.8 * panels))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    axes[0].plot(e, overlap, marker="o", markersize=4, color="tab:purple")
    axes[0].axhline(k / dim, color="0.5", linestyle="--", linewidth=0.9, label=f"random subspaces (k/dim = {k / dim:.2g})")
    axes[0].set_ylabel(f"top-{k} overlap\nwith previous epoch")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].plot(e, gradient_fraction, marker="o", markersize=4, color="tab:orange")
    axes[1].axhline(k / dim, color="0.5", linestyle="--", linewidth=0.9, label="random direction (k/dim)")
    axes[1].set_ylabel(f"gradient fraction\nin top-{k} subspace")
    axes[1].legend(loc="lower right", fontsize=8)
    for a in axes[:2]:
        a.set_ylim(-0.03, 1.03)
    if has_out:
        n = np.asarray(num_outliers, dtype=float)
        axes[2].plot(e, np.where(n >= 0, n, np.nan), marker="o", markersize=4, color="tab:brown", label="outliers above the bulk")
        if num_classes:
            axes[2].axhline(num_classes, color="0.3", linestyle="--", linewidth=0.9, label=f"classes C = {num_classes}")
            axes[2].axhline(num_classes - 1, color="0.6", linestyle=":", linewidth=0.9, label="C − 1")
        axes[2].set_ylabel("outlier\neigenvalues")
        axes[2].yaxis.set_major_locator(MaxNLocator(integer=True))
        axes[2].legend(loc="lower right", fontsize=8)
    axes[0].set_title(title, fontsize=10)
    for a in axes:
        a.grid(True, alpha=0.3)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("epoch")
    return fig


def spectrum_figures(report: SpectrumReport, dim: int, out_dir: Path, *, title: str, alphas: np.ndarray,
                     curves: tuple[np.ndarray, np.ndarray], loss0: float, slopes: tuple[float, float]) -> list[Path]:
    """Every figure of one ``task=hessian`` run, written with :func:`save`: the eigenvalues, the
    density (when computed), the loss along the top and bottom eigenvectors, the block spectra."""
    out = Path(out_dir)
    figs = save(figure_eigenvalues(report.top, report.bottom, dim, title=title, ratio=report.ratio), out / "hessian_eigenvalues")
    if len(report.density):
        b = report.bulk
        figs += save(figure_density(report.density_grid, report.density, title=f"{title}: spectral density (SLQ)",
                                    top=report.top.values, bottom=report.bottom.values, trace=report.trace,
                                    bulk_edge=b.edge if b else None, num_outliers=b.num_outliers if b else None),
                     out / "hessian_density")
    figs += save(figure_eigen_curves(alphas, curves[0], curves[1], title=f"{title}: loss along eigenvectors",
                                     lambda_max=report.lambda_max, lambda_min=report.lambda_min, loss0=loss0,
                                     slope_top=slopes[0], slope_bottom=slopes[1]), out / "hessian_curves")
    if report.blocks:
        figs += save(figure_blocks(report.blocks, title=f"{title}: per-layer block spectra"), out / "hessian_blocks")
    return figs


def surface_levels(values: np.ndarray, done: np.ndarray) -> dict[str, float]:
    """Contour/colour range spanning the computed finite values in about 15 levels."""
    v = np.asarray(values, dtype=float)[np.asarray(done, dtype=bool) & np.isfinite(values)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if not hi > lo:
        pad = max(abs(lo) * 0.05, 1e-12)
        lo, hi = lo - pad, hi + pad
    step = (hi - lo) / 15
    return {"vmin": lo, "vmax": hi + step / 2, "vlevel": step}  # arange excludes vmax: keep the top level


def hessian_surface_figures(surface: Mapping[str, Any], out_dir: Path, plot: PlotSettings, *, model_name: str,
                            dataset_name: str, loss_key: str, normalization: str | None) -> list[Path]:
    """The paper's maps (heat map of |lambda_min/lambda_max| on 0..0.5 as Li et al. Fig. 9), maps of
    lambda_max and lambda_min, and the loss contour of the same grid (levels of ``plot``)."""
    x, y, done = surface["x"], surface["y"], surface["done"]
    norm = normalization
    base = hessian_title(model_name, dataset_name, "hessian_surface")
    base += f", {norm}-normalized directions" if norm and norm != "none" else ""
    out = Path(out_dir)
    figs: list[Path] = []
    fixed = LevelSpec("fixed", 0.0, 0.5, 0.05, 20)
    figs += save_2d(x, y, surface["ratio"], out / "hessian_surface_ratio", title=f"{base}\n|λmin / λmax|",
                    zlabel="|λmin / λmax|", levels=fixed, done=done, kinds=("heatmap", "contour"))
    for m, label in (("lambda_max", "λmax"), ("lambda_min", "λmin")):
        spec = replace(fixed, **surface_levels(surface[m], done))
        figs += save_2d(x, y, surface[m], out / f"hessian_surface_{m}", title=f"{base}\n{label}", zlabel=label,
                        levels=spec, done=done, kinds=("heatmap",))
    figs += save_2d(x, y, surface[loss_key], out / f"hessian_surface_{loss_key}", title=f"{base}\n{loss_key.replace('_', ' ')}",
                    zlabel=loss_key.replace("_", " "), levels=LevelSpec.from_plot(plot), log=bool(plot.log), done=done,
                    kinds=("contour",))
    return figs
