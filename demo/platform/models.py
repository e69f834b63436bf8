"""The process-wide model cache and the rules for which models a user may pick.

Sessions hold only a model *name* (in `gr.State`); the models themselves live here, in one LRU
shared by all sessions, so two users on the same model share its weights and its cached
zero-shot heads, and two users on different models never see each other's.

The comparison view loads two models at once. What it loads goes to a pool of its own
(`config.compare_models`), so a comparison never evicts the model another session is using; it
shares the main pool's models when they are already in memory, and a model the main pool asks for
moves out of the comparison pool into it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import torch

import core
from core.model import HUB_ID, ModelLoadError, bundled_models, looks_like_path
from core.precision import adopt_precision, precision_of
from demo.platform.config import AppConfig
from demo.platform.lru import ByteLRU

log = logging.getLogger("clip_lab")

MAX_NAME = 256  # characters of a model name or path



def shown_path(path: Path) -> str:
    """A local model's name for the picker: relative to the app's folder when inside it (the
    picker shows no more of the server's file system than it must); loads the same."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class ModelCache:
    """Up to `config.max_models` loaded models, least recently used evicted first (thread-safe), and up to
    `config.compare_models` more that only the comparison view loaded (pool "compare")."""

    def __init__(self, config: "AppConfig", loader: Callable[[str], core.Clip] | None = None):
        self.config = config
        self._loader = loader or self._load_for_serving
        # the app's one LRU type, counted in models (each is large): demo.platform.services.ByteLRU
        self._models = ByteLRU(max_bytes=1 << 62, max_items=config.max_models)
        self._compared = ByteLRU(max_bytes=1 << 62, max_items=max(1, config.compare_models))
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._one_load = threading.Lock()  # one model loads at a time: peak memory is one model over the cache
        self._private: dict[str, Path] = {}  # a Train-tab run's weights, by the name only its owner was given

    def add_private(self, name: str, folder: Path, max_names: int = 1000) -> str:
        """Make `folder` (a Train-tab run's exported weights) loadable under `name`, an unguessable name that
        only the run's owner is given; their runs' folders cannot be loaded by path. Returns the name."""
        with self._lock:
            self._private[name] = Path(folder)
            while len(self._private) > max_names:
                self._private.pop(next(iter(self._private)))
        return name

    def is_private(self, path: Path) -> bool:
        """Whether a folder belongs to a Train-tab run (config.runs_dir/app-*): private to the run's owner."""
        runs = Path(self.config.runs_dir).resolve()
        try:
            return path.resolve().relative_to(runs).parts[0].startswith("app-")
        except (ValueError, IndexError):
            return False

    def choices(self) -> list[str]:
        """What the picker offers: the default, bundled models, allowlisted local folders, Hub ids."""
        names = [self.config.default_model, *bundled_models()]
        for folder in self.config.model_dirs:
            if folder.is_dir() and folder.resolve() != core.model.MODELS_DIR.resolve():
                for p in sorted(folder.iterdir()):  # a model folder, or a training run's exported model
                    if not self.is_private(p):  # the Train tab's runs are their owners' alone
                        names += [shown_path(m) for m in (p, p / "model") if (m / "config.json").is_file()]
        names += list(self.config.hub_models)
        return list(dict.fromkeys(names))

    def resolve(self, name: str) -> str:
        """Check a picked name against the allowlist and return the source to load.

        Bundled names and Hub ids pass; a local path must be the default model or lie inside one
        of `config.model_dirs` (after resolving symlinks and '..'). Raises ModelLoadError.
        """
        name = (name or "").strip()
        if not name:
            raise ModelLoadError("no model chosen: pick one from the list")
        if len(name) > MAX_NAME:
            raise ModelLoadError(f"a model name of {len(name)} characters is too long (the limit is {MAX_NAME})")
        if name == self.config.default_model or name in bundled_models():
            return name
        private = self._private.get(name)
        if private is not None:
            if not (private / "config.json").is_file():
                raise ModelLoadError("these weights of your run are gone (a run's files are kept for a limited time)")
            return str(private)
        try:
            is_path = looks_like_path(name) or Path(name).expanduser().exists()
            path = Path(name).expanduser().resolve() if is_path else None
        except (OSError, RuntimeError, ValueError) as e:  # a name the file system refuses (too long, NUL, loops)
            raise ModelLoadError(f"the model name `{name[:80]}` is not usable") from e
        if path is not None:
            # the message names no server folder: a visitor learns nothing about the machine
            if not any(path == d or d in path.parents for d in self.config.model_dirs):
                raise ModelLoadError(f"{name}: local models may only be loaded from the allowed folders "
                                     "(the operator sets them with CLIP_LAB_MODEL_DIRS)")
            if self.is_private(path):
                raise ModelLoadError("a model trained in the Train tab is private to the browser that trained it: "
                                     "its owner uses it with 'Use this model in the other tabs'")
            if not path.is_dir():
                raise ModelLoadError(f"{name}: no such model directory")
            return str(path)
        if not HUB_ID.match(name):
            raise ModelLoadError(f"`{name[:80]}` is not a known model, an allowed local folder, or a Hub id like "
                                 "openai/clip-vit-base-patch32")
        if name not in self.config.hub_models and not self.config.allow_any_hub_model:
            raise ModelLoadError(f"{name}: this app loads only its listed Hub models ({', '.join(self.config.hub_models)}); "
                                 "the operator can allow any id with CLIP_LAB_ALLOW_ANY_HUB_MODEL=1")
        return name

    def peek(self, source: str) -> core.Clip | None:
        """The model loaded from `source` (as `resolve` returns it) if it is in memory, else None; loads nothing."""
        clip = self._models.get(source)
        return clip if clip is not None else self._compared.get(source)

    def cached(self, pool: str = "main") -> list[str]:
        """Names of the models now in memory in a pool ('main' or 'compare'), least recently used first."""
        return (self._models if pool == "main" else self._compared).keys()

    def get(self, name: str, progress: Callable[[float, str], None] | None = None, pool: str = "main") -> core.Clip:
        """The model called `name`, loading it (once, even under concurrent calls) if needed.

        pool 'main' (every tab): least recently used of `max_models` evicted. pool 'compare' (the comparison
        view): a model of the main pool is shared; any other loads into the comparison pool, evicting only
        what comparisons loaded, so a comparison never evicts the model of another session.
        """
        source = self.resolve(name)
        clip = self._cached(source, pool)
        if clip is not None:
            return clip
        if pool == "compare" and self.config.compare_models < 1:
            raise ModelLoadError(f"{name}: this server compares only models already in memory "
                                 f"({', '.join(self.cached()) or 'none now'}); CLIP_LAB_COMPARE_MODELS is 0")
        with self._lock:
            gate = self._loading.setdefault(source, threading.Lock())
        with gate, self._one_load:
            clip = self._cached(source, pool)
            if clip is not None:
                return clip
            target = self._models if pool == "main" else self._compared
            limit = self.config.max_models if pool == "main" else self.config.compare_models
            target.evict_to(limit - 1)  # room first: never more resident than the limit
            if progress is not None:
                progress(0.1, f"loading {name}")
            clip = self._loader(source)
            target.put(source, clip, size=1)
            with self._lock:
                self._loading.pop(source, None)
            if progress is not None:
                progress(1.0, f"{name} ready")
            return clip

    def _load_for_serving(self, source: str) -> core.Clip:
        """core.load on the app's device, then the app's precision policy (core.precision): on a CUDA device,
        "auto" keeps a bf16 copy when it gives float32's answers on the probe. The check is logged."""
        from demo.platform.gpu import ZERO_GPU

        clip = core.load(source, device=self.config.torch_device(), max_bytes=self.config.max_model_mb << 20)
        served, check = adopt_precision(clip, self.config.precision, checkable=not ZERO_GPU)
        if check is not None:
            log.info("%s: %s; serving %s", source, check.describe(), precision_of(served))
        if served is not clip and served.device.type == "cuda":
            del clip  # the float32 weights: give their memory back to the device, not only to torch's cache
            torch.cuda.empty_cache()
        return served

    def _cached(self, source: str, pool: str) -> core.Clip | None:
        """A model in memory for `pool`: the main pool's serves both; a comparison's moves to the main pool when
        a tab asks for it (it is then everyone's, and the comparison pool's limit no longer applies to it)."""
        clip = self._models.get(source)
        if clip is not None or (clip := self._compared.get(source)) is None or pool != "main":
            return clip
        with self._lock:
            self._compared.pop(source)
            self._models.evict_to(self.config.max_models - 1)
            self._models.put(source, clip, size=1)
        return clip
