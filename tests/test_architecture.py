"""The layout rules of docs/architecture.md, checked on the source, and the settings layer that
enforces one spelling of each option."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import compose_cfg
from omegaconf import OmegaConf

from landscape_exp.errors import UserError
from landscape_exp.runs import epoch_of
from landscape_exp.settings import TASK_KEYS, Settings
from landscape_exp.tasks import TASKS

SRC = Path(__file__).resolve().parents[1] / "src" / "landscape_exp"
CONF = Path(__file__).resolve().parents[1] / "conf"
# The config boundary: the only modules that may know OmegaConf (app.py turns the composed config
# into plain data, settings.py reads it and other runs' saved configs).
CONFIG_BOUNDARY = {"app.py", "settings.py"}


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
    assert names == sorted(TASKS) == sorted(TASK_KEYS)
    for name in names:
        node = OmegaConf.load(CONF / "task" / f"{name}.yaml")
        section = node.task if "task" in node else node
        assert set(section) - {"name"} == set(TASK_KEYS[name]), name


@pytest.mark.parametrize("task", sorted(TASK_KEYS))
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
