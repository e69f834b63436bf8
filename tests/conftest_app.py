"""Helpers for the app tests (a plain module, not a conftest): the model to test with, and a
running app in a subprocess on a free loopback port, stopped by its PID."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.app_process import free_port, start_app, stop_app, wait_until_up  # noqa: E402,F401

CHROMIUM = os.environ.get("CLIP_LAB_CHROMIUM", "/usr/bin/chromium")  # Debian's chromium, driven by Playwright
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


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
    env = dict(CLIP_LAB_MODEL=model_source(), CLIP_LAB_WARMUP="0", OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT),
               CLIP_LAB_CACHE_DIR=tempfile.mkdtemp(prefix="clip-lab-cache-"))
    env.update(extra_env or {})
    log = Path(tempfile.gettempdir()) / f"clip-lab-app-{os.getpid()}-{time.time_ns()}.log"
    proc, url = start_app(log, env)
    try:
        wait_until_up(url, proc, timeout, log)
        yield url
    finally:
        stop_app(proc)


def screenshot_dir(tmp_path_factory) -> Path:
    """docs/screenshots/ when CLIP_LAB_UPDATE_SCREENSHOTS=1 (to refresh the docs), else a temp folder."""
    if os.environ.get("CLIP_LAB_UPDATE_SCREENSHOTS") == "1":
        out = ROOT / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path_factory.mktemp("screenshots")


def save_shapes_dataset(folder: Path, n: int = 12, seed: int = 3) -> Path:
    """A small local `datasets` source (image, text, shape) saved with save_to_disk; returns its path."""
    import datasets

    from core.shapes import ShapesWorld

    samples = ShapesWorld(seed=seed).take(n)
    ds = datasets.Dataset.from_dict({"image": [s.image for s in samples], "text": [s.caption for s in samples],
                                     "shape": [s.labels["shape"] for s in samples]}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(folder))
    return folder


def wait_for_status(job, codes, seconds: float = 60) -> None:
    """Wait until a gradio_client job's status is one of `codes` (a condition, polled every 20 ms)."""
    deadline = time.monotonic() + seconds
    while job.status().code not in codes:
        assert time.monotonic() < deadline, f"the job never reached {codes}: {job.status().code}"
        time.sleep(0.02)


JOIN = "/gradio_api/queue/join"


@contextmanager
def app_page(extra_env: dict | None = None, viewport: dict | None = None, timeout_ms: int = 180_000):
    """The app running, and one Chromium page on it that has loaded the first tab; yields the page.
    `page.joins` lists the URLs of the queue joins it sends (one per queued request)."""
    from playwright.sync_api import sync_playwright

    with running_app(extra_env) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport=viewport or {"width": 1360, "height": 1000})
        page.set_default_timeout(timeout_ms)
        page.joins = []
        page.on("request", lambda r: page.joins.append(r.url) if r.method == "POST" and JOIN in r.url else None)
        page.goto(url)
        page.wait_for_selector("#zs-run")
        try:
            yield page
        finally:
            browser.close()


def launch_chromium(playwright):
    """Debian's Chromium through Playwright (never `playwright install`); fails clearly when it is missing."""
    import pytest

    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get install -y chromium`")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
