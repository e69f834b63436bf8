"""Each visitor's requests in flight, counted by the guard itself from what passes through it.

A queue join that the guard lets through is counted for its visitor (browser session, and address
where there is one) from that moment, so a burst of joins cannot slip past the cap before Gradio
has queued them. It stops counting when Gradio's event stream (GET .../queue/data) reports the
event completed, when the visitor cancels it, or `expire_s` after the join (a stream nobody
reads). Nothing here reads Gradio's private queue.
"""

from __future__ import annotations

import json
import secrets
import threading
import time


class InFlight:
    """Joined-but-not-completed requests, by event id (a provisional token until Gradio names the event)."""

    def __init__(self, expire_s: float = 900.0, max_entries: int = 100_000):
        self.expire_s, self.max_entries = float(expire_s), int(max_entries)
        self._entries: dict[str, tuple[str, str, float]] = {}  # event id or token -> (session, address, since)
        self._lock = threading.Lock()

    def joined(self, session: str, address: str) -> str:
        """Count a join that is being let through; returns its provisional token."""
        token = "pending-" + secrets.token_hex(8)
        with self._lock:
            self._entries[token] = (session or "", address or "", time.monotonic())
            while len(self._entries) > self.max_entries:
                self._entries.pop(next(iter(self._entries)))
        return token

    def named(self, token: str, event_id: str | None) -> None:
        """Gradio accepted the join as `event_id` (None: it refused it, nothing to count)."""
        with self._lock:
            entry = self._entries.pop(token, None)
            if entry is not None and event_id:
                self._entries[event_id] = entry

    def has(self, token: str) -> bool:
        """Whether a token or event id is being counted."""
        with self._lock:
            return token in self._entries

    def done(self, event_id: str | None) -> None:
        """The event completed or was cancelled."""
        with self._lock:
            self._entries.pop(event_id or "", None)

    def count(self, session: str, address: str = "") -> int:
        """Requests in flight for this session, or (when given) from this address."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, (_, _, since) in self._entries.items() if now - since > self.expire_s]:
                del self._entries[key]
            return sum(1 for s, a, _ in self._entries.values() if (session and s == session) or (address and a == address))

    def completed_in(self, chunk: str) -> list[str]:
        """The event ids that an event-stream chunk reports completed (its 'data: {...}' lines)."""
        ids = []
        for line in chunk.splitlines():
            if not line.startswith("data:") or "process_completed" not in line:
                continue
            try:
                message = json.loads(line[5:].strip())
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("msg") == "process_completed":
                ids.append(message.get("event_id"))
        return ids
