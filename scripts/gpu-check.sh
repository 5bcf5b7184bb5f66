#!/usr/bin/env bash
# The checks that need a GPU: tests/gpu and `agebench bench --device cuda`, on a machine whose
# python3 has CUDA PyTorch (for example the device tool's H200, which receives the repository
# alone: no ../shared, no .venv, no package index).
#
# Prepare on a machine with the index (once, in the checkout; both folders are git-ignored):
#   mkdir -p .gpu/faces && cp ../shared/faces/utkface-48/*.jpg .gpu/faces/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .gpu/wheels onnx2torch==1.5.15 facenet-pytorch==2.6.0 \
#       pypi-simple tomli-w
# then carry `.gpu` and run `bash scripts/gpu-check.sh` there. It writes what it measured
# to $OUT (when set) or reports/gpu-check/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-reports/gpu-check}"
mkdir -p "$OUT_DIR"
if [ -d .gpu/wheels ]; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/agebench-site .gpu/wheels/*.whl
  export PYTHONPATH="/tmp/agebench-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
FACES="${AGEBENCH_TEST_FACES:-$PWD/.gpu/faces}"
[ -d "$FACES" ] || FACES="$PWD/../shared/faces/utkface-48"
export AGEBENCH_TEST_FACES="$FACES" AGEBENCH_GATE_FACES="$FACES" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
"$PY" -m pytest tests/gpu -v -p no:cacheprovider 2>&1 | tee "$OUT_DIR/tests-gpu.log"
"$PY" -m agebench bench "$FACES" --device cuda --images "${GPU_BENCH_IMAGES:-20000}" \
    --detect-images 480 --rounds 2 --out "$OUT_DIR/bench" 2>&1 | tee "$OUT_DIR/bench.log"
cp "$OUT_DIR/bench/bench.json" "$OUT_DIR/bench-default.json"
