"""Export a 2D loss surface to ParaView as ASCII VTK XML PolyData (``.vtp``).

This replaces the original tool's ``h52vtp.py`` and keeps its value transform:
``zmax`` clips values from above, then ``log`` maps them to ``ln(value + 0.1)`` (natural
log, offset 0.1 so a zero loss stays finite) -- the exact formula ParaView users of the
original tool know. (The static plots' ``log`` is log10; this one is not.)

Layout of the file:

* Points: all ``nx * ny`` grid points, point ``k = j * nx + i`` at
  ``(x[i], y[j], scale_z * value[j, i])`` -- the ``np.meshgrid(x, y).ravel()`` order of the
  original. Unlike the original, non-square grids work.
* Polys: one quad ``(k, k+1, k+nx+1, k+nx)`` per grid cell whose four corners are all
  valid; cells touching a masked point (not computed -1, NaN, inf, or non-positive
  ``value + 0.1`` under ``log``) are dropped, so gaps show as holes.
* Masked points are kept so the point count stays ``nx * ny`` and indices stay simple.
  Their value (and height) is set to the top of the data -- the transformed ``zmax`` when
  given, else the largest valid value (0 if there is none) -- so if points are rendered a
  missing point reads as "high", never as a fake minimum. The ``valid`` point array
  (1/0) marks them for a Threshold filter.
* PointData ``zvalue`` (the transformed values), ``valid``; CellData ``averaged zvalue``
  (mean of each quad's four corners), as in the original.
* ``interp=N`` (``plot.vtp_interp``, the original's ``--interp N``): the surface is first
  resampled onto N x N points spanning the same rectangle by a bicubic spline
  (:func:`upsample`; the original's ``scipy.interpolate.interp2d(kind='cubic')`` no longer
  exists), before the clipping and the log. Fine points in a coarse cell with a masked corner
  are masked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landscape_exp.config.choices import MAX_VTP_INTERP
from landscape_exp.errors import UserError
from landscape_exp.figures.base import mask_invalid, surface_grid

__all__ = ["LOG_OFFSET", "MAX_VTP_INTERP", "export_vtp", "grid_quads", "upsample", "vtp_values"]

# ln(z + LOG_OFFSET): the original h52vtp.py's log transform.
LOG_OFFSET = 0.1
# Largest interp: 1000 x 1000 points are already a ~100 MB ASCII file.


def upsample(x: np.ndarray, y: np.ndarray, zm: np.ma.MaskedArray, num: int) -> tuple[np.ndarray, np.ndarray, np.ma.MaskedArray]:
    """``zm`` (ny, nx) on ``x``, ``y`` resampled onto ``num`` evenly spaced points per axis over
    the same ranges: a bicubic interpolating spline (lower degree on an axis with fewer than 4
    points). Masked points are filled from their nearest valid neighbours for the fit, and every
    fine point inside a coarse cell with a masked corner is masked."""
    from scipy.interpolate import RectBivariateSpline, RegularGridInterpolator

    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or not 2 <= num <= MAX_VTP_INTERP:
        raise UserError(f"vtp interp={num!r} must be 2..{MAX_VTP_INTERP} points per axis (0 = off)")
    mask = np.ma.getmaskarray(zm)
    if mask.all():
        raise UserError("nothing to interpolate: no computed points")
    xo, yo = np.argsort(x), np.argsort(y)  # the spline wants increasing coordinates
    xs, ys = x[xo], y[yo]
    data, bad = zm.filled(np.nan)[np.ix_(yo, xo)], mask[np.ix_(yo, xo)]
    if bad.any():  # nearest valid value, so the spline has no holes to fit through
        jj, ii = np.nonzero(~bad)
        for j, i in zip(*np.nonzero(bad)):
            k = int(np.argmin((jj - j) ** 2 + (ii - i) ** 2))
            data[j, i] = data[jj[k], ii[k]]
    spline = RectBivariateSpline(xs, ys, data.T, kx=min(3, xs.size - 1), ky=min(3, ys.size - 1))
    xf, yf = np.linspace(xs[0], xs[-1], num), np.linspace(ys[0], ys[-1], num)
    fine = spline(xf, yf).T  # (num y, num x)
    if bad.any():
        near_bad = RegularGridInterpolator((ys, xs), bad.astype(float), method="linear")
        yy, xx = np.meshgrid(yf, xf, indexing="ij")
        fine_bad = near_bad(np.stack([yy.ravel(), xx.ravel()], axis=1)).reshape(num, num) > 0
    else:
        fine_bad = np.zeros((num, num), bool)
    return xf, yf, np.ma.MaskedArray(np.where(fine_bad, np.nan, fine), mask=fine_bad)


def vtp_values(
    z: np.ndarray,
    *,
    log: bool = False,
    zmax: float | None = None,
    done: np.ndarray | None = None,
) -> np.ma.MaskedArray:
    """The values written to the file: masked, clipped at ``zmax``, then ``ln(z + 0.1)``.

    Points whose ``z + 0.1`` is not positive become masked under ``log`` (log undefined).
    """
    zm = mask_invalid(z, done)
    data = zm.filled(np.nan)
    mask = np.ma.getmaskarray(zm).copy()
    if zmax is not None:
        data = np.minimum(data, zmax)  # NaN (masked) entries stay NaN
    if log:
        shifted = data + LOG_OFFSET
        mask |= ~(shifted > 0)
        data = np.where(mask, np.nan, np.log(np.where(mask, 1.0, shifted)))
    return np.ma.MaskedArray(data, mask=mask)


def grid_quads(mask: np.ndarray) -> np.ndarray:
    """Quads over the cells of an (ny, nx) grid whose 4 corners are all unmasked.

    Returns an (m, 4) int64 array of point indices ``(k, k+1, k+nx+1, k+nx)`` with
    ``k = j * nx + i``, cells in row-major (j, i) order; counter-clockwise when x and y
    increase.
    """
    ny, nx = mask.shape
    ok = ~mask
    cell_ok = ok[:-1, :-1] & ok[:-1, 1:] & ok[1:, :-1] & ok[1:, 1:]
    jj, ii = np.nonzero(cell_ok)
    k = jj * nx + ii
    return np.stack([k, k + 1, k + nx + 1, k + nx], axis=1).astype(np.int64)


def _fmt(values: np.ndarray, per_line: int) -> str:
    """ASCII numbers, ``per_line`` per line, with round-trip float precision."""
    flat = np.asarray(values).ravel()
    if flat.dtype.kind == "f":
        items = [repr(float(v)) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    lines = (
        "          " + " ".join(items[s : s + per_line]) for s in range(0, len(items), per_line)
    )
    return "\n".join(lines) + ("\n" if items else "")


def _array(name: str, vtype: str, values: np.ndarray, ncomp: int = 1, per_line: int = 6) -> str:
    """One ``<DataArray>`` element in ASCII format."""
    flat = np.asarray(values).ravel()
    rng = ""
    if flat.size:
        rng = f' RangeMin="{_num(flat.min())}" RangeMax="{_num(flat.max())}"'
    return (
        f'        <DataArray type="{vtype}" Name="{name}" NumberOfComponents="{ncomp}" '
        f'format="ascii"{rng}>\n{_fmt(flat, per_line)}        </DataArray>\n'
    )


def _num(v: np.generic) -> str:
    """A scalar as it appears in the file."""
    return repr(float(v)) if np.asarray(v).dtype.kind == "f" else str(int(v))


def export_vtp(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    path: Path,
    *,
    log: bool = False,
    zmax: float | None = None,
    scale_z: float = 1.0,
    done: np.ndarray | None = None,
    interp: int = 0,
) -> Path:
    """Write a 2D surface as a ``.vtp`` file for ParaView (see the module docstring).

    Args:
        x, y: grid coordinates, shapes (nx,) and (ny,), at least 2 each.
        z: values, shape (ny, nx), ``z[j, i] = f(x[i], y[j])``; -1/NaN/inf are masked.
        path: output file (parents are created).
        log: write ``ln(min(z, zmax) + 0.1)`` instead of the raw values.
        zmax: clip values above this (before the log); None for no clipping.
        scale_z: multiply the point heights (not the ``zvalue`` data) by this, to make a
            flat landscape visible next to x/y ranges of order 1.
        done: optional computed-points mask, see :func:`landscape_exp.figures.base.mask_invalid`.
        interp: 0, or resample onto ``interp`` x ``interp`` points first (:func:`upsample`).

    Returns:
        ``path``.
    """
    xa, ya, zm = surface_grid(x, y, z, done)
    if interp and not np.ma.getmaskarray(zm).all():  # nothing computed yet: nothing to resample
        xa, ya, zm = upsample(xa, ya, zm, interp)
        z, done = zm.filled(np.nan), ~np.ma.getmaskarray(zm)
    if zmax is not None:
        if not isinstance(zmax, (int, float, np.number)) or not np.isfinite(zmax):
            raise UserError(f"zmax must be a finite number or None; got {zmax!r}")
        zmax = float(zmax)
    if log and zmax is not None and zmax + LOG_OFFSET <= 0:
        raise UserError(f"zmax must be > -{LOG_OFFSET} with log=True (ln(zmax + 0.1)); got {zmax}")
    if not isinstance(scale_z, (int, float, np.number)) or not np.isfinite(scale_z) or scale_z == 0:
        raise UserError(f"scale_z must be a finite non-zero number; got {scale_z!r}")

    vals = vtp_values(z, log=log, zmax=zmax, done=done)
    mask = np.ma.getmaskarray(vals)
    if zmax is not None:
        fill = float(np.log(zmax + LOG_OFFSET)) if log else float(zmax)
    elif not mask.all():
        fill = float(vals.max())
    else:
        fill = 0.0
    value = vals.filled(fill)  # (ny, nx)

    xx, yy = np.meshgrid(xa, ya)  # point k = j * nx + i
    points = np.stack([xx.ravel(), yy.ravel(), scale_z * value.ravel()], axis=1)
    quads = grid_quads(mask)
    cell_avg = value.ravel()[quads].mean(axis=1) if quads.size else np.zeros(0)
    n_points, n_polys = points.shape[0], quads.shape[0]

    parts = [
        '<?xml version="1.0"?>\n',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n',
        "  <PolyData>\n",
        f'    <Piece NumberOfPoints="{n_points}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{n_polys}">\n',
        '      <PointData Scalars="zvalue">\n',
        _array("zvalue", "Float64", value),
        _array("valid", "UInt8", (~mask).astype(np.uint8)),
        "      </PointData>\n",
        '      <CellData Scalars="averaged zvalue">\n',
        _array("averaged zvalue", "Float64", cell_avg),
        "      </CellData>\n",
        "      <Points>\n",
        _array("Points", "Float64", points, ncomp=3, per_line=6),
        "      </Points>\n",
        "      <Polys>\n",
        _array("connectivity", "Int64", quads, per_line=8),
        _array("offsets", "Int64", 4 * np.arange(1, n_polys + 1, dtype=np.int64)),
        "      </Polys>\n",
        "    </Piece>\n",
        "  </PolyData>\n",
        "</VTKFile>\n",
    ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(parts), encoding="ascii")
    return out
