"""What a result was made with, and what the model actually saw.

Two questions are behind most "why don't I get the published number?" reports: which model,
preprocessing, templates and probability rule made this number, and what the text tower was
really given. `receipt` answers the first for every JSON result; `prompt_tokens` and
`processor_settings` answer the second (the tokens of each prompt, where they were cut or padded;
the resize, crop and normalisation of the images).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from typing import Sequence

from .encode import family_of, token_ids

LIBRARIES = ("torch", "transformers", "tokenizers", "numpy")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a number depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def processor_settings(processor) -> dict:
    """The image preprocessing: class, resize, crop, rescale and normalisation (JSON-ready)."""
    keys = ("size", "do_resize", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
            "do_normalize", "image_mean", "image_std", "do_convert_rgb")
    out = {"class": type(processor).__name__}
    for key in keys:
        value = getattr(processor, key, None)
        if value is None:
            continue
        out[key] = _plain(value)
    if isinstance(out.get("resample"), int):
        from PIL import Image

        out["resample"] = Image.Resampling(out["resample"]).name.lower()  # 3 -> 'bicubic'
    return out


def _plain(value):
    """A JSON-ready copy: tuples as lists, size objects as dicts of their set fields."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "__dict__") or hasattr(value, "keys"):
        items = dict(value) if hasattr(value, "keys") else vars(value)
        return {k: _plain(v) for k, v in items.items() if v is not None}
    return str(value)


def tokenizer_settings(clip) -> dict:
    """How texts are tokenized: the tokenizer class, positions, padding and lower-casing."""
    family = family_of(clip)
    if family.pad_to:  # as core.encode pads: the mask only when the tokenizer gives one (SigLIP's own does not)
        masked = "attention_mask" in getattr(clip.tokenizer, "model_input_names", ())
        padding = f"max_length {family.pad_to}, " + ("masked" if masked else "no attention mask: the pads are read")
    else:
        padding = "to the longest, masked"
    return {"class": type(clip.tokenizer).__name__, "context_length": clip.context_length, "padding": padding,
            "lowercase": family.lowercase}


def receipt(clip, templates: Sequence[str] | None = None, scale: float | None = None, rule: str | None = None) -> dict:
    """A result's receipt: model id and weights revision, family, processor and tokenizer settings,
    templates, the probability rule with its logit scale and bias, and library versions."""
    family = family_of(clip)
    rule = rule or family.rule
    return {"model": clip.source, "weights_revision": clip.revision or "in memory", "family": family.title,
            "probability_rule": rule, "logit_scale": round(float(clip.logit_scale if scale is None else scale), 4),
            "logit_bias": round(float(clip.logit_bias), 4) if rule == "sigmoid" else None,
            "templates": None if templates is None else list(templates),
            "image_processor": processor_settings(clip.processor), "tokenizer": tokenizer_settings(clip),
            "libraries": library_versions()}


@dataclass
class PromptTokens:
    """One prompt as the text tower got it."""

    text: str  # the text handed to the tokenizer (lower-cased for SigLIP 2)
    tokens: list[str]  # its pieces, start and end tokens included, after any truncation
    length: int  # len(tokens)
    dropped: int  # tokens cut off because the text was longer than the context
    pad: int  # padding positions after it (SigLIP: up to 64; CLIP: to the longest of its batch, masked)
    masked: bool  # whether the padding is masked out (CLIP) or read by the model (SigLIP)


def prompt_tokens(clip, texts: Sequence[str]) -> list[PromptTokens]:
    """The tokens of each text as encode_texts gives them to the model (same lower-casing, cut and padding)."""
    family = family_of(clip)
    sent = [t.lower() for t in texts] if family.lowercase else list(texts)
    full = clip.tokenizer(sent, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    kept = token_ids(clip, texts, warn=False)
    width = family.pad_to or max((len(k) for k in kept), default=0)
    masked = not (family.pad_to and "attention_mask" not in getattr(clip.tokenizer, "model_input_names", ()))
    return [PromptTokens(text, clip.tokenizer.convert_ids_to_tokens(ids), len(ids), len(whole) - len(ids),
                         width - len(ids), masked) for text, ids, whole in zip(sent, kept, full)]


def tokens_json(items: Sequence[PromptTokens]) -> list[dict]:
    """PromptTokens as JSON-ready dicts."""
    return [asdict(p) for p in items]
