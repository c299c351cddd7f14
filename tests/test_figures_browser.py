"""The interactive HTML view opened in a real browser: headless Chromium, offline, takes a
screenshot of a small loss surface and of an empty figure; the surface's shows it drawn (many
coloured pixels in the plot area), the empty one does not.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it); skips,
saying so, without it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import plotly.graph_objects as go
import pytest

from landscape_exp.figures import figure_surface_html, save_html

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; "
                                                          ".ci/run installs it)")


def screenshot(html: Path, tmp: Path) -> subprocess.Popen:
    """Start headless Chromium writing ``<html>.png`` (800x600): no network, no GPU, a fresh profile."""
    return subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp / (html.stem + '_profile')}",
         "--virtual-time-budget=5000", f"--screenshot={html.with_suffix('.png')}", "--window-size=800,600",
         html.resolve().as_uri()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def coloured_pixels(png: Path) -> int:
    """Pixels of clear colour (not white, black or grey) left of the colour bar (x < 85 %)."""
    img = mpimg.imread(png)[..., :3]
    area = img[:, : int(img.shape[1] * 0.85)]
    return int(((area.max(axis=-1) - area.min(axis=-1)) > 0.15).sum())


def test_surface_html_draws_in_a_headless_browser(tmp_path: Path) -> None:
    x, y = np.linspace(-1, 1, 15), np.linspace(-1, 1, 11)
    z = 50.0 + x[None, :] ** 2 + 2.0 * y[:, None] ** 2  # far from a minimum, as after one epoch
    out = tmp_path / "job"
    # plotly.js once beside the pages ("directory"): also checks that the relative reference loads
    surface = save_html(figure_surface_html(x, y, z, title="surface", zlabel="train loss"), out / "surface.html",
                        plotlyjs="directory")
    empty = save_html(go.Figure(), out / "empty.html", plotlyjs="directory")
    procs = {p: screenshot(p, tmp_path) for p in (surface, empty)}
    for page, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"chromium took over 60 s on {page.name}")
        assert page.with_suffix(".png").is_file(), f"no screenshot of {page.name}: {err[-500:]}"
    drawn, blank = coloured_pixels(surface.with_suffix(".png")), coloured_pixels(empty.with_suffix(".png"))
    assert mpimg.imread(surface.with_suffix(".png")).shape[:2] == (600, 800)
    # The surface covers tens of thousands of pixels in colour; an empty figure (or a page whose
    # plotly.js failed to load, or a "WebGL is not supported" notice) has next to none.
    assert drawn > 20_000 and blank < 500, (drawn, blank)
