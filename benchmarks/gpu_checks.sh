#!/usr/bin/env bash
# The GPU measurements of issue 16, in one run on a lent GPU machine (docs/engine.md, "GPU").
#
# Here, once:   bash scripts/device_wheels.sh        (omegaconf, antlr4, PyHessian into .whl/)
# There:        the device tool's run with carry [".whl"], command `bash benchmarks/gpu_checks.sh`,
#               timeout_s 600. Results go to $OUT (./gpu_results without it): the device's
#               description, each benchmark's log and JSON. At most 9.5 minutes (each step has a limit); about 5 expected.
#
# 1. nvidia-smi and torch's view of the device.
# 2. benchmarks/bench_surface.py, ResNet-56 over 50,000 CIFAR-shaped images: the original's loop
#    against the engine's fp32, tf32, bf16 and bf16 + compile, with the 51x51 extrapolation.
# 3. benchmarks/bench_hessian.py, ResNet-56 over 10,000 images: one HVP, lambda_max and the top-k,
#    ours against PyHessian.
# Each step has its own time limit, so one that hangs still leaves the others' results.
# A smoke test without a GPU: DEVICE=cpu MODEL=resnet20 SURFACE_SAMPLES=256 HESSIAN_SAMPLES=64
# VARIANTS=fp32,bf16 PY=.venv/bin/python bash benchmarks/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
PY=${PY:-python3} DEVICE=${DEVICE:-cuda} MODEL=${MODEL:-resnet56}
VARIANTS=${VARIANTS:-previous,fp32,tf32,bf16,bf16_compile}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || { echo "could not install .whl/*.whl"; exit 1; }
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
start=$SECONDS
step() {  # step NAME LIMIT_S COMMAND...: run it, log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s, at $((SECONDS - start)) s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}"
}
step device 60 bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, \
  torch.cuda.is_available() and torch.cuda.get_device_name(0), torch.backends.cudnn.version())'"
step surface_$DEVICE 330 "$PY" benchmarks/bench_surface.py --model "$MODEL" --num-samples "${SURFACE_SAMPLES:-50000}" \
  --points 6 --rounds 1 --device "$DEVICE" --variants "$VARIANTS" --batch-sweep '' --bookkeeping-grid 0 \
  --json "$OUT/surface_${DEVICE}_$MODEL.json"
step hessian_$DEVICE 180 "$PY" benchmarks/bench_hessian.py --model "$MODEL" --num-samples "${HESSIAN_SAMPLES:-10000}" \
  --device "$DEVICE" --json "$OUT/hessian_${DEVICE}_$MODEL.json"
echo "all steps done in $((SECONDS - start)) s; results in $OUT"
