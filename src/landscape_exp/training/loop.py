"""Training with per-epoch checkpoints (needed for trajectories) and resume-on-rerun."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from landscape_exp.config.sections import OptimSettings
from landscape_exp.data.datasets import ImageDataset
from landscape_exp.data.device import DeviceData, augment_batch
from landscape_exp.engine.evaluation import evaluate, mean_loss_fn
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import load_checkpoint, save_checkpoint
from landscape_exp.training.runs import epoch_path

# The paper's step decay: x0.1 at epochs 150, 225 and 275 of 300.
PAPER_MILESTONE_FRACTIONS = (150 / 300, 225 / 300, 275 / 300)


def make_optimizer(params: Any, o: OptimSettings) -> torch.optim.Optimizer:
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def milestones_for(epochs: int, milestones: Sequence[int] | None) -> list[int]:
    """Step-decay epochs: explicit ``milestones``, or the paper's proportions of ``epochs``."""
    if milestones is None:
        return sorted({max(1, round(f * epochs)) for f in PAPER_MILESTONE_FRACTIONS})
    return [int(m) for m in milestones]


def make_scheduler(opt: torch.optim.Optimizer, o: OptimSettings) -> torch.optim.lr_scheduler.LRScheduler:
    if o.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones_for(o.epochs, o.milestones), gamma=o.gamma)
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, o.epochs))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device | str, *,
                     min_size: int = 1) -> Iterator[torch.Tensor]:
    """The index batches of one epoch over ``n`` samples in an order drawn from ``generator``;
    batches under ``min_size`` samples are skipped (BatchNorm cannot train on a batch of one)."""
    perm = torch.randperm(n, generator=generator).to(device)
    for s in range(0, n, batch_size):
        idx = perm[s : s + batch_size]
        if len(idx) >= min_size:
            yield idx


def batch_inputs(data: DeviceData, idx: torch.Tensor, generator: torch.Generator,
                 augment: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized (and, per ``augment``'s ``crop_padding``/``hflip``, augmented) images and targets of ``idx``."""
    imgs = data.images[idx]
    if augment.get("crop_padding", 0) or augment.get("hflip", False):
        imgs = augment_batch(imgs, generator, crop_padding=int(augment.get("crop_padding", 0)),
                             hflip=bool(augment.get("hflip", False)))
    return data.normalize(imgs), data.targets[idx]


class RunningMetrics:
    """Training loss and accuracy of an epoch, summed on the device and read once at its end."""

    def __init__(self, device: torch.device | str):
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0

    def add(self, batch_loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """One batch: its mean loss and its logits."""
        self.total += batch_loss.detach().double() * len(targets)
        self.correct += (logits.detach().argmax(1) == targets).sum()
        self.seen += len(targets)

    @property
    def loss(self) -> float:
        return float(self.total) / max(self.seen, 1)

    @property
    def acc(self) -> float:
        """Accuracy in percent."""
        return 100.0 * float(self.correct) / max(self.seen, 1)


def _finished(ckpt_dir: Path, epochs: int, train_hash: str) -> dict[str, Any] | None:
    """The result of a run in ``ckpt_dir`` that already finished all ``epochs`` of this config, else None."""
    final, last = ckpt_dir / "final.pt", ckpt_dir / "last.pt"
    if not (final.is_file() and last.is_file()):
        return None
    state = load_checkpoint(last)
    if state.get("train_hash") != train_hash or int(state.get("epoch", -1)) != epochs:
        return None
    return {"final_checkpoint": str(final), "history": list(state.get("history", [])),
            "final": dict(load_checkpoint(final).get("metrics") or {})}


def train_model(
    model: nn.Module,
    dataset: ImageDataset,
    optim_cfg: OptimSettings | Mapping[str, Any],
    *,
    run_dir: str | Path,
    model_cfg: Mapping[str, Any],
    device: torch.device,
    seed: int = 0,
    loss: str = "crossentropy",
    augment: Mapping[str, Any] | None = None,
    eval_batch_size: int = 1024,
    train_hash: str = "",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` and checkpoint every epoch under ``run_dir/checkpoints``.

    Rerunning in the same ``run_dir`` resumes from ``last.pt`` (model, optimizer, scheduler and
    data-order RNG), so a killed run loses at most the epoch in progress. Returns a summary with
    the history of per-epoch metrics and the final checkpoint path.
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    optim = OptimSettings.of(optim_cfg)  # a mapping needs every key of its conf/optim file
    epochs, batch_size = optim.epochs, optim.batch_size
    done = _finished(ckpt_dir, epochs, train_hash)
    if done is not None:
        # A finished run started again (a study rerun): final.pt stays byte for byte, so the
        # surfaces computed from it (whose fingerprint holds its hash) resume instead of being refused.
        print(f"training already finished: {ckpt_dir / 'final.pt'} ({epochs} epochs)")
        return done
    model.to(device)
    opt = make_optimizer(model.parameters(), optim)
    sched = make_scheduler(opt, optim)
    gen = torch.Generator().manual_seed(int(seed))
    loss_fn = mean_loss_fn(loss)
    aug = dict(augment or {})
    train_data = DeviceData(dataset.train, dataset.mean, dataset.std, device)
    test_data = DeviceData(dataset.test, dataset.mean, dataset.std, device)
    model_cfg = dict(model_cfg)

    def payload(epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "model_cfg": model_cfg, "epoch": epoch, "metrics": metrics, "train_hash": train_hash,
                "dataset": dataset.name}

    history: list[dict[str, Any]] = []
    start = 1
    last = ckpt_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        if state.get("train_hash") != train_hash:
            raise UserError(
                f"{str(last)!r} belongs to another training config; use a new run directory or delete it"
            )
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["rng"])
        history = list(state.get("history", []))
        start = int(state["epoch"]) + 1
        print(f"resuming training from {str(last)!r}: epoch {start - 1} of {epochs} done")
    else:
        model.eval()
        tr = evaluate(model, train_data, loss=loss, batch_size=eval_batch_size)
        te = evaluate(model, test_data, loss=loss, batch_size=eval_batch_size)
        m0 = {"epoch": 0, "train_loss": tr[0], "train_acc": tr[1], "test_loss": te[0], "test_acc": te[1],
              "lr": opt.param_groups[0]["lr"]}
        history.append(m0)
        save_checkpoint(epoch_path(ckpt_dir, 0), payload(0, m0))

    min_batch = 2 if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else 1
    bar = tqdm(range(start, epochs + 1), desc="train", unit="epoch", disable=not progress, initial=start - 1, total=epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        running = RunningMetrics(device)
        for idx in shuffled_batches(len(train_data), batch_size, gen, device, min_size=min_batch):
            x, y = batch_inputs(train_data, idx, gen, aug)
            logits = model(x)
            batch_loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
            running.add(batch_loss, logits, y)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        model.eval()
        te = evaluate(model, test_data, loss=loss, batch_size=eval_batch_size)
        train_loss = running.loss
        if not math.isfinite(train_loss):
            bar.write(f"warning: training loss is {train_loss} at epoch {epoch}")
        m = {"epoch": epoch, "train_loss": train_loss, "train_acc": running.acc,
             "test_loss": te[0], "test_acc": te[1], "lr": lr, "epoch_time": time.perf_counter() - t0}
        history.append(m)
        save_checkpoint(epoch_path(ckpt_dir, epoch), payload(epoch, m))
        # last.pt is written after the epoch file so a resume never skips a per-epoch checkpoint.
        state = payload(epoch, m)
        state.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), rng=gen.get_state(), history=history)
        save_checkpoint(last, state)
        bar.set_postfix(loss=f"{train_loss:.4f}", test_acc=f"{te[1]:.1f}")
        if on_epoch is not None:
            on_epoch(m)
    bar.close()

    model.eval()
    tr = evaluate(model, train_data, loss=loss, batch_size=eval_batch_size)
    te = evaluate(model, test_data, loss=loss, batch_size=eval_batch_size)
    final_metrics = {"epoch": epochs, "train_loss": tr[0], "train_acc": tr[1], "test_loss": te[0], "test_acc": te[1]}
    final = save_checkpoint(ckpt_dir / "final.pt", payload(epochs, final_metrics))
    return {"final_checkpoint": str(final), "history": history, "final": final_metrics}
