"""Figures comparing models: each measure against a swept parameter and against test error or
the generalization gap, 1D curves overlaid, and a grid of 2D contours on one colour scale.

The measure figures take the comparison table's rows (``landscape_exp.compare.tables.comparison_table``):
mappings from column name to value, a measure's confidence interval in ``<name> ci_low`` /
``<name> ci_high``."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from landscape_exp.errors import UserError
from landscape_exp.figures.base import NO_POINTS_TEXT, XLABEL_2D, YLABEL_2D, log10_masked, mask_invalid, new_figure
from landscape_exp.figures.levels import LevelSpec


class Run(Protocol):
    """What the overlay figures read of a compared job (``landscape_exp.compare.runs.Run`` is one):
    its name and its surface as ``read_surface`` returns it (None without one)."""

    name: str
    surface: Mapping[str, Any] | None

__all__ = ["figure_contour_grid", "figure_measures_vs_parameter", "figure_measures_vs_target", "figure_overlay_1d"]


def distinct_colours(n: int) -> list[Any]:
    """``n`` colours that tell ``n`` lines apart: matplotlib's ten cycle colours, ``tab20`` up to
    twenty, past that evenly spaced along ``turbo`` (the cycle would repeat after ten)."""
    from matplotlib import colormaps

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.03, 0.97, n)]


def figure_overlay_1d(runs: Sequence[Run], *, metric: str = "train_loss", labels: Sequence[str] | None = None,
                      log: bool = False, loss_max: float | None = None, title: str | None = None) -> Figure:
    """The 1D curves of ``runs`` overlaid, one colour per run: ``metric`` solid and the same
    quantity on the other split dashed (left panel); for a loss ``metric``, the accuracies in a
    right panel where the surfaces hold them (train solid, test dashed)."""
    one_d = [r for r in runs if r.surface is not None and r.surface.get("y") is None]
    if not one_d:
        raise UserError("no run has a 1D surface to overlay")
    labels = list(labels) if labels is not None else [r.name for r in one_d]
    split, quantity = metric.split("_", 1)
    other = f"{'test' if split == 'train' else 'train'}_{quantity}"
    if not any(other in r.surface for r in one_d):
        other = None
    is_loss = quantity == "loss"
    has_acc = is_loss and any(k in r.surface for r in one_d for k in ("train_acc", "test_acc"))
    fig = new_figure((11.0, 4.6) if has_acc else (6.4, 4.6))
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    colours = distinct_colours(len(one_d))
    for i, (r, lab) in enumerate(zip(one_d, labels)):
        s, col = r.surface, colours[i]
        x = np.asarray(s["x"], dtype=float)
        panels = [(metric, axes[0], "-", lab), (other, axes[0], "--", None)]
        if has_acc:
            panels += [("train_acc", axes[1], "-", None), ("test_acc", axes[1], "--", None)]
        for key, ax, ls, legend in panels:
            if key is None or key not in s:
                continue
            v = mask_invalid(s[key], s.get("done")).filled(np.nan)
            if log and key.endswith("loss"):
                v = np.where(v > 0, v, np.nan)
            ax.plot(x, v, color=col, linestyle=ls, linewidth=1.4, label=legend)
    axes[0].set_xlabel("alpha")
    axes[0].set_ylabel(quantity if is_loss else "accuracy (%)")
    axes[0].set_title(metric.replace("_", " ") + (f" (dashed: {other.replace('_', ' ')})" if other else ""))
    if is_loss and log:
        axes[0].set_yscale("log")
    if is_loss and loss_max is not None and not log:
        axes[0].set_ylim(top=float(loss_max))
    if not is_loss:
        axes[0].set_ylim(0, 100)
    if len(one_d) > 4:  # a long legend inside the axes would hide the curves
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    else:
        axes[0].legend(fontsize=7)
    if has_acc:
        axes[1].set_xlabel("alpha")
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_ylim(0, 100)
        axes[1].set_title("accuracy (solid: train, dashed: test)")
    if title:
        fig.suptitle(wrap(title, 90), fontsize=10)
    return fig


def figure_contour_grid(runs: Sequence[Run], *, metric: str = "train_loss", labels: Sequence[str] | None = None,
                        levels: LevelSpec, log: bool = False) -> Figure:
    """One panel per run with a 2D surface: filled contours of ``metric`` on one shared colour
    scale (one set of levels for all panels, chosen by ``levels`` from the values of every run
    pooled, one colour bar), the checkpoint starred at the centre."""
    two_d = [r for r in runs if r.surface is not None and r.surface.get("y") is not None]
    if not two_d:
        raise UserError("no run has a 2D surface for a contour grid")
    labels = list(labels) if labels is not None else [r.name for r in two_d]
    if metric.endswith("_acc"):  # percent: as the single-run figures
        levels, log = levels.for_percent(), False

    def values(r: Run) -> np.ma.MaskedArray:
        z = mask_invalid(r.surface[metric], r.surface.get("done"))
        return log10_masked(z) if log else z

    pooled = np.ma.concatenate([values(r).ravel() for r in two_d if metric in r.surface] or [np.ma.masked_all(1)])
    scale = levels.scale(pooled, log=log, what=metric.replace("_", " "))
    if scale.warning:
        print(scale.warning)
    levels_v, norm = scale.levels, scale.norm
    n = len(two_d)
    ncols = int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    fig = new_figure((3.6 * ncols + 1.2, 3.3 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    mappable = None
    for idx, ax in enumerate(axes.ravel()):
        if idx >= n:
            ax.set_axis_off()
            continue
        r, lab = two_d[idx], labels[idx]
        s = r.surface
        ax.set_title(wrap(lab, 40), fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(5))  # nine tick labels run into each other at this size
        ax.set_xlabel(XLABEL_2D, fontsize=7)
        ax.set_ylabel(YLABEL_2D, fontsize=7)
        if metric not in s:
            ax.text(0.5, 0.5, f"no {metric}", transform=ax.transAxes, ha="center")
            continue
        z = values(r)
        x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
        if np.ma.getmaskarray(z).all():
            ax.text(0.5, 0.5, NO_POINTS_TEXT, transform=ax.transAxes, ha="center")
            continue
        cs = ax.contourf(x, y, z, levels=levels_v, cmap="viridis", norm=norm, extend="both")
        ax.contour(x, y, z, levels=levels_v, colors="k", linewidths=0.4, alpha=0.5)
        mappable = cs
        if x[0] <= 0 <= x[-1] and y[0] <= 0 <= y[-1]:
            ax.plot([0], [0], marker="*", color="red", markeredgecolor="black", markersize=10, linestyle="none")
        ax.tick_params(labelsize=7)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, label=(f"log10({metric})" if log else metric).replace("_", " "))
    fig.suptitle(f"{metric.replace('_', ' ')}: shared colour scale", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------
# Measures against a swept parameter, test error, the generalization gap
# ------------------------------------------------------------------------------------------------
NCOLS = 3
MARKERS = ("o", "s", "^", "D", "v")  # past ten models the colours repeat: the marker tells them apart
PANEL = (3.8, 3.0)  # inches per panel: room for a two-line title above the axes


def wrap(text: str, width: int = 40) -> str:
    """Long titles on several lines instead of cut or overlapping their neighbours."""
    return "\n".join(textwrap.fill(part, width) for part in str(text).split("\n"))


def _num(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _panels(n: int, extra_height: float = 0.6, legend: bool = False) -> tuple[Figure, list[Axes]]:
    ncols = min(NCOLS, max(n, 1))
    nrows = int(math.ceil(n / ncols))
    fig = new_figure((PANEL[0] * ncols + (2.2 if legend else 0.0), PANEL[1] * nrows + extra_height))
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def _errors(rows: Sequence[Mapping[str, Any]], key: str, values: np.ndarray) -> np.ndarray | None:
    """``(2, n)`` distances to the CI ends for ``errorbar`` (0 where a row has none); None without any CI."""
    lo = np.array([_num(r.get(f"{key} ci_low")) for r in rows])
    hi = np.array([_num(r.get(f"{key} ci_high")) for r in rows])
    if not (np.isfinite(lo).any() or np.isfinite(hi).any()):
        return None
    return np.vstack([np.where(np.isfinite(lo), values - lo, 0.0), np.where(np.isfinite(hi), hi - values, 0.0)]).clip(min=0)


def powers_of_two(x: np.ndarray) -> bool:
    """Every value a positive power of two and at least two of them: a log2 axis shows them evenly."""
    x = x[np.isfinite(x)]
    return len(np.unique(x)) > 1 and bool(np.all(x > 0)) and bool(np.allclose(np.log2(x), np.round(np.log2(x))))


def _x_axis(rows: Sequence[Mapping[str, Any]], param: str) -> tuple[np.ndarray, list[float], list[str], bool]:
    """Positions of the rows on the x axis, the ticks and their labels, and whether log2."""
    raw = [r.get(param) for r in rows]
    x = np.array([_num(v) for v in raw])
    if np.isfinite(x).all():
        ticks = sorted(set(x.tolist()))
        return x, ticks, [f"{t:g}" for t in ticks], powers_of_two(x)
    cats = list(dict.fromkeys(str(v) for v in raw))  # rows come sorted by the swept values
    return np.array([cats.index(str(v)) for v in raw], float), list(range(len(cats))), cats, False


def figure_measures_vs_parameter(rows: Sequence[Mapping[str, Any]], param: str, measures: Sequence[str], *,
                                 lines: Sequence[str] | None = None, name: str | None = None,
                                 line_name: str = "", note: str = "") -> Figure:
    """One panel per measure: its value against ``param`` (the rows' values; numbers on a numeric
    axis, log2 when they are powers of two), one line per distinct entry of ``lines`` (the other
    swept values of each row, together called ``line_name``), a measure's confidence interval as
    error bars; ``note`` (what the points and bars are) goes under the title."""
    if not rows:
        raise UserError("no models to draw")
    name = name or param
    lines = list(lines) if lines is not None else [""] * len(rows)
    groups = list(dict.fromkeys(lines))
    x, ticks, tick_labels, log2 = _x_axis(rows, param)
    legend = len(groups) > 1
    fig, axes = _panels(len(measures), legend=legend)
    colours = distinct_colours(len(groups))
    for ax, m in zip(axes, measures):
        y = np.array([_num(r.get(m)) for r in rows])
        err = _errors(rows, m, y)
        for i, g in enumerate(groups):
            idx = np.array([j for j, lab in enumerate(lines) if lab == g])
            idx = idx[np.argsort(x[idx], kind="stable")]
            e = err[:, idx] if err is not None else None
            ax.errorbar(x[idx], y[idx], yerr=e, color=colours[i], marker="o", markersize=4, linewidth=1.4,
                        capsize=3 if e is not None else 0, label=g or None)
        if log2:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, tick_labels, fontsize=7)
        ax.minorticks_off()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel(name, fontsize=8)
        ax.set_title(wrap(m, 34), fontsize=8)
        if not np.isfinite(y).any():
            ax.text(0.5, 0.5, "no value", transform=ax.transAxes, ha="center", va="center", fontsize=8)
    if legend:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    others = f" (one line per {line_name})" if legend and line_name else ""
    fig.suptitle(wrap(f"each measure against {name}{others}" + (f"\n{note}" if note else ""), 100), fontsize=10)
    return fig


def figure_measures_vs_target(rows: Sequence[Mapping[str, Any]], target: str, measures: Sequence[str],
                              stats: Mapping[str, str], *, labels: Sequence[str]) -> Figure:
    """One panel per measure: ``target`` (test error, generalization gap) against the measure, one
    colour per model (``labels``), the measure's CI as horizontal error bars and the panel's
    title giving ``stats[measure]`` (the rank correlations, n, and whether n means anything)."""
    if not rows:
        raise UserError("no models to draw")
    what = {"test_error": "test error (%)", "gap": "generalization gap (test - train loss)"}.get(target, target)
    fig, axes = _panels(len(measures), extra_height=0.8, legend=True)
    t = np.array([_num(r.get(target)) for r in rows])
    for ax, m in zip(axes, measures):
        v = np.array([_num(r.get(m)) for r in rows])
        err = _errors(rows, m, v)
        for i, lab in enumerate(labels):
            ax.errorbar(v[i:i + 1], t[i:i + 1], xerr=err[:, i:i + 1] if err is not None else None, color=f"C{i % 10}",
                        marker=MARKERS[i // 10 % len(MARKERS)], markersize=5, linestyle="none",
                        capsize=3 if err is not None else 0, label=lab)
        ax.set_xlabel(wrap(m, 40), fontsize=7)
        ax.set_ylabel(what if len(what) < 20 else target.replace("_", " "), fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_title(wrap(stats.get(m, ""), 44), fontsize=7)
    handles, labs = axes[0].get_legend_handles_labels() if axes else ([], [])
    if handles:
        fig.legend(handles, labs, loc="outside right upper", fontsize=7, title="model", title_fontsize=7)
    fig.suptitle(wrap(f"{what} against each measure (one point per model; rank correlations over models)", 100),
                 fontsize=10)
    return fig
