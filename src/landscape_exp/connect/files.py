"""A trained curve as a file: ``curve.pt`` holds the bend, both end points' state and the model
config, read back with ``weights_only=True`` and checked before it rebuilds the curve."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_exp.config.choices import CURVES
from landscape_exp.connect.curves import CurveModel, plain_data
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import refusal_reason, safe_torch_load, save_torch

CURVE_FORMAT = "landscape-exp/curve/v1"


def save_curve(
    path: str | Path,
    curve: CurveModel,
    *,
    end1_state: Mapping[str, torch.Tensor],
    end2_state: Mapping[str, torch.Tensor],
    model_cfg: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a curve checkpoint: both end points' full state_dicts (BatchNorm buffers included),
    the bend by parameter name, the curve kind and the model config. Plain data only, so it
    loads with ``torch.load(..., weights_only=True)``."""
    payload = {
        "format": CURVE_FORMAT,
        "curve": curve.kind,
        "model_cfg": plain_data(dict(model_cfg)),
        "param_names": list(curve.names),
        "end1": {k: v.detach().cpu() for k, v in end1_state.items()},
        "end2": {k: v.detach().cpu() for k, v in end2_state.items()},
        "bend": {n: p.detach().cpu() for n, p in zip(curve.names, curve.bend)},
        "meta": plain_data(dict(meta or {})),
    }
    return save_torch(path, payload)


def load_curve_file(path: str | Path) -> dict[str, Any]:
    """Read a curve checkpoint written by :func:`save_curve` (safely), checking its layout."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise UserError(f"curve file {str(p)!r} does not exist" if not p.exists() else f"curve file {str(p)!r} is not a file")
    try:
        data = safe_torch_load(p)
    except pickle.UnpicklingError as e:
        raise UserError(f"curve file {str(p)!r} was refused: it holds objects other than tensors and plain data "
                        f"({refusal_reason(e)}), which could run code when loaded") from None
    except Exception as e:  # truncated file, not a torch file
        raise UserError(f"curve file {str(p)!r} is unreadable or holds more than tensors and plain data "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != CURVE_FORMAT:
        raise UserError(f"{str(p)!r} is not a curve file (format {CURVE_FORMAT!r}); task=connect writes one as curve.pt")
    missing = [k for k in ("curve", "model_cfg", "param_names", "end1", "end2", "bend") if k not in data]
    if missing:
        raise UserError(f"curve file {str(p)!r} lacks {', '.join(missing)}")
    if data["curve"] not in CURVES:
        raise UserError(f"curve file {str(p)!r} has unknown curve kind {data['curve']!r}; allowed: {', '.join(CURVES)}")
    return data


def curve_from_file(data: Mapping[str, Any], base: nn.Module, source: str = "curve file") -> CurveModel:
    """Rebuild a :class:`CurveModel` on ``base`` (a model of the file's architecture, whose
    buffers start as the first end point's) from :func:`load_curve_file`'s dict."""
    names = [n for n, _ in base.named_parameters()]
    if list(data["param_names"]) != names:
        raise UserError(f"{source} was saved for parameters {list(data['param_names'])[:3]}... which do not match the model's")
    for key in ("end1", "end2", "bend"):
        absent = [n for n in names if n not in data[key]]
        if absent:
            raise UserError(f"{source}: {key} lacks parameters {', '.join(absent[:5])}")
    base = copy.deepcopy(base)
    base.load_state_dict(data["end1"])
    return CurveModel(base, [data["end1"][n] for n in names], [data["end2"][n] for n in names],
                      str(data["curve"]), bend=[data["bend"][n] for n in names])
