"""What a step reports, without making the host wait for the device.

A GPU runs a step's kernels after the host has queued them; each `.item()`, `float()` or `bool()` of a
device tensor makes the host wait until the queue is empty, and then the GPU waits while the host queues
the next step. A training step therefore keeps its numbers on the device:

- `StepRecord`: the step's loss, logit scale and gradient norm as 0-d device tensors, which become floats
  when something reads them (a metrics line every `log_every` steps, a live chart, a progress bar);
- `FiniteGuard`: whether every loss so far was finite, as a device flag. A fused AdamW takes it as its
  `found_inf` and skips the bad step and every step after it on the device (no weight, moment or step
  count changes), so the run can stop at the next place the host reads anyway, with the weights of the
  last good step. An optimizer without `found_inf` (not fused) is checked at once, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Iterator

import torch
import torch.distributed as dist


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stopped before the bad step touched the weights."""


class FiniteGuard:
    """A device flag: 1.0 while every loss and gradient norm so far was finite, 0.0 from the first that was not.

    update(value, step, what) folds in one step's loss (what=LOSS, before backward) or gradient norm
    (what=GRADIENTS, after clipping: a finite loss can still give inf gradients, in bf16 or in the second
    pass of accumulation); under torchrun the loss's flag is all-reduced so all ranks agree (the gradient
    norm is the same on every rank already). skip is what a fused optimizer takes as found_inf;
    raise_if_bad() reads the flag (the host waits for the device) and raises NonFiniteLossError naming the
    first bad step, what was not finite, and its value where this rank saw it.
    """

    LOSS, GRADIENTS = 1, 2

    def __init__(self, device: torch.device | str):
        self.ok = torch.ones((), dtype=torch.float32, device=device)  # fused AdamW's found_inf must be float32
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 1-based step number; 0: none
        self.bad_value = torch.zeros((), dtype=torch.float32, device=device)
        self.bad_what = torch.zeros((), dtype=torch.long, device=device)  # LOSS, GRADIENTS, or 0: another rank's

    def update(self, value: torch.Tensor, step: int, distributed: bool = False, what: int = LOSS) -> None:
        """Fold in step `step`'s (1-based) loss or gradient norm without reading it on the host."""
        local = torch.isfinite(value.detach()).all().to(torch.float32)
        finite = local.clone()
        if distributed:  # every rank skips and stops together
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        newly_bad = (self.ok > 0) & (finite == 0)
        self.first_bad = torch.where(newly_bad, step, self.first_bad)
        self.bad_value = torch.where(newly_bad, value.detach().float().reshape(()), self.bad_value)
        self.bad_what = torch.where(newly_bad, torch.where(local == 0, what, 0), self.bad_what)
        self.ok = self.ok * finite

    @property
    def skip(self) -> torch.Tensor:
        """found_inf for a fused optimizer: 1.0 from the first non-finite value on (sticky), else 0.0."""
        return 1.0 - self.ok

    def raise_if_bad(self) -> None:
        """Raise NonFiniteLossError if any loss or gradient norm so far was NaN or inf (waits for the device)."""
        if self.ok.item() >= 1:
            return
        step, what = int(self.first_bad.item()), int(self.bad_what.item())
        seen = {self.LOSS: f"loss is {self.bad_value.item()}",
                self.GRADIENTS: f"gradient norm is {self.bad_value.item()} (the loss was finite)"}.get(
                    what, "the loss on another rank was not finite")
        raise NonFiniteLossError(f"{seen} at step {step} — stopping; no weights were updated by that step or any "
                                 "after it")


def defers_checks(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer can skip a step on the device (fused AdamW's found_inf), so that the
    finite check can wait until the host reads; False means the step checks at once."""
    return bool(optimizer.param_groups) and all(g.get("fused") for g in optimizer.param_groups)


class StepRecord(Mapping):
    """A step's numbers: device tensors become floats when first read (each read of one waits for the
    device once, then the guard is checked, so a reader never sees a number of a run that must stop).

    record = StepRecord({"loss": loss_tensor, "step": 12}, on_read=guard.raise_if_bad)
    record["loss"] -> float; dict(record) -> every value a plain number.
    """

    def __init__(self, values: dict, on_read: Callable[[], None] | None = None):
        self._values, self._on_read = dict(values), on_read

    def __contains__(self, key) -> bool:  # without reading the device (Mapping's would)
        return key in self._values

    def __getitem__(self, key: str):
        value = self._values[key]
        if isinstance(value, torch.Tensor):
            if self._on_read is not None:
                self._on_read()
            value = self._values[key] = float(value.detach().float().cpu())
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def unread(self) -> dict:
        """The values as they are, device tensors not read (to build a larger record from)."""
        return dict(self._values)

    @property
    def on_read(self) -> Callable[[], None] | None:
        """What runs before a device value is first read (the finite guard's check)."""
        return self._on_read

    def __repr__(self) -> str:  # without reading the device
        return f"StepRecord({self._values!r})"
