"""Files are data, never code.

* Pickles whose ``__reduce__`` would create a marker file, handed to every option that takes a
  torch file (``checkpoint=``, ``direction.model2=``, ``curve_file=``), to training's resume file
  and a curve's training state, and planted in a dataset directory (CIFAR batches, MNIST's
  legacy processed files): refused with one clean line, the marker never created.
* A model config from a file or the command line cannot name an arbitrary callable.
* A static scan of ``src/`` and ``run.py`` (an AST walk, so comments and ``model.eval()`` do not
  count) fails if unpickling, ``eval``/``exec``, ``torch.load`` without ``weights_only=True``,
  Hydra's ``instantiate`` or custom config resolvers come back; the scanner is tested on
  snippets so it cannot pass vacuously. Config files may only name registered model builders
  and Hydra's own launcher plugins as ``_target_``.
"""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

from landscape_exp.app import run_job
from landscape_exp.errors import UserError
from landscape_exp.models import BUILDERS, build_model
from landscape_exp.models.loading import model_from_checkpoint
from landscape_exp.tasks import get_task

from conftest import ROOT, compose_cfg, lenet_cfg, mlp_cfg, run_cli

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # ANSI escapes and the like; tabs/newlines aside
UNSAFE_ADVICE = ("weights_only` set to `False`", "can still be loaded", "add_safe_globals")


class Evil:
    """Unpickling this calls ``open(marker, 'w')``: the marker file existing proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_torch_file(path: Path, marker: Path, *, legacy: bool = False) -> Path:
    """A torch file carrying ``Evil``: zip format (``torch.save``) or a plain legacy pickle."""
    payload = {"state_dict": {"w": torch.zeros(1)}, "model_cfg": Evil(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if legacy:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, path)
    return path


def assert_clean_refusal(msg: str, path: Path) -> None:
    """One line naming the file, no terminal escape codes, no advice to load it unsafely."""
    assert "\n" not in msg and str(path) in msg, msg
    assert not CONTROL.search(msg), f"control characters in the message: {msg!r}"
    for advice in UNSAFE_ADVICE:
        assert advice not in msg, f"the message passes on torch's advice to load it anyway: {msg!r}"


# -- as a user would: run.py with a malicious file for each option that takes a torch file --------

@pytest.fixture(scope="module")
def cli_refusals(tmp_path_factory, lenet_ckpt):
    root = tmp_path_factory.mktemp("security_cli")
    marker = root / "PWNED"
    legacy = evil_torch_file(root / "legacy.pt", marker, legacy=True)
    zipped = evil_torch_file(root / "zipped.pt", marker)
    cases = {
        "checkpoint": (legacy, ["task=surface2d", f"checkpoint={legacy}", "x=-1:1:3", "y=-1:1:3"]),
        "model2": (zipped, ["task=interp1d", f"checkpoint={lenet_ckpt}", f"direction.model2={zipped}", "x=0:1:3"]),
        "curve_file": (zipped, ["task=connect_eval", f"curve_file={zipped}"]),
    }
    results, running = {}, []
    for name, (path, args) in cases.items():
        cwd = root / name
        cwd.mkdir()
        running.append((name, path, run_cli([*args, "logger=none", "progress=false", "plot.enabled=false"], cwd,
                                            popen=True)))
        if len(running) == 2 or name == list(cases)[-1]:  # two at a time: two cores
            for n, p, proc in running:
                out, err = proc.communicate(timeout=600)
                results[n] = {"rc": proc.returncode, "stdout": out, "stderr": err, "path": p}
            running = []
    return results, marker


@pytest.mark.parametrize("case", ["checkpoint", "model2", "curve_file"])
def test_malicious_torch_file_is_refused_in_one_clean_line(cli_refusals, case):
    results, marker = cli_refusals
    r = results[case]
    assert not marker.exists(), "code from the file ran"
    assert r["rc"] == 2, r["stderr"][-3000:]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r["stderr"][-3000:]
    assert_clean_refusal(lines[0], r["path"])


def test_model_target_is_trusted_from_the_users_config_never_from_a_checkpoint(tmp_path):
    """A ``_target_`` the user types (``model._target_=...``) names their own code and is imported,
    as issue 17 asks; the same ``_target_`` arriving in a checkpoint's stored config, with the user
    naming another model, is refused before anything is imported or called."""
    marker = tmp_path / "PWNED"
    cfg = compose_cfg(tmp_path, ["task=train", "model._target_=builtins.open", f"+model.file={marker}", "+model.mode=w",
                                 "optim.epochs=1", "plot.enabled=false"])
    with pytest.raises(UserError) as e:  # the user's own (here: unsuitable) callable is called with the model keys
        run_job(cfg, output_dir=tmp_path / "run", job={})
    assert "\n" not in str(e.value) and "invalid keyword argument for open()" in str(e.value)
    ckpt = {"state_dict": build_model(lenet_cfg()).state_dict(),
            "model_cfg": {"_target_": "builtins.open", "file": str(marker), "mode": "w", "name": "evil"}}
    evil = tmp_path / "evil.pt"
    torch.save(ckpt, evil)
    cfg = compose_cfg(tmp_path, ["task=surface1d", f"checkpoint={evil}", "x=-1:1:3", "plot.enabled=false"])
    with pytest.raises(UserError, match=r"builder 'builtins.open', which is not one of") as e:
        run_job(cfg, output_dir=tmp_path / "run2", job={})
    assert not marker.exists()
    assert "\n" not in str(e.value) and BUILDERS[0] in str(e.value)


# -- in-process: the other places a torch file or pickle could be read ---------------------------

def test_model_config_inside_a_checkpoint_cannot_name_a_callable(tmp_path):
    marker = tmp_path / "PWNED"
    cfg = {"_target_": "builtins.open", "file": str(marker), "mode": "w", "name": "evil"}
    torch.manual_seed(0)
    ckpt = {"state_dict": build_model(lenet_cfg()).state_dict(), "model_cfg": cfg}
    with pytest.raises(UserError, match=r"builder 'builtins.open', which is not one of") as e:
        model_from_checkpoint(ckpt, "checkpoint 'x.pt'")
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.raises(UserError, match="unknown task"):
        get_task("os:system")


def test_malicious_training_resume_file_is_refused(tmp_path):
    out = tmp_path / "run"
    marker = tmp_path / "PWNED"
    evil_torch_file(out / "checkpoints" / "last.pt", marker)
    cfg = compose_cfg(tmp_path, ["task=train", "model=mlp", "model.hidden=[4]", "optim.epochs=1", "plot.enabled=false"])
    with pytest.raises(UserError) as e:
        run_job(cfg, output_dir=out, job={})
    assert not marker.exists()
    assert_clean_refusal(str(e.value), out / "checkpoints" / "last.pt")


def test_malicious_curve_training_state_is_refused(tmp_path, digits):
    """``task=connect`` resumes a curve's training from ``<run dir>/curve_training.pt``."""
    from landscape_exp.connect.curves import CurveModel, train_curve
    from landscape_exp.data.device import DeviceData

    marker = tmp_path / "PWNED"
    state = evil_torch_file(tmp_path / "curve_training.pt", marker)
    torch.manual_seed(0)
    a, b = build_model(mlp_cfg((4,))), build_model(mlp_cfg((4,)))
    curve = CurveModel(a, list(a.parameters()), list(b.parameters()), "bezier")
    data = DeviceData(digits.train, digits.mean, digits.std, "cpu")
    with pytest.raises(UserError) as e:
        train_curve(curve, data, epochs=1, lr=0.01, state_path=state)
    assert not marker.exists()
    assert_clean_refusal(str(e.value), state)


def test_tampered_cifar_batches_are_never_unpickled(tmp_path):
    """torchvision unpickles CIFAR batches, but only after their md5 sums match the official
    files' (hard-coded in torchvision); a planted pickle fails that check first."""
    from landscape_exp.data.datasets import load_dataset

    marker = tmp_path / "PWNED"
    batches = tmp_path / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (batches / name).write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(UserError, match=r"dataset 'cifar10' is not present under") as e:
        load_dataset({"name": "cifar10", "root": str(tmp_path / "data"), "download": False})
    assert "\n" not in str(e.value) and not marker.exists()


def test_tampered_mnist_legacy_files_are_loaded_weights_only(tmp_path):
    """torchvision reads MNIST's legacy ``processed/*.pt`` with ``torch.load(weights_only=True)``."""
    from landscape_exp.data.datasets import load_dataset

    marker = tmp_path / "PWNED"
    processed = tmp_path / "data" / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        evil_torch_file(processed / name, marker)
    with pytest.raises(UserError, match=r"dataset 'mnist' is not present under") as e:
        load_dataset({"name": "mnist", "root": str(tmp_path / "data"), "download": False})
    assert not marker.exists()
    msg = str(e.value)
    assert not CONTROL.search(msg), f"control characters in the message: {msg!r}"
    assert not any(advice in msg for advice in UNSAFE_ADVICE), f"passes on torch's advice to load it anyway: {msg!r}"


# -- static scan --------------------------------------------------------------------------------

# Calls that unpickle, evaluate strings as code, or build objects named by config.
FORBIDDEN = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load",
    "dill.load", "dill.loads", "joblib.load", "shelve.open", "marshal.load", "marshal.loads",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec", "compile", "__import__",
    "hydra.utils.instantiate", "hydra.utils.call", "hydra.utils.get_class", "hydra.utils.get_method",
    "hydra.utils.get_object", "omegaconf.OmegaConf.register_new_resolver", "omegaconf.OmegaConf.register_resolver",
    "os.system", "os.popen", "torch.package.PackageImporter",
}
# Dynamic imports are allowed only behind a fixed allow-list (BUILDERS, TASKS) in these files.
IMPORT_MODULE_ALLOWED = {"src/landscape_exp/io/user_code.py", "src/landscape_exp/tasks/__init__.py"}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def scan_source(source: str, filename: str = "<snippet>") -> list[str]:
    """Unsafe loading or code evaluation in ``source``: one ``file:line: what`` per finding."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):  # import aliases: np -> numpy, load -> pickle.load, ...
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        where = f"{filename}:{node.lineno}"
        if name.startswith("OmegaConf."):
            name = "omegaconf." + name
        if name in FORBIDDEN or name.rsplit(".", 1)[-1] == "instantiate":
            found.append(f"{where}: {name}(...)")
        elif name == "torch.load":
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        elif name == "numpy.load":
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where}: numpy.load with allow_pickle")
        elif name.startswith("subprocess.") and isinstance(_kw(node, "shell"), ast.Constant) and _kw(node, "shell").value:
            found.append(f"{where}: {name}(shell=True)")
        elif name == "importlib.import_module" and filename not in IMPORT_MODULE_ALLOWED:
            found.append(f"{where}: importlib.import_module outside the allow-listed registries")
    return found


def test_scanner_flags_every_pattern_and_passes_safe_code():
    bad = """
import pickle, yaml, torch, importlib, subprocess
import numpy as np
from pickle import loads as pl
from hydra.utils import instantiate
from omegaconf import OmegaConf
pickle.load(f); pl(b); yaml.load(s); eval("1"); exec("x=1"); compile("1", "f", "eval"); __import__("os")
instantiate(cfg); OmegaConf.register_new_resolver("e", eval)
torch.load(p); torch.load(p, weights_only=False); np.load(p, allow_pickle=True)
importlib.import_module(name); subprocess.run(cmd, shell=True)
"""
    assert [f.split(": ", 1)[1] for f in scan_source(bad)] == [
        "pickle.load(...)", "pickle.loads(...)", "yaml.load(...)", "eval(...)", "exec(...)", "compile(...)",
        "__import__(...)", "hydra.utils.instantiate(...)", "omegaconf.OmegaConf.register_new_resolver(...)",
        "torch.load without weights_only=True", "torch.load without weights_only=True", "numpy.load with allow_pickle",
        "importlib.import_module outside the allow-listed registries", "subprocess.run(shell=True)",
    ]
    safe = """
import torch, numpy as np
from omegaconf import OmegaConf

# One pytest-xdist worker runs this whole module, so that its module fixture, which runs run.py on the malicious
# files, runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("security")
model.eval(); torch.compile(model); torch.load(p, map_location="cpu", weights_only=True)
np.load(p); np.load(p, allow_pickle=False); OmegaConf.load(p); OmegaConf.to_container(c, resolve=True)
"""
    assert scan_source(safe) == []


def test_source_has_no_unsafe_loading_or_code_evaluation():
    files = sorted((ROOT / "src").rglob("*.py")) + [ROOT / "run.py"]
    assert len(files) > 20
    found = []
    for f in files:
        found += scan_source(f.read_text(), str(f.relative_to(ROOT)))
    assert found == [], "\n".join(found)


def test_config_files_name_only_registered_builders():
    """``_target_`` in ``conf/`` and ``sweeps/``: model builders on the allow-list, or Hydra's
    launcher plugins (Hydra itself instantiates those); no custom resolvers."""
    targets = []
    for f in sorted((ROOT / "conf").rglob("*.yaml")) + sorted((ROOT / "sweeps").rglob("*.yaml")):
        text = f.read_text()
        for resolver in re.findall(r"\$\{([A-Za-z_][\w.]*):", text):
            assert resolver in ("oc.env", "now", "hydra"), f"{f}: resolver {resolver!r}"

        def walk(node: object, f=f) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "_target_":
                        targets.append((f.relative_to(ROOT).as_posix(), str(v)))
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(yaml.safe_load(text))
    assert targets
    for where, target in targets:
        if where.startswith("conf/model/"):
            assert target in BUILDERS, (where, target)
        else:
            assert where.startswith("conf/hydra/launcher/") and target.startswith("hydra_plugins."), (where, target)
