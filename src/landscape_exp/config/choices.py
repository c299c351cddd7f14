"""The allowed values of every choice setting, in one place: the settings check them, the code that
implements them imports them from here (so a new choice is added once, and config/ imports no
library code)."""

from __future__ import annotations

from landscape_exp.errors import choice_error

SPLITS = ("train", "test")
# what a surface, a path or a comparison stores per split (accuracy in percent)
SPLIT_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
LOSSES = ("crossentropy", "mse")
PRECISION_MODES = ("fp32", "tf32", "bf16")

DIRECTION_TYPES = ("weights", "states")
IGNORES = ("biasbn", "none")
NORMS = ("filter", "layer", "weight", "none")
DIRECTION_SOURCES = ("file", "random", "checkpoints")

DATASETS = ("digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "torchvision",
            "image_folder", "custom")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cosine", "constant")

CURVES = ("bezier", "polychain")
CURVE_PATHS = CURVES + ("segment",)
CURVE_SCHEDULES = ("garipov", "constant")

CURVATURES = ("hessian", "ggn", "fisher")
SPECTRAL_METHODS = ("lanczos", "eigsh", "power")
FLATNESS_METRICS = ("error", "loss")

LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")

LEVEL_MODES = ("auto", "fixed")
HTML_PLOTLYJS = ("inline", "directory", "none")
MAX_VTP_INTERP = 1000


def check_ignore(ignore: str | None) -> str | None:
    """``ignore`` normalized: ``'biasbn'`` or None (``'none'``, ``''``); anything else refused."""
    if ignore in (None, "none", ""):
        return None
    if ignore != "biasbn":
        raise choice_error("ignore option", ignore, IGNORES)
    return ignore
