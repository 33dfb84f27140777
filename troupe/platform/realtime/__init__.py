"""Real time: the WebSocket endpoint, rooms, cross-replica delivery and replay."""
