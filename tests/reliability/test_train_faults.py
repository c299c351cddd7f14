"""A training run killed mid-epoch (SIGKILL, as a user would: ``python run.py task=train ...``)
and rerun in the same directory resumes from its last checkpoint and ends bit-identical to a run
that was never interrupted."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import torch

from landscape_exp.app import run_job
from landscape_exp.io.checkpoint import load_checkpoint

from conftest import compose_cfg, run_cli

EPOCHS = 6
# device=cpu: epochs must last long enough to be killed inside one, and the reference must run on
# the same device to compare bit for bit.
TRAIN = ["task=train", f"optim.epochs={EPOCHS}", "device=cpu"]


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def identity(p: Path) -> tuple[int, int]:
    """(inode, mtime): checkpoints are replaced atomically, so a rewrite changes the inode."""
    st = p.stat()
    return st.st_ino, st.st_mtime_ns


def test_training_killed_mid_epoch_resumes_bit_exact(tmp_path):
    rng = random.Random(9)
    run = tmp_path / "run"
    ck = run / "checkpoints"
    args = TRAIN + ["logger=none", "progress=false", f"hydra.run.dir={run}"]
    proc = run_cli(args, tmp_path, popen=True)
    try:
        deadline = time.monotonic() + 300
        while not (ck / "epoch_002.pt").exists():
            assert proc.poll() is None, "training ended before epoch 2: " + proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "timed out waiting for epoch 2"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.2))  # somewhere inside epoch 3 (an epoch takes ~0.3 s here)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (ck / "final.pt").exists()
    killed_at = int(load_checkpoint(ck / "last.pt")["epoch"])
    assert 2 <= killed_at < EPOCHS
    on_disk = sorted(p.name for p in ck.glob("epoch_*.pt"))
    finished = [f"epoch_{e:03d}.pt" for e in range(killed_at + 1)]
    # The epoch file is written before last.pt (so a resume never skips one): a kill between the two
    # leaves the next epoch's file too, which the resumed run computes and writes again.
    assert on_disk in (finished, finished + [f"epoch_{killed_at + 1:03d}.pt"])
    kept = {name: identity(ck / name) for name in finished}

    resumed = run_cli(args, tmp_path, popen=True)
    # The uninterrupted run, in this process (one thread, like the subprocess) meanwhile.
    ref = tmp_path / "reference"
    run_job(compose_cfg(tmp_path, TRAIN), output_dir=ref, job={})
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]

    # Resumed, not restarted: the epochs finished before the kill were not written again.
    assert {name: identity(ck / name) for name in kept} == kept
    assert sorted(p.name for p in ck.glob("epoch_*.pt")) == [f"epoch_{e:03d}.pt" for e in range(EPOCHS + 1)]
    # Bit-exact: weights of every epoch and the final ones, and the recorded history.
    for e in range(EPOCHS + 1):
        name = f"epoch_{e:03d}.pt"
        assert same_weights(ck / name, ref / "checkpoints" / name), name
    assert same_weights(ck / "final.pt", ref / "checkpoints" / "final.pt")

    def history(d: Path) -> list[dict]:
        h = json.loads((d / "history.json").read_text())["history"]
        return [{k: v for k, v in m.items() if k != "epoch_time"} for m in h]

    assert history(run) == history(ref)
