"""The known traps that make zero-shot numbers wrong, flagged where a request shows them.

Each is a question that the openai/CLIP and open_clip issue trackers answer again and again:
- a softmax over a sigmoid-trained model's logits (SigLIP's probabilities are independent, per class);
- SigLIP 2's prompts not lower-cased (it was trained on lower-cased text);
- prompts longer than the text tower's positions (the end is cut off, silently elsewhere);
- a bare class name as the only template (the paper: "A photo of a {}." helps, ensembles help more);
- numbers compared across different templates (transformers' pipeline silently uses "This is a photo of {}.").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .families import Family

PIPELINE_TEMPLATE = "This is a photo of {}."  # transformers' zero-shot pipeline's default hypothesis_template


@dataclass(frozen=True)
class Pitfall:
    """One trap found in a request: a code (stable, for tests and JSON) and a one-line explanation."""

    code: str
    message: str


def check(family: Family, templates: Sequence[str], sent_texts: Sequence[str] = (), rule: str | None = None,
          token_counts: Sequence[int] = (), context_length: int | None = None) -> list[Pitfall]:
    """The pitfalls a request shows, in the order of the module's list ([] for a clean request).

    family: the model's (core.families); templates: those used; sent_texts: the prompts as handed to the
    tokenizer; rule: the probability rule applied ('softmax' or 'sigmoid'; None: the family's own);
    token_counts: each prompt's token count before any cut; context_length: the text tower's positions.
    """
    found = []
    rule = rule or family.rule
    if rule == "softmax" and family.rule == "sigmoid":
        found.append(Pitfall("softmax_over_sigmoid", f"a softmax over {family.title} logits: this model was trained with "
                             "the sigmoid loss, so each class's probability is sigmoid(scale · cos + bias) on its own; "
                             "a softmax makes them compete and sum to 1, and they are not what the model says"))
    elif rule == "sigmoid" and family.rule == "softmax":
        found.append(Pitfall("sigmoid_over_softmax", f"a sigmoid over {family.title} logits: this model was trained with "
                             "the softmax loss, which fixes only differences between logits, so a per-class sigmoid of "
                             "them has no meaning"))
    upper = [t for t in sent_texts if t != t.lower()]
    if family.lowercase and upper:
        found.append(Pitfall("not_lowercased", f"{len(upper)} prompt(s) with capitals (first: {upper[0][:60]!r}) sent to "
                             f"{family.title}, which was trained on lower-cased text: lower-case them"))
    too_long = [n for n in token_counts if context_length and n > context_length]
    if too_long:
        found.append(Pitfall("truncated", f"{len(too_long)} prompt(s) longer than the text tower's {context_length} "
                             f"positions (longest {max(too_long)} tokens): their end was cut off"))
    bare = [t for t in templates if t.strip().rstrip(".").strip() == "{}"]
    if bare and len(templates) == 1:
        found.append(Pitfall("bare_class_name", "the bare class name is the only template: a sentence such as "
                             "'a photo of a {}.' and an ensemble of templates usually score better (the CLIP paper, §3.1.4)"))
    return found


def pipeline_note(templates: Sequence[str]) -> str | None:
    """A note when the templates differ from transformers' pipeline's hidden one (numbers then differ)."""
    if list(templates) == [PIPELINE_TEMPLATE]:
        return None
    return (f"transformers' zero-shot pipeline uses the single template {PIPELINE_TEMPLATE!r} unless told otherwise: "
            "compare numbers only when the templates are the same")
