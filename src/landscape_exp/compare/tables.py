"""The comparison's tables and statistics: one row per model (the swept parameters, loss and
accuracy, test error, the generalization gap and every measure with its interval), the table of
paths between models, means over replicates (seeds) with Student-t intervals, rank correlations
with test error and the gap, and the CSV, markdown and console forms."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landscape_exp.compare.models import Model
from landscape_exp.compare.runs import METRIC_COLUMNS, Run, as_float, value_key
from landscape_exp.io.files import atomic_path
from landscape_exp.measures.record import Measure

MIN_N = 5  # below this a rank correlation of a handful of models says nothing


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------
def small_sample_note(n: int, min_n: int = MIN_N) -> str:
    if n < 3:
        return f"n={n}, too few for a rank correlation"
    return f"n={n}, too few to mean anything" if n < min_n else ""


def rank_correlations(table: Sequence[Mapping[str, Any]], metrics: Sequence[str], target: str = "gap",
                      min_n: int = MIN_N) -> list[dict[str, Any]]:
    """Spearman's rho and Kendall's tau (scipy, with p-values) between each metric and ``target``
    over the rows where both are finite; NaN with fewer than 3 such rows or a constant column, a
    ``note`` below ``min_n`` rows."""
    from scipy.stats import kendalltau, spearmanr

    out = []
    for m in metrics:
        pairs = [(as_float(r.get(m)), as_float(r.get(target))) for r in table]
        pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
        n = len(pairs)
        rho = rp = tau = tp = math.nan
        msg = small_sample_note(n, min_n)
        if n >= 3:
            a, b = np.array(pairs).T
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                s, k = spearmanr(a, b), kendalltau(a, b)
                rho, rp, tau, tp = float(s.statistic), float(s.pvalue), float(k.statistic), float(k.pvalue)
            else:
                msg = ", ".join(x for x in (msg, f"{m if np.ptp(a) == 0 else target} is the same for every model") if x)
        out.append({"measure": m, "target": target, "n": n, "spearman_rho": rho, "spearman_p": rp,
                    "kendall_tau": tau, "kendall_p": tp, "note": msg})
    return out


def stats_text(c: Mapping[str, Any]) -> str:
    """One line: ``Spearman 0.8 (p=0.2), Kendall 0.67 (p=0.33), n=4, too few to mean anything``."""
    if math.isnan(c["spearman_rho"]):
        return c["note"] or f"n={c['n']}"
    text = (f"Spearman {c['spearman_rho']:.2f} (p={c['spearman_p']:.2g}), "
            f"Kendall {c['kendall_tau']:.2f} (p={c['kendall_p']:.2g})")
    return f"{text}, {c['note'] or 'n=' + str(c['n'])}"


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
CI_SUFFIXES = (" ci_low", " ci_high")


def _measure_columns(items: Sequence[Mapping[str, Measure]]) -> tuple[list[str], set[str], list[str]]:
    """``(measures, those with a CI anywhere, value and CI columns)``."""
    measures = sorted({k for m in items for k in m})
    with_ci = {k for m in items for k, v in m.items() if v.ci_low is not None or v.ci_high is not None}
    cols = [c for k in measures for c in ([k, k + CI_SUFFIXES[0], k + CI_SUFFIXES[1]] if k in with_ci else [k])]
    return measures, with_ci, cols


def _fill(row: dict[str, Any], values: Mapping[str, Measure], measures: Sequence[str], with_ci: set[str]) -> None:
    for k in measures:
        v = values.get(k)
        row[k] = v.value if v else math.nan
        if k in with_ci:
            row[k + CI_SUFFIXES[0]] = v.ci_low if v else None
            row[k + CI_SUFFIXES[1]] = v.ci_high if v else None


def _rel(p: Path, root: Path | None) -> str:
    try:
        return str(p.resolve().relative_to(root.resolve())) if root else p.name
    except ValueError:
        return str(p)


def comparison_table(models: Sequence[Model], swept: Sequence[str],
                     root: Path | None = None) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """``(columns, rows, measure columns)``: one row per model; a measure with a confidence
    interval in any row gets ``<name> ci_low`` / ``<name> ci_high`` columns too."""
    measures, with_ci, value_cols = _measure_columns([m.measures for m in models])
    columns = ["model", *swept, *METRIC_COLUMNS, *value_cols, "source", "jobs", "checkpoint"]
    rows = []
    for m in models:
        row: dict[str, Any] = {"model": m.label, "source": m.metrics.get("source", "none"), "checkpoint": m.checkpoint,
                               "jobs": "; ".join(_rel(r.path, root) for r in m.runs)}
        row.update({k: m.config.get(k) for k in swept})
        row.update({k: m.metrics.get(k, math.nan) for k in METRIC_COLUMNS})
        _fill(row, m.measures, measures, with_ci)
        rows.append(row)
    return columns, rows, measures


def replicate_keys(swept: Sequence[str], replicates: Sequence[str]) -> list[str]:
    """The swept keys that are replicates (``task.replicates``, e.g. ``seed``): models that differ
    only in them are runs of one setting."""
    return [k for k in swept if k in set(replicates)]


def over_replicates(rows: Sequence[Mapping[str, Any]], settings: Sequence[str], values: Sequence[str],
                    level: float = 0.95) -> list[dict[str, Any]]:
    """One row per setting (the distinct values of ``settings`` among ``rows``, in first-seen
    order): ``n`` (replicates with a finite value, per column in ``<k> n``), and for each column in
    ``values`` the mean over its replicates, ``<k> sd`` (sample standard deviation) and the
    two-sided ``level`` Student-t interval of the mean as ``<k> ci_low`` / ``<k> ci_high`` (NaN
    below two finite values). The interval is of the replicates' spread: a measure's own interval
    within one model is not in it."""
    from scipy.stats import t as student_t

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(value_key([r.get(k) for k in settings]), []).append(r)
    out = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0].get(k) for k in settings}
        row["n"] = len(members)
        for k in values:
            x = np.array([as_float(m.get(k)) for m in members])
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if len(x) else math.nan
            sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
            half = float(student_t.ppf(0.5 + level / 2, len(x) - 1)) * sd / math.sqrt(len(x)) if len(x) > 1 else math.nan
            row.update({k: mean, f"{k} sd": sd, f"{k} n": len(x), k + CI_SUFFIXES[0]: mean - half,
                        k + CI_SUFFIXES[1]: mean + half})
        out.append(row)
    return out


def pair_table(pairs: Sequence[Run], labels: Mapping[int, str],
               root: Path | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per job between models (interpolation, plane, curve): its end models and measures
    (barrier, mc, ...); a property of the pair, so not in the models' rows or correlations."""
    measures, with_ci, value_cols = _measure_columns([r.measures for r in pairs])
    rows = []
    for r in pairs:
        row: dict[str, Any] = {"between": labels.get(id(r), r.name), "task": r.task, "job": _rel(r.path, root)}
        _fill(row, r.measures, measures, with_ci)
        rows.append(row)
    return ["between", "task", *value_cols, "job"], rows


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def write_csv(path: str | Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    p = Path(path)
    with atomic_path(p) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_cell(r.get(c)) for c in columns])
    return p


def _md_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (list, dict)):
        v = json.dumps(v)
    return str(v).replace("|", "\\|")


def value_with_ci(row: Mapping[str, Any], c: str) -> str:
    """Column ``c`` of ``row`` as text, ``value [lo, hi]`` where the row has ``<c> ci_low`` /
    ``<c> ci_high`` (an interval that is NaN at both ends, as over a single replicate, is none)."""
    text = _md_cell(row.get(c))
    lo, hi = row.get(c + CI_SUFFIXES[0]), row.get(c + CI_SUFFIXES[1])
    if (lo is not None or hi is not None) and not (math.isnan(as_float(lo)) and math.isnan(as_float(hi))):
        text += f" [{_md_cell(lo) or '?'}, {_md_cell(hi) or '?'}]"
    return text


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table; a column whose ``<c> ci_low``/``<c> ci_high`` are in the rows shows as
    ``value [lo, hi]`` (the CI columns themselves are not shown)."""
    shown = [c for c in columns if not c.endswith(CI_SUFFIXES)]
    lines = ["| " + " | ".join(shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    lines += ["| " + " | ".join(value_with_ci(r, c) for c in shown) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """Fixed-width columns for the console."""
    cells = [[str(c) for c in columns]] + [[_md_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)
