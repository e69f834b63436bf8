#!/usr/bin/env bash
# Install what the tests need, then run them: the README's test command, and what CI runs.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k loss    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt
# The browser test drives Debian's Chromium through Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: /usr/bin/chromium is missing; install Debian's chromium package (sudo apt-get install chromium)" >&2
  fi
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec python -m pytest -q "$@"
