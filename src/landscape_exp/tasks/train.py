"""task=train: train the configured model, checkpointing every epoch."""

from __future__ import annotations

from typing import Any

import numpy as np

from landscape_exp.figures import figure_1d, save
from landscape_exp.io.files import write_json
from landscape_exp.job.checkpoints import train_run
from landscape_exp.job.context import RunContext
from landscape_exp.job.plan import plan_job


def run(ctx: RunContext) -> dict[str, Any]:
    s = ctx.settings
    plan_job(ctx, ctx.dataset(), f"{s.optim.epochs} epochs of optim={s.optim.name}, "
                                   f"batch {s.optim.batch_size}, a checkpoint after every epoch")
    result = train_run(ctx, ctx.out_dir)
    hist = result["history"]
    epochs = np.array([h["epoch"] for h in hist], dtype=float)
    metrics = {k: np.array([h[k] for h in hist], dtype=float) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
    fig = figure_1d(epochs, metrics, title=f"training: {s.model.get('name', '?')} on {s.dataset.get('name', '?')}",
                    xlabel="epoch", log=True)
    ctx.tracker.log_images(save(fig, ctx.out_dir / "training_curves"))
    summary = {"final_checkpoint": result["final_checkpoint"], **{f"final/{k}": v for k, v in result["final"].items()},
               "final/generalization_gap": result["final"]["test_loss"] - result["final"]["train_loss"]}
    write_json(ctx.out_dir / "history.json", {"history": hist})
    return summary
