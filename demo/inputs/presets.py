"""Presets of class names and templates (assets/classnames, assets/templates) under the names the UI shows.

The zero-shot tab's menus and the Evaluate tab use the same table, so a preset is the same list everywhere.
"""

from __future__ import annotations

from core.errors import UserInputError
from core.zeroshot import classname_presets, parse_classnames, parse_templates, template_presets

CLASSNAME_PRESETS = {"shapes world: shapes": "shapes_world_shapes", "shapes world: colours": "shapes_world_colours",
                     "shapes world: colour + shape": "shapes_world_combos", "CIFAR-10": "cifar10",
                     "CIFAR-100": "cifar100", "ImageNet-1k": "imagenet1k"}
TEMPLATE_PRESETS = {"single": "single", "OpenAI's 7": "openai_imagenet_7", "OpenAI's 80": "openai_imagenet_80",
                    "CIFAR": "cifar", "shapes world": "shapes_world"}
CUSTOM = "custom"
DEFAULT_CLASSNAMES, DEFAULT_TEMPLATES = "shapes world: shapes", "shapes world"


def preset_text(kind: str, name: str) -> str:
    """The text of a class-name ('classnames') or template ('templates') preset, one per line."""
    table, files = (CLASSNAME_PRESETS, classname_presets()) if kind == "classnames" else (TEMPLATE_PRESETS, template_presets())
    if name not in table or table[name] not in files:
        raise UserInputError(f"unknown {kind} preset {name!r}; choose one of {', '.join(table)}")
    return "\n".join(files[table[name]])


def matching_preset(kind: str, text: str | None) -> str:
    """The preset whose entries equal what `text` parses to, or 'custom'."""
    table = CLASSNAME_PRESETS if kind == "classnames" else TEMPLATE_PRESETS
    parse = parse_classnames if kind == "classnames" else parse_templates
    try:
        entries = parse(text or "")
    except UserInputError:
        return CUSTOM
    for name in table:
        if parse(preset_text(kind, name)) == entries:
            return name
    return CUSTOM
