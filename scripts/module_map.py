#!/usr/bin/env python
"""The module maps of README.md (one row per package) and docs/architecture.md (one row per
module), generated from the packages' and modules' own docstrings, so the maps cannot drift from
the code: ``tests/test_architecture.py`` checks that both files hold what this prints.

  python scripts/module_map.py           # print both maps
  python scripts/module_map.py --write   # rewrite them in README.md and docs/architecture.md

Each map sits between ``<!-- module-map:<name> -->`` and ``<!-- /module-map:<name> -->``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "landscape_exp"
TARGETS = {"packages": ROOT / "README.md", "modules": ROOT / "docs" / "architecture.md"}


def summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line (markdown-safe)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def packages() -> list[tuple[str, str]]:
    """(name, summary) of each package (``config/``) and top-level module (``app.py``), in order."""
    rows = [(f"`{p.name}/`", summary(p / "__init__.py")) for p in sorted(PKG.iterdir())
            if p.is_dir() and (p / "__init__.py").is_file()]
    rows += [(f"`{p.name}`", summary(p)) for p in sorted(PKG.glob("*.py")) if p.name != "__init__.py"]
    return rows


def modules() -> list[tuple[str, str]]:
    """(path, summary) of every module of the package."""
    return [(f"`{p.relative_to(PKG).as_posix()}`", summary(p)) for p in sorted(PKG.rglob("*.py"))
            if p.name != "__init__.py"]


def table(rows: list[tuple[str, str]], head: str) -> str:
    return "\n".join([f"| {head} | what it owns |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def maps() -> dict[str, str]:
    return {"packages": table(packages(), "package"), "modules": table(modules(), "module")}


def block(name: str, text: str) -> str:
    return f"<!-- module-map:{name} -->\n{text}\n<!-- /module-map:{name} -->"


def current(path: Path, name: str) -> str | None:
    """The map now in ``path`` (None when its markers are missing)."""
    text = path.read_text()
    start, end = f"<!-- module-map:{name} -->", f"<!-- /module-map:{name} -->"
    if start not in text or end not in text:
        return None
    return text[text.index(start) + len(start):text.index(end)].strip("\n")


def write() -> None:
    for name, text in maps().items():
        path = TARGETS[name]
        old = path.read_text()
        start, end = f"<!-- module-map:{name} -->", f"<!-- /module-map:{name} -->"
        if start not in old:
            sys.exit(f"{path}: no {start} marker; add the markers where the map belongs")
        new = old[:old.index(start)] + block(name, text) + old[old.index(end) + len(end):]
        path.write_text(new)
        print(f"wrote the {name} map into {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    else:
        for name, text in maps().items():
            print(block(name, text), end="\n\n")
