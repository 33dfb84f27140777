"""``/api/ws``: the WebSocket endpoint (the protocol is in connection.py and the README)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket

from troupe.platform.realtime import connection
from troupe.platform.realtime.drain import watch_drain
from troupe.platform.realtime.hub import get_hub

router = APIRouter(tags=["realtime"])


@router.websocket("/api/ws")
async def websocket_endpoint(
    websocket: WebSocket,
    token: Annotated[str | None, Query(max_length=4096)] = None,
    last_event_id: Annotated[str | None, Query(alias="lastEventId", max_length=64)] = None,
) -> None:
    # Register graceful close once per app; the hub lives as long as the replica's loop.
    state = websocket.app.state
    if not getattr(state, "realtime_shutdown_registered", False):
        state.realtime_shutdown_registered = True
        state.shutdown_hooks.append(get_hub().shutdown)
    await connection.serve(websocket, token=token, last_event_id=last_event_id)


async def startup_hook() -> None:
    # Under Serve the shutdown hooks run only after every socket has gone, so the
    # goodbye is triggered by the replica starting to drain.
    watch_drain(get_hub().shutdown)
