"""task=train: train the configured model, checkpointing every epoch."""

from __future__ import annotations

from typing import Any

from landscape_exp.plotting import plot_1d
from landscape_exp.tasks.common import RunContext, train_run, write_json


def run(ctx: RunContext) -> dict[str, Any]:
    result = train_run(ctx, ctx.out_dir)
    hist = result["history"]
    import numpy as np

    epochs = np.array([h["epoch"] for h in hist], dtype=float)
    metrics = {k: np.array([h[k] for h in hist], dtype=float) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
    model = ctx.cfg.model.name
    figs = plot_1d(epochs, metrics, ctx.out_dir / "training_curves", title=f"training: {model} on {ctx.cfg.dataset.name}",
                   xlabel="epoch", log=True)
    ctx.tracker.log_images(figs)
    summary = {"final_checkpoint": result["final_checkpoint"], **{f"final/{k}": v for k, v in result["final"].items()},
               "final/generalization_gap": result["final"]["test_loss"] - result["final"]["train_loss"]}
    write_json(ctx.out_dir / "history.json", {"history": hist})
    return summary
