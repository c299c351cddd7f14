"""The job's settings: the resolved Hydra config read once, checked, and frozen into dataclasses.

This is the one place that knows the config's layout. ``app.run_job`` builds :class:`Settings`
from the resolved config (a plain mapping) at the top of a job; tasks and the library below them
take typed settings or plain arguments, never the config. Defaults live only in ``conf/``: a
key missing here is a one-line error naming it, not a silent fallback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscape_exp.directions import DIRECTION_TYPES, IGNORES, check_ignore
from landscape_exp.errors import UserError, choice_error
from landscape_exp.hessian import SpectrumSettings
from landscape_exp.sharpness import SharpnessSettings

SPLITS = ("train", "test")
# The keys each task's section may hold (conf/task/<name>.yaml). A key beyond these came from a
# `+task.key=...` override that nothing reads: refused, so a misspelt setting never goes unnoticed.
_SURFACE_KEYS = ("x", "direction_type", "ignore")
TASK_KEYS: dict[str, tuple[str, ...]] = {
    "train": (), "plot": (), "merge": (), "connect": (), "connect_eval": (),
    "surface1d": _SURFACE_KEYS, "interp1d": _SURFACE_KEYS, "hessian": _SURFACE_KEYS,
    "surface2d": (*_SURFACE_KEYS, "y"), "plane": (*_SURFACE_KEYS, "y"), "hessian_surface": (*_SURFACE_KEYS, "y"),
    "hessian_trajectory": ("ignore",),
    "trajectory": ("direction_type", "ignore", "num", "margin", "start_epoch", "stride", "surface_figures"),
    "compare": ("sweep_dir", "runs", "metric", "ignore", "replicates"),
}
# Where a user who typed one of these task keys meant a top-level option.
_TOP_LEVEL_HINTS = {"run_dir": "run_dir=<training run directory>", "checkpoint": "checkpoint=<file>",
                    "checkpoints": "checkpoints=[a.pt,b.pt,...]", "surf_file": "surf_file=<file>"}


# ------------------------------------------------------------------------------------------------
# reading values


class Section:
    """One config section with checked getters; errors name the full key."""

    def __init__(self, data: Any, prefix: str):
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise UserError(f"{prefix or 'config'} must be a mapping of settings; got {data!r}")
        self.data, self.prefix = data, prefix

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def has(self, k: str) -> bool:
        return k in self.data

    def raw(self, k: str) -> Any:
        if k not in self.data:
            raise UserError(f"the config has no {self.key(k)}; it is set in conf/ (was a config file edited?)")
        v = self.data[k]
        if v == "???":
            raise UserError(f"{self.key(k)} is required; set it with {self.key(k)}=...")
        return v

    def node(self, k: str) -> Section:
        return Section(self.raw(k), self.key(k))

    def int(self, k: str, minimum: int | None = None, null: bool = False) -> Any:
        v = self.raw(k)
        if v is None and null:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
            what = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (" or null" if null else "")
            raise UserError(f"{self.key(k)}={v!r} must be {what}")
        return v

    def float(self, k: str, null: bool = False) -> Any:
        v = self.raw(k)
        if v is None and null:
            return None
        if isinstance(v, str):  # YAML 1.1 reads `1e-3` (no dot) as text
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise UserError(f"{self.key(k)}={v!r} must be a number" + (" or null" if null else ""))
        return float(v)

    def bool(self, k: str) -> bool:
        v = self.raw(k)
        if not isinstance(v, bool):
            raise UserError(f"{self.key(k)}={v!r} must be true or false")
        return v

    def str(self, k: str, null: bool = False, choices: Sequence[str] | None = None) -> Any:
        v = self.raw(k)
        if v is None and null:
            return None
        if v is None or isinstance(v, (Mapping, list, tuple)):
            raise UserError(f"{self.key(k)}={v!r} must be a text value")
        if choices is not None and str(v) not in choices:
            raise choice_error(self.key(k), v, choices)
        return str(v)

    def path(self, k: str) -> str | None:
        v = self.raw(k)
        return None if v in (None, "") else str(v)

    def mapping(self, k: str) -> dict[str, Any]:
        return dict(self.node(k).data)


# ------------------------------------------------------------------------------------------------
# sections


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
        from landscape_exp.evaluation import LOSSES

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
        from landscape_exp.figures import HTML_PLOTLYJS, LEVEL_MODES, MAX_VTP_INTERP

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
        kind = n.raw("type") if n.raw("type") is not None else (task.raw("direction_type") if task.has("direction_type") else "weights")
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
        from landscape_exp.directions import NORMS

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
    if task in ("surface2d", "interp1d", "plane", "hessian_surface", "trajectory"):  # tasks without directions ignore it
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
    """``precision``: ``mode`` auto | fp32 | tf32 | bf16 (see :mod:`landscape_exp.precision`)."""

    mode: str
    channels_last: bool | None
    compile: bool
    fold_bn: bool
    emulate_bf16: bool  # bf16 on a CPU without bf16 kernels: emulated (true) or fp32 (false, the default)

    @classmethod
    def read(cls, n: Section) -> PrecisionSettings:
        from landscape_exp.precision import MODES

        cl = n.raw("channels_last")
        if cl is not None and not isinstance(cl, bool):
            raise UserError(f"precision.channels_last={cl!r} must be true, false or null")
        return cls(n.str("mode", choices=("auto", *MODES)), cl, n.bool("compile"), n.bool("fold_bn"),
                   n.bool("emulate_bf16"))


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
class HessianSettings:
    """The ``hessian`` section of the Hessian tasks."""

    split: str
    num_samples: int | None  # None: the whole split
    seed: int
    batch_size: int | None  # None: chosen for the device (:meth:`batch_size_for`)
    spectrum: SpectrumSettings
    curvature: str = "hessian"  # hessian | ggn | fisher

    def batch_size_for(self, device: torch.device) -> int:
        if self.batch_size is not None:
            return self.batch_size
        # The double backward keeps about three times the activations of an evaluation pass.
        return 512 if device.type == "cuda" else 256

    def identity(self) -> dict[str, Any]:
        """What determines the values (the batch size only changes roundoff). The curvature is
        named only when it is not the Hessian, so files made before it existed still match."""
        s = self.spectrum
        extra = {"curvature": self.curvature} if self.curvature != "hessian" else {}
        return {"split": self.split, "num_samples": self.num_samples, "seed": self.seed, "method": s.method,
                "tol": s.tol, "max_iter": s.max_iter, **extra}

    @classmethod
    def read(cls, n: Section) -> HessianSettings:
        from landscape_exp.hvp import CURVATURES

        seed = n.int("seed", 0)
        # Sections a task does not use are absent from its YAML: those stages are off (0 probes).
        dens = n.node("density") if n.has("density") else None
        spectrum = SpectrumSettings(
            k=n.raw("k") if n.has("k") else 1, method=n.str("method"), tol=n.float("tol"),
            max_iter=n.raw("max_iter"), trace_probes=n.raw("trace_probes") if n.has("trace_probes") else 0,
            density_probes=dens.raw("probes") if dens else 0, density_iters=dens.raw("iters") if dens else 1,
            density_points=dens.raw("num_points") if dens else 2, seed=seed,
            blocks=n.raw("blocks") if n.has("blocks") else 0,
        )
        return cls(n.str("split", choices=SPLITS), n.int("num_samples", 1, null=True), seed,
                   n.int("batch_size", 1, null=True), spectrum, n.str("curvature", choices=CURVATURES))


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
        from landscape_exp.curves import CURVES

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
    logger: Mapping[str, Any]
    paths: PathSettings
    model: Mapping[str, Any]
    dataset: Mapping[str, Any]
    optim: Mapping[str, Any]
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
        if name not in TASK_KEYS:
            raise choice_error("task", name, list(TASK_KEYS))
        extra = sorted(set(task_node.data) - {"name", *TASK_KEYS[name]})
        if extra:
            hint = "; ".join(f"the {k} option is {_TOP_LEVEL_HINTS[k]}" for k in extra if k in _TOP_LEVEL_HINTS)
            raise UserError(f"task={name} has no setting {', '.join('task.' + k for k in extra)}"
                            f" (its settings: {', '.join(TASK_KEYS[name]) or 'none'})" + (f"; {hint}" if hint else ""))
        x = top.raw("x") or (task_node.raw("x") if task_node.has("x") else None)
        y = top.raw("y") or (task_node.raw("y") if task_node.has("y") else None)
        uses_directions = name in ("surface1d", "surface2d", "interp1d", "plane", "hessian_surface", "trajectory")
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
                                             top.node("normalization"), uses_directions),
            precision=PrecisionSettings.read(top.node("precision")),
            sharpness=SharpnessSettings.from_mapping(sharp if isinstance(sharp, Mapping) else {}),
            logger=top.mapping("logger"), paths=PathSettings.read(top.node("paths")),
            model=top.mapping("model"), dataset=top.mapping("dataset"), optim=top.mapping("optim"),
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
        return {"model": dict(self.model), "dataset": self.dataset_identity(), "optim": dict(self.optim),
                "seed": self.seed + seed_offset, "loss": self.eval.loss}


def _progress(top: Section) -> bool:
    from landscape_exp.console import progress_wanted

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
