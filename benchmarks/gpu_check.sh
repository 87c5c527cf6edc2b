#!/usr/bin/env bash
# One-GPU check of every paper preset: training steps/s and peak memory, sampling samples/s (fp32 and bf16),
# a 1-GPU torchrun train (nccl) and a CPU-vs-GPU correctness check; writes results/gpu_check/gpu_check.{json,md}.
#
#   benchmarks/gpu_check.sh                        # on one GPU (under 8 minutes on an H100)
#   benchmarks/gpu_check.sh --device cpu --dry     # every step tiny, on a CPU (the CI test)
#   benchmarks/gpu_check.sh --presets three-body darcy --steps 50 --out /tmp/check
#
# PYTHON selects the interpreter (default: python3, or .venv/bin/python when it exists). Exit status 1 when a
# preset, the torchrun step or the correctness check fails. Options: benchmarks/gpu_check.py --help.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" TQDM_DISABLE=1
exec "$PYTHON" "$here/gpu_check.py" "$@"
