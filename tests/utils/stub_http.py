"""A real HTTP server on 127.0.0.1 for tests of outbound calls: routes are
plain aiohttp handlers, and every request it receives is recorded."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StubServer:
    routes: list[tuple[str, str, Handler]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes.append((method, path, handler))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> StubServer:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.received.append(Received(request.method, request.path, dict(request.query),
                                          {k.lower(): v for k, v in request.headers.items()},
                                          await request.read()))
            return await handler(request)

        app = web.Application(middlewares=[record])
        for method, path, handler in self.routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
