"""Hessian figures: the eigenvalue scatter (Sagun et al. 2017), the log-scale spectral density
(Ghorbani et al. 2019), the loss along eigenvectors, lambda_max along training (Jastrzebski et
al. 2019) and the ``hessian_surface`` maps (Li et al. 2018, Fig. 9)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from landscape_exp.figures.base import new_figure
from landscape_exp.figures.surface2d import save_2d
from landscape_exp.hessian.analysis import eigen_ratio

if TYPE_CHECKING:
    from landscape_exp.settings import PlotSettings

__all__ = [
    "figure_density",
    "figure_eigen_curves",
    "figure_eigenvalues",
    "figure_lambda_max",
    "hessian_surface_figures",
    "hessian_title",
    "surface_levels",
]


def hessian_title(model_name: str, dataset_name: str, what: str) -> str:
    return f"{what}: {model_name} on {dataset_name}"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def figure_eigenvalues(top: np.ndarray, bottom: np.ndarray, dim: int, *, title: str) -> Figure:
    """Computed eigenvalues against their index in the ordered spectrum (as Sagun et al. 2017):
    the k largest at indices 1..k, the k smallest at dim-k+1..dim, on a broken index axis."""
    top, bottom = np.asarray(top, dtype=float), np.asarray(bottom, dtype=float)
    k_t, k_b = len(top), len(bottom)
    fig = new_figure((7.0, 4.4))
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
    return fig


def figure_density(grid: np.ndarray, density: np.ndarray, *, title: str, top: np.ndarray | None = None,
                   bottom: np.ndarray | None = None, trace: float | None = None) -> Figure:
    """The SLQ spectral density on a log y-scale (Ghorbani et al. 2019, Fig. 1 style), with the
    extreme eigenvalues found by Lanczos marked."""
    grid, density = np.asarray(grid, dtype=float), np.asarray(density, dtype=float)
    fig = new_figure((7.0, 4.4))
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
                      trace_stderr: np.ndarray | None = None, loss: np.ndarray | None = None) -> Figure:
    """lambda_max (and the Hutchinson trace with +-1 standard error bars, and the loss) against
    the epoch, one panel each (as Jastrzebski et al. 2019)."""
    e = np.asarray(epochs, dtype=float)
    lam = np.asarray(lambda_max, dtype=float)
    has_trace = trace is not None and np.isfinite(np.asarray(trace, dtype=float)).any()
    panels = 1 + int(has_trace) + int(loss is not None)
    fig = new_figure((6.4, 1.6 + 1.8 * panels))
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
    return fig


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
    figs += save_2d(x, y, surface["ratio"], out / "hessian_surface_ratio", title=f"{base}\n|λmin / λmax|",
                    zlabel="|λmin / λmax|", vmin=0.0, vmax=0.5, vlevel=0.05, done=done, kinds=("heatmap", "contour"))
    for m, label in (("lambda_max", "λmax"), ("lambda_min", "λmin")):
        figs += save_2d(x, y, surface[m], out / f"hessian_surface_{m}", title=f"{base}\n{label}", zlabel=label,
                        done=done, kinds=("heatmap",), **surface_levels(surface[m], done))
    figs += save_2d(x, y, surface[loss_key], out / f"hessian_surface_{loss_key}", title=f"{base}\n{loss_key.replace('_', ' ')}",
                    zlabel=loss_key.replace("_", " "), vmin=float(plot.vmin), vmax=float(plot.vmax),
                    vlevel=float(plot.vlevel), log=bool(plot.log), done=done, kinds=("contour",))
    return figs
