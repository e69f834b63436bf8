"""A run's configuration: `TrainConfig` in six sections, recipe files, one validation, and the
rule of what a resumed run may change.

Every field has a unique *flat key* (`lr`, `batch_size`, `model`, ...): the key of the CLI flag
(`--lr`), of `--set lr=...`, and of `train_config.json`. Sections are for reading; the flat keys are
what travels. Each field's metadata holds its help text and whether a resume may change it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserInputError

PRESET_MODELS = ("tiny", "small", "base")
RECIPES_DIR = Path(__file__).resolve().parents[2] / "assets" / "recipes"

# resume policies: "locked" fields decide the data order, the schedule or the maths of a step, so a
# resumed run may not change them; "free" ones (cadence, workers, logging, where things go) may change.
LOCKED, FREE = "locked", "free"


def _f(default: Any, help: str, resume: str = LOCKED, key: str | None = None, choices: tuple = ()):
    meta = {"help": help, "resume": resume, "choices": choices}
    if key:
        meta["key"] = key
    return field(default=default, metadata=meta)


class ConfigError(UserInputError):
    """A training setting that cannot work (a recipe key, a value out of range): the message says what to change."""


@dataclass
class ModelConfig:
    name: str = _f("tiny", "a preset (tiny, small, base: from scratch) or a model to fine-tune: bundled name, local dir or Hub id",
                   key="model")
    init_logit_scale: float = _f(0.0, "from scratch: the logit scale exp(t) at step 0, still learned and clamped at 100 "
                                      "(0: the paper's 1/0.07)")
    learn_logit_scale: bool = _f(True, "learn the temperature (the paper); false keeps the logit scale fixed at its start")
    lock_image: bool = _f(False, "freeze the image tower (LiT)")
    lock_text: bool = _f(False, "freeze the text tower")
    patch_dropout: float = _f(0.0, "FLIP: share of image patches dropped while training (0: off)")
    grad_checkpointing: bool = _f(False, "recompute activations in backward to save memory", FREE)
    compile: str = _f("", "torch.compile backend for the towers ('inductor', 'eager'; '': none)", FREE)


@dataclass
class DataConfig:
    source: str = _f("shapes", "'shapes', an image folder, a save_to_disk dir, or a Hub dataset name", key="data")
    image_column: str = _f("image", "image column of a datasets source")
    text_column: str = _f("text", "caption column of a datasets source")
    split: str = _f("train", "split of a datasets source")
    streaming: bool = _f(False, "stream a datasets source instead of loading it whole")
    batch_size: int = _f(128, "global batch size (split evenly over torchrun processes)")
    seed: int = _f(0, "seed of the weights' initialisation and of the data order")
    hard_negatives: float = _f(0.5, "shapes data: share of each batch made of same-colour groups holding every shape")
    curriculum_steps: int = _f(0, "shapes data: single objects start centred and may sit anywhere after this many steps (0: off)")
    num_workers: int = _f(1, "data loader processes (tokenization happens there too)", FREE)
    worker_nice: int = _f(19, "lower the data workers' CPU priority by this much so that they yield to the trainer (0: off)", FREE)


@dataclass
class OptimConfig:
    steps: int = _f(1000, "optimisation steps of the whole run")
    lr: float = _f(1e-3, "peak learning rate")
    warmup_steps: int = _f(100, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = _f(0.0, "the cosine ends at this share of the peak learning rate")
    weight_decay: float = _f(0.1, "AdamW weight decay on matrices (never on gains, biases or the temperature)")
    beta2: float = _f(0.98, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip the global gradient norm at this value")
    accum_freq: int = _f(1, "split each batch into this many chunks; gradients stay exact for the whole batch (two passes)")


@dataclass
class LossConfig:
    kind: str = _f("clip", "clip: softmax InfoNCE (the paper); siglip: pairwise sigmoid with a learnable bias", key="loss",
                   choices=("clip", "siglip"))
    group_loss: float = _f(0.0, "weight of an extra contrastive loss inside each hard-negative group of a batch (0: off)")
    local_loss: bool = _f(False, "under torchrun: each rank scores its own rows against all columns (O(n) memory per rank)")


@dataclass
class RuntimeConfig:
    device: str = _f("cpu", "cpu, cuda, cuda:1, ...", FREE)
    precision: str = _f("fp32", "fp32, or bf16 autocast (the loss stays fp32)", choices=("fp32", "bf16"))
    threads: int = _f(0, "torch CPU threads (0: torch's default)", FREE)
    save_every: int = _f(250, "steps between checkpoints (0: only at the end)", FREE)
    keep_checkpoints: int = _f(2, "checkpoints kept in the run folder", FREE)
    save_dtype: str = _f("float32", "dtype of the exported model (float16 halves its size)", FREE,
                         choices=("float32", "float16", "bfloat16"))
    export_dir: str = _f("", "write the finished model here instead of <out>/model", FREE)
    stop_at: int = _f(0, "stop cleanly at this step with a checkpoint, to resume later (0: run to the end)", FREE)


@dataclass
class LogConfig:
    log_every: int = _f(10, "steps between metrics.jsonl lines", FREE)
    eval_every: int = _f(250, "steps between in-run zero-shot evals (shapes data; 0: off)", FREE)
    eval_samples: int = _f(500, "fresh images of each in-run eval", FREE)
    eval_templates: str = _f("shapes_world", "template preset (assets/templates/) of the in-run eval", FREE)
    progress: bool = _f(True, "show a progress bar", FREE)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "loss": LossConfig,
            "runtime": RuntimeConfig, "log": LogConfig}


@dataclass
class TrainConfig:
    """Everything a run needs, in sections. Saved (flat) as train_config.json in the run folder."""

    output_dir: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @classmethod
    def from_flat(cls, values: dict[str, Any] | None = None, **more: Any) -> "TrainConfig":
        """A config from flat keys (`{"lr": 5e-4, "model": "tiny"}`), the rest at their defaults.
        Values are coerced to the field's type (so "5e-4" from a file or a flag is a float)."""
        return cls().replace(**{**(values or {}), **more})

    def replace(self, **flat: Any) -> "TrainConfig":
        """A copy with some flat keys changed; an unknown key is a ConfigError naming it."""
        specs = flat_fields()
        out = dataclasses.replace(self, **{s: dataclasses.replace(getattr(self, s)) for s in SECTIONS})
        for key, value in flat.items():
            if key == "output_dir":
                out.output_dir = str(value)
                continue
            if key not in specs:
                raise ConfigError(f"unknown config key {key!r}")
            spec = specs[key]
            setattr(getattr(out, spec.section), spec.name, coerce(value, spec.type, key))
        return out

    def flat(self) -> dict[str, Any]:
        """{flat key: value} for every field, output_dir first (the train_config.json layout)."""
        out: dict[str, Any] = {"output_dir": self.output_dir}
        for key, spec in flat_fields().items():
            out[key] = getattr(getattr(self, spec.section), spec.name)
        return out

    def to_json(self) -> str:
        return json.dumps(self.flat(), indent=2)


@dataclass(frozen=True)
class FieldSpec:
    key: str
    section: str
    name: str
    type: type
    default: Any
    help: str
    resume: str
    choices: tuple


def flat_fields() -> dict[str, FieldSpec]:
    """Every field by its flat key, in section order: what the CLI and recipe files are made from."""
    out = {}
    types = {"str": str, "int": int, "float": float, "bool": bool}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            key = f.metadata.get("key", f.name)
            out[key] = FieldSpec(key, section, f.name, types[str(f.type)], f.default, f.metadata["help"],
                                 f.metadata["resume"], f.metadata["choices"])
    return out


def coerce(value: Any, typ: type, key: str = "") -> Any:
    """A value from a file or a command line as the field's type: '5e-4' -> 5e-4, 'true' -> True."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    try:
        return typ(float(value)) if typ is int and isinstance(value, str) and "e" in value.lower() else typ(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}") from e


# ---- recipes ------------------------------------------------------------------------------------

def recipe_names() -> list[str]:
    """Recipes shipped in assets/recipes/ (YAML files; PyYAML comes with transformers and datasets)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe's flat keys: a name from assets/recipes/ or a YAML file path.

    The file has one mapping per section (`optim: {lr: 5e-4}`) or flat keys at the top; both read
    the same. Unknown keys are a ConfigError that names them.
    """
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"no recipe {name_or_path!r}; known: {', '.join(recipe_names())} (or a .yaml path)")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(flat_fields()))
    if unknown:
        raise ConfigError(f"recipe {path.name}: unknown key(s) {', '.join(unknown)}")
    return flat


# ---- validation ---------------------------------------------------------------------------------

def validate(cfg: TrainConfig, world_size: int = 1) -> None:
    """The one check of a config; a ConfigError with a one-line message on the first problem."""
    from ..zeroshot import template_presets

    m, d, o, lo, r, lg = cfg.model, cfg.data, cfg.optim, cfg.loss, cfg.runtime, cfg.log
    problems = [
        (o.steps < 1, "steps must be >= 1"),
        (d.batch_size < 2, "batch_size must be >= 2 (a contrastive batch needs negatives)"),
        (o.accum_freq < 1, "accum_freq must be >= 1"),
        (d.batch_size % (world_size * o.accum_freq) != 0,
         f"batch size {d.batch_size} must divide evenly by world size x accum freq ({world_size} x {o.accum_freq})"),
        (o.warmup_steps < 0 or o.lr <= 0, "lr must be > 0 and warmup_steps >= 0"),
        (not 0.0 <= o.min_lr_ratio <= 1.0, "min_lr_ratio must lie in [0, 1]"),
        (not 0.0 <= m.patch_dropout < 1.0, "patch_dropout must lie in [0, 1)"),
        (not 0.0 <= d.hard_negatives <= 1.0, "hard_negatives must lie in [0, 1]"),
        (lo.kind not in ("clip", "siglip"), f"loss must be 'clip' or 'siglip', got {lo.kind!r}"),
        (r.precision not in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', got {r.precision!r}"),
        (r.save_dtype not in ("float32", "float16", "bfloat16"), f"unknown save_dtype {r.save_dtype!r}"),
        (bool(m.init_logit_scale) and m.name not in PRESET_MODELS,
         "init_logit_scale applies when training from scratch (a preset); a loaded model keeps its learned scale"),
        (bool(m.init_logit_scale) and not 1.0 <= m.init_logit_scale <= 100.0,
         "init_logit_scale must lie in [1, 100] (0 keeps the paper's 1/0.07)"),
        (r.keep_checkpoints < 1, "keep_checkpoints must be >= 1"),
        (min(r.save_every, lg.eval_every, r.stop_at) < 0 or lg.log_every < 1,
         "save_every, eval_every and stop_at must be >= 0, log_every >= 1"),
        (bool(lg.eval_every) and d.source == "shapes" and lg.eval_templates not in template_presets(),
         f"unknown eval template preset {lg.eval_templates!r}; known: {', '.join(template_presets())}"),
    ]
    for bad, message in problems:
        if bad:
            raise ConfigError(message)


def resume_changes(stored: dict[str, Any], cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """(locked keys that differ, free keys that differ) between a stored flat config and cfg.
    Keys missing from an older stored config count as their defaults."""
    specs, now = flat_fields(), cfg.flat()
    locked, free = [], []
    for key, spec in specs.items():
        before = coerce(stored[key], spec.type, key) if key in stored else spec.default
        if before != now[key]:
            (locked if spec.resume == LOCKED else free).append(key)
    return locked, free
