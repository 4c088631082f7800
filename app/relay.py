"""An HTTP request carried whole from one process to another, and the rule for sending it again.

Ray Serve's proxy answers 500 for a request whose replica dies holding it (its process killed, its
node lost); the proxy does not send it elsewhere. So on Serve the service's HTTP entry is a thin
ingress deployment (app.serve.FashionIngress) that hands each request, as a ``Relayed`` value, to a
replica of the service over a Serve handle, which runs it through its own copy of the FastAPI app
(``run_asgi``). When the replica dies before answering, a request that is safe to repeat is sent to
another replica; any other is answered 503 with ``Retry-After``. This module is that logic, without
Ray, so that it is tested on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message

from app.errors import ServiceError, error_response
from app.multipart import MULTIPART_SLACK, read_body

Headers = list[tuple[bytes, bytes]]

# Requests that change nothing, so that running them twice (once on a replica that died midway)
# does no harm. An admin change (a reindex, items added) may have been applied before the replica
# died: it is not sent again, the client is told to retry after checking.
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REPEATABLE_POSTS = frozenset({"/recommend"})
ATTEMPTS = 3  # one replica dying, then the next one tried dying too, is already rare
RETRY_AFTER_S = 1
ATTEMPTS_HEADER = "X-Serve-Attempts"  # on an answer that took more than one replica


@dataclass(frozen=True)
class Relayed:
    """One HTTP request as the ingress received it, body read whole."""

    method: str
    path: str  # decoded, as ASGI's scope has it: the root path (a route prefix) included
    raw_path: bytes
    query: bytes
    headers: Headers
    body: bytes
    client: tuple[str, int] | None
    root_path: str = ""
    scheme: str = "http"
    server: tuple[str, int | None] | None = None

    @property
    def route(self) -> str:
        """The path within the app (without the root path the app is mounted at)."""
        return self.path[len(self.root_path) :] if self.path.startswith(self.root_path) else self.path

    @property
    def repeatable(self) -> bool:
        return self.method in REPEATABLE_METHODS or (self.method == "POST" and self.route in REPEATABLE_POSTS)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Headers
    body: bytes


def body_limit(max_upload_bytes: int) -> int:
    """The largest body any route takes: a photo in a multipart form (the app checks the exact limits)."""
    return max_upload_bytes + MULTIPART_SLACK


async def relayed(request: Request, limit: int) -> Relayed:
    """``request`` read whole, up to ``limit`` bytes (ServiceError 413 beyond: never read whole first)."""
    scope = request.scope
    client = (request.client.host, request.client.port) if request.client else None
    server = scope.get("server")
    return Relayed(
        request.method,
        scope["path"],
        scope.get("raw_path") or scope["path"].encode(),
        scope.get("query_string", b""),
        [(bytes(k), bytes(v)) for k, v in scope["headers"]],
        await read_body(request, limit),
        client,
        scope.get("root_path", ""),
        scope.get("scheme", "http"),
        (server[0], server[1]) if server else None,
    )


async def run_asgi(app: ASGIApp, request: Relayed) -> Reply:
    """Run ``request`` through the ASGI ``app`` (its lifespan already running) and collect its answer."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path,
        "root_path": request.root_path,
        "query_string": request.query,
        "headers": request.headers,
        "client": request.client,
        "server": request.server,
    }
    answered = asyncio.Event()
    delivered = False
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await answered.wait()  # the client stays connected until the whole answer is sent
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    try:
        await app(scope, receive, send)
    except Exception:
        # Starlette's error middleware sends its 500 (the app's JSON) and then raises again, for the
        # server to log: the answer stands once it has been sent whole.
        if not (start and answered.is_set()):
            raise
    answered.set()
    return Reply(int(start["status"]), [(bytes(k), bytes(v)) for k, v in start.get("headers", [])], b"".join(chunks))


class ReplicaLost(Exception):
    """The replica holding the request died (or cannot be reached) before answering."""


async def relay(request: Relayed, send: Callable[[Relayed], Awaitable[Reply]]) -> Response:
    """Send ``request`` to a replica (``send`` raises ReplicaLost when that replica died holding it);
    a repeatable request goes to another replica, up to ATTEMPTS in all; any other is answered 503."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            reply = await send(request)
        except ReplicaLost as exc:
            if request.repeatable and attempt < ATTEMPTS:
                continue
            detail = (
                f"every replica tried stopped before answering ({exc}); try again"
                if request.repeatable
                else f"the replica handling this change stopped before answering ({exc}), perhaps after queuing "
                "it: sending it again is safe (items are added, replaced and deleted by id, a reindex rebuilds "
                "the whole bundle) but may run it twice"
            )
            return error_response(503, "replica_lost", detail, {"Retry-After": str(RETRY_AFTER_S)})
        response = Response(reply.body, status_code=reply.status)
        response.raw_headers = list(reply.headers)  # the app's own, content-length included
        if attempt > 1:
            response.raw_headers.append((ATTEMPTS_HEADER.lower().encode(), str(attempt).encode()))
        return response
    raise AssertionError("unreachable")


async def relay_http(request: Request, limit: int, send: Callable[[Relayed], Awaitable[Reply]]) -> Response:
    """The ingress's whole answer to ``request``: read it (413 past ``limit``), then ``relay`` it."""
    try:
        carried = await relayed(request, limit)
    except ServiceError as exc:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)
    return await relay(carried, send)
