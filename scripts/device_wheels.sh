#!/usr/bin/env bash
# Fetch, on this machine, the wheels that benchmarks/gpu_checks.sh installs on a lent GPU machine,
# whose image has torch, torchvision, h5py, scipy, matplotlib and scikit-learn but not these:
# omegaconf (the benchmarks read conf/ with it) and its antlr4 runtime, and PyHessian (the Hessian
# benchmark's comparison). Pure-Python wheels, 0.2 MiB in all, into .whl/ (git-ignored by
# .git/info/exclude, carried with `carry: [".whl"]`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl omegaconf==2.3.1 PyHessian==0.1
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only:
# build its wheel here (pure Python, so it installs on the device's Python 3.12 too).
"$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
