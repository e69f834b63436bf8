#!/usr/bin/env bash
# Install what the tests need, then lint and run every test tier: the README's test command, and what CI runs.
#   bash scripts/test.sh            # everything: the fast tier, then app, browser and slow tests
#   bash scripts/test.sh -k loss    # extra arguments go to pytest (-m app: one tier)
# While coding, plain `pytest` runs the fast tier only (pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh requirements-dev.txt -q
# The Space's Python may be 3.10: the tree must byte-compile there and use nothing newer (vermin).
py310=""
for candidate in python3.10 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.*/bin/python; do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then py310="$candidate"; break; fi
done
if [ -n "$py310" ]; then
  "$py310" -m compileall -q -x '/(\.git|runs|\.venv)/' app.py core demo scripts >/dev/null
else
  echo "note: no python3.10 here; skipping the 3.10 byte-compile (vermin still checks the syntax level)" >&2
fi
vermin -q -t=3.10- --no-tips --violations --eval-annotations app.py core demo scripts
ruff check --quiet .
# The browser test drives Debian's Chromium through Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: /usr/bin/chromium is missing; install Debian's chromium package (sudo apt-get install chromium)" >&2
  fi
fi
# Two pytest-xdist workers (one per core, up to 2; CLIP_LAB_TEST_WORKERS overrides), each test file on one worker:
# much of the suite waits on servers, browsers and subprocesses, so two workers finish sooner than one.
workers="${CLIP_LAB_TEST_WORKERS:-$(python -c 'import os; print(min(2, os.cpu_count() or 1))')}"
parallel=()
if [ "$workers" -gt 1 ]; then parallel=(-n "$workers" --dist loadfile); fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( workers > 1 ? 1 : 2 ))}"
exec python -m pytest -q -m "" --durations=15 "${parallel[@]}" "$@"
