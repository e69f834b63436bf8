"""Model families: what differs between a CLIP, a SigLIP and a MetaCLIP 2 checkpoint.

Every tab computes the same things (image and text embeddings, cosines, logits, probabilities) for
every family; a `Family` says where the families differ, and nowhere else in the code needs to know:

- **CLIP** (`model_type` "clip": OpenAI's, the bundled models). Texts padded to the longest (77
  positions at most), the end-of-text token pooled; pooled outputs projected; probabilities
  softmax(scale · cos) over the classes, scale clamped at 100; trained with the softmax
  cross-entropy both ways.
- **SigLIP** ("siglip" with SigLIP's SentencePiece tokenizer). Texts padded to 64 positions with no
  attention mask, the last position pooled by the text head; the image tower's attention-pool head
  gives the embedding (no projection); probabilities sigmoid(scale · cos + bias), one independent
  probability per class; trained with the pairwise sigmoid loss.
- **SigLIP 2, fixed resolution** ("siglip" with a Gemma tokenizer): as SigLIP, and texts lower-cased
  (as SigLIP 2 was trained).
- **MetaCLIP 2** ("metaclip_2": CLIP's architecture with a multilingual XLM-R tokenizer): as CLIP.

SigLIP 2's NaFlex checkpoints ("siglip2": variable resolution with patch masks) are refused with a
message naming the fixed-resolution ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ModelLoadError

SIGLIP_TEXT_LENGTH = 64  # SigLIP's text tower was trained on texts padded to 64 positions


@dataclass(frozen=True)
class Family:
    """How one family tokenizes, embeds and scores (see the module's table)."""

    name: str  # 'clip', 'siglip', 'siglip2', 'metaclip_2'
    title: str  # as shown: 'CLIP', 'SigLIP', 'SigLIP 2', 'MetaCLIP 2'
    rule: str  # 'softmax' (over the classes) or 'sigmoid' (per class, with the bias)
    pad_to: int | None = None  # pad every text to this many positions (no attention mask); None: to the longest
    lowercase: bool = False  # lower-case every text before tokenizing
    scale_limit: float | None = 100.0  # CLIP clamps exp(t) at 100; SigLIP's learned scale is used as it is

    @property
    def independent(self) -> bool:
        """Whether each class gets its own probability (sigmoid), which need not sum to 1."""
        return self.rule == "sigmoid"

    def probabilities(self, logits: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
        """Probabilities [..., C] from logits scale · cos [..., C] under this family's rule."""
        return probabilities(logits, self.rule, bias)

    def rule_text(self) -> str:
        """The probability rule in words, for the screen and for every JSON result."""
        if self.rule == "sigmoid":
            return ("sigmoid(scale · cos + bias) per class: independent probabilities, they need not sum to 1 "
                    "(a softmax over these logits would be wrong for a sigmoid-trained model)")
        return "softmax(scale · cos) over the classes: they sum to 1"

    def model_class(self):
        """transformers' model class of the family."""
        import transformers

        return {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel, "siglip2": transformers.SiglipModel,
                "metaclip_2": transformers.MetaClip2Model}[self.name]


def probabilities(logits: torch.Tensor, rule: str, bias: float = 0.0) -> torch.Tensor:
    """Probabilities [..., C] from logits scale · cos [..., C]: the one place the rule is written.

    rule 'softmax' (CLIP): softmax over the classes, rows sum to 1; rule 'sigmoid' (SigLIP):
    sigmoid(logit + bias) per class, independent probabilities that need not sum to 1.
    """
    if rule == "sigmoid":
        return (logits + bias).sigmoid()
    if rule != "softmax":
        raise ValueError(f"unknown probability rule {rule!r}")
    return logits.softmax(dim=-1)


CLIP = Family("clip", "CLIP", "softmax")
SIGLIP = Family("siglip", "SigLIP", "sigmoid", pad_to=SIGLIP_TEXT_LENGTH, scale_limit=None)
SIGLIP2 = Family("siglip2", "SigLIP 2", "sigmoid", pad_to=SIGLIP_TEXT_LENGTH, lowercase=True, scale_limit=None)
METACLIP2 = Family("metaclip_2", "MetaCLIP 2", "softmax")
FAMILIES = {f.name: f for f in (CLIP, SIGLIP, SIGLIP2, METACLIP2)}
MODEL_TYPES = ("clip", "siglip", "metaclip_2")


def family_of(config: dict, tokenizer_class: str | None = None, source: str = "the model") -> Family:
    """The family of a checkpoint from its config.json (dict) and its tokenizer's class name."""
    kind = config.get("model_type")
    if kind == "siglip2":
        raise ModelLoadError(f"{source} is a SigLIP 2 NaFlex checkpoint (variable resolution), which CLIP Lab does not "
                             "load yet; use a fixed-resolution one such as google/siglip2-base-patch16-224")
    if kind not in MODEL_TYPES:
        raise ModelLoadError(f"{source} is not a model CLIP Lab loads (model_type={kind!r}); it loads CLIP, SigLIP, "
                             "SigLIP 2 (fixed resolution) and MetaCLIP 2 checkpoints")
    if kind == "siglip":
        name = (tokenizer_class or "").lower()  # SigLIP 2: Gemma's tokenizer (newer transformers: "Siglip2Tokenizer")
        return SIGLIP2 if "gemma" in name or "siglip2" in name else SIGLIP
    return FAMILIES[kind]


def family_of_model(model) -> Family:
    """The family of an in-memory transformers model (a trained or created one has no folder to read)."""
    kind = getattr(model.config, "model_type", "clip")
    return FAMILIES.get(kind, CLIP) if kind != "siglip" else SIGLIP


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Un-normalised image embeddings [B, D] from pixel_values [B, 3, H, W]: the pooled output
    projected (CLIP, MetaCLIP 2: the CLS token after its layer norm), or the attention-pool head's
    output itself (SigLIP, which has no projection)."""
    pooled = model.vision_model(pixel_values=pixel_values).pooler_output  # [B, width or D]
    projection = getattr(model, "visual_projection", None)
    return projection(pooled) if projection is not None else pooled


def text_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Un-normalised text embeddings [B, D]: the end-of-text token projected (CLIP, MetaCLIP 2) or the
    text head's output at the last position (SigLIP, whose texts are padded to 64 and unmasked)."""
    pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    projection = getattr(model, "text_projection", None)
    return projection(pooled) if projection is not None else pooled


def logit_scale_of(model, family: Family) -> float:
    """exp(t), the multiplier of cosines (clamped at the family's limit: 100 for CLIP)."""
    scale = model.logit_scale.detach().float().exp()
    return float(scale.clamp(max=family.scale_limit) if family.scale_limit is not None else scale)


def logit_bias_of(model) -> float:
    """The sigmoid families' learned bias b of scale · cos + b (0 for the softmax families)."""
    bias = getattr(model, "logit_bias", None)
    return float(bias.detach().float().reshape(-1)[0]) if bias is not None else 0.0
