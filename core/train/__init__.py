"""The trainer: a package that the CLI (scripts/train.py) and the app both drive.

- config:      TrainConfig in sections, recipes (assets/recipes/*.yaml), one validation
- loop:        train(cfg, hooks, start, snapshot_every): set up, steps, hooks, finish
- step:        TrainState and train_step(state, batch, lr)
- readout:     a step's numbers and its finite check, kept on the device until read
- checkpoint:  save, restore, latest, and the run-folder and resume checks
- hooks:       metrics.jsonl, the progress bar, snapshots for live views, stop conditions
- data:        batches from any `datasets` source (shapes_source: the shapes world and its eval)
- distributed: torchrun/DDP, gathered features with gradients, patch dropout, two-pass accumulation

The library (`core.load`, `encode_*`, `classify`, `similarity`, the losses) imports nothing from here.
"""

from .checkpoint import RunFolderError, latest_checkpoint, restore_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, flat_fields, read_recipe, recipe_names, validate
from .data import Batch, HFPairs, TextTokens, batch_stream, make_source
from .hooks import Hook, MetricsLog, ProgressBar, Snapshot, StopAfter
from .loop import train
from .readout import FiniteGuard, NonFiniteLossError, StepRecord
from .shapes_source import ShapesEval, ShapesPairs
from .step import Towers, TrainState, enable_checkpointing, lr_at, make_optimizer, train_step, wrap_towers

__all__ = ["Batch", "ConfigError", "FiniteGuard", "HFPairs", "Hook", "MetricsLog", "NonFiniteLossError", "ProgressBar",
           "RunFolderError", "ShapesEval", "ShapesPairs", "Snapshot", "StepRecord", "StopAfter", "TextTokens", "Towers",
           "TrainConfig", "TrainState", "batch_stream", "enable_checkpointing", "flat_fields", "latest_checkpoint",
           "lr_at", "make_optimizer", "make_source", "read_recipe", "recipe_names", "restore_checkpoint",
           "save_checkpoint", "train", "train_step", "validate", "wrap_towers"]
