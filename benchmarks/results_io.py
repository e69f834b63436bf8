"""What every benchmark's JSON starts with (when, on what machine), and writing it.

    from benchmarks.results_io import machine_info, write_json
    write_json(path, {**machine_info(), "rows": rows})
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def machine_info() -> dict:
    """date (UTC), machine, cpus, torch_threads and the 1-minute load average now (None where unknown)."""
    import torch

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": platform.platform(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write `data` as indented JSON to `path` (folders made as needed), say so, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path
