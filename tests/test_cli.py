"""``python run.py ...`` end to end in a tmp dir: the default job, --help, and bad inputs, each of
which must exit non-zero with one line on stderr and leave nothing behind that runs code."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch

from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import load_checkpoint

from conftest import CONF_DIR, RUN_PY, run_cli

QUIET = ["logger=none", "progress=false"]


class Evil:
    """Unpickling this would call ``open(marker, 'w')``: creating the marker file proves code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.slow
def test_default_job_writes_everything(tmp_path):
    r = run_cli(["x=-1:1:5", "y=-1:1:5", "optim.epochs=2", *QUIET], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "runs").glob("*/*_surface2d"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))[:50]
    run = runs[0]
    for name in ("surface.h5", "directions.h5", "summary.json", ".hydra/config.yaml"):
        assert (run / name).is_file(), name
    pngs = sorted(run.glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 1000 for p in pngs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["points"] == 25 and summary["points_done"] == 25
    # the last line says where the results are, on the console and in run.log
    closing = "surface2d: done in "
    assert (r.stdout.strip().splitlines()[-1].startswith(closing)
            and r.stdout.strip().endswith(f"{len(pngs)} figures, summary.json in {run}"))
    assert (run / "run.log").read_text().strip().splitlines()[-1] == r.stdout.strip().splitlines()[-1]
    with h5py.File(run / "surface.h5", "r") as f:
        assert f["train_loss"].shape == (5, 5) and np.isfinite(f["train_loss"][()]).all()
        np.testing.assert_array_equal(f["xcoordinates"][()], np.linspace(-1, 1, 5))
    # The checkpoint was trained into the cache under LANDSCAPE_ROOT, with every epoch.
    finals = list((tmp_path / ".cache" / "train").glob("*/checkpoints/final.pt"))
    assert len(finals) == 1
    assert sorted(p.name for p in finals[0].parent.glob("epoch_*.pt")) == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt"]
    assert load_checkpoint(finals[0])["model_cfg"]["name"] == "lenet"
    assert summary["train_loss/centre"] == pytest.approx(load_checkpoint(finals[0])["metrics"]["train_loss"], rel=1e-5)


def test_help_lists_groups_and_options(tmp_path):
    r = run_cli(["--help"], tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    groups_text = r.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in groups_text.splitlines() if ":" in line}
    for group in ("task", "model", "dataset", "optim", "direction", "normalization", "precision", "logger"):
        assert group in lines, f"group {group!r} missing from --help"
        listed = {o.strip() for o in lines[group].split(",")}
        on_disk = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
        assert on_disk <= listed, (group, on_disk - listed)
    assert {"surface2d", "interp1d", "plane", "train"} <= {o.strip() for o in lines["task"].split(",")}
    assert "x=min:max:num" in r.stdout


# Runs ``run.py`` exactly as ``python run.py <args>`` would (runpy with run_name="__main__"), once
# per case, inside one interpreter: the bad-input cases then share torch's start-up time, which
# dominates them on a 2-core machine. Output, exit status and working directory are per case.
DRIVER = """
import contextlib, io, json, os, runpy, sys
from hydra.core.global_hydra import GlobalHydra
run_py, cases = sys.argv[1], json.loads(sys.argv[2])
results = {}
for name, (cwd, args) in cases.items():
    os.chdir(cwd)
    os.environ["LANDSCAPE_ROOT"] = cwd
    GlobalHydra.instance().clear()
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [run_py, *args]
    rc = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(run_py, run_name="__main__")
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:
            rc = -1
            err.write(f"uncaught {type(e).__name__}: {e}")
    results[name] = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}
sys.__stdout__.write("RESULTS:" + json.dumps(results) + "\\n")
"""


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, mlp_ckpts):
    """Every bad-input command: two in their own ``python run.py`` process (exit status and
    stderr as the shell sees them), the rest through the driver above, concurrently."""
    root = tmp_path_factory.mktemp("cli_bad")
    sd = load_checkpoint(mlp_ckpts[0])["state_dict"]
    bare = root / "bare_mlp_state_dict.pt"
    torch.save(sd, bare)
    marker = root / "PWNED"
    evil = root / "evil.pt"
    torch.save({"state_dict": Evil(str(marker))}, evil)
    assert not marker.exists()
    base = ["x=-1:1:3", "y=-1:1:3", *QUIET]
    own_process = {
        "unknown_model": ["model=nope", *base],
        "missing_checkpoint": ["checkpoint=/nonexistent.pt", *base],
    }
    driven = {
        "unknown_task_group": ["task=nope", *base],
        "checkpoint_other_model": [f"checkpoint={bare}", "model=lenet", *base],
        "malformed_grid": ["x=1:-1:5", "y=-1:1:3", *QUIET],
        "absent_dataset": ["dataset=mnist", "dataset.download=false", *base],
        "malicious_checkpoint": [f"checkpoint={evil}", *base],
    }
    for name in [*own_process, *driven]:
        (root / name).mkdir()
    driver = run_cli(["-c", DRIVER, str(RUN_PY), json.dumps({n: [str(root / n), a] for n, a in driven.items()})],
                     root, popen=True, python_args=True)
    results = {}
    for name, args in own_process.items():
        r = run_cli(args, root / name)
        results[name] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    line = [ln for ln in out.splitlines() if ln.startswith("RESULTS:")]
    assert line, (out[-2000:], err[-2000:])
    results.update(json.loads(line[0][len("RESULTS:"):]))
    for name in results:
        results[name]["cwd"] = root / name
    results["_marker"] = marker
    results["_evil"] = evil
    return results


def _assert_user_error(res: dict, *needles: str) -> str:
    lines = _error_lines(res["stderr"])
    assert res["rc"] == 2, (res["rc"], res["stderr"][-2000:])
    assert len(lines) == 1, res["stderr"][-2000:]
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_unknown_model_names_the_option(bad_runs):
    r = bad_runs["unknown_model"]
    assert r["rc"] != 0 and "model/nope" in r["stderr"]
    assert "lenet" in r["stderr"]  # Hydra lists the available options


def test_unknown_task(bad_runs):
    r = bad_runs["unknown_task_group"]
    assert r["rc"] != 0 and "task/nope" in r["stderr"]
    assert "surface2d" in r["stderr"]  # Hydra lists the available options


def test_missing_checkpoint(bad_runs):
    _assert_user_error(bad_runs["missing_checkpoint"], "/nonexistent.pt", "does not exist")


def test_checkpoint_for_another_model(bad_runs):
    _assert_user_error(bad_runs["checkpoint_other_model"], "does not fit the model", "missing keys", "unexpected keys")


def test_malformed_grid(bad_runs):
    _assert_user_error(bad_runs["malformed_grid"], "x='1:-1:5'")
    # refused before anything was trained or written
    assert not (bad_runs["malformed_grid"]["cwd"] / ".cache").exists()


def test_absent_dataset_without_download(bad_runs):
    r = bad_runs["absent_dataset"]
    _assert_user_error(r, "'mnist'", str(r["cwd"] / "data"), "dataset.download=false")


def test_malicious_checkpoint_is_refused_and_runs_nothing(bad_runs):
    _assert_user_error(bad_runs["malicious_checkpoint"], "refused", str(bad_runs["_evil"]))
    assert not bad_runs["_marker"].exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_legacy_pickle_checkpoint_is_refused(tmp_path):
    """A plain pickle (not torch's zip format) carrying code is refused the same way."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "legacy.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil(str(marker))}, f)
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
