"""Curvature: Hessian (and Gauss-Newton, Fisher) vector-product operators, spectral solvers, the
certified spectrum report and its files; the figures live in :mod:`landscape_exp.figures.hessian`.

Re-exported here: the report's API from :mod:`.analysis` and :mod:`.files`."""

from landscape_exp.hessian.analysis import (
    ConvergenceWatch,
    curve_half_width,
    extreme_point,
    loss_along,
    make_operator,
    sample_subset,
    trajectory_point,
)
from landscape_exp.hessian.files import (
    TRAJECTORY_FIELDS,
    TRAJECTORY_LAYOUT,
    read_spectrum_file,
    read_trajectory,
    read_trajectory_file,
    subspace_overlaps,
    trajectory_columns,
    write_spectrum_file,
    write_trajectory,
)
from landscape_exp.hessian.report import (
    FP32,
    BlockSpectrum,
    Convergence,
    PairSet,
    SpectrumReport,
    canonical_sign,
    eigen_ratio,
    fp32,
    layer_blocks,
    report_metrics,
    report_summary,
    spectrum_report,
)

__all__ = [
    "FP32",
    "TRAJECTORY_FIELDS",
    "TRAJECTORY_LAYOUT",
    "BlockSpectrum",
    "Convergence",
    "ConvergenceWatch",
    "PairSet",
    "SpectrumReport",
    "canonical_sign",
    "curve_half_width",
    "eigen_ratio",
    "extreme_point",
    "fp32",
    "layer_blocks",
    "loss_along",
    "make_operator",
    "read_spectrum_file",
    "read_trajectory",
    "read_trajectory_file",
    "report_metrics",
    "report_summary",
    "sample_subset",
    "spectrum_report",
    "subspace_overlaps",
    "trajectory_columns",
    "trajectory_point",
    "write_spectrum_file",
    "write_trajectory",
]
