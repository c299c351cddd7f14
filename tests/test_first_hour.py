"""What a researcher meets in the first hour: the plan and cost estimates, run.log, Ctrl-C, a
checkpoint of another model, files given by mistake, required settings left unset."""

from __future__ import annotations

import json
import shlex
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from landscape_exp.app import run_job
from landscape_exp.compare.runs import load_run
from landscape_exp.config.settings import Settings, progress_wanted
from landscape_exp.data.datasets import dataset_for
from landscape_exp.errors import UserError
from landscape_exp.job.context import RunContext
from landscape_exp.job.costs import LONG, announce_cost, timed_points
from landscape_exp.job.plan import plan_job

from conftest import compose_cfg, run_cli

TINY = ["x=-1:1:5", "plot.enabled=false", "sharpness=none"]


def _ctx(root: Path, overrides: list[str]) -> RunContext:
    settings = Settings.from_config(OmegaConf.to_container(compose_cfg(root, overrides), resolve=True))
    return RunContext(settings=settings, out_dir=root, device=torch.device("cpu"))


def test_plan_names_model_data_device_and_warns_of_a_cifar_net_on_digits(tmp_path: Path, capsys) -> None:
    ctx = _ctx(tmp_path, ["model=resnet20", "task=surface2d"])
    plan_job(ctx, dataset_for(ctx.settings.dataset), "a 51x51 grid (2,601 points)")
    out = capsys.readouterr().out
    assert "plan: surface2d: a 51x51 grid (2,601 points)" in out
    assert "model resnet20 (272,186 parameters) on digits (1,438 train / 359 test images, 1x8x8, 10 classes)" in out
    assert "optim=sgd (20 epochs, batch 64" in out
    assert f"device cpu, precision fp32, evaluation batch {ctx.eval_batch_size}" in out
    # the default sharpness step, announced: 2 ascents x (L(theta) + 10 steps + the final point)
    assert "24 passes over the training split" in out
    assert "note: resnet20 is a CIFAR-10 network" in out and "dataset=cifar10" in out


@pytest.mark.parametrize("units,mode,offered", [(True, "fp32", True), (False, "fp32", False), (True, "bf16", False)])
def test_bf16_is_offered_as_cheaper_only_on_a_cpu_with_bf16_units_running_fp32(tmp_path: Path, monkeypatch, units, mode,
                                                                               offered) -> None:
    from dataclasses import replace

    from landscape_exp.engine import precision
    from landscape_exp.engine.cpu import cpu_features
    from landscape_exp.surface import job as plan
    from landscape_exp.surface.grid import parse_grid

    # a CPU with bf16 units has oneDNN's bf16 kernels too (the Xeon); one without may lack both (the EPYC)
    monkeypatch.setattr(plan, "cpu_has_bf16_units", lambda: units)
    monkeypatch.setattr(precision, "cpu_features", lambda: replace(cpu_features(), bf16_units=units, bf16_kernels=units))
    ctx = _ctx(tmp_path, ["task=surface2d", f"precision={mode}"])
    text = plan.surface_cheaper(ctx, parse_grid("-1:1:51", "-1:1:51"))
    assert ("precision=bf16 (this CPU has bf16 units" in text) is offered, text
    assert "a coarser grid (x=-1:1:21 y=-1:1:21: 441 points instead of 2,601)" in text


def test_a_slow_first_point_is_the_estimate_at_once(capsys) -> None:
    def points(first: float):
        time.sleep(first)
        yield 0, {}
        yield 1, {}

    gen = timed_points(points(0.25), 400, lambda: "x", slow=0.2)
    next(gen), next(gen)  # a first point slower than `slow`: the estimate comes once it is done, at its rate
    line = capsys.readouterr().out
    per_point = float(line.split("for 399 points (")[1].split(" ms per point")[0])
    assert 200 <= per_point < 500, line
    list(gen)
    assert capsys.readouterr().out == ""  # said once
    gen = timed_points(points(0.0), 400, lambda: "x", slow=0.2)
    next(gen), next(gen)
    assert capsys.readouterr().out == ""  # a fast first point: the estimate waits for more points
    list(gen)


def test_cost_estimates_and_the_long_run_warning(capsys) -> None:
    announce_cost("surface", "point", 9.0, 2600, lambda: "a coarser grid")
    out = capsys.readouterr().out
    assert "surface: about 6.5 h for 2,600 points (9 s per point, measured)" in out
    assert "warning: surface will take about 6.5 h; cheaper: a coarser grid" in out
    announce_cost("surface", "point", LONG / 2000, 1000, lambda: "x")
    assert "warning" not in capsys.readouterr().out  # half an hour: no warning

    def slow():  # the first point carries a warm-up of 0.3 s, the others take 0.05 s
        for k in range(6):
            time.sleep(0.3 if k == 0 else 0.05)
            yield k, {}

    assert [k for k, _ in timed_points(slow(), 1000, lambda: "x")] == list(range(6))
    line = capsys.readouterr().out
    seconds = float(line.split("about ")[1].split(" s for")[0])
    assert 996 * 0.04 < seconds < 996 * 0.08, line  # the warm-up does not count


def test_the_plan_names_the_checkpoints_model_and_its_batch_and_reads_the_file_once(tmp_path: Path, capsys,
                                                                                    monkeypatch) -> None:
    """checkpoint= holding ResNet-20 while model= is the default LeNet: the plan must describe
    ResNet-20 (its parameters, its evaluation batch: 128 on a CPU, where LeNet on 3x32x32 gets 256),
    say once that model= does not apply, and the file must be read once."""
    from landscape_exp.engine.batch import eval_batch_size
    from landscape_exp.io.checkpoint import save_checkpoint
    from landscape_exp.job import checkpoints as model_source
    from landscape_exp.models import build_model

    data = ["dataset=synthetic", "dataset.image_size=32", "dataset.num_train=16", "dataset.num_test=4"]
    ctx = _ctx(tmp_path, ["task=surface1d", *data])
    cfg = {"name": "resnet20", "num_classes": 10, "in_channels": 3, "image_size": 32}
    torch.manual_seed(0)
    net = build_model(cfg)
    ckpt = save_checkpoint(tmp_path / "r20.pt", {"state_dict": net.state_dict(), "model_cfg": cfg})
    shape = (3, 32, 32)
    lenet_batch = eval_batch_size(ctx.settings.eval, ctx.settings.model, shape, torch.device("cpu"))
    r20_batch = eval_batch_size(ctx.settings.eval, cfg, shape, torch.device("cpu"))
    assert (lenet_batch, r20_batch) == (256, 128)  # else this test could not tell the two apart

    loads: list[str] = []
    real = model_source.load_checkpoint
    monkeypatch.setattr(model_source, "load_checkpoint", lambda p, *a, **k: loads.append(str(p)) or real(p, *a, **k))
    run_job(compose_cfg(tmp_path, ["task=surface1d", f"checkpoint={ckpt}", *data, *TINY]), output_dir=tmp_path / "run", job={})
    out = capsys.readouterr().out
    params = sum(p.numel() for p in net.parameters())
    assert f"  model resnet20 ({params:,} parameters) on synthetic" in out, out
    assert f"evaluation batch {r20_batch}\n" in out and "model lenet" not in out
    assert out.count("holds a 'resnet20' model; analysing it (model=lenet does not apply)") == 1
    assert out.index("evaluation batch") < out.index("holds a 'resnet20' model")  # the plan first, then the note
    assert loads == [str(ckpt)]


def test_run_log_holds_the_messages_no_lock_is_left_and_the_adopted_model_is_recorded(tmp_path: Path, mlp_ckpts) -> None:
    out = tmp_path / "run"
    summary = run_job(compose_cfg(tmp_path, ["task=surface1d", f"checkpoint={mlp_ckpts[0]}", *TINY]), output_dir=out, job={})
    log = (out / "run.log").read_text()
    assert "plan: surface1d" in log and "surface1d: 5 points (0 already done, 5 to compute)" in log
    assert "note: checkpoint" in log and "holds a 'mlp' model; analysing it (model=lenet does not apply)" in log
    assert not list(out.glob("*.lock")), "the surface lock file outlived the run"
    # The checkpoint's model is what every record names: the file's config, the summary, compare.
    with h5py.File(out / "surface.h5", "r") as f:
        assert json.loads(f.attrs["config"])["model"]["name"] == "mlp" and f.attrs["model"] == "mlp"
    assert summary["model_config"]["name"] == "mlp"
    assert load_run(out).config["model.name"] == "mlp"


def test_files_given_by_mistake_and_unset_required_settings_are_one_line(tmp_path: Path) -> None:
    surface = tmp_path / "surface2d.h5"  # a surface file given where the checkpoint goes
    with h5py.File(surface, "w") as f:
        f.create_dataset("xcoordinates", data=np.linspace(-1, 1, 5))
        f.create_dataset("train_loss", data=np.ones(5))
    with pytest.raises(UserError, match="is an HDF5 file .* not a torch checkpoint") as e:
        run_job(compose_cfg(tmp_path, ["task=surface1d", f"checkpoint={surface}", *TINY]),
                output_dir=tmp_path / "a", job={})
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"dataset\.factory is required") as e:
        run_job(compose_cfg(tmp_path, ["dataset=custom", "dataset.num_classes=2", "dataset.channels=1",
                                       "dataset.image_size=8"]), output_dir=tmp_path / "b", job={})
    with pytest.raises(UserError, match=r"eval\.loss"):  # refused before any file is written
        run_job(compose_cfg(tmp_path, ["task=surface1d", "eval.loss=mae", *TINY]), output_dir=tmp_path / "c", job={})
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == []


def test_progress_bars_only_on_a_terminal() -> None:
    assert progress_wanted("auto") is False  # pytest's captured stderr is not a terminal
    assert progress_wanted(True) is True and progress_wanted(False) is False


def test_ctrl_c_is_one_line_with_what_was_saved_and_the_command_that_resumes(tmp_path: Path, lenet_ckpt) -> None:
    args = ["task=surface2d", f"checkpoint={lenet_ckpt}", "x=-1:1:31", "y=-1:1:31", "plot.enabled=false",
            "sharpness=none", "logger=none", "progress=false", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli(args, tmp_path, popen=True)
    journal = tmp_path / "run" / "surface.h5.journal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (journal.exists() and journal.stat().st_size > 1000):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("interrupted: ") and " points in " in last and "resume with: python run.py" in last, last
    done = int(last.split("interrupted: ")[1].split(" of ")[0])
    assert 0 < done < 31 * 31
    rerun = shlex.split(last.split("resume with: ")[1])[2:]  # drop "python run.py"
    assert f"hydra.run.dir={tmp_path / 'run'}" in rerun and "x=-1:1:31" in rerun
    r = run_cli(rerun, tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"({done} already done" in r.stdout
