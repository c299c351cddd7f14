"""Every figure of the project, one module per kind, all written by :func:`base.save`.

* :mod:`.base`: the canvas, :data:`PNG_DPI`, :func:`save`, masking, validation, contour levels
  (:class:`LevelSpec`: from the data or the paper's fixed ones), labels and anchor marks;
* :mod:`.lines`: 1D slices (loss and accuracy), several slices overlaid with their spread, and
  mode-connectivity curves;
* :mod:`.surface2d`: contour, filled contour, heat map and 3D surface of a 2D surface;
* :mod:`.interactive`: the plotly HTML view; :mod:`.vtk`: the ParaView VTP export;
* :mod:`.hessian`: eigenvalues, spectral density, eigen curves, lambda_max along training and
  the ``hessian_surface`` maps;
* :mod:`.compare`: several runs overlaid; :mod:`.trajectory`: a path on its PCA plane;
* :mod:`.render`: every figure of one surface file (:func:`render_surface`).
"""

from landscape_exp.figures.base import (
    NO_POINTS_TEXT,
    PNG_DPI,
    XLABEL_2D,
    YLABEL_2D,
    mask_invalid,
    new_figure,
    save,
    surface_grid,
)
from landscape_exp.figures.interactive import figure_surface_html, save_html
from landscape_exp.figures.levels import LevelSpec, auto_levels, contour_levels
from landscape_exp.figures.lines import METRICS_1D, figure_1d, figure_1d_overlay, figure_curves
from landscape_exp.figures.render import render_surface, surface_title
from landscape_exp.figures.surface2d import KINDS_2D, figure_2d, save_2d
from landscape_exp.figures.trajectory import figure_path_on_contour, figure_trajectory
from landscape_exp.figures.vtk import export_vtp

__all__ = [
    "KINDS_2D",
    "METRICS_1D",
    "NO_POINTS_TEXT",
    "PNG_DPI",
    "XLABEL_2D",
    "YLABEL_2D",
    "LevelSpec",
    "auto_levels",
    "contour_levels",
    "export_vtp",
    "figure_1d",
    "figure_1d_overlay",
    "figure_2d",
    "figure_curves",
    "figure_path_on_contour",
    "figure_surface_html",
    "figure_trajectory",
    "mask_invalid",
    "new_figure",
    "render_surface",
    "save",
    "save_2d",
    "save_html",
    "surface_grid",
    "surface_title",
]
