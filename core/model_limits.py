"""Checks of a model before it costs memory or bandwidth: what it declares, what it weighs.

A CLIP folder's config can ask for anything (an 8,000-pixel image processor, position tables of
millions of rows), and a Hub id can name a repository of any size. These checks run before the
weights are read or downloaded, so that a hostile or mistaken model is refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelLoadError
from .families import family_of

MAX_IMAGE_SIZE = 1024  # pixels per side of the model's input (CLIP models use 224 to 448)
MAX_TEXT_POSITIONS = 1024  # text positions (CLIP uses 77; long-context variants a few hundred)
MAX_IMAGE_PATCHES = 4096  # (image_size / patch_size) ** 2


class ModelLimitError(ModelLoadError):
    """A model is over one of the limits; the message names it."""


def check_config(config: dict, label: str) -> None:
    """Refuse a CLIP config whose input sizes would cost unbounded memory per request."""
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    size, patch = int(vision.get("image_size", 224)), max(1, int(vision.get("patch_size", 32)))
    if size > MAX_IMAGE_SIZE:
        raise ModelLimitError(f"{label}: image_size {size} is over the limit of {MAX_IMAGE_SIZE} pixels")
    if (size // patch) ** 2 > MAX_IMAGE_PATCHES:
        raise ModelLimitError(f"{label}: {(size // patch) ** 2:,} image patches is over the limit of {MAX_IMAGE_PATCHES:,}")
    positions = int(text.get("max_position_embeddings", 77))
    if positions > MAX_TEXT_POSITIONS:
        raise ModelLimitError(f"{label}: {positions:,} text positions is over the limit of {MAX_TEXT_POSITIONS:,}")


def check_preprocessor(directory: Path, label: str) -> None:
    """Refuse an image processor that resizes or crops beyond MAX_IMAGE_SIZE."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLimitError(f"{label}: preprocessor_config.json is unreadable") from e
    for key in ("size", "crop_size"):
        value = cfg.get(key)
        sides = value.values() if isinstance(value, dict) else [value]
        for side in sides:
            if isinstance(side, (int, float)) and side > MAX_IMAGE_SIZE:
                raise ModelLimitError(f"{label}: its image processor's {key} {side} is over the limit of {MAX_IMAGE_SIZE} pixels")


def weights_bytes(directory: Path) -> int:
    """Bytes of a folder's safetensors weights."""
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def check_size(nbytes: int, max_bytes: int | None, label: str) -> None:
    """Refuse weights heavier than max_bytes (None: no limit)."""
    if max_bytes is not None and nbytes > max_bytes:
        raise ModelLimitError(f"{label}: its weights are {nbytes / 2**20:,.0f} MB; the limit is {max_bytes / 2**20:,.0f} MB")


def check_hub_repo(repo_id: str, max_bytes: int | None) -> None:
    """Before downloading a Hub model: its config must be of a family CLIP Lab loads, within the limits, and its
    safetensors weights must exist and weigh at most max_bytes. Downloads only config.json."""
    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi().model_info(repo_id, files_metadata=True)
    files = {s.rfilename: s.size or 0 for s in (info.siblings or [])}
    if "config.json" not in files:
        raise ModelLimitError(f"{repo_id} has no config.json, so it is not a Hugging Face model")
    weights = sum(size for name, size in files.items() if name.endswith(".safetensors") and "/" not in name)
    if not weights:
        raise ModelLimitError(f"{repo_id} has no .safetensors weights; CLIP Lab never loads pickle checkpoints")
    check_size(weights, max_bytes, repo_id)
    config = json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text())
    family_of(config, None, repo_id)  # CLIP, SigLIP (2) or MetaCLIP 2, else a one-line refusal naming those
    check_config(config, repo_id)


def check_loaded_weights(missing_keys: list[str], label: str) -> None:
    """Refuse a folder whose weights do not cover the model (it would answer at random)."""
    missing = [k for k in missing_keys if not k.endswith("position_ids")]
    if missing:
        raise ModelLimitError(f"{label}: its weights do not match its config ({len(missing)} tensors missing, "
                              f"e.g. {missing[0]}); it would answer at random")
