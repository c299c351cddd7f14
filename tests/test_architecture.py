"""The layout rules of docs/architecture.md, checked on the source, and the settings layer that
enforces one spelling of each option."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from landscape_exp.config.settings import Settings
from landscape_exp.config.tasks import TASK_SPECS
from landscape_exp.errors import UserError
from landscape_exp.tasks import TASKS
from landscape_exp.training.runs import epoch_of

from conftest import compose_cfg

SRC = Path(__file__).resolve().parents[1] / "src" / "landscape_exp"
CONF = Path(__file__).resolve().parents[1] / "conf"
ROOT = Path(__file__).resolve().parents[1]
# The config boundary: the only modules that may know OmegaConf or Hydra (cli.py reads Hydra's
# state, app.py turns the composed config into plain data, config/settings.py reads it and other
# runs' saved configs).
CONFIG_BOUNDARY = {"app.py", "cli.py", "config/settings.py"}

# The layers of docs/architecture.md, bottom first: a module imports only modules of its own layer
# or below (counting imports inside functions). The entry points (app, cli, study) are the top.
LAYERS: dict[str, int] = {
    "landscape_exp": 0, "errors": 0, "format": 0,
    "config": 1,
    "io": 2,
    "models": 3, "data": 3, "figures": 3,
    "weights": 4, "engine": 4,
    "hessian": 5, "measures": 5, "connect": 5, "training": 5,
    "job": 6,
    "surface": 7, "compare": 7,
    "cluster": 8,
    "tasks": 9,
    "app": 10, "cli": 10, "study": 10,
}
# Narrower rules on top of the layers: what each of these may import of the project.
ONLY: dict[str, set[str]] = {
    "config": {"errors", "config"},
    "figures": {"errors", "format", "config", "io", "figures"},  # figures take plain records
}


def module_names(src: Path = SRC) -> dict[str, Path]:
    """``landscape_exp.x.y`` -> file, for every module of the package under ``src``."""
    out = {}
    for path in src.rglob("*.py"):
        parts = ("landscape_exp", *path.relative_to(src).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Every module's imports of the package's own modules, including those inside functions:
    ``from pkg import sub`` counts as an import of ``pkg.sub``, as Python executes it."""
    mods = module_names(src)

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names]
            else:
                continue
            edges.update(o for n in names if n.startswith("landscape_exp") and (o := owner(n)) and o != mod)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_of(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that goes up a layer or breaks a narrower rule, as ``a -> b (why)``."""
    bad = []
    for mod, edges in sorted(graph.items()):
        me = layer_of(mod)
        if me not in LAYERS:
            bad.append(f"{mod} is in no layer (add its package to LAYERS and docs/architecture.md)")
            continue
        for other in sorted(edges):
            them = layer_of(other)
            if me in ONLY and them not in ONLY[me]:
                bad.append(f"{mod} -> {other} ({me} may import only {', '.join(sorted(ONLY[me]))})")
            elif LAYERS.get(them, 99) > LAYERS[me]:
                bad.append(f"{mod} -> {other} (layer {them} is above {me})")
    return bad


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_every_import_goes_down_the_layers() -> None:
    assert layer_violations(import_graph()) == []


def test_the_checks_catch_a_planted_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The two checks above on a copy of the package with one planted defect each."""
    import shutil

    copy = tmp_path / "landscape_exp"
    shutil.copytree(SRC, copy)
    assert cycles(import_graph(copy)) == [] and layer_violations(import_graph(copy)) == []
    # a function-level import closing a loop: measures.record -> measures.paths -> measures.record
    rec = copy / "measures" / "record.py"
    rec.write_text(rec.read_text() + "\n\ndef _planted():\n    from landscape_exp.measures.paths import barrier\n")
    assert cycles(import_graph(copy)) == [["landscape_exp.measures.paths", "landscape_exp.measures.record"]]
    # the engine reaching up into the job layer
    cpu = copy / "engine" / "cpu.py"
    cpu.write_text(cpu.read_text() + "\nfrom landscape_exp.job.context import RunContext  # noqa\n")
    assert "landscape_exp.engine.cpu -> landscape_exp.job.context (layer job is above engine)" in layer_violations(
        import_graph(copy))
    # figures reading analysis code
    fig = copy / "figures" / "lines.py"
    fig.write_text(fig.read_text() + "\nfrom landscape_exp.measures.paths import barrier  # noqa\n")
    assert any(v.startswith("landscape_exp.figures.lines -> landscape_exp.measures.paths (figures may import only")
               for v in layer_violations(import_graph(copy)))


def test_the_module_maps_are_generated_from_the_docstrings() -> None:
    """README.md's package map and docs/architecture.md's module map say what the docstrings say
    (``python scripts/module_map.py --write`` regenerates them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("module_map", ROOT / "scripts" / "module_map.py")
    mm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mm)
    for name, text in mm.maps().items():
        assert mm.current(mm.TARGETS[name], name) == text, f"{mm.TARGETS[name].name}: run python scripts/module_map.py --write"
    assert all(summary for _, summary in mm.modules()), "a module without a docstring"


def test_no_test_imports_another_test_module() -> None:
    """Shared test code lives in tests/helpers (and conftest's fixtures), never in a test module."""
    tests = Path(__file__).resolve().parent
    names = {p.stem for p in tests.rglob("test_*.py")}
    for path in sorted(tests.rglob("*.py")):
        bad = sorted(m for m in _imports(path) if m.split(".")[-1] in names or m.split(".")[0] in names)
        assert not bad, f"{path.relative_to(tests)} imports {bad}"


def test_no_module_is_long_without_saying_why() -> None:
    """Past ~400 lines a module holds several concepts, unless its docstring says why it is one."""
    for path in sorted(SRC.rglob("*.py")):
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert n <= 400 or "one concept" in " ".join(doc.lower().split()), f"{path.relative_to(SRC)} has {n} lines"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_no_task_imports_another_task_and_tasks_stay_thin() -> None:
    for path in sorted((SRC / "tasks").glob("*.py")):
        if path.name == "__init__.py":
            continue
        bad = sorted(m for m in _imports(path) if m.startswith("landscape_exp.tasks"))
        assert not bad, f"{path.name} imports {bad}"
        assert len(path.read_text().splitlines()) <= 120, f"tasks/{path.name} is over 120 lines"


def test_only_the_config_boundary_imports_omegaconf_or_hydra() -> None:
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in CONFIG_BOUNDARY:
            continue
        bad = sorted(m for m in _imports(path) if m.split(".")[0] in ("omegaconf", "hydra"))
        assert not bad, f"{rel} imports {bad}"


def test_every_task_config_is_registered_and_read() -> None:
    """Each conf/task/*.yaml names a registered task, and every key its task section holds is one
    the settings read (so a default in YAML is never ignored)."""
    names = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
    assert names == sorted(TASKS) == sorted(TASK_SPECS)
    for name in names:
        node = OmegaConf.load(CONF / "task" / f"{name}.yaml")
        section = node.task if "task" in node else node
        assert set(section) - {"name"} == set(TASK_SPECS[name].keys), name


@pytest.mark.parametrize("task", sorted(TASK_SPECS))
def test_settings_read_every_task_default(tmp_path: Path, task: str) -> None:
    extra = ["direction.file=x.h5"] if task == "hessian_surface" else []
    s = Settings.from_config(OmegaConf.to_container(compose_cfg(tmp_path, [f"task={task}", *extra]), resolve=True))
    assert s.task == task
    assert (s.hessian is not None) == task.startswith("hessian")
    assert (s.trajectory is not None) == (task == "trajectory")


@pytest.mark.parametrize("task", ["trajectory", "hessian_trajectory"])
def test_one_spelling_of_the_run_directory(tmp_path: Path, task: str) -> None:
    """``run_dir=`` for both tasks; the old ``task.run_dir`` (which Hydra's ``+`` hint makes one
    type) is refused with a line naming the right spelling, never silently ignored."""
    s = Settings.from_config(OmegaConf.to_container(compose_cfg(tmp_path, [f"task={task}", "run_dir=/r"]), resolve=True))
    assert s.run_dir == "/r"
    cfg = compose_cfg(tmp_path, [f"task={task}", "+task.run_dir=/r"])
    with pytest.raises(UserError, match=r"task\.run_dir.*run_dir=<training run directory>") as e:
        Settings.from_config(OmegaConf.to_container(cfg, resolve=True))
    assert "\n" not in str(e.value)


def test_bad_settings_are_one_line_errors_naming_the_value(tmp_path: Path) -> None:
    cases = {"eval.splits=[train,val]": "eval.splits", "plot.vmin=abc": "plot.vmin", "shard.index=3": "shard.index=3",
             "direction.ignore=bias": "direction.ignore", "eval.loss=mae": "eval.loss"}
    for override, named in cases.items():
        cfg = OmegaConf.to_container(compose_cfg(tmp_path, [override]), resolve=True)
        with pytest.raises(UserError, match=named.replace(".", r"\.")) as e:
            Settings.from_config(cfg)
        assert "\n" not in str(e.value)


def test_one_epoch_parser() -> None:
    assert epoch_of(Path("run/checkpoints/epoch_012.pt")) == 12
    assert epoch_of(Path("x/final.pt"), {"epoch": 7}) == 7  # the checkpoint's own record wins
    assert epoch_of(Path("x/a3.pt"), {}, fallback=2) == 2  # a name with another number is not an epoch
    with pytest.raises(UserError, match="cannot tell the epoch"):
        epoch_of(Path("x/final.pt"), {})


def test_the_linter_configured_in_pyproject_is_clean() -> None:
    """ruff (pinned in the test extra, configured in pyproject.toml) finds nothing."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    res = subprocess.run([ruff, "check", "--no-cache", "src", "tests", "benchmarks", "scripts", "run.py"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]
