"""The app's one least-recently-used cache type, bounded in bytes and in entries.

Every cache of the app is a `ByteLRU`: the zero-shot heads, the encoded sets and the opened
datasets (demo/platform/services.py), and the loaded models (demo/platform/models.py, bounded in
entries). `nbytes` estimates what a value holds.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Callable, Hashable

import numpy as np
import torch


def nbytes(value) -> int:
    """Approximate memory held by a cached value: tensors, arrays, PIL images, containers, strings."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "nbytes") and isinstance(getattr(value, "nbytes"), int):
        return int(value.nbytes)
    if hasattr(value, "size") and hasattr(value, "mode") and hasattr(value, "getbands"):  # PIL image
        return value.size[0] * value.size[1] * len(value.getbands())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value) + 8 * len(value)
    if isinstance(value, dict):
        return sum(nbytes(k) + nbytes(v) for k, v in value.items())
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if hasattr(value, "__dict__"):
        return sum(nbytes(v) for v in vars(value).values())
    return sys.getsizeof(value)


class ByteLRU:
    """A thread-safe least-recently-used map holding at most `max_bytes` (and `max_items`) in all.

    `get_or_compute(key, compute)` computes a missing value once even under concurrent calls for
    the same key; a value larger than the whole budget is returned but not kept.
    """

    def __init__(self, max_bytes: int, max_items: int | None = None):
        self.max_bytes, self.max_items = int(max_bytes), max_items
        self._data: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._gates: dict[Hashable, threading.Lock] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._data

    def get(self, key):
        """The value for key (marking it recently used), or None."""
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key][0]

    def put(self, key, value, size: int | None = None) -> None:
        """Store value under key, evicting least recently used entries beyond the limits."""
        size = nbytes(value) if size is None else int(size)
        with self._lock:
            if key in self._data:
                self.bytes -= self._data.pop(key)[1]
            if size > self.max_bytes:
                return
            self._data[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes or (self.max_items is not None and len(self._data) > self.max_items):
                _, (_, freed) = self._data.popitem(last=False)
                self.bytes -= freed

    def get_or_compute(self, key, compute: Callable[[], object]) -> tuple[object, bool]:
        """(value, was_cached): the cached value, or compute() stored under key (computed once)."""
        value = self.get(key)
        if value is not None:
            return value, True
        with self._lock:
            gate = self._gates.setdefault(key, threading.Lock())
        with gate:
            value = self.get(key)
            if value is not None:
                return value, True
            try:
                value = compute()  # an exception (bad input, a cancel) caches nothing
                self.put(key, value)
            finally:
                with self._lock:
                    self._gates.pop(key, None)
        return value, False

    def keys(self) -> list:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._data)

    def evict_to(self, max_items: int) -> None:
        """Drop least recently used entries until at most `max_items` remain (room before a big new one)."""
        with self._lock:
            while len(self._data) > max(0, max_items):
                _, (_, freed) = self._data.popitem(last=False)
                self.bytes -= freed

    def pop(self, key):
        """Remove key and return its value (None when absent)."""
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is None:
                return None
            self.bytes -= entry[1]
            return entry[0]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0
