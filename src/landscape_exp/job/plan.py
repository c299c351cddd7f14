"""The plan a job prints before it starts (the cost lines that follow once the first unit of work
is timed are :mod:`landscape_exp.job.costs`): a researcher knows within seconds what will run,
on which model, data, device and precision, and what the CPU changed about it."""

from __future__ import annotations

import torch

from landscape_exp.config.tasks import task_spec
from landscape_exp.data.datasets import ImageDataset
from landscape_exp.job.checkpoints import planned_model, trusted_targets
from landscape_exp.job.context import RunContext
from landscape_exp.measures.sharpness import model_passes
from landscape_exp.models import build_model

# Networks of the paper's CIFAR-10 experiments: on the 8x8 digits default they are almost surely a slip.
CIFAR_NETWORKS = ("vgg", "resnet", "wrn", "densenet")


def plan_job(ctx: RunContext, dataset: ImageDataset, work: str) -> None:
    """Decide what the job analyses and say so: the model ``checkpoint=`` holds is adopted as the
    job's model (:meth:`RunContext.adopt_model`: files, W&B and the evaluation batch then name it),
    then one paragraph says what runs on what, where, and the ``work`` (e.g. "a 51x51 surface")."""
    s = ctx.settings
    # checkpoint= may hold another model than model=: the plan names the one that will be analysed
    model_cfg, adopted = planned_model(ctx) if s.task != "train" else (dict(s.model), None)
    name = str(model_cfg.get("name", "?"))
    try:
        with torch.device("meta"):  # counting parameters needs no memory
            params = (f"{sum(p.numel() for p in build_model(dict(model_cfg), trusted=trusted_targets(ctx)).parameters()):,}"
                      " parameters")
    except Exception:  # a model that cannot be built here (bad options, one of the user's own): the real build says why
        params = "parameters unknown"
    if adopted:
        ctx.adopt_model(model_cfg, adopted, quiet=True)  # said below the plan; the batch is this model's
    shape = f"{dataset.channels}x{dataset.image_size}x{dataset.image_size}"
    epochs = s.optim.epochs
    source = f"checkpoint {s.checkpoint}" if s.checkpoint else (
        f"a checkpoint trained first with optim={s.optim.name} ({epochs} epoch{'' if epochs == 1 else 's'}, "
        f"batch {s.optim.batch_size}; reused from the cache when it is there)")
    print(f"plan: {s.task}: {work}\n"
          f"  model {name} ({params}) on {dataset.name} ({len(dataset.train):,} train / {len(dataset.test):,} test images, "
          f"{shape}, {dataset.num_classes} classes)\n"
          + ("" if s.task == "train" else f"  from {source}\n")
          + f"  device {ctx.device}, precision {ctx.precision.mode}, evaluation batch {ctx.eval_batch_size}")
    sh = s.sharpness
    takes_sharpness = task_spec(s.task).sharpness
    if takes_sharpness and sh.enabled and sh.model:
        print(f"  then sharpness at the checkpoint: {model_passes(sh)} passes over the training split "
              "(sharpness.model=false skips them)")
    if takes_sharpness and sh.enabled and sh.flatness.passes():
        print(f"  then flatness at the checkpoint: about {sh.flatness.passes()} forward passes over the training split "
              "(sharpness.flatness.gaussian/pac_bayes=false skip them)")
    if s.eval.bn_recompute:
        print("  BatchNorm statistics recomputed at every point (eval.bn_recompute): one more forward pass over the "
              "training split per point")
    for notice in ctx.precision.notices if s.task != "train" else ():
        print(f"note: {notice}")
    if adopted:
        print(f"note: {adopted}")
    if name.startswith(CIFAR_NETWORKS) and dataset.name == "digits":
        print(f"note: {name} is a CIFAR-10 network of the paper, but dataset=digits (the 8x8 default) is selected; "
              "add dataset=cifar10 optim=sgd for the paper's setting")
