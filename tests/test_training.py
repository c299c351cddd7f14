"""Training with per-epoch checkpoints, exact checkpoint round trips, and resume after a kill."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from landscape_exp.data.device import DeviceData
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import load_checkpoint, save_checkpoint
from landscape_exp.models import build_model
from landscape_exp.models.loading import load_model, model_from_checkpoint
from landscape_exp.training.loop import milestones_for, train_model

from conftest import QUICK_OPTIM, compose_cfg, lenet_cfg, mlp_cfg

CPU = torch.device("cpu")


def _train(run_dir: Path, dataset, *, epochs: int, seed: int = 0, optim: dict | None = None, on_epoch=None,
           model_cfg: dict | None = None):
    model_cfg = model_cfg or mlp_cfg((16,))
    torch.manual_seed(seed)
    model = build_model(model_cfg)
    res = train_model(model, dataset, dict(QUICK_OPTIM, epochs=epochs, **(optim or {})), run_dir=run_dir,
                      model_cfg=model_cfg, device=CPU, seed=seed, progress=False, on_epoch=on_epoch)
    return model, res


def _full_loss(model, dataset) -> float:
    """Mean cross-entropy over the training split, computed with plain torch."""
    x = (dataset.train.images.float() / 255.0 - dataset.mean[0]) / dataset.std[0]
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x).double(), dataset.train.targets))


def test_training_lowers_loss_and_writes_every_epoch(tmp_path, digits):
    torch.manual_seed(0)
    before = _full_loss(build_model(mlp_cfg((16,))).eval(), digits)
    model, res = _train(tmp_path, digits, epochs=3)
    after = _full_loss(model.eval(), digits)
    assert after < 0.5 * before
    ck = tmp_path / "checkpoints"
    assert sorted(p.name for p in ck.glob("*.pt")) == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt", "epoch_003.pt",
                                                       "final.pt", "last.pt"]
    hist = res["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    assert hist[0]["train_loss"] == pytest.approx(before, rel=1e-5)  # epoch 0: the initial model
    assert res["final"]["train_loss"] == pytest.approx(after, rel=1e-5)
    # every epoch file holds that epoch's weights and metrics
    for e in range(4):
        ckpt = load_checkpoint(ck / f"epoch_{e:03d}.pt")
        assert ckpt["epoch"] == e and ckpt["metrics"]["epoch"] == e and ckpt["model_cfg"] == mlp_cfg((16,))
    final = load_checkpoint(ck / "final.pt")
    assert all(torch.equal(final["state_dict"][k], v) for k, v in load_checkpoint(ck / "epoch_003.pt")["state_dict"].items())


def test_checkpoint_round_trip_is_exact(tmp_path, digits):
    model, res = _train(tmp_path, digits, epochs=1, model_cfg=lenet_cfg())
    loaded, ckpt = load_model(res["final_checkpoint"])
    assert not loaded.training
    sd, lsd = model.state_dict(), loaded.state_dict()
    assert list(sd) == list(lsd) and all(torch.equal(sd[k], lsd[k]) for k in sd)
    x = DeviceData(digits.test, digits.mean, digits.std, CPU).normalize(digits.test.images)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # save_checkpoint/load_checkpoint round trip of arbitrary plain data
    p = save_checkpoint(tmp_path / "x.pt", {"state_dict": sd, "model_cfg": lenet_cfg(), "epoch": 7})
    back = load_checkpoint(p)
    assert back["epoch"] == 7 and back["format"].startswith("landscape-exp/checkpoint")
    assert not list(tmp_path.glob(".x.pt.*.tmp"))  # atomic write leaves no temporary file


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, digits):
    """A run killed after epoch 2 of 4 and rerun in the same directory ends with the same weights
    as a run that was never interrupted (model, optimizer, schedule and data order restored)."""
    _, full = _train(tmp_path / "full", digits, epochs=4)

    class Killed(Exception):
        pass

    def kill_after_2(m):
        if m["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        _train(tmp_path / "resumed", digits, epochs=4, on_epoch=kill_after_2)
    ck = tmp_path / "resumed" / "checkpoints"
    assert (ck / "epoch_002.pt").exists() and not (ck / "epoch_003.pt").exists()
    assert milestones_for(4, None) == [2, 3, 4]  # a decay happens inside the resumed part
    seen = []
    _, resumed = _train(tmp_path / "resumed", digits, epochs=4, on_epoch=lambda m: seen.append(m["epoch"]))
    assert seen == [3, 4]
    a = load_checkpoint(full["final_checkpoint"])["state_dict"]
    b = load_checkpoint(resumed["final_checkpoint"])["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3, 4]
    for e in range(5):
        ea = load_checkpoint(tmp_path / "full" / "checkpoints" / f"epoch_{e:03d}.pt")["state_dict"]
        eb = load_checkpoint(ck / f"epoch_{e:03d}.pt")["state_dict"]
        assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_extending_training_with_constant_schedule(tmp_path, digits):
    """2 epochs, then epochs=4 in the same directory, equals 4 uninterrupted epochs (constant lr,
    so the schedule does not depend on the epoch count)."""
    const = {"schedule": "constant"}
    _, full = _train(tmp_path / "full", digits, epochs=4, optim=const)
    _train(tmp_path / "ext", digits, epochs=2, optim=const)
    _, ext = _train(tmp_path / "ext", digits, epochs=4, optim=const)
    a = load_checkpoint(full["final_checkpoint"])["state_dict"]
    b = load_checkpoint(ext["final_checkpoint"])["state_dict"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-6)


def test_app_train_task_resumes_and_refuses_another_config(tmp_path):
    from landscape_exp.app import run_job

    out = tmp_path / "run"
    over = ["task=train", "model=mlp", "model.hidden=[8]", "optim.epochs=2", "plot.enabled=false"]
    s1 = run_job(compose_cfg(tmp_path, over), output_dir=out, job={})
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.glob("epoch_*.pt")) == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt"]
    assert (out / "summary.json").is_file() and (out / "history.json").is_file()
    final_bytes = (ck / "epoch_002.pt").read_bytes()
    # Same config again: nothing left to train, same final weights.
    s2 = run_job(compose_cfg(tmp_path, over), output_dir=out, job={})
    assert s2["final/train_loss"] == s1["final/train_loss"]
    # Another training config in the same directory: refused in one line, checkpoints untouched.
    with pytest.raises(UserError, match="another training config") as e:
        run_job(compose_cfg(tmp_path, over[:-2] + ["optim.epochs=4", "plot.enabled=false"]), output_dir=out, job={})
    assert "\n" not in str(e.value)
    assert (ck / "epoch_002.pt").read_bytes() == final_bytes and not (ck / "epoch_003.pt").exists()


def test_checkpoint_for_another_model_names_keys(tmp_path, digits):
    _, res = _train(tmp_path, digits, epochs=0)
    with pytest.raises(UserError) as e:
        load_model(res["final_checkpoint"], model_cfg=lenet_cfg())
    msg = str(e.value)
    assert "\n" not in msg and "does not fit the model" in msg
    assert "missing keys: features.0.weight" in msg and "unexpected keys: net.0.weight" in msg
    with pytest.raises(UserError, match="shape mismatches: net.0.weight"):
        load_model(res["final_checkpoint"], model_cfg=mlp_cfg((8,)))
    bare = save_checkpoint(tmp_path / "bare.pt", {"state_dict": load_checkpoint(res["final_checkpoint"])["state_dict"]})
    with pytest.raises(UserError, match="carries no model config"):
        model_from_checkpoint(load_checkpoint(bare), "bare")


@pytest.mark.parametrize("optim,match", [({"name": "rmsprop"}, "'rmsprop'"), ({"lr": -1.0}, "optim.lr=-1.0"),
                                         ({"schedule": "warmup"}, "'warmup'"), ({"batch_size": 0}, "batch_size=0")])
def test_bad_optim_options(tmp_path, digits, optim, match):
    with pytest.raises(UserError, match=match):
        _train(tmp_path, digits, epochs=1, optim=optim)
