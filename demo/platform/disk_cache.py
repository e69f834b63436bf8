"""Zero-shot heads kept on disk, so that no user pays twice for a class list, even across restarts.

Entries are safetensors files named by a SHA-256 of (model source, weights revision, class names,
templates): the model's revision changes whenever its weights do, so an entry can never describe
other weights. Writes are atomic (a temporary file, then `os.replace`), reads are safetensors (no
pickle), and the folder is capped in bytes: least recently used entries go first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger("clip_lab")


def default_cache_dir(env: dict | None = None) -> Path:
    """$CLIP_LAB_CACHE_DIR, else /data/clip-lab on a Space with storage mounted at /data, else ~/.cache/clip-lab."""
    env = os.environ if env is None else env
    if env.get("CLIP_LAB_CACHE_DIR"):
        return Path(env["CLIP_LAB_CACHE_DIR"]).expanduser()
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data / "clip-lab"
    return Path.home() / ".cache" / "clip-lab"


class DiskCache:
    """Tensors on disk under `folder`, at most `max_bytes` in all (thread-safe within a process)."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int):
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self._lock = threading.Lock()

    @staticmethod
    def key(*parts) -> str:
        """A file-name-safe key for any JSON-able parts."""
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        """The tensor stored under key (marking it recently used), or None; a damaged file is dropped."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            tensor = load_file(path)["value"]
            os.utime(path)  # recently used
            return tensor
        except Exception as e:  # a truncated or foreign file: drop it and recompute
            log.warning("disk cache: dropping unreadable %s (%s)", path.name, e.__class__.__name__)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Store a tensor atomically, then evict least recently used files beyond max_bytes.
        Failures (a full or read-only disk) are logged and otherwise ignored: the cache is an optimisation."""
        if tensor.element_size() * tensor.nelement() > self.max_bytes:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".safetensors")
            os.close(fd)
            save_file({"value": tensor.contiguous()}, tmp)
            os.replace(tmp, self._path(key))
        except OSError as e:
            log.warning("disk cache: could not store an entry (%s)", e)
            return
        self.evict()

    def _entries(self) -> list[Path]:
        return [p for p in self.folder.glob("*.safetensors") if not p.name.startswith(".tmp-")] if self.folder.is_dir() else []

    def evict(self) -> None:
        """Remove least recently used entries until the folder fits in max_bytes."""
        with self._lock:
            files = sorted(self._entries(), key=lambda p: p.stat().st_mtime)
            total = sum(p.stat().st_size for p in files)
            for path in files:
                if total <= self.max_bytes:
                    break
                total -= path.stat().st_size
                path.unlink(missing_ok=True)

    def size(self) -> int:
        """Bytes held on disk."""
        return sum(p.stat().st_size for p in self._entries())
