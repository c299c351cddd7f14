"""The config's sections, each read once into a frozen, checked dataclass: ``eval``, ``plot``,
``direction`` (with ``normalization``), ``shard``, ``precision``, ``optim``, ``logger``, ``paths``,
``connect`` and the trajectory and compare tasks' own settings. Defaults live only in ``conf/``:
a missing key is a one-line error naming it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from landscape_exp.config.choices import (
    CURVES,
    DIRECTION_TYPES,
    HTML_PLOTLYJS,
    IGNORES,
    LEVEL_MODES,
    LOGGERS,
    LOSSES,
    LR_SCHEDULES,
    MAX_VTP_INTERP,
    NORMS,
    OPTIMIZERS,
    PRECISION_MODES,
    SPLITS,
    WANDB_MODES,
    check_ignore,
)
from landscape_exp.config.reader import Section
from landscape_exp.config.tasks import TASK_SPECS
from landscape_exp.errors import UserError, choice_error


@dataclass(frozen=True)
class EvalSettings:
    """``eval``: what every grid point is evaluated on."""

    splits: tuple[str, ...]
    loss: str
    batch_size: int | None  # None: chosen for the device and model (context.RunContext.eval_batch_size)
    points_per_pass: int
    data_split: int
    split_idx: int
    batch_memory_mib: Mapping[str, float]  # per device type (cpu, cuda): the biggest layer output of a batch
    batch_min: int
    batch_max: int
    bn_recompute: bool  # BatchNorm statistics recomputed from the training data at every grid point

    def batch_memory_for(self, device: torch.device) -> int:
        """Bytes the biggest layer output of an evaluation batch may take on ``device``."""
        return int(self.batch_memory_mib.get(device.type, self.batch_memory_mib["cpu"]) * 2**20)

    @classmethod
    def read(cls, n: Section) -> EvalSettings:

        splits = n.raw("splits")
        if isinstance(splits, str) or not isinstance(splits, Sequence) or not splits or any(s not in SPLITS for s in splits):
            raise UserError(f"eval.splits={splits} must be a non-empty list of: {', '.join(SPLITS)}")
        per_device = n.node("batch_memory_mib")
        if not isinstance(per_device.data, Mapping) or "cpu" not in per_device.data:
            raise UserError(f"eval.batch_memory_mib={per_device.data!r} must map device types to MiB, "
                            "with a cpu entry, e.g. {cpu: 8, cuda: 1024}")
        memory = {str(k): per_device.float(str(k)) for k in per_device.data}
        if any(not v > 0 for v in memory.values()):
            raise UserError(f"eval.batch_memory_mib={per_device.data!r} must be positive")
        return cls(tuple(str(s) for s in splits), n.str("loss", choices=LOSSES), n.int("batch_size", 1, null=True),
                   n.int("points_per_pass", 1), n.int("data_split", 1), n.int("split_idx", 0), memory,
                   n.int("batch_min", 1), n.int("batch_max", 1), n.bool("bn_recompute"))


@dataclass(frozen=True)
class PlotSettings:
    """``plot``: figure levels and switches (contour levels from the data, or the paper's
    ``arange(vmin, vmax, vlevel)`` with ``levels=fixed``), the VTP upsampling, how the HTML view
    carries plotly.js, and the 1D files ``task=plot`` overlays."""

    enabled: bool
    levels: str
    num_levels: int
    vmin: float
    vmax: float
    vlevel: float
    log: bool
    loss_max: float | None
    zmax: float | None
    vtp_interp: int
    html_plotlyjs: str
    overlay: tuple[str, ...]

    @classmethod
    def read(cls, n: Section) -> PlotSettings:

        interp = n.int("vtp_interp", 0)
        if interp == 1 or interp > MAX_VTP_INTERP:
            raise UserError(f"plot.vtp_interp={interp} must be 0 (off) or 2..{MAX_VTP_INTERP} points per axis")
        num = n.int("num_levels", 2)
        if num > 1000:
            raise UserError(f"plot.num_levels={num} must be 2..1000")
        overlay = n.raw("overlay")
        overlay = [overlay] if isinstance(overlay, str) else list(overlay or [])
        return cls(n.bool("enabled"), n.str("levels", choices=LEVEL_MODES), num, n.float("vmin"), n.float("vmax"),
                   n.float("vlevel"), n.bool("log"), n.float("loss_max", null=True), n.float("zmax", null=True),
                   interp, n.str("html_plotlyjs", choices=HTML_PLOTLYJS), tuple(str(f) for f in overlay))


@dataclass(frozen=True)
class DirectionSettings:
    """``direction`` and ``normalization``, with the task's defaults for ``type``/``ignore`` applied."""

    name: str
    type: str
    ignore: str | None  # None: every tensor moves
    normalization: str
    same_dir: bool
    xseed: int
    yseed: int
    file: str | None
    model2: str | None
    model3: str | None
    seeds: tuple[int, ...] | None = None  # surface1d: one random direction per seed, then their spread

    @classmethod
    def read(cls, n: Section, task: Section, normalization: Section, needs_file: bool) -> DirectionSettings:
        kind = (n.raw("type") if n.raw("type") is not None
                else (task.raw("direction_type") if task.has("direction_type") else "weights"))
        if kind not in DIRECTION_TYPES:
            raise choice_error("direction.type", kind, DIRECTION_TYPES)
        ignore = n.raw("ignore") if n.raw("ignore") is not None else (task.raw("ignore") if task.has("ignore") else "biasbn")
        if ignore not in (None, "", *IGNORES):
            raise choice_error("direction.ignore", ignore, IGNORES)
        file = n.data.get("file")
        if file == "???":
            if needs_file:
                raise UserError(f"direction={n.data.get('name')} needs direction.file=<path> "
                                "(task=hessian writes <run dir>/hessian_directions.h5)")
            file = None

        return cls(n.str("name"), str(kind), check_ignore(ignore),
                   normalization.str("name", choices=NORMS), n.bool("same_dir"), n.int("xseed"), n.int("yseed"),
                   None if file in (None, "") else str(file), n.path("model2"), n.path("model3"),
                   _seeds(n.data.get("seeds"), task.data.get("name")))


def _seeds(v: Any, task: Any) -> tuple[int, ...] | None:
    """``direction.seeds``: null, or a list of 2 or more distinct integers (task=surface1d only)."""
    if v is None:
        return None
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) < 2 or len(set(v)) != len(v) \
            or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise UserError(f"direction.seeds={v!r} must be null or a list of 2 or more distinct integers, e.g. [1,2,3]")
    spec = TASK_SPECS.get(str(task))
    if spec is not None and spec.directions and task != "surface1d":  # tasks without directions ignore it
        raise UserError(f"direction.seeds is for task=surface1d (one random direction per seed); task={task} takes none")
    return tuple(int(x) for x in v) if task == "surface1d" else None


@dataclass(frozen=True)
class ShardSettings:
    """``shard``: this job's part of a surface split over jobs."""

    count: int
    index: int

    @classmethod
    def read(cls, n: Section) -> ShardSettings:
        count, index = n.int("count"), n.int("index")
        if count < 1 or not 0 <= index < count:
            raise UserError(f"bad shard: shard.count={count} shard.index={index}; need count >= 1 and 0 <= index < count")
        return cls(count, index)


@dataclass(frozen=True)
class PrecisionSettings:
    """``precision``: ``mode`` auto | fp32 | tf32 | bf16 (see :mod:`landscape_exp.engine.precision`)."""

    mode: str
    channels_last: bool | None
    compile: bool
    fold_bn: bool
    emulate_bf16: bool  # bf16 on a CPU without bf16 kernels: emulated (true) or fp32 (false, the default)

    @classmethod
    def read(cls, n: Section) -> PrecisionSettings:

        cl = n.raw("channels_last")
        if cl is not None and not isinstance(cl, bool):
            raise UserError(f"precision.channels_last={cl!r} must be true, false or null")
        return cls(n.str("mode", choices=("auto", *PRECISION_MODES)), cl, n.bool("compile"), n.bool("fold_bn"),
                   n.bool("emulate_bf16"))


@dataclass(frozen=True)
class OptimSettings:
    """``optim``: how a checkpoint is trained (``conf/optim/*.yaml`` hold every key). ``raw`` is the
    section as given: the checkpoint cache's key hashes it (:meth:`Settings.training_identity`)."""

    name: str
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    schedule: str
    milestones: tuple[int, ...] | None  # None: the paper's proportions of epochs
    gamma: float
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def read(cls, n: Section) -> OptimSettings:
        name = n.str("name", choices=OPTIMIZERS)
        lr, epochs, batch = n.float("lr"), n.int("epochs", 0), n.int("batch_size", 1)
        if not lr > 0:
            raise UserError(f"optim.lr={lr} must be positive")
        ms = n.raw("milestones")
        if ms is not None and (isinstance(ms, (str, bytes)) or not isinstance(ms, Sequence)
                               or any(isinstance(m, bool) or not isinstance(m, int) for m in ms)):
            raise UserError(f"optim.milestones={ms!r} must be null or a list of epochs, e.g. [150,225,275]")
        extra: dict[str, Any] = {}
        if name == "sgd":
            extra = {"momentum": n.float("momentum"), "nesterov": n.bool("nesterov")}
        else:
            betas = n.raw("betas")
            if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
                raise UserError(f"optim.betas={betas!r} must be two numbers, e.g. [0.9,0.999]")
            extra = {"betas": (float(betas[0]), float(betas[1]))}
        return cls(name, lr, n.float("weight_decay"), batch, epochs, n.str("schedule", choices=LR_SCHEDULES),
                   None if ms is None else tuple(int(m) for m in ms), n.float("gamma"), **extra, raw=dict(n.data))

    @classmethod
    def of(cls, cfg: OptimSettings | Mapping[str, Any]) -> OptimSettings:
        """``cfg`` read if it is a mapping (every key of its ``conf/optim`` file required)."""
        return cfg if isinstance(cfg, OptimSettings) else cls.read(Section(cfg, "optim"))


@dataclass(frozen=True)
class LoggerSettings:
    """``logger``: ``name`` none | wandb; for wandb its ``mode`` (offline | online | disabled),
    ``project``, ``entity``, ``group`` (null: the sweep's), ``tags``, ``dir`` (null: the run
    directory) and ``init_timeout`` seconds (``conf/logger/wandb.yaml`` holds every key)."""

    name: str
    mode: str = "disabled"
    project: str = ""
    entity: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    dir: str | None = None
    init_timeout: float = 0.0

    @classmethod
    def read(cls, n: Section) -> LoggerSettings:
        name = n.str("name")
        if name not in LOGGERS:  # named as the group a user chooses: logger=<name>
            raise choice_error("logger", name, LOGGERS)
        if name == "none":
            return cls(name)
        tags = n.raw("tags")
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        timeout = n.float("init_timeout")
        if not timeout > 0:
            raise UserError(f"logger.init_timeout={timeout!r} must be a positive number of seconds")
        return cls(name, n.str("mode", choices=WANDB_MODES), n.str("project"), n.str("entity", null=True),
                   n.str("group", null=True), tuple(str(t) for t in tags), n.path("dir"), timeout)

    @classmethod
    def of(cls, cfg: LoggerSettings | Mapping[str, Any]) -> LoggerSettings:
        return cfg if isinstance(cfg, LoggerSettings) else cls.read(Section(cfg, "logger"))


@dataclass(frozen=True)
class PathSettings:
    root: str
    data_dir: str
    cache_dir: str
    output_dir: str

    @classmethod
    def read(cls, n: Section) -> PathSettings:
        return cls(*(str(n.raw(k)) for k in ("root", "data_dir", "cache_dir", "output_dir")))


@dataclass(frozen=True)
class ConnectSettings:
    """``connect``: the curve trained between two minima (``task=connect``) and its evaluation."""

    num_points: int
    bn_batch_size: int | None
    model2: str | None = None  # the rest only for task=connect (connect_eval evaluates a saved curve)
    curve: str = ""
    epochs: int = 0
    lr: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 0
    schedule: str = ""

    @classmethod
    def read(cls, n: Section, train: bool) -> ConnectSettings:

        num = n.raw("num_points")
        if isinstance(num, bool) or not isinstance(num, int) or num < 2:
            raise UserError(f"connect.num_points={num!r} must be >= 2 (the curve is evaluated at t = 0, ..., 1)")
        bn = n.int("bn_batch_size", 1, null=True)
        if not train:
            return cls(num, bn)
        return cls(num, bn, n.path("model2"), n.str("curve", choices=CURVES), int(n.float("epochs")), n.float("lr"),
                   n.float("momentum"), n.float("weight_decay"), int(n.float("batch_size")), n.str("schedule"))


@dataclass(frozen=True)
class TrajectorySettings:
    """``task=trajectory``'s grid and checkpoint selection."""

    num: int
    margin: float
    start_epoch: int
    stride: int
    surface_figures: bool
    checkpoints: tuple[str, ...] | None

    @classmethod
    def read(cls, task: Section, top: Section) -> TrajectorySettings:
        num, margin = task.int("num"), task.float("margin")
        if num < 2 or not margin >= 0:
            raise UserError(f"task.num={num} must be >= 2 and task.margin={margin} >= 0")
        start, stride = task.int("start_epoch"), task.int("stride")
        if stride < 1 or start < 0:
            raise UserError(f"task.stride={stride} must be >= 1 and task.start_epoch={start} >= 0")
        cps = top.raw("checkpoints") if top.has("checkpoints") else None
        if isinstance(cps, str):
            raise UserError(f"checkpoints={cps!r} must be a list of paths, e.g. checkpoints=[a.pt,b.pt,c.pt]")
        return cls(num, margin, start, stride, task.bool("surface_figures"),
                   None if not cps else tuple(str(p) for p in cps))


@dataclass(frozen=True)
class CompareSettings:
    """``task=compare``: which runs, which metric, which config keys never count as differences."""

    sweep_dir: str | None
    runs: tuple[str, ...]
    metric: str
    ignore: tuple[str, ...]
    replicates: tuple[str, ...] = ("seed",)  # swept keys that repeat a setting: aggregated over

    @classmethod
    def read(cls, n: Section) -> CompareSettings:
        runs, ignore, reps = n.raw("runs"), n.raw("ignore"), n.raw("replicates")
        runs = [runs] if isinstance(runs, str) else list(runs or [])
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        reps = [reps] if isinstance(reps, str) else list(reps or [])
        return cls(n.path("sweep_dir"), tuple(str(r) for r in runs), n.str("metric"), tuple(str(i) for i in ignore),
                   tuple(str(r) for r in reps))


# ------------------------------------------------------------------------------------------------
# the job
