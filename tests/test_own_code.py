"""The researcher's own models and data: the example package end to end, trust of model code (the
user's own config yes, a checkpoint alone no), torchvision models and dataset classes by name, an
image folder, random labels, and the original tool's CIFAR-10 normalization."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from landscape_exp.data.datasets import load_dataset, random_labels
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import load_checkpoint
from landscape_exp.models import build_model
from landscape_exp.models.loading import model_from_checkpoint

from conftest import ROOT, run_cli
from helpers.datasets import write_idx

EXAMPLE = ROOT / "examples" / "own_model_and_data"


def test_example_package_trains_and_analyses_own_model_and_data(tmp_path: Path, monkeypatch) -> None:
    args = ["--config-dir", str(EXAMPLE / "conf"), "model=tinycnn", "dataset=stripes", "task=surface1d", "x=-1:1:5",
            "optim.epochs=2", "logger=none", "progress=false", "plot.enabled=false", "sharpness=none",
            f"hydra.run.dir={tmp_path / 'run'}"]
    r = run_cli(args, tmp_path, extra_env={"PYTHONPATH": str(EXAMPLE)})
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["points_done"] == 5 and summary["train_acc/centre"] > 40  # 4 classes: learned above chance

    # The checkpoint names the user's class: it loads when the user's config names it too, never alone.
    final = next((tmp_path / ".cache" / "train").glob("*/checkpoints/final.pt"))
    ckpt = load_checkpoint(final)
    assert ckpt["model_cfg"]["_target_"] == "my_landscape.nets.TinyCNN"
    monkeypatch.syspath_prepend(str(EXAMPLE))
    with pytest.raises(UserError, match="not one of") as e:
        model_from_checkpoint(ckpt, "checkpoint")
    assert "\n" not in str(e.value)
    assert "my_landscape" not in sys.modules  # refused before any import
    model = model_from_checkpoint(ckpt, "checkpoint", trusted={"my_landscape.nets.TinyCNN"})
    assert type(model).__name__ == "TinyCNN"


def test_torchvision_architecture_by_name() -> None:
    model = build_model("torchvision", arch="resnet18", num_classes=7, in_channels=1, image_size=16).eval()
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 7)
    with pytest.raises(UserError, match="unknown torchvision model arch 'resnet19'"):
        build_model("torchvision", arch="resnet19", num_classes=7)


def test_any_torchvision_dataset_class_equals_the_dedicated_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    raw = tmp_path / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    tr_x, te_x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    tr_y, te_y = rng.integers(0, 10, 6, dtype=np.uint8), rng.integers(0, 10, 4, dtype=np.uint8)
    for stem, arr in (("train-images-idx3-ubyte", tr_x), ("train-labels-idx1-ubyte", tr_y),
                      ("t10k-images-idx3-ubyte", te_x), ("t10k-labels-idx1-ubyte", te_y)):
        write_idx(raw / stem, arr)
    ds = load_dataset({"name": "torchvision", "class": "KMNIST", "root": str(tmp_path), "download": False,
                       "num_classes": 10, "mean": None, "std": None})
    np.testing.assert_array_equal(ds.train.images[:, 0].numpy(), tr_x)
    np.testing.assert_array_equal(ds.test.targets.numpy(), te_y)
    assert ds.mean[0] == pytest.approx(tr_x.mean() / 255, rel=1e-6)  # training-split statistics
    with pytest.raises(UserError, match="unknown torchvision dataset class 'KMINST'"):
        load_dataset({"name": "torchvision", "class": "KMINST", "root": str(tmp_path), "download": False})


def test_image_folder_is_resized_and_labelled_by_folder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    expected = {}
    for part, n in (("train", 3), ("test", 2)):
        for label, cls in enumerate(("cat", "dog")):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # not square, not 16x16
                Image.fromarray(arr).save(tmp_path / part / cls / f"{i}.png")
                expected.setdefault(part, []).append(label)
    ds = load_dataset({"name": "image_folder", "root": str(tmp_path), "image_size": 16, "channels": 3,
                       "num_classes": 2, "mean": None, "std": None})
    assert ds.train.images.shape == (6, 3, 16, 16) and ds.test.images.shape == (4, 3, 16, 16)
    assert ds.train.targets.tolist() == expected["train"] and ds.test.targets.tolist() == expected["test"]
    grey = load_dataset({"name": "image_folder", "root": str(tmp_path), "image_size": 8, "channels": 1, "num_classes": 2})
    assert grey.train.images.shape == (6, 1, 8, 8)
    with pytest.raises(UserError, match="must hold train/<class>/"):
        load_dataset({"name": "image_folder", "root": str(tmp_path / "nope"), "image_size": 8, "channels": 3})


def test_random_labels_replace_the_stated_fraction_of_training_labels_only() -> None:
    base = load_dataset({"name": "digits", "split_seed": 0, "test_fraction": 0.2})
    half = load_dataset({"name": "digits", "split_seed": 0, "test_fraction": 0.2, "random_labels": 0.5})
    n = len(base.train)
    gen = torch.Generator().manual_seed(0)
    chosen = torch.randperm(n, generator=gen)[: round(0.5 * n)]
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[chosen] = False
    assert torch.equal(half.train.targets[untouched], base.train.targets[untouched])
    # a uniform draw keeps the true class about 1 time in 10
    agree = (half.train.targets[chosen] == base.train.targets[chosen]).float().mean().item()
    assert 0.05 < agree < 0.16
    assert torch.equal(half.test.targets, base.test.targets) and torch.equal(half.train.images, base.train.images)
    again = load_dataset({"name": "digits", "split_seed": 0, "test_fraction": 0.2, "random_labels": 0.5})
    assert torch.equal(again.train.targets, half.train.targets)  # seeded
    with pytest.raises(UserError, match="random_labels=1.5"):
        random_labels(base.train, 1.5, 10)


def test_cifar10_normalization_is_the_original_tools() -> None:
    """loss-landscape's dataloader.py: Normalize(mean=[125.3, 123.0, 113.9]/255, std=[63.0, 62.1, 66.7]/255)."""
    cfg = yaml.safe_load((ROOT / "conf" / "dataset" / "cifar10.yaml").read_text())
    np.testing.assert_allclose(cfg["mean"], np.array([125.3, 123.0, 113.9]) / 255, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cfg["std"], np.array([63.0, 62.1, 66.7]) / 255, rtol=0, atol=1e-12)
