#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py): on a CUDA machine, at most 8 minutes of wall time, no network.
#   bash benchmarks/gpu_suite.sh                        # cuda, full sizes
#   bash benchmarks/gpu_suite.sh --device cpu --quick   # the CPU smoke run (tests/test_gpu_suite.py)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 480 python benchmarks/gpu_suite.py "$@"
