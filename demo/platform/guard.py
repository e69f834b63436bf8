"""Limits enforced before any work is done: request bodies, requests in flight per visitor, the rate.

`GuardMiddleware` sits in front of Gradio's routes (an ASGI middleware, passed to the FastAPI app
through `launch(app_kwargs=...)`):
- a request body larger than its route's limit is refused with 413 before it is read into memory
  (by Content-Length, and by counting the bytes of a streamed body);
- a visitor (a browser session, or an IP address: the Spaces proxy passes the client's address in
  X-Forwarded-For) with `max_in_flight` requests already queued or running (counted by the guard
  itself, demo/platform/in_flight.py, from joins to completions) gets 429 for one more,
  and an address may start at most `rate_per_minute` requests a minute (`burst` at once), so that
  nobody can fill the queue, or keep it busy, and starve the others.
"""

from __future__ import annotations

import json
import time
from typing import Callable

from core.errors import UserFacingError, UserInputError
from demo.platform.in_flight import InFlight

JOIN_SUFFIX = "/queue/join"
DATA_SUFFIX = "/queue/data"
CANCEL_SUFFIX = "/cancel"
UPLOAD_SUFFIX = "/upload"


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def client_ip(scope) -> str:
    """The visitor's address: the last X-Forwarded-For hop (the one the Spaces proxy appends; earlier
    hops come from the client and can be forged), else the peer's address. "" for a loopback peer
    without a proxy (this machine's own clients: tests, the load test), which the per-IP cap skips."""
    for name, value in scope.get("headers") or []:
        if name == b"x-forwarded-for" and value:
            return value.decode("latin-1").split(",")[-1].strip()
    client = scope.get("client")
    host = client[0] if client else ""
    return "" if host in LOOPBACK else host


class GuardMiddleware:
    """ASGI middleware: body-size limits per route, and a cap on each visitor's requests in flight."""

    def __init__(self, app, ctx=None, max_body: int = 1 << 20, max_upload_body: int = 128 << 20,
                 max_in_flight: int = 4, per_ip: bool = True, rate_per_minute: float = 30, burst: int = 8):
        self.app, self.ctx = app, ctx  # ctx: the AppContext (its jobs and upload ledger)
        self.in_flight = InFlight(expire_s=2 * getattr(getattr(ctx, "config", None), "time_limit_s", 600) + 60)
        self.max_body, self.max_upload_body = max_body, max_upload_body
        self.max_in_flight, self.per_ip = max_in_flight, per_ip
        self.rates = RateLimiter(rate_per_minute, burst)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path", "").endswith(DATA_SUFFIX):
            return await self.app(scope, receive, self._watching(send))  # completions end the in-flight counts
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = self.max_upload_body if path.endswith("/upload") else self.max_body
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _reply(send, 413, f"the request is {int(length):,} bytes; the limit is {limit:,}")
        if path.endswith(CANCEL_SUFFIX):
            body = await _read(receive, limit)
            if body is None:
                return await _reply(send, 413, f"the request is over the limit of {limit:,} bytes")
            self.stop_session(body)  # gradio_client's job.cancel(): stop the work, not only the waiting
            return await self.app(scope, _replay(body), send)
        if path.endswith(JOIN_SUFFIX):
            body = await _read(receive, limit)
            if body is None:
                return await _reply(send, 413, f"the request is over the limit of {limit:,} bytes")
            refusal = self.refusal(body, scope)
            if refusal:
                return await _reply(send, 429, refusal)
            token = self.in_flight.joined(str(_fields(body).get("session_hash") or ""), client_ip(scope) if self.per_ip else "")
            return await self.app(scope, _replay(body), _joining(send, lambda event_id: self.in_flight.named(token, event_id)))
        uploads = getattr(self.ctx, "uploads", None)
        ip = client_ip(scope)
        if path.endswith(UPLOAD_SUFFIX) and uploads is not None and ip:
            try:  # an address's uploads count against its allowance, and are recorded as its own
                uploads.admit(ip, int(length) if length is not None and length.isdigit() else limit)
            except UserFacingError as e:  # over the address's or the server's allowance
                return await _reply(send, 429, str(e))
            return await self.app(scope, _counting(receive, limit), _recording(send, lambda paths: uploads.record(ip, paths)))
        return await self.app(scope, _counting(receive, limit), send)

    def _watching(self, send):
        """A send() for Gradio's event stream: the events it reports completed stop counting as in flight."""
        async def wrapped(message):
            if message["type"] == "http.response.body" and message.get("body"):
                for event_id in self.in_flight.completed_in(str(message["body"], "utf-8", "replace")):
                    self.in_flight.done(event_id)
            await send(message)
        return wrapped

    def stop_session(self, body: bytes) -> None:
        """A cancel from a client: set the Stop flags of that session's running jobs; the event no longer counts."""
        fields = _fields(body)
        self.in_flight.done(fields.get("event_id"))
        jobs = getattr(self.ctx, "jobs", None)
        if jobs is not None and fields.get("session_hash"):
            jobs.stop(fields["session_hash"])

    def refusal(self, body: bytes, scope) -> str | None:
        """Why this queue join is refused (the visitor's requests in flight are at the cap), or None."""
        session = _fields(body).get("session_hash")
        ip = client_ip(scope) if self.per_ip else ""
        count = self.in_flight.count(session or "", ip)
        jobs = getattr(self.ctx, "jobs", None)
        if jobs is not None and not count:  # work whose event was cancelled, not yet at its next Stop check
            count = jobs.running(session)
        if count >= self.max_in_flight:
            return (f"you already have {count} requests waiting or running (the limit is {self.max_in_flight} "
                    "per visitor): wait for one to finish")
        if ip and not self.rates.allow(ip):
            return (f"too many requests from your address (the limit is {self.rates.per_minute:g} a minute, "
                    f"{self.rates.burst} at once): wait a few seconds")
        return None


class RateLimiter:
    """A token bucket per key (a visitor's IP): `burst` requests at once, then `per_minute` a minute.
    Thread-safe enough for one event loop; at most `max_keys` visitors are remembered."""

    def __init__(self, per_minute: float, burst: int, max_keys: int = 10_000):
        self.per_minute, self.burst, self.max_keys = float(per_minute), int(burst), max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take one token for `key` if it has one; False when it is out of them."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_minute / 60.0)
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.pop(next(iter(self._buckets)))  # forget the oldest visitor
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _fields(body: bytes) -> dict:
    """A join's or cancel's JSON body as a dict ({} when it is not one: Gradio answers a malformed body)."""
    try:
        fields = json.loads(body or b"{}")
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _joining(send, named: Callable[[str | None], None]):
    """A send() that passes the join's answer on to `named`: its event id, or None when Gradio refused it."""
    status, chunks = [0], []

    async def wrapped(message):
        if message["type"] == "http.response.start":
            status[0] = message.get("status", 0)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                event_id = None
                if status[0] == 200:
                    try:
                        event_id = json.loads(b"".join(chunks) or b"{}").get("event_id")
                    except (ValueError, AttributeError):
                        event_id = None
                named(event_id)
        await send(message)

    return wrapped


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _recording(send, record: Callable[[list[str]], None]):
    """A send() that passes the upload route's answer (a JSON list of stored paths) to `record`."""
    status, chunks = [0], []

    async def wrapped(message):
        if message["type"] == "http.response.start":
            status[0] = message.get("status", 0)
        elif message["type"] == "http.response.body" and status[0] == 200:
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                try:
                    paths = json.loads(b"".join(chunks) or b"[]")
                except ValueError:
                    paths = []
                if isinstance(paths, list):
                    record([p for p in paths if isinstance(p, str)])
        await send(message)

    return wrapped


def _counting(receive, limit: int):
    """A receive() that fails once a streamed body passes `limit` bytes (no Content-Length given)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise UserInputError(f"the request is over the limit of {limit:,} bytes")
        return message

    return wrapped


