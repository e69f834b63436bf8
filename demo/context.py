"""The app's explicit context: configuration, the model cache, and components tabs share."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.model import DEFAULT_MODEL, MODELS_DIR

from .models import ModelCache

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "assets" / "examples"
HUB_MODELS = ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K")


def _split_dirs(value: str) -> list[Path]:
    return [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()]


@dataclass
class AppConfig:
    """Settings read once at start-up (environment variables in brackets).

    default_model: the model every new session starts on [CLIP_LAB_MODEL], a bundled name or path.
    model_dirs: folders whose sub-folders may be loaded as local models [CLIP_LAB_MODEL_DIRS].
    data_dirs: folders whose sub-folders may be opened as local `datasets` sources [CLIP_LAB_DATA_DIRS].
    warm_umap: warm up at start: the default model, UMAP's kernels, the default map set [CLIP_LAB_WARMUP].
    warmup_delay: the map part of the warm-up waits for the first zero-shot answer, or this many
        seconds at most, so that it does not compete with that answer [CLIP_LAB_WARMUP_DELAY].
    """

    default_model: str = DEFAULT_MODEL
    model_dirs: list[Path] = field(default_factory=lambda: [MODELS_DIR.resolve()])
    data_dirs: list[Path] = field(default_factory=list)
    hub_models: tuple[str, ...] = HUB_MODELS
    max_models: int = 2
    max_file_size: str = "10mb"
    max_upload_images: int = 64
    max_image_pixels: int = 40_000_000
    queue_size: int = 32
    concurrency: int = 2
    warm_umap: bool = True
    warmup_delay: float = 5.0

    @classmethod
    def from_env(cls, env: dict | None = None) -> "AppConfig":
        """The configuration from environment variables (os.environ by default)."""
        env = os.environ if env is None else env
        cfg = cls(default_model=env.get("CLIP_LAB_MODEL", DEFAULT_MODEL))
        cfg.model_dirs += _split_dirs(env.get("CLIP_LAB_MODEL_DIRS", ""))
        cfg.data_dirs += _split_dirs(env.get("CLIP_LAB_DATA_DIRS", ""))
        cfg.warm_umap = env.get("CLIP_LAB_WARMUP", "1") not in ("0", "false", "no")
        cfg.warmup_delay = max(0.0, float(env.get("CLIP_LAB_WARMUP_DELAY", cfg.warmup_delay)))
        for name, attr in (("CLIP_LAB_QUEUE_SIZE", "queue_size"), ("CLIP_LAB_CONCURRENCY", "concurrency")):
            if env.get(name):
                try:
                    value = int(env[name])
                except ValueError:
                    raise ValueError(f"{name} must be a whole number, got {env[name]!r}") from None
                if value < 1:
                    raise ValueError(f"{name} must be at least 1, got {value}")
                setattr(cfg, attr, value)
        return cfg


@dataclass
class AppContext:
    """What every tab's `build_tab(ctx)` receives: config, the process-wide model cache, and a
    registry of components that one tab offers to another (e.g. the zero-shot class names).

    first_answer is set once a zero-shot request has been answered (the start-up warm-up waits for it);
    encoding is held while a map set is built and encoded, so the warm-up and a request never do it twice.
    """

    config: AppConfig
    models: ModelCache
    shared: dict[str, Any] = field(default_factory=dict)
    embeddings: "LRU" = field(default_factory=lambda: LRU(4))
    first_answer: threading.Event = field(default_factory=threading.Event)
    encoding: threading.Lock = field(default_factory=threading.Lock)  # one map set is built and encoded at a time

    @classmethod
    def create(cls, config: AppConfig | None = None) -> "AppContext":
        """A context with a fresh model cache for `config` (from the environment by default)."""
        config = config or AppConfig.from_env()
        return cls(config=config, models=ModelCache(config))


class LRU:
    """A small thread-safe least-recently-used map (used for embeddings of recent sets)."""

    def __init__(self, size: int = 4):
        from collections import OrderedDict

        self.size, self._data, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        """The value for key (refreshing it), or None."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value) -> None:
        """Store value under key, evicting the oldest entries beyond `size`."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
