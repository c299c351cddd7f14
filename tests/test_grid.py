"""Grid specs in the original tool's syntax (min:max:num) and the flat point order."""

from __future__ import annotations

import numpy as np
import pytest

from landscape_exp.errors import UserError
from landscape_exp.surface.grid import parse_axis, parse_grid


@pytest.mark.parametrize("spec,lo,hi,num", [("-1:1:51", -1, 1, 51), ("0:1:3", 0, 1, 3), ("-0.5:1.5:401", -0.5, 1.5, 401),
                                            (" -2.5:3e-1:7 ", -2.5, 0.3, 7)])
def test_axis_coordinates_equal_linspace(spec, lo, hi, num):
    axis = parse_axis(spec)
    np.testing.assert_array_equal(axis.coordinates, np.linspace(lo, hi, num))
    assert (axis.lo, axis.hi, axis.num) == (lo, hi, num)


def test_grid_2d_flat_order_and_shape():
    g = parse_grid("-1:1:5", "-2:0:4")
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-2, 0, 4)
    assert g.shape == (4, 5) and g.size == 20 and g.ndim == 2
    pts = g.points()
    assert pts.shape == (20, 2)
    for k in range(20):
        expected = (xs[k % 5], ys[k // 5])
        assert g.point(k) == expected
        assert tuple(pts[k]) == expected
    # A (ny, nx) array filled in flat order holds Z[j, i] = f(x_i, y_j).
    z = np.array([g.point(k)[0] * 10 + g.point(k)[1] for k in range(g.size)]).reshape(g.shape)
    for j in range(4):
        for i in range(5):
            assert z[j, i] == xs[i] * 10 + ys[j]


def test_grid_1d():
    g = parse_grid("0:1:3")
    assert g.shape == (3,) and g.ndim == 1 and g.y is None
    assert [g.point(k) for k in range(3)] == [(0.0,), (0.5,), (1.0,)]
    np.testing.assert_array_equal(g.points()[:, 0], [0.0, 0.5, 1.0])


@pytest.mark.parametrize("bad", ["1:-1:0", "a:b:c", "-1:1", "-1:1:1", "-1:1:0", "1:1:5", "-1:1:2.5", "-1:1:x",
                                 "-1:inf:5", "", "1:-1:5"])
def test_malformed_axis_is_one_line_user_error_naming_value(bad):
    with pytest.raises(UserError) as e:
        parse_axis(bad, "x")
    msg = str(e.value)
    assert "\n" not in msg
    assert repr(bad.strip()) in msg or bad.strip() in msg
    assert "x" in msg


def test_parse_grid_names_the_bad_axis():
    with pytest.raises(UserError, match=r"y='-1:1:1'"):
        parse_grid("-1:1:5", "-1:1:1")
    with pytest.raises(UserError, match=r"x='a:b:c'"):
        parse_grid("a:b:c", "-1:1:5")
