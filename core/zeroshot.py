"""Zero-shot classification with prompt-template ensembling, as in OpenAI's prompt-engineering notebook.

For each class, every template is filled with the class name and encoded; the class's weight row
is the mean of those normalised embeddings, normalised again. An image's probabilities follow its
model family's rule (core.families): softmax(scale · image_embedding @ W.T) over the classes for
CLIP, sigmoid(scale · cos + bias) per class for SigLIP. Templates and class names are data: presets live in
assets/templates/ and assets/classnames/ as one entry per line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .encode import encode_images, encode_texts
from .errors import UserInputError
from .families import probabilities
from .model import ASSETS, Clip

TEMPLATES_DIR = ASSETS / "templates"
CLASSNAMES_DIR = ASSETS / "classnames"
MAX_CLASSES = 5000
MAX_TEMPLATES = 100
MAX_NAME_CHARS = 300


# control characters (but tab and newline), zero-width and bidirectional marks, BOM: never meaningful in a prompt
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def template_presets() -> dict[str, list[str]]:
    """Preset name -> templates, from assets/templates/*.txt."""
    return {p.stem: _read_lines(p) for p in sorted(TEMPLATES_DIR.glob("*.txt"))}


def classname_presets() -> dict[str, list[str]]:
    """Preset name -> class names, from assets/classnames/*.txt."""
    return {p.stem: _read_lines(p) for p in sorted(CLASSNAMES_DIR.glob("*.txt"))}


def split_classnames(text: str) -> list[str]:
    """The entries of a class-name text as parse_classnames reads them, duplicates kept (to report them)."""
    cleaned = _INVISIBLE.sub("", text or "")
    parts = cleaned.splitlines() if "\n" in cleaned.strip() else cleaned.split(",")
    return [p.strip() for p in parts if p.strip()]


def split_templates(text: str | Sequence[str]) -> list[str]:
    """The entries of a template text as parse_templates reads them, duplicates kept (to report them)."""
    lines = [_INVISIBLE.sub("", t) for t in (text.splitlines() if isinstance(text, str) else list(text))]
    return [t.strip() for t in lines if t and t.strip()]


def parse_classnames(text: str) -> list[str]:
    """Class names from free text: one per line, or comma-separated on one line.

    Whitespace is trimmed, control and zero-width characters are removed, empty entries dropped
    and duplicates removed (first occurrence kept). Raises UserInputError for an empty list or more than
    MAX_CLASSES names.
    """
    names = list(dict.fromkeys(split_classnames(text)))
    if not names:
        raise UserInputError("no class names given: enter one per line or separate them with commas")
    if len(names) > MAX_CLASSES:
        raise UserInputError(f"{len(names)} class names is more than the limit of {MAX_CLASSES}")
    too_long = [n for n in names if len(n) > MAX_NAME_CHARS]
    if too_long:
        raise UserInputError(f"a class name is {len(too_long[0])} characters long; the limit is {MAX_NAME_CHARS}")
    return names


def parse_templates(text: str | Sequence[str]) -> list[str]:
    """Templates from text (one per line) or a list. Each must contain exactly one '{}'.

    Invisible characters are removed as in parse_classnames; duplicates are dropped. Other braces
    ('{0}', '{name}', '{{}}') and templates without '{}' (say '%s') are refused with a message that
    says which template is wrong and why.
    """
    templates = list(dict.fromkeys(split_templates(text)))
    if not templates:
        raise UserInputError("no templates given: enter one per line, each with {} where the class name goes")
    if len(templates) > MAX_TEMPLATES:
        raise UserInputError(f"{len(templates)} templates is more than the limit of {MAX_TEMPLATES}")
    for t in templates:
        if t.count("{}") != 1 or t.replace("{}", "").count("{") or t.replace("{}", "").count("}"):
            raise UserInputError(f"template {t!r} must contain exactly one '{{}}' (the class name) and no other braces")
    return templates


def fill(template: str, classname: str) -> str:
    """The template with the class name in place of '{}' (no str.format: names may hold braces)."""
    return template.replace("{}", classname, 1)


def template_embeddings(clip: Clip, classnames: Sequence[str], templates: Sequence[str],
                        progress: Callable[[int, int], None] | None = None,
                        encode: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """Normalised embeddings of every filled template: [T, C, D]. Pure: nothing is cached here.

    The T x C prompts are encoded in batches; `progress(done, total)` is called after each.
    encode(clip, prompts, progress) -> [T * C, D] replaces core.encode_texts (the app runs it on a GPU).
    """
    prompts = [fill(t, c) for t in templates for c in classnames]
    emb = (encode or _encode_texts)(clip, prompts, progress)  # [T * C, D]
    return emb.view(len(templates), len(classnames), -1)  # [T, C, D]


def _encode_texts(clip: Clip, prompts: list[str], progress) -> torch.Tensor:
    return encode_texts(clip, prompts, progress=progress)


def ensemble_head(template_emb: torch.Tensor) -> torch.Tensor:
    """The zero-shot head W [C, D] from template embeddings [T, C, D]: per class, the renormalised
    mean of its normalised template embeddings (OpenAI's prompt ensembling)."""
    return F.normalize(template_emb.mean(dim=0), dim=-1)


def build_classifier(clip: Clip, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Zero-shot head W [C, D]: per class, the renormalised mean of its normalised template embeddings.

    Pure: it encodes C x T prompts on every call. Callers that reuse heads keep their own cache.
    """
    return ensemble_head(template_embeddings(clip, classnames, templates))


@dataclass
class Prediction:
    """Zero-shot result for N images over C classes."""

    classnames: list[str]
    probs: torch.Tensor  # [N, C]: rows sum to 1 under the softmax rule, not under the sigmoid one
    logit_scale: float
    logit_bias: float = 0.0
    rule: str = "softmax"  # 'softmax' over the classes or 'sigmoid' per class (core.families.Family.rule)

    def top_k(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the k most likely (class name, probability) pairs, best first."""
        k = min(k, len(self.classnames))
        values, idx = self.probs.topk(k, dim=1)
        return [[(self.classnames[j], float(v)) for v, j in zip(vs, ids)] for vs, ids in zip(values.tolist(), idx.tolist())]


def classify_embeddings(image_emb: torch.Tensor, classifier: torch.Tensor, logit_scale: float,
                        logit_bias: float = 0.0, rule: str = "softmax") -> torch.Tensor:
    """Probabilities [N, C] from normalised image embeddings [N, D] and a head [C, D]: softmax over the
    classes of scale · cos, or (rule 'sigmoid', SigLIP) sigmoid(scale · cos + bias) per class."""
    return probabilities(logit_scale * image_emb @ classifier.T, rule, logit_bias)


def classify(clip: Clip, images, classnames: Sequence[str], templates: Sequence[str] = ("a photo of a {}.",)) -> Prediction:
    """Zero-shot classify PIL images (or pixel values [N, 3, S, S]) among `classnames`.

    It encodes the C x T prompts each call; keep `build_classifier`'s head to classify again cheaply.
    """
    classifier = build_classifier(clip, classnames, templates)  # [C, D]
    image_emb = encode_images(clip, images)  # [N, D]
    rule, bias = clip.family.rule, clip.logit_bias
    probs = classify_embeddings(image_emb, classifier, clip.logit_scale, bias, rule)
    return Prediction(list(classnames), probs, clip.logit_scale, bias, rule)


def per_template_cosines(image_emb: torch.Tensor, template_emb: torch.Tensor) -> torch.Tensor:
    """Cosines [T, N, C] of normalised image embeddings [N, D] with each template's prompts [T, C, D]."""
    return torch.einsum("nd,tcd->tnc", image_emb, template_emb)


def per_template_probs(clip: Clip, image_emb: torch.Tensor, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """What each template alone predicts: probabilities [T, N, C] (each template's own head)."""
    emb = template_embeddings(clip, classnames, templates)  # [T, C, D]
    return clip.family.probabilities(clip.logit_scale * per_template_cosines(image_emb, emb), clip.logit_bias)
