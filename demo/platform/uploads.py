"""Who uploaded what: uploads are used only by the visitor who sent them, and nobody fills the disk.

Gradio stores an upload at `<upload folder>/<hash of its bytes>/<file name>` and accepts any path
in that folder as an input, from anyone. So the middleware (demo/platform/guard.py) records each upload's
paths under the address that sent it, and the handlers check, with `check_own`, that the files a
request names were uploaded from the same address (or by nobody we know of: examples, defaults,
files the app made). Each address may keep at most `per_visitor_mb` of uploads alive (uploads live
`ttl_s`, then `delete_cache` removes them), and all visitors together `total_mb`.

On loopback (this machine's own clients, with no proxy) there is no address, and nothing is checked.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

from core.errors import UserInputError
from demo.platform.errors import OverQuota

MB = 1 << 20



class UploadLedger:
    """Paths uploaded per address, and the bytes each address (and everyone) uploaded within the TTL."""

    def __init__(self, ttl_s: float, per_visitor_mb: int, total_mb: int, max_paths: int = 200_000):
        self.ttl_s, self.per_visitor, self.total = float(ttl_s), per_visitor_mb * MB, total_mb * MB
        self.max_paths = max_paths
        self._owners: OrderedDict[str, set[str]] = OrderedDict()  # resolved path -> addresses
        self._sent: dict[str, deque[tuple[float, int]]] = {}  # address -> (time, bytes) within the TTL
        self._lock = threading.Lock()

    def _live(self, address: str | None, now: float) -> int:
        """Bytes uploaded within the TTL by `address` (everyone when None); drops expired entries."""
        total = 0
        for key in ([address] if address is not None else list(self._sent)):
            sent = self._sent.get(key)
            if not sent:
                continue
            while sent and sent[0][0] < now - self.ttl_s:
                sent.popleft()
            if not sent:
                del self._sent[key]
            total += sum(b for _, b in sent)
        return total

    def admit(self, address: str, nbytes: int, now: float | None = None) -> None:
        """Raise OverQuota if `nbytes` more from `address` would pass its allowance or the server's;
        otherwise count them."""
        now = time.monotonic() if now is None else now
        with self._lock:
            mine, everyone = self._live(address, now), self._live(None, now)
            if mine + nbytes > self.per_visitor:
                raise OverQuota(f"you have uploaded {mine / MB:,.0f} MB in the last {self.ttl_s / 60:g} minutes; "
                                    f"the limit is {self.per_visitor / MB:,.0f} MB per visitor")
            if everyone + nbytes > self.total:
                raise OverQuota(f"the server's upload space ({self.total / MB:,.0f} MB) is full; "
                                    "try again in a few minutes")
            self._sent.setdefault(address, deque()).append((now, int(nbytes)))

    def record(self, address: str, paths: list[str]) -> None:
        """Note that `address` uploaded these paths (the upload route's answer)."""
        with self._lock:
            for path in paths:
                key = _key(path)
                self._owners.setdefault(key, set()).add(address)
                self._owners.move_to_end(key)
            while len(self._owners) > self.max_paths:
                self._owners.popitem(last=False)

    def check_own(self, address: str, items) -> None:
        """Raise UserInputError if any file among `items` (paths, or Gradio FileData-like objects) was
        uploaded, but not from `address`. No address (loopback): nothing is checked."""
        if not address:
            return
        with self._lock:
            for item in items or []:
                path = getattr(item, "path", item)
                if not isinstance(path, (str, Path)):
                    continue
                owners = self._owners.get(_key(path))
                if owners is not None and address not in owners:
                    raise UserInputError("a file in this request was uploaded by another visitor; upload your own copy")


def _key(path) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError, ValueError):
        return str(path)
