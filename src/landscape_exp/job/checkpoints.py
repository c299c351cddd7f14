"""The checkpoints a job analyses: given on the command line, or trained into (and reused from) a
cache keyed by the training config; loaded in eval mode and checked against the data and against
each other (one architecture check for every task that combines checkpoints)."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_exp.data.datasets import ImageDataset
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import config_hash, load_checkpoint
from landscape_exp.job.context import RunContext
from landscape_exp.models import build_model
from landscape_exp.models.loading import model_from_checkpoint
from landscape_exp.training.loop import train_model


def train_run(ctx: RunContext, run_dir: Path, seed_offset: int = 0) -> dict[str, Any]:
    """Train the configured model in ``run_dir`` (resuming if it holds a partial run)."""
    s = ctx.settings
    ident = s.training_identity(seed_offset)
    dataset = ctx.dataset()
    torch.manual_seed(ident["seed"])
    model = build_model(ident["model"], trusted=trusted_targets(ctx))
    check_model_fits_dataset(model, dataset, ident["model"].get("name", "?"))
    epochs = s.optim.epochs
    announced: list[int] = []

    def on_epoch(m: dict[str, Any]) -> None:
        ctx.tracker.log({f"train/{k}": v for k, v in m.items()})
        if not announced and "epoch_time" in m:  # the first epoch timed: say what the rest costs
            from landscape_exp.job.costs import announce_cost, training_cheaper

            announced.append(1)
            announce_cost("training", "epoch", float(m["epoch_time"]), epochs - int(m["epoch"]),
                          lambda: training_cheaper(ctx))

    return train_model(
        model, dataset, s.optim, run_dir=run_dir, model_cfg=ident["model"], device=ctx.device,
        seed=ident["seed"], loss=ident["loss"], augment=ident["dataset"].get("augment"),
        eval_batch_size=ctx.eval_batch_size, train_hash=config_hash(ident), on_epoch=on_epoch, progress=ctx.progress,
    )


def ensure_checkpoint(ctx: RunContext, seed_offset: int = 0, explicit: str | None = None) -> Path:
    """The checkpoint to analyse: ``explicit`` (or ``checkpoint=``) if given; otherwise the
    cached one trained with this exact model/dataset/optim/seed config, trained now if missing."""
    s = ctx.settings
    path = explicit if explicit is not None else (s.checkpoint if seed_offset == 0 else None)
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"checkpoint {str(p)!r} does not exist" if not p.exists() else f"checkpoint {str(p)!r} is not a file")
        return p
    key = config_hash(s.training_identity(seed_offset))
    run_dir = Path(s.paths.cache_dir) / "train" / key
    final = run_dir / "checkpoints" / "final.pt"
    if final.is_file():
        return final
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"checkpoint cache {str(run_dir)!r} is not writable ({e.strerror or e}); choose another with "
            f"paths.cache_dir=... or pass checkpoint=<file>"
        ) from None
    # Jobs of one sweep may want the same checkpoint: one trains, the others wait for it.
    with open(run_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_file():
            (run_dir / "identity.json").write_text(json.dumps(s.training_identity(seed_offset), indent=2, default=str))
            print(f"training a checkpoint into the cache: {run_dir}")
            train_run(ctx, run_dir, seed_offset)
    return final


def check_model_fits_dataset(model: nn.Module, dataset: ImageDataset, name: str) -> None:
    x = torch.zeros(2, dataset.channels, dataset.image_size, dataset.image_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as e:
        raise UserError(
            f"model {name!r} does not accept {dataset.name!r} images of shape "
            f"{dataset.channels}x{dataset.image_size}x{dataset.image_size} ({' '.join(str(e).split())[:120]})"
        ) from None
    finally:
        model.train(was_training)
    if out.shape[-1] != dataset.num_classes:
        raise UserError(f"model {name!r} has {out.shape[-1]} outputs but dataset {dataset.name!r} has "
                        f"{dataset.num_classes} classes")


def trusted_targets(ctx: RunContext) -> frozenset[str]:
    """The model ``_target_`` the user named in their config (their own model class), if any."""
    target = ctx.settings.model.get("_target_")
    return frozenset({str(target)}) if target else frozenset()


def model_config(ckpt: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """The checkpoint's own model config; a bare state_dict is taken to be ``model=``."""
    return dict(ckpt.get("model_cfg") or ctx.settings.model)


def checkpoint_model(ctx: RunContext, ckpt: Mapping[str, Any], source: str,
                     fallback: Mapping[str, Any] | None = None) -> nn.Module:
    """A checkpoint's model, built from its own config (a bare state_dict: ``fallback``, else
    ``model=``); a ``_target_`` outside the zoo only when the user named it too."""
    fb = None if ckpt.get("model_cfg") is not None else dict(fallback or ctx.settings.model)
    return model_from_checkpoint(ckpt, source, fb, trusted=trusted_targets(ctx))


# The checkpoint the plan read to name the model it will analyse, kept for load_for_analysis (so
# it is read once): (path, mtime, size) -> its contents. One entry, taken by the next load.
_PLANNED: dict[tuple[str, int, int], dict[str, Any]] = {}


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def planned_model(ctx: RunContext) -> tuple[dict[str, Any], str | None]:
    """The model config a job will analyse, for its plan: ``checkpoint=``'s own when it holds
    another model than ``model=`` (with the notice :func:`load_for_analysis` gives), else
    ``model=``. A checkpoint that cannot be read is left to the real load, which says why."""
    s = ctx.settings
    if not s.checkpoint or ctx.adopted_model is not None:
        return ctx.config.get("model", {}), None
    path = Path(s.checkpoint).expanduser()
    try:
        ckpt = load_checkpoint(path)
        key = _file_key(path)
    except (UserError, OSError):
        return dict(s.model), None
    _PLANNED.clear()
    _PLANNED[key] = ckpt
    cfg = model_config(ckpt, ctx)
    return (cfg, _adopt_notice(path, cfg, ctx)) if _differs(cfg, s.model) else (dict(s.model), None)


def _adopt_notice(path: Path, cfg: Mapping[str, Any], ctx: RunContext) -> str:
    return (f"checkpoint {str(path)!r} holds a {cfg.get('name', '?')!r} model; analysing it "
            f"(model={ctx.settings.model.get('name', '?')} does not apply)")


def load_for_analysis(ctx: RunContext, path: Path, dataset: ImageDataset) -> tuple[nn.Module, dict[str, Any]]:
    """Model and checkpoint dict, in eval mode on the device, checked against the dataset.

    The model comes from the checkpoint's own config; a bare state_dict uses ``model=``. When the
    checkpoint's model is not ``model=``, it is analysed with a notice and recorded as the model
    of the run (:meth:`RunContext.adopt_model`), so files, W&B and comparisons name it."""
    try:
        planned = _PLANNED.pop(_file_key(Path(path)), None)
    except OSError:
        planned = None
    _PLANNED.clear()  # the plan read another file (a trajectory's checkpoint=): not kept any longer
    ckpt = planned if planned is not None else load_checkpoint(path)
    model = checkpoint_model(ctx, ckpt, f"checkpoint {str(path)!r}")
    cfg = model_config(ckpt, ctx)
    check_model_fits_dataset(model, dataset, cfg.get("name", "?"))
    if _differs(cfg, ctx.settings.model):
        ctx.adopt_model(cfg, _adopt_notice(path, cfg, ctx))
    return model.to(ctx.device).eval(), ckpt


def _differs(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return json.dumps(dict(a), sort_keys=True, default=str) != json.dumps(dict(b), sort_keys=True, default=str)


def check_same_architecture(what: str, path: Path, other_cfg: Mapping[str, Any] | None, ref_cfg: Mapping[str, Any] | None,
                            ref_what: str) -> None:
    """Refuse to combine checkpoints of different architectures (a one-line error naming what
    differs). A checkpoint without a config (bare state_dict) is checked by its keys later."""
    if other_cfg is None or ref_cfg is None or dict(other_cfg) == dict(ref_cfg):
        return
    diff = sorted(k for k in set(other_cfg) | set(ref_cfg) if other_cfg.get(k) != ref_cfg.get(k))
    raise UserError(
        f"{what} {str(path)!r} is a {other_cfg.get('name', '?')!r} model (differs in {', '.join(diff)}), but "
        f"{ref_what} is {ref_cfg.get('name', '?')!r}; both must have the same architecture"
    )
