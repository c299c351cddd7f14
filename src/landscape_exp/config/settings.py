"""The job's settings: the resolved Hydra config read once, checked, and frozen into dataclasses.

This is the one place that knows the config's layout. ``app.run_job`` builds :class:`Settings`
from the resolved config (a plain mapping) at the top of a job; tasks and the library below them
take typed settings or plain arguments, never the config. Defaults live only in ``conf/``: a
key missing here is a one-line error naming it, not a silent fallback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscape_exp.config.hessian import HessianSettings
from landscape_exp.config.measures import SharpnessSettings
from landscape_exp.config.reader import Section
from landscape_exp.config.sections import (
    CompareSettings,
    ConnectSettings,
    DirectionSettings,
    EvalSettings,
    LoggerSettings,
    OptimSettings,
    PathSettings,
    PlotSettings,
    PrecisionSettings,
    ShardSettings,
    TrajectorySettings,
)
from landscape_exp.config.tasks import task_spec
from landscape_exp.errors import UserError

# Where a user who typed one of these task keys meant a top-level option.
_TOP_LEVEL_HINTS = {"run_dir": "run_dir=<training run directory>", "checkpoint": "checkpoint=<file>",
                    "checkpoints": "checkpoints=[a.pt,b.pt,...]", "surf_file": "surf_file=<file>"}


# ------------------------------------------------------------------------------------------------
# reading values


@dataclass(frozen=True)
class Settings:
    """Everything a job reads from its config, checked once."""

    task: str
    config: Mapping[str, Any]  # the whole resolved config, as stored with results
    seed: int
    device: str
    threads: int | None
    progress: bool
    checkpoint: str | None
    run_dir: str | None
    surf_file: str | None
    surface_recover: bool
    x: str | None  # grid: the x=/y= overrides, else the task's default
    y: str | None
    shard: ShardSettings
    eval: EvalSettings
    plot: PlotSettings
    direction: DirectionSettings
    precision: PrecisionSettings
    sharpness: SharpnessSettings
    logger: LoggerSettings
    paths: PathSettings
    model: Mapping[str, Any]
    dataset: Mapping[str, Any]
    optim: OptimSettings
    hessian: HessianSettings | None = None
    connect: ConnectSettings | None = None
    trajectory: TrajectorySettings | None = None
    compare: CompareSettings | None = None
    curve_file: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read a resolved config (``OmegaConf.to_container(cfg, resolve=True)``)."""
        top = Section(config, "")
        task_node = top.node("task")
        name = task_node.str("name")
        spec = task_spec(name)
        extra = sorted(set(task_node.data) - {"name", *spec.keys})
        if extra:
            hint = "; ".join(f"the {k} option is {_TOP_LEVEL_HINTS[k]}" for k in extra if k in _TOP_LEVEL_HINTS)
            raise UserError(f"task={name} has no setting {', '.join('task.' + k for k in extra)}"
                            f" (its settings: {', '.join(spec.keys) or 'none'})" + (f"; {hint}" if hint else ""))
        x = top.raw("x") or (task_node.raw("x") if task_node.has("x") else None)
        y = top.raw("y") or (task_node.raw("y") if task_node.has("y") else None)
        sharp = top.raw("sharpness")
        return cls(
            task=name, config=config, seed=top.int("seed"), device=str(top.raw("device") or "auto"),
            threads=top.int("threads", 1, null=True), progress=_progress(top),
            checkpoint=top.path("checkpoint"), run_dir=top.path("run_dir"), surf_file=top.path("surf_file"),
            surface_recover=top.bool("surface_recover"),
            x=None if x in (None, "") else str(x), y=None if y in (None, "") else str(y),
            shard=ShardSettings.read(top.node("shard")), eval=EvalSettings.read(top.node("eval")),
            plot=PlotSettings.read(top.node("plot")),
            # compare's task.ignore lists config keys, not tensors: no direction defaults there
            direction=DirectionSettings.read(top.node("direction"), task_node if name != "compare" else Section({}, "task"),
                                             top.node("normalization"), spec.directions),
            precision=PrecisionSettings.read(top.node("precision")),
            sharpness=SharpnessSettings.from_mapping(sharp if isinstance(sharp, Mapping) else {}),
            logger=LoggerSettings.read(top.node("logger")), paths=PathSettings.read(top.node("paths")),
            model=top.mapping("model"), dataset=top.mapping("dataset"), optim=OptimSettings.read(top.node("optim")),
            hessian=HessianSettings.read(top.node("hessian")) if name.startswith("hessian") else None,
            connect=ConnectSettings.read(top.node("connect"), name == "connect") if name.startswith("connect") else None,
            trajectory=TrajectorySettings.read(task_node, top) if name == "trajectory" else None,
            compare=CompareSettings.read(task_node) if name == "compare" else None,
            curve_file=top.path("curve_file") if top.has("curve_file") else None,
        )

    def dataset_identity(self) -> dict[str, Any]:
        """The dataset config minus where it lives (so a cache key survives moving the data)."""
        out = {k: v for k, v in self.dataset.items() if k not in ("root", "download")}
        if not out.get("random_labels"):  # the option's neutral value: identities (and caches) from before it stay valid
            out.pop("random_labels", None)
        return out

    def training_identity(self, seed_offset: int = 0) -> dict[str, Any]:
        """What determines a trained checkpoint (the key of the checkpoint cache)."""
        return {"model": dict(self.model), "dataset": self.dataset_identity(), "optim": dict(self.optim.raw),
                "seed": self.seed + seed_offset, "loss": self.eval.loss}


def _progress(top: Section) -> bool:
    v = top.raw("progress")
    if v != "auto" and not isinstance(v, bool):
        raise UserError(f"progress={v!r} must be auto (bars only on a terminal), true or false")
    return progress_wanted(v)


def read_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """Another run's ``.hydra/config.yaml`` as a nested dict (None without the file).

    Interpolations are resolved where they can be outside Hydra (``${oc.env:...}``, references to
    other keys); one that cannot (``${hydra:...}``) keeps its text."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:
        raise UserError(f"config {str(path)!r} is unreadable ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)

    def resolve(node: Any, key: str) -> Any:
        if isinstance(node, dict):
            return {k: resolve(v, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
        if (isinstance(node, str) and "${" in node) or (isinstance(node, list) and "${" in json.dumps(node, default=str)):
            try:
                sel = OmegaConf.select(cfg, key)
                return OmegaConf.to_container(sel, resolve=True) if OmegaConf.is_config(sel) else sel
            except Exception:  # e.g. ${hydra:...} outside Hydra: keep the text
                return node
        return node

    return resolve(raw, "")


def progress_wanted(setting: bool | str) -> bool:
    """``progress=auto`` shows bars only when stderr is a terminal (not in Slurm's .err files)."""
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)
