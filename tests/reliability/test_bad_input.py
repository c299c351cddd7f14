"""Bad input and unusable outputs through ``python run.py ...``: each exits non-zero with one line
naming the value and what is allowed (Hydra's own message for config keys), before any training,
and leaves existing files as they were.

Cases already run by ``tests/test_cli.py`` (unknown ``model=``/``task=`` option, missing
``checkpoint=``, a bare state_dict of another model, ``x=1:-1:5``, ``dataset.download=false``
without the data, a malicious checkpoint) or in-process by ``tests/test_surfaces.py`` are not
repeated here; docs/reliability.md lists them all. Each run costs seconds of start-up on two
cores, so one case per code path.
"""

from __future__ import annotations

import re
import time
import types
from collections import namedtuple

import pytest
import torch

from landscape_exp.app import run_job
from landscape_exp.errors import UserError
from landscape_exp.io.checkpoint import save_checkpoint
from landscape_exp.models import build_model
from landscape_exp.surface.grid import parse_grid
from landscape_exp.surface.store import SurfaceFile
from landscape_exp.weights import directions as D
from landscape_exp.weights.params import snapshot

from conftest import compose_cfg, lenet_cfg, mlp_cfg, run_cli

# One pytest-xdist worker runs this whole module, so that its module fixture, which runs every bad-input case
# through run.py, runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("bad_input")

QUIET = ["logger=none", "progress=false", "plot.enabled=false"]
GRID3 = ["x=-1:1:3", "y=-1:1:3"]
# Nothing listens on port 9 of this host: every download fails at once, with or without network.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@pytest.fixture(scope="module")
def bad(tmp_path_factory, lenet_ckpt):
    """Run every case, two at a time (two cores; most of each run is start-up)."""
    root = tmp_path_factory.mktemp("bad_input")
    files = root / "files"
    files.mkdir()
    torch.manual_seed(0)
    mlp = build_model(mlp_cfg())
    wrong_weights = save_checkpoint(files / "lenet_cfg_mlp_weights.pt",
                                    {"state_dict": mlp.state_dict(), "model_cfg": lenet_cfg()})
    mlp_dirs = files / "mlp_directions.h5"
    d = D.create_random_direction(snapshot(mlp, "weights"), seed=1)
    D.save_directions(mlp_dirs, {"xdirection": d, "ydirection": d}, names=[n for n, _ in mlp.named_parameters()])
    other_surface = files / "other_config.h5"
    with SurfaceFile(other_surface, parse_grid("-1:1:3", "-1:1:3"), ["train_loss", "train_acc"],
                     fingerprint={"task": "surface2d", "model": {"name": "another"}}) as s:
        for k in s.pending():
            s.record(k, {"train_loss": 1.0 + k, "train_acc": 50.0})
    a_file = files / "a_file"
    a_file.write_text("not a directory")
    ck = f"checkpoint={lenet_ckpt}"
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "unknown_key": (["nosuchkey=1"], {}),
        "unknown_nested_key": (["eval.nosuch=1"], {}),
        "grid_zero_points": ([ck, "x=-1:1:0"], {}),
        "grid_negative_points": ([ck, "y=-1:1:-3"], {}),
        "grid_too_large": (["x=-1:1:100000", "y=-1:1:100000"], {}),
        "checkpoint_other_weights": ([f"checkpoint={wrong_weights}", *GRID3], {}),
        "direction_file_other_model": ([ck, f"direction.file={mlp_dirs}", *GRID3], {}),
        "surface_file_other_config": ([ck, f"surf_file={other_surface}", *GRID3], {}),
        "dataset_absent_no_network": (["dataset=mnist", *GRID3], NO_NETWORK),
        "curve_file_missing": (["task=connect_eval", "curve_file=/nonexistent/curve.pt"], {}),
        "surf_file_under_proc": ([ck, "surf_file=/proc/forbidden/x.h5", *GRID3], {}),
        "cache_dir_under_a_file": ([f"paths.cache_dir={a_file}/cache", *GRID3], {}),
        "run_dir_under_a_file": ([f"hydra.run.dir={a_file}/run", ck, *GRID3], {}),
    }
    before = {p: p.read_bytes() for p in files.iterdir()}
    results: dict[str, dict] = {}
    pending = list(cases.items())
    running: list = []
    while pending or running:
        while pending and len(running) < 2:
            name, (args, env) = pending.pop(0)
            cwd = root / name
            cwd.mkdir()
            running.append((name, cwd, time.monotonic(), run_cli([*args, *QUIET], cwd, popen=True, extra_env=env)))
        name, cwd, t0, proc = running.pop(0)
        out, err = proc.communicate(timeout=600)
        results[name] = {"rc": proc.returncode, "stdout": out, "stderr": err, "cwd": cwd,
                         "seconds": time.monotonic() - t0}
    results["_files"] = {"dir": files, "before": before, "a_file": a_file, "other_surface": other_surface,
                         "mlp_dirs": mlp_dirs, "wrong_weights": wrong_weights}
    return results


def user_error(r: dict, *needles: str) -> str:
    """The run failed with run.py's one-line ``error:`` (exit 2) containing every needle, and
    trained nothing."""
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    assert r["rc"] == 2, (r["rc"], r["stderr"][-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r["stderr"][-3000:]
    assert not CONTROL.search(lines[0]), repr(lines[0])
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not (r["cwd"] / ".cache").exists(), "a checkpoint was trained before the input was refused"
    return lines[0]


def test_unknown_config_keys_are_named(bad):
    for case, key in (("unknown_key", "nosuchkey"), ("unknown_nested_key", "eval.nosuch")):
        r = bad[case]
        assert r["rc"] != 0
        assert f"Could not override '{key}'" in r["stderr"] and "is not in struct" in r["stderr"], r["stderr"][-2000:]
        assert "Traceback" not in r["stderr"]


@pytest.mark.parametrize("case, needles", [
    ("grid_zero_points", ["x='-1:1:0'", "num=0", "num >= 2"]),
    ("grid_negative_points", ["y='-1:1:-3'", "num=-3", "num >= 2"]),
])
def test_malformed_grids(bad, case, needles):
    user_error(bad[case], *needles)


def test_grid_too_large_is_refused_by_the_estimate_before_training(bad):
    r = bad["grid_too_large"]
    user_error(r, "10,000,000,000 points", "GiB of memory", "x=min:max:num")
    assert not list(r["cwd"].rglob("*.h5")), "something was written"


def test_checkpoint_with_weights_of_another_model(bad):
    user_error(bad["checkpoint_other_weights"], str(bad["_files"]["wrong_weights"]), "does not fit the model",
               "missing keys", "unexpected keys")


def test_direction_file_for_another_model(bad):
    user_error(bad["direction_file_other_model"], str(bad["_files"]["mlp_dirs"]), "has 4 tensors", "model has 10")


def test_surface_file_from_another_config_is_left_as_it_was(bad):
    f = bad["_files"]
    user_error(bad["surface_file_other_config"], str(f["other_surface"]), "different config", "checkpoint_sha256")
    assert f["other_surface"].read_bytes() == f["before"][f["other_surface"]]


def test_dataset_root_without_data_and_no_network(bad):
    r = bad["dataset_absent_no_network"]
    user_error(r, "dataset 'mnist' is not present under", str(r["cwd"] / "data"), "download failed")


def test_non_existent_curve_file(bad):
    user_error(bad["curve_file_missing"], "'/nonexistent/curve.pt'", "does not exist")


def test_unwritable_surface_location_is_refused_before_work(bad):
    """/proc refuses new directories even to root (chmod would not stop root)."""
    user_error(bad["surf_file_under_proc"], "'/proc/forbidden'", "not writable")


def test_unwritable_checkpoint_cache_is_refused_in_one_line(bad):
    """No checkpoint given, so one would be trained into ``paths.cache_dir``, which cannot exist."""
    user_error(bad["cache_dir_under_a_file"], str(bad["_files"]["a_file"]))


def test_unwritable_run_directory_is_refused_by_hydra(bad):
    """Hydra creates the run directory before the job starts: its message names the path."""
    r = bad["run_dir_under_a_file"]
    assert r["rc"] != 0
    assert f"{bad['_files']['a_file']}/run" in r["stderr"] and "Not a directory" in r["stderr"], r["stderr"][-2000:]
    assert not (r["cwd"] / ".cache").exists()


def test_inputs_passed_in_are_never_modified(bad):
    """Lock files aside (a refused run still takes the surface's lock, writing its pid there)."""
    f = bad["_files"]
    now = {p: p.read_bytes() for p in f["dir"].iterdir() if p.suffix != ".lock"}
    assert now == {p: b for p, b in f["before"].items() if p.suffix != ".lock"}


def test_disk_too_small_is_refused_before_training(tmp_path, monkeypatch):
    """No small filesystem to fill here: the free space the estimate sees is made 10 MiB."""
    import landscape_exp.job.preflight as resources

    usage = namedtuple("usage", "total used free")
    fake = types.SimpleNamespace(disk_usage=lambda p: usage(1 << 30, (1 << 30) - (10 << 20), 10 << 20))
    monkeypatch.setattr(resources, "shutil", fake)  # this module's view only
    with pytest.raises(UserError) as e:
        run_job(compose_cfg(tmp_path, ["x=-1:1:51", "y=-1:1:51"]), output_dir=tmp_path / "run", job={})
    msg = str(e.value)
    assert "\n" not in msg and "not enough disk space" in msg and str(tmp_path / "run") in msg and "10 MiB" in msg, msg
    assert not (tmp_path / ".cache").exists(), "training started before the disk check"
