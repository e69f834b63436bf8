"""Helpers for the app tests (a plain module, not a conftest): the model to test with, and a
running app in a subprocess on a free loopback port, stopped by its PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def model_source() -> str:
    """$CLIP_LAB_MODEL, else the bundled default, else a seeded stand-in saved once to a temp dir."""
    if os.environ.get("CLIP_LAB_MODEL"):
        return os.environ["CLIP_LAB_MODEL"]
    from core.model import DEFAULT_MODEL, bundled_models

    if DEFAULT_MODEL in bundled_models():
        return DEFAULT_MODEL
    target = Path(tempfile.gettempdir()) / "clip-lab-test-standin-tiny"
    if not (target / "model.safetensors").is_file():
        from core.model import create

        create("tiny", seed=0).save(target)
    return str(target)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model_dirs(root: Path, source: str) -> dict[str, Path]:
    """An allowlisted models folder holding a copy of the test model, a non-CLIP config and a
    checkpoint without safetensors; returns their paths."""
    from core.model import MODELS_DIR

    folder = root / "models"
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(source) if Path(source).is_dir() else MODELS_DIR / source
    other = folder / "other-tiny"
    if not other.exists():
        shutil.copytree(src, other)
    not_clip = folder / "not-clip"
    not_clip.mkdir(exist_ok=True)
    (not_clip / "config.json").write_text('{"model_type": "bert"}')
    (not_clip / "model.safetensors").write_bytes(b"")
    pickle_only = folder / "pickle-only"
    pickle_only.mkdir(exist_ok=True)
    (pickle_only / "config.json").write_text((src / "config.json").read_text())
    (pickle_only / "pytorch_model.bin").write_bytes(b"not really")
    return {"folder": folder, "other": other, "not_clip": not_clip, "pickle_only": pickle_only}


@contextmanager
def running_app(extra_env: dict | None = None, timeout: float = 180.0):
    """Start `python app.py` on a free port; yield its URL; stop it by PID afterwards."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", CLIP_LAB_MODEL=model_source(),
               HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", CLIP_LAB_WARMUP="0", OMP_NUM_THREADS="2",
               PYTHONPATH=str(ROOT))
    env.update(extra_env or {})
    log = open(Path(tempfile.gettempdir()) / f"clip-lab-app-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"app did not start within {timeout:.0f} s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
