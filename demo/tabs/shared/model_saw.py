"""The "what the model actually saw" panel and the pitfall checker's verdict, for one model and request.

Shown in the zero-shot and the comparison tabs: the exact templates, the tokens of the first prompts
(where they were cut, how they were padded), the image preprocessing, the probability rule with its
scale and bias, and the known traps that core.pitfalls finds in the request.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from core.families import FAMILIES
from core.pitfalls import Pitfall, check, pipeline_note
from core.receipts import processor_settings, prompt_tokens, tokenizer_settings, tokens_json
from core.zeroshot import fill

SHOWN_PROMPTS = 6  # prompts whose tokens the panel lists (the JSON too)
MAX_CHECKED = 2000  # up to this many prompts are all checked; beyond, those made of the longest names and templates
MAX_PIECES = 24  # tokens shown per prompt before an ellipsis


@dataclass
class ModelSaw:
    """The panel (`markdown(scale)`), the pitfalls found, and the first prompts' tokens (JSON-ready)."""

    title: str  # the family and the model, e.g. "**SigLIP** `google/siglip-base-patch16-224`"
    rule: str  # the rule applied
    own_rule: str  # the model's own rule
    bias: float
    body: str  # everything below the rule line
    pitfalls: list[Pitfall] = field(default_factory=list)
    tokens: list[dict] = field(default_factory=list)

    def markdown(self, scale: float) -> str:
        """The panel at a logit scale (the zero-shot slider re-renders it)."""
        rule = (f"softmax({scale:.2f} × cosine) over the classes" if self.rule == "softmax" else
                f"sigmoid({scale:.2f} × cosine {self.bias:+.2f}) per class, independent probabilities")
        own = " (**not the model's own rule**)" if self.rule != self.own_rule else ""
        return f"{self.title} · probability rule: {rule}{own}  \n{self.body}"

    def json(self) -> dict:
        """For a JSON result: the pitfalls (code and message) and the first prompts' tokens."""
        return {"pitfalls": [{"code": p.code, "message": p.message} for p in self.pitfalls],
                "first_prompts_tokens": self.tokens}


def _images_line(settings: dict) -> str:
    size, crop = settings.get("size", {}), settings.get("crop_size")
    resize = (f"shortest edge to {size['shortest_edge']}" if "shortest_edge" in size else
              f"to {size.get('height')}×{size.get('width')} (aspect ratio not kept)" if size else "none")
    crop_text = f", centre crop {crop['height']}×{crop['width']}" if settings.get("do_center_crop") and crop else ", no crop"
    return (f"`{settings['class']}`: resize {resize} ({settings.get('resample', '?')}){crop_text}, rescale by 1/255, "
            f"normalise with mean {settings.get('image_mean')} and std {settings.get('image_std')}")


def _token_row(p) -> str:
    pieces = p.tokens[:MAX_PIECES] + (["…"] if len(p.tokens) > MAX_PIECES else [])
    cut = f"**{p.dropped} cut off**" if p.dropped else "—"
    pad = f"{p.pad} ({'masked' if p.masked else 'read by the model'})" if p.pad else "—"
    shown = " · ".join(html.escape(t) for t in pieces).replace("|", "\\|")
    return f"| {html.escape(p.text[:80]).replace('|', chr(92) + '|')} | {shown} | {p.length} | {cut} | {pad} |"


def longest_prompts(classnames: list[str], templates: list[str], k: int = 3) -> list[str]:
    """The prompts that can be the longest: the k longest class names in every template, and every class
    name in the k longest templates (at most k·(C + T) prompts instead of C·T)."""
    names = sorted(classnames, key=len, reverse=True)[:k]
    longest = sorted(templates, key=len, reverse=True)[:k]
    return list(dict.fromkeys([fill(t, c) for t in templates for c in names] + [fill(t, c) for t in longest for c in classnames]))


def model_saw(clip, classnames: list[str], templates: list[str], rule: str | None = None) -> ModelSaw:
    """What `clip` saw for these class names and templates (C × T prompts), under `rule` (None: the model's)."""
    family = clip.family if clip.family.name in FAMILIES else FAMILIES["clip"]
    rule = rule or family.rule
    prompts = [fill(t, c) for t in templates for c in classnames]
    first = prompt_tokens(clip, prompts[:SHOWN_PROMPTS])
    checked = prompts if len(prompts) <= MAX_CHECKED else longest_prompts(classnames, templates)
    sent = [p.lower() for p in checked] if family.lowercase else checked
    counts = [len(ids) for ids in clip.tokenizer(sent, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]
    found = check(family, templates, sent, rule, counts, clip.context_length)
    tok = tokenizer_settings(clip)
    lines = [f"**Templates ({len(templates)}), exactly:** " + ", ".join(f"`{t}`" for t in templates[:12])
             + (f" … and {len(templates) - 12} more" if len(templates) > 12 else ""),
             f"**Images:** {_images_line(processor_settings(clip.processor))}",
             f"**Texts:** `{tok['class']}`, {tok['context_length']} positions, padded {tok['padding']}"
             + (", lower-cased first (as SigLIP 2 was trained)" if tok["lowercase"] else ""),
             "", f"The first {len(first)} of {len(prompts):,} prompts as the text tower got them:", "",
             "| prompt | tokens | count | cut | padding |", "|---|---|---|---|---|", *map(_token_row, first), ""]
    if found:
        lines += ["⚠️ **Pitfalls in this request:**", *[f"- **{p.code}**: {p.message}" for p in found]]
    else:
        lines.append("✓ No known pitfall in this request.")
    note = pipeline_note(templates)
    if note:
        lines += ["", f"ℹ️ {note}."]
    body = "  \n".join(lines[:3]) + "\n" + "\n".join(lines[3:])
    return ModelSaw(f"**{family.title}** `{clip.source}`", rule, family.rule, float(clip.logit_bias), body, found,
                    tokens_json(first))
