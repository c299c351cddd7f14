"""Line figures: loss and accuracy along a 1D slice (``plot_1D.py``), several slices overlaid
with their mean and spread (``plot_1D.py --prefix``), and connecting curves (mode connectivity)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from landscape_exp.errors import UserError, choice_error
from landscape_exp.figures.base import coords, mask_invalid, new_figure, no_points
from landscape_exp.figures.levels import finite

__all__ = ["METRICS_1D", "figure_1d", "figure_1d_overlay", "figure_curves"]

METRICS_1D: tuple[str, ...] = ("train_loss", "test_loss", "train_acc", "test_acc")
_SPLIT_STYLE = {"train": ("-", "Training"), "test": ("--", "Test")}
_CURVE_KEYS: tuple[str, ...] = (
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "train_err",
    "test_err",
)


def _curve(values: np.ndarray, n: int, name: str, done: np.ndarray | None) -> np.ndarray:
    """A metric array of shape (n,) with masked points as NaN (matplotlib breaks lines there)."""
    if np.shape(values) != (n,):
        raise UserError(f"{name} has shape {np.shape(values)}; expected ({n},) like the coordinates")
    return mask_invalid(values, done).filled(np.nan)


def _draw_line(ax: Axes, x: np.ndarray, v: np.ndarray, **style: object) -> Line2D:
    """Plot ``v`` against ``x`` with NaN gaps; isolated valid points get a marker of their own
    (a line through NaN neighbours would draw nothing and hide a computed point)."""
    (line,) = ax.plot(x, v, **style)
    ok = np.isfinite(v)
    left = np.concatenate([[False], ok[:-1]])
    right = np.concatenate([ok[1:], [False]])
    lonely = ok & ~left & ~right
    if lonely.any():
        ax.plot(x[lonely], v[lonely], linestyle="none", marker="o", markersize=3,
                color=line.get_color())
    return line


def _draw_axis(ax: Axes, x: np.ndarray, curves: Mapping[str, np.ndarray], keys: list[str], colour: str,
               quantity: str, ylabel: str) -> list[Line2D]:
    """``keys`` on one y axis in one colour (train solid, test dashed), the axis labelled in it."""
    handles = []
    for k in keys:
        ls, word = _SPLIT_STYLE[k.split("_")[0]]
        handles.append(_draw_line(ax, x, curves[k], color=colour, linestyle=ls, linewidth=1.5,
                                  label=f"{word} {quantity}"))
    ax.set_ylabel(ylabel, color=colour)
    ax.tick_params("y", colors=colour)
    return handles


def figure_1d(
    x: np.ndarray,
    metrics: Mapping[str, np.ndarray],
    *,
    title: str,
    xlabel: str = "alpha",
    log: bool = False,
    loss_max: float | None = None,
    acc: bool = True,
    done: np.ndarray | None = None,
    anchors: Mapping[str, float] | None = None,
    barrier: Mapping[str, float] | None = None,
) -> Figure:
    """Loss (left axis) and accuracy (right axis) along a 1D slice, like ``plot_1D.py``.

    Args:
        x: coordinates, shape (n,).
        metrics: any of ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``, each (n,).
            Train is drawn solid, test dashed; loss blue, accuracy red.
        title, xlabel: text.
        log: log-scale loss axis (non-positive losses are masked).
        loss_max: top of the loss axis (curves above it are clipped); None for automatic. When
            every loss lies above it (nothing would show), it is ignored with a printed warning.
        acc: draw the accuracy curves (right axis, 0..100 %).
        done: optional (n,) computed-points mask applied to every metric.
        anchors: named positions marked by a vertical line (e.g. ``{"model 1": 0, "model 2": 1}``
            on an interpolation), drawn where they lie inside the x range.
        barrier: the training loss's barrier between two models
            (:func:`landscape_exp.measures.paths.barrier_annotation`): the line between the end
            losses dashed, the barrier's height marked at its location.
    """
    xa = coords(x, "x")
    n = xa.size
    if not metrics:
        raise UserError(f"no metrics to plot; give any of {', '.join(METRICS_1D)}")
    for key in metrics:
        if key not in METRICS_1D:
            raise choice_error("1D metric", key, METRICS_1D)
    top = None if loss_max is None else finite(loss_max, "loss_max")
    if top is not None and top <= 0:
        raise UserError(f"loss_max must be positive; got {top}")
    curves = {k: _curve(v, n, k, done) for k, v in metrics.items()}
    if log:
        for k in ("train_loss", "test_loss"):
            if k in curves:
                curves[k] = np.where(curves[k] > 0, curves[k], np.nan)
    loss_keys = [k for k in ("train_loss", "test_loss") if k in curves]
    acc_keys = [k for k in ("train_acc", "test_acc") if k in curves] if acc else []
    if not loss_keys and not acc_keys:
        raise UserError("acc=False but only accuracy metrics were given: nothing to plot")

    fig = new_figure()
    ax1 = fig.add_subplot()
    ax1.set_title(title)
    ax1.set_xlabel(xlabel)
    if n > 1:
        ax1.set_xlim(xa.min(), xa.max())
    handles: list[Line2D] = []
    loss_ax = ax1 if loss_keys else None
    acc_ax = (ax1.twinx() if loss_keys else ax1) if acc_keys else None
    if loss_ax is not None:
        if log:
            loss_ax.set_yscale("log")
        handles += _draw_axis(loss_ax, xa, curves, loss_keys, "tab:blue", "loss", "Loss")
        valid = np.concatenate([curves[k][np.isfinite(curves[k])] for k in loss_keys])
        if top is not None and valid.size and valid.min() >= top:
            print(f"warning: the loss lies in [{valid.min():.4g}, {valid.max():.4g}], all above plot.loss_max={top:g}; "
                  "the loss axis is not clipped")
            top = None
        if log:
            if top is not None:
                loss_ax.set_ylim(top=top)
        else:
            # The original starts the loss axis at 0; keep that unless values are negative.
            bottom = min(0.0, float(valid.min())) if valid.size else 0.0
            if top is not None and top > bottom:
                loss_ax.set_ylim(bottom, top)
            else:
                loss_ax.set_ylim(bottom=bottom)
    if acc_ax is not None:
        handles += _draw_axis(acc_ax, xa, curves, acc_keys, "tab:red", "accuracy", "Accuracy (%)")
        acc_ax.set_ylim(0, 100)
    if all(not np.isfinite(v).any() for k, v in curves.items() if k in loss_keys + acc_keys):
        no_points(ax1)
    _mark_positions(ax1, xa, anchors)
    if barrier is not None and loss_ax is not None and not log:
        handles.append(_mark_barrier(loss_ax, barrier, "tab:blue"))
    # Outside the axes: the legend never hides a curve.
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
               fontsize=8, frameon=False)
    return fig


def _mark_barrier(ax: Axes, b: Mapping[str, float], colour: str, name: str = "") -> Line2D:
    """The straight line between the end values (dotted) and a double arrow from it up to the
    path at the barrier's location, labelled with the height; returns the legend handle."""
    t0, t1, v0, v1 = (float(b[k]) for k in ("t0", "t1", "v0", "v1"))
    loc, h = float(b["location"]), float(b["height"])
    (line,) = ax.plot([t0, t1], [v0, v1], color=colour, linestyle=":", linewidth=1.0,
                      label=f"{name}barrier {h:.3g} at t={loc:.3g}")
    base = v0 + (loc - t0) / (t1 - t0) * (v1 - v0)
    if h > 0:
        ax.annotate("", xy=(loc, base + h), xytext=(loc, base),
                    arrowprops={"arrowstyle": "<->", "color": colour, "linewidth": 1.0})
        ax.annotate(f"{h:.3g}", xy=(loc, base + 0.5 * h), xytext=(4, 0), textcoords="offset points",
                    color=colour, fontsize=8, va="center")
    return line


def _mark_positions(ax: Axes, x: np.ndarray, anchors: Mapping[str, float] | None) -> None:
    """A dotted vertical line for each anchor inside the x range, named on a top axis (clear of
    the curves)."""
    inside = {name: a for name, a in ((n, finite(a, f"anchor {n!r}")) for n, a in (anchors or {}).items())
              if x.min() <= a <= x.max()}
    if not inside:
        return
    for a in inside.values():
        ax.axvline(a, color="0.3", linestyle=":", linewidth=1.2, zorder=1)
    top = ax.secondary_xaxis("top")
    top.set_xticks(list(inside.values()), labels=list(inside))
    top.tick_params(length=3, labelsize=9)


def figure_1d_overlay(
    x: np.ndarray,
    surfaces: Sequence[Mapping[str, np.ndarray]],
    *,
    title: str,
    log: bool = False,
    loss_max: float | None = None,
) -> Figure:
    """Several 1D slices along the same ``x`` (e.g. one per random direction, the original
    ``plot_1D.py --prefix``) on one figure: each thin, their mean bold and their min-max band
    shaded; loss (train solid, test dashed) on the left panel, accuracy on the right when every
    surface has it.

    Args:
        x: the common coordinates, shape (n,).
        surfaces: mappings with any of :data:`METRICS_1D` (each (n,)) and optionally ``done``;
            -1/NaN/inf points are masked and left out of the mean and band.
        title: figure title.
        log: log-scale loss axis; loss_max: top of the loss axis (ignored when every loss lies
            above it).
    """
    xa = coords(x, "x")
    if len(surfaces) < 2:
        raise UserError(f"an overlay needs at least 2 surfaces; got {len(surfaces)}")
    common = [k for k in METRICS_1D if all(k in s for s in surfaces)]
    losses, accs = [k for k in common if k.endswith("loss")], [k for k in common if k.endswith("acc")]
    if not common:
        raise UserError(f"the surfaces share none of the metrics {', '.join(METRICS_1D)}")
    fig = new_figure((11.0, 4.6) if losses and accs else (6.4, 4.6))
    panels = [p for p in (losses, accs) if p]
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    top = None if loss_max is None else finite(loss_max, "loss_max")
    for ax, keys in zip(axes, panels):
        lows = []
        for k in keys:
            colour, (ls, word) = ("tab:blue" if k in losses else "tab:red"), _SPLIT_STYLE[k.split("_")[0]]
            stack = np.stack([_curve(s[k], xa.size, k, s.get("done")) for s in surfaces])
            if log and k in losses:
                stack = np.where(stack > 0, stack, np.nan)
            for row in stack:
                ax.plot(xa, row, color=colour, linestyle=ls, linewidth=0.6, alpha=0.45)
            with warnings.catch_warnings():  # all-NaN columns: NaN, silently
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(stack, 0), np.nanmin(stack, 0), np.nanmax(stack, 0)
            quantity = "loss" if k in losses else "accuracy"
            ax.fill_between(xa, lo, hi, color=colour, alpha=0.18, linewidth=0,
                            label=f"{word} {quantity}: min-max of {len(surfaces)}")
            ax.plot(xa, mean, color=colour, linestyle=ls, linewidth=2.0, label=f"{word} {quantity}: mean")
            lows.append(np.nanmin(lo) if np.isfinite(lo).any() else np.nan)
        ax.set_xlabel("alpha")
        ax.set_xlim(xa.min(), xa.max())
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        if keys is accs:
            ax.set_ylabel("Accuracy (%)")
            ax.set_ylim(0, 100)
            continue
        ax.set_ylabel("Loss")
        if log:
            ax.set_yscale("log")
        if top is not None and not all(v >= top for v in lows if np.isfinite(v)):  # else top would hide all
            if log:
                ax.set_ylim(top=top)
            else:
                ax.set_ylim(min(0.0, float(np.nanmin(lows))), top)
    fig.suptitle(f"{title}\n{len(surfaces)} directions: each thin, mean bold, min-max shaded", fontsize=10)
    return fig


def figure_curves(
    t: np.ndarray,
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    title: str,
    barriers: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Loss and error (%) along connecting curves (mode connectivity), one panel each.

    Args:
        t: curve parameter values, shape (n,) (usually in [0, 1]).
        curves: ``{curve name: {metric: (n,) array}}`` with metrics among ``train_loss``,
            ``test_loss`` and, for the error panel, ``train_err``/``test_err`` or
            ``train_acc``/``test_acc`` (converted to error = 100 - accuracy). Each curve
            gets a colour; train is solid, test dashed. -1/NaN/inf points are masked.
        title: figure title.
        barriers: ``{curve name: barrier annotation}`` of the training loss, marked on the
            loss panel (:func:`landscape_exp.measures.paths.barrier_annotation`).
    """
    ta = coords(t, "t")
    n = ta.size
    if not curves:
        raise UserError("no curves to plot; give e.g. {'bezier': {...}, 'segment': {...}}")
    fig = new_figure((10.0, 4.2))
    fig.suptitle(title)
    ax_loss = fig.add_subplot(1, 2, 1)
    ax_err = fig.add_subplot(1, 2, 2)
    colours = mpl.colormaps["tab10"].colors
    anything = False
    for idx, (name, metrics) in enumerate(curves.items()):
        colour = colours[idx % len(colours)]
        for key in metrics:
            if key not in _CURVE_KEYS:
                raise choice_error(f"metric of curve {name!r}", key, _CURVE_KEYS)
        for split, ls in (("train", "-"), ("test", "--")):
            if f"{split}_acc" in metrics and f"{split}_err" in metrics:
                raise UserError(
                    f"curve {name!r} gives both {split}_acc and {split}_err; give only one"
                )
            if f"{split}_loss" in metrics:
                v = _curve(metrics[f"{split}_loss"], n, f"{name}.{split}_loss", None)
                anything |= bool(np.isfinite(v).any())
                _draw_line(ax_loss, ta, v, color=colour, linestyle=ls, linewidth=1.5,
                           label=f"{name} ({split})")
                if split == "train" and barriers and barriers.get(name):
                    _mark_barrier(ax_loss, barriers[name], colour, f"{name}: ")
            err = None
            if f"{split}_err" in metrics:
                err = _curve(metrics[f"{split}_err"], n, f"{name}.{split}_err", None)
            elif f"{split}_acc" in metrics:
                err = 100.0 - _curve(metrics[f"{split}_acc"], n, f"{name}.{split}_acc", None)
            if err is not None:
                anything |= bool(np.isfinite(err).any())
                _draw_line(ax_err, ta, err, color=colour, linestyle=ls, linewidth=1.5,
                           label=f"{name} ({split})")
    for ax, ylabel in ((ax_loss, "Loss"), (ax_err, "Error (%)")):
        ax.set_xlabel("t (curve parameter)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if n > 1:
            ax.set_xlim(ta.min(), ta.max())
    # One shared legend below both panels (same colours and styles in each).
    seen: dict[str, Line2D] = {}
    for ax in (ax_loss, ax_err):
        for handle, text in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(text, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncols=min(len(seen), 4), fontsize=8, frameon=False)
    ax_err.set_ylim(bottom=0)
    if not anything:
        no_points(ax_loss)
    return fig
