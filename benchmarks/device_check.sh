#!/usr/bin/env bash
# The accelerator check: sampling (VPF vs latent SDE), the seed configuration's train step and
# the affine vs Markov guide step, in one table (see benchmarks/device_check.py).
#   bash benchmarks/device_check.sh                        # on the CUDA device, full sizes
#   bash benchmarks/device_check.sh --device cpu --quick   # anywhere, seconds
# PYTHON selects the interpreter (default: the project's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PYTHON" benchmarks/device_check.py "$@"
