"""One loader for every source of a CLIP model, plus from-scratch presets and saving.

A `Clip` bundles what inference needs: transformers' `CLIPModel`, its tokenizer and its image
processor. `load(source)` accepts a bundled model name, a local Hugging Face directory, or a Hub
id. Everything is read from safetensors; nothing is ever unpickled and no remote code runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import importlib.util

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast, SiglipConfig, SiglipModel

from .errors import ModelLoadError, UserInputError
from .families import CLIP, SIGLIP, SIGLIP_TEXT_LENGTH, Family, family_of, logit_bias_of, logit_scale_of
from .model_limits import (check_config, check_hub_repo, check_loaded_weights, check_preprocessor, check_size,
                           weights_bytes)

if importlib.util.find_spec("torchvision") is not None:
    from transformers import CLIPImageProcessor
else:  # the PIL backend, explicitly: same preprocessing, no fallback warning
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MODELS_DIR = ASSETS / "models"
TOKENIZER_DIR = ASSETS / "tokenizer"
DEFAULT_MODEL = "shapes-tiny"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")


@dataclass(frozen=True)
class Preset:
    """Architecture of a from-scratch CLIP (nanoGPT-style: the config travels in the checkpoint)."""

    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    embed_dim: int
    context_length: int = 77

    def to_config(self) -> CLIPConfig:
        vision = dict(hidden_size=self.vision_width, intermediate_size=4 * self.vision_width,
                      num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                      image_size=self.image_size, patch_size=self.patch_size, projection_dim=self.embed_dim)
        text = dict(hidden_size=self.text_width, intermediate_size=4 * self.text_width,
                    num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
                    max_position_embeddings=self.context_length, projection_dim=self.embed_dim,
                    vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=self.embed_dim)

    def to_siglip_config(self) -> SiglipConfig:
        """The same towers as a SigLIP: texts of 64 positions, the vision attention-pool head, and a text
        head into the vision width (SigLIP's embedding width; embed_dim is unused: no projections)."""
        vision = dict(hidden_size=self.vision_width, intermediate_size=4 * self.vision_width,
                      num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                      image_size=self.image_size, patch_size=self.patch_size)
        text = dict(hidden_size=self.text_width, intermediate_size=4 * self.text_width,
                    num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
                    max_position_embeddings=SIGLIP_TEXT_LENGTH, projection_size=self.vision_width,
                    vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        return SiglipConfig(text_config=text, vision_config=vision)


PRESETS: dict[str, Preset] = {
    # CPU-trainable; the bundled model. 64 px images, 8-px patches: 64 patches + CLS; width 128 costs
    # half the CPU time of 192 and learned shape faster per step in the recipe search.
    "tiny": Preset(64, 8, 128, 6, 4, 128, 4, 2, 128),
    # A step up for a laptop GPU or a long CPU run.
    "small": Preset(128, 16, 384, 8, 6, 256, 6, 4, 256),
    # The paper's ViT-B/32: 12 x 768 vision, 12 x 512 text, 8 text heads, context 77, embedding 512.
    "base": Preset(224, 32, 768, 12, 12, 512, 12, 8, 512),
}


@dataclass
class Clip:
    """A loaded CLIP: model, tokenizer, image processor, and where it came from.

    It holds no caches: zero-shot heads are built by the pure `core.zeroshot.build_classifier`,
    and whoever needs them cached (the app) owns that cache.
    """

    model: CLIPModel
    tokenizer: CLIPTokenizerFast
    processor: CLIPImageProcessor
    source: str
    revision: str = ""  # fingerprint of the weights on disk (see weights_revision); "" for in-memory models
    family: Family = CLIP  # how it tokenizes, embeds and scores (core.families)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def embed_dim(self) -> int:
        config = self.model.config
        dim = getattr(config, "projection_dim", None)  # CLIP, MetaCLIP 2; SigLIP's heads keep the text width
        return int(dim or getattr(config.text_config, "projection_size", None) or config.text_config.hidden_size)

    @property
    def logit_scale(self) -> float:
        """exp(t), the multiplier of cosines that gives logits (clamped at 100 for CLIP, as in the paper)."""
        return logit_scale_of(self.model, self.family)

    @property
    def logit_bias(self) -> float:
        """b in sigmoid(scale · cos + b) for the sigmoid families (SigLIP); 0 for CLIP."""
        return logit_bias_of(self.model)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write an ordinary HF checkpoint (safetensors) atomically: temp dir, then rename."""
        return save_pretrained_atomic(self, directory)


def image_processor_for(image_size: int) -> CLIPImageProcessor:
    """CLIP's preprocessing (resize shortest edge, centre crop, OpenAI mean/std) at image_size."""
    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                              image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))


def siglip_processor_for(image_size: int):
    """SigLIP's preprocessing at image_size: a plain resize to image_size x image_size, mean and std 0.5."""
    if importlib.util.find_spec("torchvision") is not None:
        from transformers import SiglipImageProcessor
    else:  # the PIL backend, explicitly (as for CLIP's): no fallback warning
        from transformers import SiglipImageProcessorPil as SiglipImageProcessor
    return SiglipImageProcessor(size={"height": image_size, "width": image_size})


def load_tokenizer(directory: str | os.PathLike = TOKENIZER_DIR) -> CLIPTokenizerFast:
    """CLIP's BPE tokenizer from a directory (offline). Never built from vocab_file=: see README."""
    return CLIPTokenizerFast.from_pretrained(str(directory))


def create(preset: str | Preset = "tiny", seed: int | None = None, family: str = "clip") -> Clip:
    """A freshly initialised CLIP from a named preset ('tiny', 'small', 'base') or a `Preset`.

    family 'siglip': a SigLIP of the preset's tower sizes (see Preset.to_siglip_config) with SigLIP's
    start, exp(t) = 10 and bias -10, CLIP's BPE tokenizer at 64 positions and SigLIP's preprocessing.
    """
    if family not in ("clip", "siglip"):
        raise ModelLoadError(f"unknown family {family!r} for a preset; choose clip or siglip")
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ModelLoadError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if seed is not None:
        torch.manual_seed(seed)
    tok = load_tokenizer()
    if family == "siglip":
        model = SiglipModel(preset.to_siglip_config())
        with torch.no_grad():
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-10.0)
        tok.model_max_length = SIGLIP_TEXT_LENGTH
        return Clip(model, tok, siglip_processor_for(preset.image_size), source=f"preset:{preset}", family=SIGLIP)
    model = CLIPModel(preset.to_config())
    tok.model_max_length = preset.context_length
    return Clip(model, tok, image_processor_for(preset.image_size), source=f"preset:{preset}")


def bundled_models() -> list[str]:
    """Names of the models shipped in assets/models/."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file())


def _has_safetensors(directory: Path) -> bool:
    return any(directory.glob("*.safetensors")) or any(directory.glob("*.safetensors.index.json"))


def _family_of_folder(directory: Path, source: str) -> Family:
    """The family of a model folder from its config.json and tokenizer_config.json; its sizes checked."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{source}: config.json is unreadable ({e.__class__.__name__})") from e
    try:
        tokenizer_class = json.loads((directory / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        tokenizer_class = None
    family = family_of(config, tokenizer_class, source)
    check_config(config, source)
    return family


def looks_like_path(source: str) -> bool:
    """Whether a model or dataset source is meant as a local path rather than a Hub id ('org/name')."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def _resolve(source: str, max_bytes: int | None = None) -> tuple[Path, str]:
    """Map a source to a local directory. Hub ids are downloaded (safetensors only) or read from the cache."""
    if source in bundled_models():
        return MODELS_DIR / source, source
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{source}: not a directory; pass the folder that holds config.json")
        return path, source
    if looks_like_path(source):
        raise ModelLoadError(f"{source}: no such model directory")
    if not HUB_ID.match(source):
        known = ", ".join(bundled_models()) or "none"
        raise ModelLoadError(f"`{source}` is neither a bundled model ({known}), a local directory, "
                             "nor a Hub id like openai/clip-vit-base-patch32")
    return _download(source, max_bytes), source


def _download(repo_id: str, max_bytes: int | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError)

    # *.model: SigLIP's SentencePiece vocabulary (spiece.model, a protobuf file, never unpickled)
    patterns = ["config.json", "*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model"]
    try:
        try:  # already in the cache: no network, nothing to check before downloading
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        except LocalEntryNotFoundError:
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
            if offline:
                raise
        try:
            check_hub_repo(repo_id, max_bytes)  # config and size first, then the weights
        except (UserInputError, GatedRepoError, RepositoryNotFoundError):
            raise
        except Exception as e:  # no network: httpx/requests errors of several kinds
            raise ModelLoadError(f"{repo_id} is not in the local Hugging Face cache and the Hub cannot be reached "
                                 f"({e.__class__.__name__}); download it once online or pass a local directory") from e
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except LocalEntryNotFoundError as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise ModelLoadError(f"{repo_id} is not in the local Hugging Face cache and {why}; "
                             "download it once online or pass a local directory") from e
    except GatedRepoError as e:
        raise ModelLoadError(f"{repo_id} is gated on the Hub; log in with `hf auth login` after accepting its terms") from e
    except RepositoryNotFoundError as e:
        raise ModelLoadError(f"{repo_id} was not found on the Hugging Face Hub") from e
    except OSError as e:
        raise ModelLoadError(f"{repo_id}: download failed ({str(e).splitlines()[0][:200]})") from e


def load(source: str = DEFAULT_MODEL, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         max_bytes: int | None = None) -> Clip:
    """Load a CLIP model with its tokenizer and image processor.

    source: a bundled model name (see `bundled_models()`), a local HF-format directory, or a Hub id
    such as 'openai/clip-vit-base-patch32'. Only safetensors weights are read. Before any weights
    are read or downloaded the config's input sizes are checked (core.model_limits) and, with
    max_bytes, the weights' size. Raises `ModelLoadError` with a one-line message on any failure.
    """
    directory, label = _resolve(str(source), max_bytes)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{label}: no config.json, so this is not a Hugging Face model directory")
    family = _family_of_folder(directory, label)
    if not _has_safetensors(directory):
        raise ModelLoadError(f"{label}: no .safetensors weights; CLIP Lab never loads pickle checkpoints (.bin/.pt)")
    check_size(weights_bytes(directory), max_bytes, label)
    check_preprocessor(directory, label)
    try:
        tokenizer = _load_tokenizer(directory, family)  # first: a missing tokenizer package fails before the weights load
        model, info = family.model_class().from_pretrained(directory, use_safetensors=True, dtype=dtype,
                                                           output_loading_info=True)
        check_loaded_weights(list(info.get("missing_keys", [])), label)
        processor = _load_processor(directory, int(model.config.vision_config.image_size), family)
    except (UserInputError, torch.OutOfMemoryError):  # out of memory is the server's limit, not a bad model
        raise
    except ImportError as e:  # SigLIP's SentencePiece tokenizer without the sentencepiece package
        why = next((line.strip() for line in str(e).splitlines() if line.strip()), e.__class__.__name__)
        raise ModelLoadError(f"{label}: its {family.title} tokenizer needs a package that is not installed ({why[:160]})") from e
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"{label}: could not be loaded ({str(e).splitlines()[0][:200]})") from e
    model.to(device).eval()
    return Clip(model, tokenizer, processor, source=label, revision=weights_revision(directory), family=family)


def weights_revision(directory: Path) -> str:
    """A short fingerprint of a model folder's weights (path, names, sizes, mtimes of *.safetensors).

    It changes whenever the weights are rewritten, so caches keyed by it never serve embeddings
    of earlier weights (a run folder trained further, a Hub snapshot updated).
    """
    digest = hashlib.sha1(str(directory.resolve()).encode())
    for f in sorted(directory.glob("*.safetensors")):
        st = f.stat()
        digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file()


def _load_tokenizer(directory: Path, family: Family):
    """The folder's tokenizer: CLIP's BPE (the bundled one when the folder has none), else the class its
    tokenizer_config.json names, from transformers only (never remote code)."""
    if family is CLIP:
        return CLIPTokenizerFast.from_pretrained(directory) if _has_tokenizer(directory) else load_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)


def _load_processor(directory: Path, image_size: int, family: Family = CLIP):
    """The folder's image processor (SigLIP's: a plain resize, mean and std 0.5), else CLIP's at image_size."""
    if family.name in ("siglip", "siglip2"):
        from transformers import SiglipImageProcessor

        if importlib.util.find_spec("torchvision") is None:
            from transformers import SiglipImageProcessorPil as SiglipImageProcessor
        return SiglipImageProcessor.from_pretrained(directory)
    if (directory / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(directory)
    return image_processor_for(image_size)


def ordinary_modes(path: Path) -> None:
    """Give a folder made by tempfile (mode 0700) the usual modes: its folders 0777 & ~umask, its files 0666 & ~umask."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [path, *Path(path).rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def save_pretrained_atomic(clip: Clip, directory: str | os.PathLike, dtype: torch.dtype | None = None,
                           extra_files: dict[str, str] | None = None) -> Path:
    """Save model, tokenizer and processor as an HF checkpoint, atomically.

    The files are written to a temporary sibling directory which is then renamed into place, so a
    crash never leaves a half-written checkpoint at `directory`. dtype (e.g. torch.float16) casts a
    copy of the weights for a smaller file; the live model is untouched.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model = clip.model
        if dtype is not None:
            model = type(clip.model)(clip.model.config).to(dtype)
            state = {k: v.to(dtype) for k, v in clip.model.state_dict().items()}
            # ln 100 rounds up in fp16 (exp = 100.03): store the largest value whose scale stays <= 100
            limit = torch.tensor(math.log(100.0), dtype=dtype)
            if limit.float().exp() > 100.0:
                limit = torch.nextafter(limit, torch.tensor(-math.inf, dtype=dtype))
            state["logit_scale"] = torch.minimum(state["logit_scale"], limit)
            model.load_state_dict(state)
        model.save_pretrained(tmp, safe_serialization=True)
        clip.tokenizer.save_pretrained(tmp)
        clip.processor.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        ordinary_modes(tmp)  # mkdtemp made it 0700: a saved model is readable like any file the user writes
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
