#!/usr/bin/env bash
# Install CLIP Lab's requirements with the CPU build of torch: the README's set-up step.
#   bash scripts/install.sh                      # requirements.txt
#   bash scripts/install.sh requirements-dev.txt -q
# PyPI's torch==2.13.0 is the CUDA build (about 3 GB with its nvidia packages). When torch is not
# installed yet and PyTorch's CPU index answers, it is added as an extra index, so the pin resolves to
# 2.13.0+cpu. It is probed first (5 s at most) because pip retries an unreachable index for every
# package; where it cannot be reached (a machine with a local wheel, a mirror) pip uses what it has.
# CLIP_LAB_TORCH=cuda skips the CPU index (a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
shift || true
extra=()
if [ "${CLIP_LAB_TORCH:-cpu}" = cpu ] && ! python -c "import torch" >/dev/null 2>&1; then
  if python -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/torch/', timeout=5)" >/dev/null 2>&1; then
    extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
  else
    echo "note: PyTorch's CPU index is unreachable; pip installs torch from its configured indexes" >&2
  fi
fi
exec python -m pip install -r "$req" "${extra[@]}" "$@"
