"""Following runs to their end: ``task:progress`` events from the company's WebSocket room tell
which tasks finished (and drive the progress bar); their outputs are then read over HTTP. Polling
covers what the socket misses (it is down, or an event was lost)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from troupe.client import models
from troupe.client.errors import TroupeError

if TYPE_CHECKING:
    from troupe.client.aio import AsyncClient

POLL_WITH_SOCKET = 5.0  # seconds between safety sweeps while events arrive
POLL_WITHOUT_SOCKET = 1.0
FETCH_ONE_BY_ONE = 20  # fewer finished-but-unread tasks than this are read one by one, more by listing
PING_EVERY = 20.0


class BatchFollower:
    def __init__(self, client: AsyncClient, *, company_id: str, total: int, progress: bool, label: str = "",
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._client = client
        self._company_id = company_id
        self._on_progress = on_progress
        self._ids: list[str] = []
        self._wanted: set[str] = set()
        self._since: datetime | None = None
        self._workflow_id: str | None = None
        self._finished_seen: set[str] = set()  # said finished (event or row), maybe not read yet
        self._failed_seen = 0
        self._early: dict[str, dict[str, Any]] = {}  # events for tasks whose ids the batch answer has not given yet
        self._rows: dict[str, models.Task] = {}  # finished rows, read
        self._last: dict[str, str] = {}  # last known status
        self._reported: dict[str, tuple[str, float]] = {}  # last (status, progress) given to on_progress
        self._changed = asyncio.Event()
        self._joined = asyncio.Event()
        self.socket_ok = False
        self._socket_task: asyncio.Task[None] | None = None
        self._bar: Any = None
        self._bar_task: Any = None
        self._total = total
        self._label = label
        if progress and total and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=False)

    async def __aenter__(self) -> BatchFollower:
        self._socket_task = asyncio.create_task(self._socket_loop())
        # Joined before anything is submitted, so no event of ours can pass unseen (polling covers the rest).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._joined.wait(), 10)
        if self._bar is not None:
            self._bar.start()
            self._bar_task = self._bar.add_task(self._label[:40] or "tasks", total=self._total, failed=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._socket_task is not None:
            self._socket_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._socket_task
        if self._bar is not None:
            self._bar.stop()

    def add(self, ids: list[str], created: list[datetime | None], *, workflow_id: str) -> None:
        self._workflow_id = workflow_id
        for task_id, at in zip(ids, created, strict=True):
            self._ids.append(task_id)
            self._wanted.add(task_id)
            self._last[task_id] = "pending"
            if at is not None and (self._since is None or at < self._since):
                self._since = at
            if (early := self._early.pop(task_id, None)) is not None:
                self._on_event(early)

    # -- progress ---------------------------------------------------------------------------------

    def _saw(self, task_id: str, status: str) -> None:
        self._last[task_id] = status
        if status in models.FINISHED and task_id not in self._finished_seen:
            self._finished_seen.add(task_id)
            self._failed_seen += status != "completed"
            if self._bar is not None:
                self._bar.update(self._bar_task, completed=len(self._finished_seen), failed=self._failed_seen)
            self._changed.set()

    def _report(self, payload: dict[str, Any]) -> None:
        if self._on_progress is None:
            return
        task_id = str(payload.get("taskId"))
        if self._reported.get(task_id, ("", -1))[0] in models.FINISHED:
            return  # nothing after the end
        self._reported[task_id] = (str(payload.get("status")), float(payload.get("progress") or 0))
        self._on_progress(payload)

    def _on_event(self, payload: dict[str, Any]) -> None:
        task_id = str(payload.get("taskId") or "")
        if task_id not in self._wanted:
            if len(self._early) < 100_000:
                self._early[task_id] = payload
            return
        self._report(payload)
        if isinstance(payload.get("status"), str):
            self._saw(task_id, payload["status"])

    # -- the socket -------------------------------------------------------------------------------

    async def _socket_loop(self) -> None:
        try:
            await self._follow_socket()
        finally:
            self.socket_ok = False
            self._joined.set()  # never leave the opener waiting

    async def _follow_socket(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        last_event: str | None = None
        failures = 0
        counter = itertools.count()
        while failures < 5:
            try:
                token = await self._client.fresh_token()
                url = self._client.base_url.replace("http", "ws", 1) + f"/api/ws?token={token}"
                async with connect(url, max_size=2**22, open_timeout=10, ping_interval=None) as ws:
                    room = f"company:{self._company_id}"
                    join_id = f"join-{next(counter)}"
                    payload: dict[str, Any] = {"room": room}
                    if last_event:
                        payload["lastEventId"] = last_event
                    await ws.send(json.dumps({"id": join_id, "type": "join_room", "payload": payload}))
                    pinged = time.monotonic()
                    while True:
                        try:
                            raw = await asyncio.wait_for(ws.recv(), PING_EVERY)
                        except TimeoutError:
                            raw = None
                        if time.monotonic() - pinged >= PING_EVERY:
                            await ws.send(json.dumps({"id": f"ping-{next(counter)}", "type": "ping",
                                                      "payload": {"timestamp": int(time.time() * 1000)}}))
                            pinged = time.monotonic()
                        if raw is None:
                            continue
                        message = json.loads(raw)
                        kind = message.get("type")
                        if message.get("streamId"):
                            last_event = message["streamId"]
                        if kind == "join_room" and message.get("id") == join_id:
                            self.socket_ok, failures = True, 0
                            self._joined.set()
                        elif kind == "error" and message.get("id") == join_id:
                            return  # not allowed in the room: polling only
                        elif kind == "task:progress":
                            self._on_event(message.get("payload") or {})
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, InvalidStatus, TroupeError,
                    json.JSONDecodeError):
                pass
            self.socket_ok = False
            failures += 1
            self._changed.set()  # the waiter switches to fast polling
            await asyncio.sleep(min(2.0 * failures, 5.0))

    # -- waiting ----------------------------------------------------------------------------------

    async def wait(self, *, bound: float | None, inputs: list[Any]) -> list[models.ItemResult]:
        deadline = None if bound is None else time.monotonic() + bound
        last_sweep = 0.0
        while len(self._rows) < len(self._ids):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            interval = POLL_WITH_SOCKET if self.socket_ok else POLL_WITHOUT_SOCKET
            pause = interval if left is None else min(interval, left)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), pause)
            self._changed.clear()
            unread = [t for t in self._finished_seen if t not in self._rows]
            due = time.monotonic() - last_sweep >= interval
            if len(unread) >= FETCH_ONE_BY_ONE or due:
                await asyncio.sleep(0.3)  # let a burst of endings gather into one sweep
                await self._sweep()
                last_sweep = time.monotonic()
            elif unread:
                await self._read(unread)
        results = []
        for index, task_id in enumerate(self._ids):
            row = self._rows.get(task_id)
            if row is not None:
                results.append(models.ItemResult(index, task_id, row.status, row.output, row.error, inputs[index]))
            else:
                results.append(models.ItemResult(index, task_id, self._last.get(task_id, "pending"), None, {
                    "code": "SYS_006", "message": f"not finished within {bound} s"}, inputs[index]))
        return results

    def _take(self, row: models.Task) -> None:
        if row.id in self._wanted:
            if self._on_progress is not None and (row.status, float(row.progress or 0)) != self._reported.get(row.id):
                # What polling learnt is progress too (the socket may be down or behind).
                self._report({"taskId": row.id, "progress": row.progress, "status": row.status,
                              "currentStep": row.current_step, "message": None})
            self._saw(row.id, row.status)
            if row.status in models.FINISHED:
                self._rows[row.id] = row

    async def _read(self, ids: list[str]) -> None:
        rows = await asyncio.gather(*(self._client.tasks.get(t) for t in ids))
        for row in rows:
            self._take(row)

    async def _sweep(self) -> None:
        """Read every unfinished task of ours: one by one when few remain, else by listing the
        workflow's tasks created since the first of ours."""
        remaining = [t for t in self._ids if t not in self._rows]
        if not remaining:
            return
        if len(remaining) <= FETCH_ONE_BY_ONE or self._since is None:
            for start in range(0, len(remaining), 50):
                await self._read(remaining[start:start + 50])
            return
        async for row in self._client.tasks.list(workflow_id=self._workflow_id, start_date=_rfc3339(self._since),
                                                 sort="createdAt", order="asc"):
            self._take(row)


def _rfc3339(value: datetime) -> str:
    """The server refuses a time without an offset; the API's own times carry one."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()
