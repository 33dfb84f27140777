"""A clean stop: `python -m troupe run` (what `make run` runs) stopped with SIGTERM
exits within 10 s and leaves nothing it started running, the embedded Postgres and
Redis included; a one-shot command (`migrate`, like a test or bench session) stops
the embedded servers it started when it exits. Each case has a data directory of
its own, so the servers here are this test's and no one else's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from troupe.infra.devstack import free_port

ROOT = Path(__file__).resolve().parent.parent


def _env(data_dir: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TROUPE_", "DATABASE_", "REDIS_", "RAY_", "JWT_", "STORAGE_", "PORT"))}
    return {**base, "TROUPE_DATA_DIR": str(data_dir), "TROUPE_ENV": "development", "PORT": str(free_port()),
            "TROUPE_METRICS_PORT": str(free_port()), "TROUPE_AGENT_POOL_SIZE": "0",
            # Serve's fixed side ports would collide with other Serve instances on this machine.
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port())}


def _servers_of(data_dir: Path) -> list[psutil.Process]:
    """Postgres and Redis processes serving this data directory (wherever they were re-parented)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline and (proc.info["name"] or "").startswith("postgres"):
            found.append(proc)
    # Redis retitles its process (no path in it): its pid file says which one it is.
    try:
        redis = psutil.Process(int((data_dir / "redis" / "redis.pid").read_text()))
        if redis.name().startswith("redis"):
            found.append(redis)
    except (OSError, ValueError, psutil.Error):
        pass
    return found


def _gone(procs: list[psutil.Process], within: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=within)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _start_run(env: dict[str, str], log: Path) -> subprocess.Popen | None:
    """`python -m troupe run` until healthy; None if it exited first (then it must have
    stopped what it started, too)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "troupe", "run"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['PORT']}/api/settings/health"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise AssertionError("the service did not come up:\n" + log.read_text()[-3000:])


def test_sigterm_stops_run_and_everything_it_started_within_10s(tmp_path: Path):
    data_dir = tmp_path / "data"
    env = _env(data_dir)
    log = tmp_path / "run.log"
    proc: subprocess.Popen | None = None
    started: list[psutil.Process] = []
    try:
        for _attempt in range(3):
            proc = _start_run(env, log)
            if proc is not None:
                break
            # Ray's start-up has fixed time limits (30 s for a node) that a loaded machine can miss.
            # Even then, the embedded servers went with the process.
            assert not _gone(_servers_of(data_dir), within=5), "a failed start left Postgres/Redis running"
        assert proc is not None, log.read_text()[-3000:]
        started = psutil.Process(proc.pid).children(recursive=True) + _servers_of(data_dir)
        assert len(_servers_of(data_dir)) >= 2, "expected the embedded Postgres and Redis to be running"

        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - stopped_at
        assert took <= 10, f"took {took:.1f}s to stop:\n{log.read_text()[-2000:]}"
        assert proc.returncode == 0, log.read_text()[-2000:]
        assert not _servers_of(data_dir), "embedded Postgres/Redis still running"
        left = _gone(started, within=5)
        assert not left, [(p.pid, p.name()) for p in left]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for leftover in _servers_of(data_dir) + [p for p in started if p.is_running()]:
            leftover.kill()


def test_a_one_shot_command_stops_the_embedded_servers_it_started(tmp_path: Path):
    data_dir = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "troupe", "migrate"], cwd=ROOT, env=_env(data_dir),
                            capture_output=True, text=True, timeout=300)
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        assert (data_dir / "pgdata" / "PG_VERSION").exists() and (data_dir / "redis" / "port").exists()
        assert not _gone(_servers_of(data_dir), within=5)
    finally:
        for leftover in _servers_of(data_dir):
            leftover.kill()
