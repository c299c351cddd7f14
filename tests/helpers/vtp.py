"""Reading a ParaView .vtp file back: points, point and cell values, polygons."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


def read_vtp(path: Path) -> dict[str, np.ndarray | int]:
    """Parse the parts of a .vtp file the tests look at."""
    root = ET.parse(path).getroot()
    assert root.tag == "VTKFile" and root.get("type") == "PolyData"
    piece = root.find("PolyData/Piece")
    assert piece is not None

    def arr(section: str, name: str) -> np.ndarray:
        node = piece.find(f"{section}/DataArray[@Name='{name}']")
        assert node is not None, (section, name)
        return np.array((node.text or "").split(), dtype=float)

    return {
        "n_points": int(piece.get("NumberOfPoints")),
        "n_polys": int(piece.get("NumberOfPolys")),
        "points": arr("Points", "Points").reshape(-1, 3),
        "zvalue": arr("PointData", "zvalue"),
        "valid": arr("PointData", "valid"),
        "cell_avg": arr("CellData", "averaged zvalue"),
        "conn": arr("Polys", "connectivity").astype(int).reshape(-1, 4),
        "offsets": arr("Polys", "offsets").astype(int),
    }
