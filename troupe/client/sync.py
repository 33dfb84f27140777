"""``Client``: the same API as ``AsyncClient`` without ``await``. It drives an ``AsyncClient`` on
an event loop of its own in a private thread, so it also works inside a program that runs a
loop of its own."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from troupe.client import models
from troupe.client.aio import AsyncClient, Resource

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="troupe-client", daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        if threading.current_thread() is self.thread:
            raise RuntimeError("the sync Client cannot be used from its own callbacks")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def iterate(self, agen: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self.run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self.run(agen.aclose())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class SyncResource:
    """A resource family of the sync client: the methods of ``AsyncClient``'s resource, returning
    values (and plain iterators for ``list``) instead of coroutines."""

    def __init__(self, inner: Resource[Any], loop: _Loop) -> None:
        self._inner = inner
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if inspect.isasyncgen(result):
                return self._loop.iterate(result)
            if inspect.isawaitable(result):
                return self._loop.run(result)
            return result

        call.__doc__ = attr.__doc__
        call.__name__ = name
        return call


class Client:
    """``with Client(url, email=..., password=...) as troupe: troupe.run_batch(workflow_id, inputs)``.

    Same arguments and methods as ``AsyncClient`` (see there), called without ``await``;
    ``list`` returns an iterator that pages lazily."""

    def __init__(self, base_url: str, *, email: str | None = None, password: str | None = None,
                 token: str | None = None, refresh_token: str | None = None, timeout: float = 60.0,
                 on_tokens: Callable[[str, str | None], None] | None = None) -> None:
        self._loop = _Loop()

        async def make() -> AsyncClient:
            return AsyncClient(base_url, email=email, password=password, token=token, refresh_token=refresh_token,
                               timeout=timeout, on_tokens=on_tokens)

        try:
            self.aio = self._loop.run(make())
        except BaseException:
            self._loop.close()
            raise
        self.companies = SyncResource(self.aio.companies, self._loop)
        self.agents = SyncResource(self.aio.agents, self._loop)
        self.tools = SyncResource(self.aio.tools, self._loop)
        self.workflows = SyncResource(self.aio.workflows, self._loop)
        self.tasks = SyncResource(self.aio.tasks, self._loop)
        self.files = SyncResource(self.aio.files, self._loop)
        self._closed = False
        if token is None:
            try:
                self.login()
            except BaseException:
                self.close()
                raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.run(self.aio.close())
            self._loop.close()

    @property
    def token(self) -> str | None:
        return self.aio.token

    @property
    def refresh_token(self) -> str | None:
        return self.aio.refresh_token

    def login(self, email: str | None = None, password: str | None = None) -> models.User:
        return self._loop.run(self.aio.login(email, password))

    def refresh(self) -> None:
        self._loop.run(self.aio.refresh())

    def me(self) -> models.User:
        return self._loop.run(self.aio.me())

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._loop.run(self.aio.request(method, path, **kwargs))

    def data(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._loop.run(self.aio.data(method, path, **kwargs))

    def run_batch(self, workflow_id: str, inputs: Iterable[Any], *, chunk_size: int = 500, progress: bool = True,
                  timeout: float | None = None, priority: str = "medium",
                  variables: dict[str, Any] | None = None) -> list[models.ItemResult]:
        """See ``AsyncClient.run_batch``."""
        return self._loop.run(self.aio.run_batch(workflow_id, inputs, chunk_size=chunk_size, progress=progress,
                                                 timeout=timeout, priority=priority, variables=variables))

    def run(self, workflow_id: str, input: Any = None, *,  # noqa: A002 - the API's name
            timeout: float | None = None, variables: dict[str, Any] | None = None,
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> models.ItemResult:
        """See ``AsyncClient.run``."""
        return self._loop.run(self.aio.run(workflow_id, input, timeout=timeout, variables=variables,
                                           on_progress=on_progress))
