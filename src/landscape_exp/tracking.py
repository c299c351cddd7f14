"""Experiment tracking: Weights & Biases (offline by default) or nothing.

Results are always written to disk first; a tracking failure is a warning, never a lost result.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape_exp.errors import choice_error

LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")


class Tracker:
    """No-op tracker; :class:`WandbTracker` overrides every method."""

    name = "none"

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...
    def log_images(self, paths: Sequence[Path], prefix: str = "") -> None: ...
    def log_html(self, path: Path, key: str) -> None: ...
    def log_curve(self, key: str, x: Sequence[float], ys: Mapping[str, Sequence[float]], xname: str = "x") -> None: ...
    def summary(self, values: Mapping[str, Any]) -> None: ...
    def artifact(self, paths: Sequence[Path], name: str, kind: str) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


def _warn(what: str, e: BaseException) -> None:
    msg = " ".join(str(e).split())[:200]
    warnings.warn(f"W&B {what} failed ({type(e).__name__}: {msg}); results are on disk", RuntimeWarning, stacklevel=3)
    print(f"warning: W&B {what} failed ({type(e).__name__}: {msg}); results are on disk", file=sys.stderr)


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run: Any):
        self.run = run

    def _safe(self, what: str, fn: Any, *a: Any, **kw: Any) -> None:
        try:
            fn(*a, **kw)
        except Exception as e:  # tracking must never cost a result
            _warn(what, e)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self._safe("log", self.run.log, dict(metrics), step=step)

    def log_images(self, paths: Sequence[Path], prefix: str = "") -> None:
        import wandb

        def go() -> None:
            imgs = {f"{prefix}{Path(p).stem}": wandb.Image(str(p)) for p in paths if str(p).endswith(".png")}
            if imgs:
                self.run.log(imgs)

        self._safe("image upload", go)

    def log_html(self, path: Path, key: str) -> None:
        import wandb

        self._safe("html upload", lambda: self.run.log({key: wandb.Html(Path(path).read_text())}))

    def log_curve(self, key: str, x: Sequence[float], ys: Mapping[str, Sequence[float]], xname: str = "x") -> None:
        import wandb

        def go() -> None:
            cols = [xname, *ys]
            rows = [[float(x[i]), *[float(v[i]) for v in ys.values()]] for i in range(len(x))]
            table = wandb.Table(columns=cols, data=rows)
            plots = {f"{key}/{c}": wandb.plot.line(table, xname, c, title=f"{key}: {c}") for c in ys}
            self.run.log({f"{key}/table": table, **plots})

        self._safe("curve upload", go)

    def summary(self, values: Mapping[str, Any]) -> None:
        self._safe("summary", self.run.summary.update, dict(values))

    def artifact(self, paths: Sequence[Path], name: str, kind: str) -> None:
        import wandb

        def go() -> None:
            art = wandb.Artifact(name=name, type=kind)
            for p in paths:
                if Path(p).exists():
                    art.add_file(str(p))
            self.run.log_artifact(art)

        self._safe("artifact upload", go)

    def finish(self, exit_code: int = 0) -> None:
        self._safe("finish", self.run.finish, exit_code=exit_code)


def make_tracker(
    cfg: Mapping[str, Any],
    *,
    run_dir: Path,
    config: Mapping[str, Any],
    job_type: str,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
) -> Tracker:
    """Start a tracker for one job (each job of a multirun is its own W&B run)."""
    kind = str(cfg.get("name", "none"))
    if kind == "none":
        return Tracker()
    if kind != "wandb":
        raise choice_error("logger", kind, LOGGERS)
    mode = str(cfg.get("mode", "offline"))
    if mode not in WANDB_MODES:
        raise choice_error("logger.mode", mode, WANDB_MODES)
    try:
        import wandb

        wdir = Path(str(cfg.get("dir") or run_dir))
        wdir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=str(cfg.get("project", "landscape-exp")),
            entity=cfg.get("entity"),
            mode=mode,
            dir=str(wdir),
            config=dict(config),
            job_type=job_type,
            group=cfg.get("group") or group,
            name=name,
            tags=[str(t) for t in (list(cfg.get("tags") or []) + list(tags))],
            reinit="finish_previous",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        return WandbTracker(run)
    except Exception as e:
        _warn("init", e)
        return Tracker()
