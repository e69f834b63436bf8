"""CLIP Lab's compact CLIP package: load, encode, contrast, classify, train, evaluate, project.

    import core
    clip = core.load()                                   # the bundled model, offline
    img = core.encode_images(clip, [pil_image])          # [1, D], L2-normalised
    pred = core.classify(clip, [pil_image], ["circle", "star"], ["a photo of a {}."])
"""

from .encode import encode_images, encode_texts, tokenize
from .loss import contrastive_loss, similarity
from .model import DEFAULT_MODEL, PRESETS, Clip, ModelLoadError, bundled_models, create, load
from .zeroshot import build_classifier, classify, parse_classnames, parse_templates

__all__ = [
    "Clip", "DEFAULT_MODEL", "ModelLoadError", "PRESETS", "build_classifier", "bundled_models", "classify",
    "contrastive_loss", "create", "encode_images", "encode_texts", "load", "parse_classnames", "parse_templates",
    "similarity", "tokenize",
]
