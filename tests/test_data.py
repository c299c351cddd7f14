"""Datasets: the embedded digits, the synthetic set, torchvision's real MNIST reader on fake idx
files, device-side normalization and augmentation against per-sample loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape_exp.data.datasets import ImageSplit, eval_subset, load_dataset
from landscape_exp.data.device import DeviceData, augment_batch
from landscape_exp.errors import UserError

from conftest import DIGITS_CFG
from helpers.datasets import write_idx


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1)
    return a[np.lexsort(a.T[::-1])]


def test_digits_split_sizes_values_and_stability(digits):
    from sklearn.datasets import load_digits

    assert len(digits.train) + len(digits.test) == 1797
    assert (len(digits.train), len(digits.test)) == (1797 - 359, 359)
    for s in (digits.train, digits.test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 8, 8)
        assert s.targets.dtype == torch.int64 and int(s.targets.min()) >= 0 and int(s.targets.max()) <= 9
    assert int(digits.train.images.max()) == 255 and int(digits.train.images.min()) == 0
    assert (digits.channels, digits.image_size, digits.num_classes) == (1, 8, 10)
    # Together the two splits are exactly sklearn's images (0..16 scaled to 0..255) with labels.
    d = load_digits()
    ref = np.concatenate([np.round(d.images * 255 / 16).reshape(1797, -1), d.target[:, None]], 1)
    got = np.concatenate([torch.cat([digits.train.images, digits.test.images]).reshape(1797, -1).numpy(),
                          torch.cat([digits.train.targets, digits.test.targets]).numpy()[:, None]], 1)
    np.testing.assert_array_equal(_sorted_rows(got.astype(np.int64)), _sorted_rows(ref.astype(np.int64)))
    # Seeded split: the same every time, another split_seed gives another split.
    again = load_dataset(dict(DIGITS_CFG))
    assert torch.equal(again.train.images, digits.train.images) and torch.equal(again.test.targets, digits.test.targets)
    other = load_dataset(dict(DIGITS_CFG, split_seed=1))
    assert not torch.equal(other.test.images, digits.test.images)


def test_digits_normalization_is_training_statistics(digits):
    x = digits.train.images.double().numpy() / 255.0
    assert digits.mean[0] == pytest.approx(x.mean(), rel=1e-6)
    assert digits.std[0] == pytest.approx(x.std(ddof=1), rel=1e-4)
    raw = load_dataset(dict(DIGITS_CFG, raw=True))
    assert raw.mean == (0.0,) and raw.std == (1.0,)
    fixed = load_dataset(dict(DIGITS_CFG, mean=[0.5], std=[0.25]))
    assert fixed.mean == (0.5,) and fixed.std == (0.25,)


SYN = {"name": "synthetic", "num_classes": 4, "channels": 3, "image_size": 4, "num_train": 300, "num_test": 50, "seed": 0}


def test_synthetic_is_seeded_and_linearly_learnable():
    a, b = load_dataset(dict(SYN)), load_dataset(dict(SYN))
    c = load_dataset(dict(SYN, seed=1))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.targets, b.test.targets)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.train.images.shape == (300, 3, 4, 4) and a.test.images.shape == (50, 3, 4, 4)
    assert a.train.images.dtype == torch.uint8
    assert set(a.train.targets.tolist()) == {0, 1, 2, 3}
    # Labels come from a linear teacher: a linear classifier fits the training set.
    x = a.train.images.reshape(300, -1).double() / 255.0
    x = x - x.mean(0)
    w = torch.zeros(x.shape[1], 4, dtype=torch.float64, requires_grad=True)
    for _ in range(300):  # full-batch gradient descent on a softmax regression
        (g,) = torch.autograd.grad(F.cross_entropy(x @ w, a.train.targets), w)
        with torch.no_grad():
            w -= 50.0 * g
    acc = float(((x @ w).argmax(1) == a.train.targets).double().mean())
    assert acc > 0.97
    with pytest.raises(UserError, match="num_train"):
        load_dataset(dict(SYN, num_train=0))


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_through_torchvision_on_fake_idx_files(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    tr_x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    tr_y = rng.integers(0, 10, 7, dtype=np.uint8)
    te_x = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    te_y = rng.integers(0, 10, 3, dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", tr_x)
    write_idx(raw / "train-labels-idx1-ubyte", tr_y)
    write_idx(raw / "t10k-images-idx3-ubyte", te_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", te_y)
    ds = load_dataset({"name": name, "root": str(tmp_path), "download": False, "num_classes": 10,
                       "mean": [0.1307], "std": [0.3081]})
    assert ds.train.images.shape == (7, 1, 28, 28) and ds.test.images.shape == (3, 1, 28, 28)
    assert ds.train.images.dtype == torch.uint8 and ds.train.targets.dtype == torch.int64
    np.testing.assert_array_equal(ds.train.images[:, 0].numpy(), tr_x)
    np.testing.assert_array_equal(ds.test.images[:, 0].numpy(), te_x)
    np.testing.assert_array_equal(ds.train.targets.numpy(), tr_y)
    np.testing.assert_array_equal(ds.test.targets.numpy(), te_y)
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)


def test_missing_dataset_without_download_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset({"name": "mnist", "root": str(tmp_path / "empty"), "download": False, "num_classes": 10,
                      "mean": [0.1307], "std": [0.3081]})
    msg = str(e.value)
    assert "\n" not in msg
    assert "'mnist'" in msg and str(tmp_path / "empty") in msg and "download" in msg
    with pytest.raises(UserError, match="'imagenet'"):
        load_dataset({"name": "imagenet"})


def test_device_data_normalization_and_batches():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 4, 4), generator=gen, dtype=torch.uint8)
    targets = torch.arange(10) % 3
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    data = DeviceData(ImageSplit(images, targets), mean, std, "cpu")
    out = torch.cat([x for x, _ in data.batches(3)])
    ys = torch.cat([y for _, y in data.batches(3)])
    assert [len(y) for _, y in data.batches(3)] == [3, 3, 3, 1]
    assert torch.equal(ys, targets)
    for n in range(10):
        for c in range(3):
            ref = (images[n, c].double() / 255.0 - mean[c]) / std[c]
            torch.testing.assert_close(out[n, c].double(), ref, rtol=1e-5, atol=1e-5)


def test_augment_batch_against_per_sample_loop():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 5, 6), generator=gen, dtype=torch.uint8)
    p = 2
    out = augment_batch(images, torch.Generator().manual_seed(42), crop_padding=p, hflip=True)
    # The same draws, in the documented order: row offsets, column offsets, flip coins.
    g = torch.Generator().manual_seed(42)
    oy = torch.randint(0, 2 * p + 1, (16,), generator=g)
    ox = torch.randint(0, 2 * p + 1, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    assert 0 < int(flip.sum()) < 16
    for i in range(16):
        padded = torch.zeros(3, 5 + 2 * p, 6 + 2 * p, dtype=torch.uint8)
        padded[:, p : p + 5, p : p + 6] = images[i]
        crop = padded[:, int(oy[i]) : int(oy[i]) + 5, int(ox[i]) : int(ox[i]) + 6]
        if flip[i]:
            crop = crop.flip(-1)
        assert torch.equal(out[i], crop)
    assert out.dtype == torch.uint8 and out.shape == images.shape


def test_augment_batch_invariants():
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(1, 256, (32, 1, 4, 4), generator=gen, dtype=torch.uint8)
    assert torch.equal(augment_batch(images, torch.Generator().manual_seed(0)), images)  # nothing asked
    flipped = augment_batch(images, torch.Generator().manual_seed(0), hflip=True)
    for i in range(32):
        assert torch.equal(flipped[i], images[i]) or torch.equal(flipped[i], images[i].flip(-1))
    cropped = augment_batch(images, torch.Generator().manual_seed(0), crop_padding=1)
    for i in range(32):
        padded = F.pad(images[i], (1, 1, 1, 1))
        windows = [padded[:, r : r + 4, c : c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(cropped[i], w) for w in windows)


def test_eval_subset_parts_partition_the_split():
    split = ImageSplit(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10))
    assert eval_subset(split, 1, 0) is split
    parts = [eval_subset(split, 3, i).targets for i in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    assert all(torch.equal(p, p.sort().values) for p in parts)
    assert torch.equal(eval_subset(split, 3, 1).targets, parts[1])
    with pytest.raises(UserError, match="split_idx=3"):
        eval_subset(split, 3, 3)
