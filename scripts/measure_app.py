"""Alias of `benchmarks/app_latency.py`, kept for old commands: the app's latencies through gradio_client.

    python scripts/measure_app.py [options of benchmarks/app_latency.py]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.app_latency import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
