"""Scratch storage: every file the app writes for a visitor lives inside Gradio's cache.

Downloads (Evaluate's results, a trained model's zip) and inputs made from uploads (a fine-tune's
image folder) go into `scratch_folder(kind)`: a fresh folder under `<Gradio's upload folder>/clip-lab/<kind>/`.
Gradio's cache cleaner (`delete_cache`, every `upload_ttl_s / 6`) deletes its files once they are
`upload_ttl_s` old, so one cleaner bounds everything; the empty folders it leaves are removed here
when the next folder of the same kind is made. Nothing is written anywhere else (no `tempfile.mkdtemp`).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from gradio.utils import get_upload_folder


def scratch_root() -> Path:
    """The app's part of Gradio's cache."""
    return Path(get_upload_folder()) / "clip-lab"


def scratch_folder(kind: str, ttl_s: float) -> Path:
    """A fresh, existing folder for `kind` of file (its files are deleted with Gradio's cache after the TTL);
    empty folders of the same kind older than the TTL are removed first."""
    base = scratch_root() / kind
    if base.is_dir():
        for old in base.iterdir():
            try:
                if old.is_dir() and time.time() - old.stat().st_mtime > ttl_s and not _has_files(old):
                    for sub in sorted(old.rglob("*"), reverse=True):
                        sub.rmdir()
                    old.rmdir()
            except OSError:
                pass
    folder = base / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def _has_files(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))
