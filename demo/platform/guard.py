"""Limits enforced before any work is done: request bodies, requests in flight per visitor, the rate.

`GuardMiddleware` sits in front of Gradio's routes (an ASGI middleware, passed to the FastAPI app
through `launch(app_kwargs=...)`):
- a request body larger than its route's limit is refused with 413 before it is read into memory
  (by Content-Length, and by counting the bytes of a streamed body);
- every route that creates work passes one gate: a queue join (`/queue/join`, the page and
  gradio_client), a simple call (`/call/<api>`, curl) and an MCP tool call (`tools/call` on `/mcp/`).
  A visitor (a browser session, or an IP address: the Spaces proxy passes the client's address in
  X-Forwarded-For) with `max_in_flight` requests already waiting or running gets 429 for one more,
  and an address may start at most `rate_per_minute` requests a minute (`burst` at once), so that
  nobody can fill the queue, or keep it busy, and starve the others. The guard counts each admitted
  request itself (demo/platform/in_flight.py) until its event completes: Gradio's event streams
  (`/queue/data`, `/call/<api>/<event_id>`) say when, as does a cancel; a stream nobody reads expires.
- An MCP tool call reaches the app again as a queue join from Gradio's own loopback client (one
  shared session for every agent). The guard marks the tool call with a one-time token header,
  which Gradio forwards with the join; the join then counts as the tool call's, not again.
"""

from __future__ import annotations

import json
import time
from typing import Callable

from core.errors import UserFacingError
from demo.platform.errors import plain_refusal
from demo.platform.in_flight import InFlight

JOIN_SUFFIX = "/queue/join"
DATA_SUFFIX = "/queue/data"
CANCEL_SUFFIX = "/cancel"
UPLOAD_SUFFIX = "/upload"
CALL_PART = "/call/"
MCP_PART = "/mcp"
ADMITTED = b"x-clip-lab-admitted"  # the token header of an MCP tool call, forwarded to its queue join


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


def work_route(method: str, path: str) -> str:
    """Which gate a request passes: 'join', 'call', 'mcp' (may hold a tool call), 'cancel', 'upload', or ''."""
    if method != "POST":
        return ""
    if path.endswith(JOIN_SUFFIX):
        return "join"
    if CALL_PART in path:
        return "call"
    if MCP_PART in path:
        return "mcp"
    if path.endswith(CANCEL_SUFFIX):
        return "cancel"
    return "upload" if path.endswith(UPLOAD_SUFFIX) else ""


class BodyTooLarge(Exception):
    """A streamed body (no Content-Length) passed its route's limit."""


class GuardMiddleware:
    """ASGI middleware: body-size limits per route, and one gate (in flight, rate) for every route that creates work."""

    def __init__(self, app, ctx=None, max_body: int = 1 << 20, max_upload_body: int = 128 << 20,
                 max_in_flight: int = 4, per_ip: bool = True, rate_per_minute: float = 30, burst: int = 8):
        self.app, self.ctx = app, ctx  # ctx: the AppContext (its jobs and upload ledger)
        self.in_flight = InFlight(expire_s=2 * getattr(getattr(ctx, "config", None), "time_limit_s", 600) + 60)
        self.max_body, self.max_upload_body = max_body, max_upload_body
        self.max_in_flight, self.per_ip = max_in_flight, per_ip
        self.rates = RateLimiter(rate_per_minute, burst)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope.get("method"), scope.get("path", "")
        if method == "GET" and (path.endswith(DATA_SUFFIX) or CALL_PART in path):
            return await self.app(scope, receive, self._watching(send, path))  # completions end the in-flight counts
        if method not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        route = work_route(method, path)
        limit = self.max_upload_body if route == "upload" else self.max_body
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _reply(send, 413, f"the request is {int(length):,} bytes; the limit is {limit:,}")
        if route == "upload":
            return await self._upload(scope, receive, send, length, limit)
        body = await _read(receive, limit)  # at most 1 MB: read whole, so an oversized stream gets its 413
        if body is None:
            return await _reply(send, 413, f"the request is over the limit of {limit:,} bytes")
        if route == "cancel":
            self.stop_session(body)  # gradio_client's job.cancel(): stop the work, not only the waiting
        elif route in ("join", "call") or (route == "mcp" and _tool_calls(body)):
            return await self._admit(route, scope, body, receive, send)
        return await self.app(scope, _replay(body, receive), send)

    async def _admit(self, route: str, scope, body: bytes, receive, send):
        """Let a request that creates work through the gate, counted for its visitor, or refuse it with 429."""
        fields = _fields(body)
        session = str(fields.get("session_hash") or "") if route != "mcp" else ""
        ip = client_ip(scope) if self.per_ip else ""
        token = _header(scope, ADMITTED)
        if route == "join" and token and self.in_flight.has(token):
            pass  # an MCP tool call's own join (Gradio's loopback client): counted when the tool call came in
        else:
            if route == "mcp" and _tool_calls(body) > 1:
                return await _reply(send, 429, "one tool call per request")
            refusal = self.refusal(session, ip)
            if refusal:
                return await _reply(send, 429, refusal)
            token = self.in_flight.joined(session, ip)
        if route == "mcp":
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != ADMITTED] + [(ADMITTED, token.encode())]
            scope = {**scope, "headers": headers}
            try:
                return await self.app(scope, _replay(body, receive), send)
            finally:
                if not scope.get("path", "").rstrip("/").endswith("messages"):
                    self.in_flight.done(token)  # streamable HTTP: the answer is out (SSE transport answers later)
        return await self.app(scope, _replay(body, receive), _joining(send, lambda event_id: self.in_flight.named(token, event_id)))

    async def _upload(self, scope, receive, send, length, limit: int):
        """An upload: counted against the address's allowance and recorded as its own; a stream past `limit` gets 413."""
        uploads, ip = getattr(self.ctx, "uploads", None), client_ip(scope)
        if uploads is None or not ip:
            return await _bounded(self.app, scope, _counting(receive, limit), send, limit)
        try:  # an address's uploads count against its allowance, and are recorded as its own
            uploads.admit(ip, int(length) if length is not None and length.isdigit() else limit)
        except UserFacingError as e:  # over the address's or the server's allowance
            return await _reply(send, 429, str(e))
        recording = _recording(send, lambda paths: uploads.record(ip, paths))
        return await _bounded(self.app, scope, _counting(receive, limit), recording, limit)

    def _watching(self, send, path: str):
        """A send() for Gradio's event streams: the events they report completed stop counting as in flight
        (`/queue/data` names them in its messages; `/call/<api>/<event_id>` in its path)."""
        call_event = path.rstrip("/").rsplit("/", 1)[-1] if CALL_PART in path else None

        async def wrapped(message):
            if message["type"] == "http.response.body" and message.get("body"):
                text = str(message["body"], "utf-8", "replace")
                for event_id in self.in_flight.completed_in(text):
                    self.in_flight.done(event_id)
                if call_event and ("event: complete" in text or "event: error" in text):
                    self.in_flight.done(call_event)
            await send(message)
        return wrapped

    def stop_session(self, body: bytes) -> None:
        """A cancel from a client: set the Stop flags of that session's running jobs; the event no longer counts."""
        fields = _fields(body)
        self.in_flight.done(fields.get("event_id"))
        jobs = getattr(self.ctx, "jobs", None)
        if jobs is not None and fields.get("session_hash"):
            jobs.stop(fields["session_hash"])

    def refusal(self, session: str, ip: str) -> str | None:
        """Why a new request of this visitor is refused (its requests in flight are at the cap, or its
        address is over the rate), or None."""
        count = self.in_flight.count(session, ip)
        jobs = getattr(self.ctx, "jobs", None)
        if jobs is not None and session and not count:  # work whose event was cancelled, not yet at its next Stop check
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


async def _bounded(app, scope, receive, send, limit: int):
    """Run the app on a streamed body; one that passes `limit` gets 413 (if the answer has not started)."""
    started = [False]

    async def watched(message):
        started[0] = started[0] or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, watched)
    except BodyTooLarge:
        if not started[0]:
            await _reply(send, 413, f"the request is over the limit of {limit:,} bytes")


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return ""


def _tool_calls(body: bytes) -> int:
    """How many MCP tool calls a JSON-RPC body holds (a batch may hold several)."""
    try:
        message = json.loads(body or b"{}")
    except ValueError:
        return 0
    messages = message if isinstance(message, list) else [message]
    return sum(isinstance(m, dict) and m.get("method") == "tools/call" for m in messages)


def _fields(body: bytes) -> dict:
    """A join's or cancel's JSON body as a dict ({} when it is not one: Gradio answers a malformed body)."""
    try:
        fields = json.loads(body or b"{}")
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _joining(send, named: Callable[[str | None], None]):
    """A send() that passes the join's answer on to `named` (its event id, or None when Gradio refused it),
    and turns Gradio's refusal of the inputs (400, a long text with Python reprs) into one readable line."""
    status, chunks, start = [0], [], {}

    async def wrapped(message):
        if message["type"] == "http.response.start":
            status[0] = message.get("status", 0)
            if status[0] != 400:
                return await send(message)
            start.update(message)  # held until the body is known: a rewritten body has another length
            return
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                body = b"".join(chunks)
                event_id = None
                if status[0] == 200:
                    try:
                        event_id = json.loads(body or b"{}").get("event_id")
                    except (ValueError, AttributeError):
                        event_id = None
                named(event_id)
                if start:
                    return await _reply(send, 400, plain_refusal(_fields(body).get("detail") or ""))
            elif start:
                return
        await send(message)

    return wrapped


def _replay(body: bytes, receive=None):
    """A receive() that hands the app the body already read, then the connection's own messages (a
    streamed answer, like MCP's, listens for the client's disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive() if receive is not None else {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


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
            raise BodyTooLarge(limit)
        return message

    return wrapped


