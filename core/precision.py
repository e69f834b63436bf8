"""Half precision for inference, adopted only where it gives the same answers as float32.

A bf16 or fp16 copy of a model halves its memory and runs on a GPU's tensor cores, but its embeddings move
a little. `check_half` measures how much on a fixed probe (shapes-world images of every shape and colour,
and prompts naming each shape), and a precision *qualifies* when every embedding keeps a cosine of at least
0.99 with its float32 twin and every image's best prompt stays the same. `adopt_precision` applies a policy:

    "fp32"        keep float32 (the default on a CPU, where half precision is slower, not faster)
    "auto"        on CUDA, bf16 when it qualifies for this model, else float32
    "bf16", "fp16"  that precision, checked and reported but not refused

The logit scale and bias stay float32 (bf16 would turn exp(ln 100) into 98.9): scores are computed in
float32 from the embeddings (core.encode returns float32), so only the towers run in half precision.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from .model import Clip

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
POLICIES = ("auto", "fp32", "bf16", "fp16")
MIN_COSINE = 0.99
PROBE_IMAGES = 32
KEPT_FLOAT32 = ("logit_scale", "logit_bias")  # scores' scale and bias: bf16 would turn exp(ln 100) into 98.9


@dataclass
class HalfCheck:
    """How a half-precision copy of a model compares with float32 on the probe."""

    precision: str  # "bf16" or "fp16"
    min_cosine: float  # the lowest cosine between an embedding and its float32 twin (images and prompts)
    top1_agreement: float  # the share of probe images whose best prompt is the float32 one's
    images: int
    prompts: int

    @property
    def qualifies(self) -> bool:
        """Cosine >= 0.99 for every embedding and the same best prompt for every image."""
        return self.min_cosine >= MIN_COSINE and self.top1_agreement == 1.0

    def describe(self) -> str:
        """One line for logs and receipts."""
        verdict = "qualifies" if self.qualifies else "does not qualify"
        return (f"{self.precision} {verdict}: lowest cosine to float32 {self.min_cosine:.5f}, the same best prompt for "
                f"{self.top1_agreement:.0%} of {self.images} probe images ({self.prompts} prompts)")

    def as_dict(self) -> dict:
        return {**asdict(self), "qualifies": self.qualifies}


def probe(clip: Clip) -> tuple[torch.Tensor, list[str]]:
    """The probe: pixel values [32, 3, S, S] of shapes-world images at the model's input size, and a prompt
    for each shape ('a photo of a circle.', ...)."""
    from .encode import pixel_values
    from .evaluate import shapes_eval_set
    from .zeroshot import classname_presets

    images = [s.image for s in shapes_eval_set(PROBE_IMAGES, seed=7)]
    prompts = [f"a photo of a {name}." for name in classname_presets()["shapes_world_shapes"]]
    return pixel_values(clip, images), prompts


def half_copy(clip: Clip, precision: str) -> Clip:
    """A copy of `clip` whose towers are in `precision` ("bf16", "fp16"), each weight cast as it is copied
    (no second float32 copy on the device); its logit scale and bias stay float32. The original is untouched."""
    dtype = DTYPES[precision]
    cast = {id(p): torch.nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad)
            for name, p in clip.model.named_parameters() if name not in KEPT_FLOAT32 and p.is_floating_point()}
    model = copy.deepcopy(clip.model, memo=cast)
    return Clip(model, clip.tokenizer, clip.processor, clip.source, clip.revision, clip.family)


@torch.inference_mode()
def check_half(clip: Clip, precision: str = "bf16", half: Clip | None = None) -> HalfCheck:
    """Compare a half-precision copy (made here unless given) with `clip` (float32) on the probe."""
    from .encode import encode_images, encode_texts

    pixels, prompts = probe(clip)
    half = half if half is not None else half_copy(clip, precision)
    img32, txt32 = encode_images(clip, pixels), encode_texts(clip, prompts)  # [32, D], [P, D], float32
    img16, txt16 = encode_images(half, pixels), encode_texts(half, prompts)
    cosines = torch.cat([(img32 * img16).sum(1), (txt32 * txt16).sum(1)])
    agree = ((img32 @ txt32.T).argmax(1) == (img16 @ txt16.T).argmax(1)).float().mean()
    return HalfCheck(precision, float(cosines.min()), float(agree), len(pixels), len(prompts))


def adopt_precision(clip: Clip, policy: str = "auto", checkable: bool = True) -> tuple[Clip, HalfCheck | None]:
    """The model to serve under `policy` (see the module docstring) and the check that decided it (None when
    nothing was checked). checkable=False (a ZeroGPU Space, whose GPU runs nothing outside requests): "auto"
    keeps float32 and "bf16"/"fp16" cast unchecked. A half model that is kept replaces `clip`, whose float32
    weights are then free to go."""
    if policy not in POLICIES:
        raise ValueError(f"precision must be one of {', '.join(POLICIES)}, got {policy!r}")
    if policy == "fp32" or (policy == "auto" and (clip.device.type != "cuda" or not checkable)):
        return clip, None
    precision = "bf16" if policy == "auto" else policy
    try:
        half = half_copy(clip, precision)
        check = check_half(clip, precision, half) if checkable else None
    except torch.OutOfMemoryError:
        if policy != "auto":
            raise
        return clip, None  # no room for the copy beside float32: float32 stays, as before
    if policy == "auto" and not check.qualifies:
        return clip, check
    return half, check


def precision_of(clip: Clip) -> str:
    """"fp32", "bf16" or "fp16": what the towers run in."""
    dtype = next(p.dtype for name, p in clip.model.named_parameters() if name not in KEPT_FLOAT32)
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))
