"""``code`` tools: ``configuration.code`` defines ``def run(input: dict) -> Any``; the
call answers ``run(input)``'s return value (JSON) as its output.

The code runs in a separate, short-lived Python process (``sandbox_child``), never in
the server or worker process. What isolates it:

- a new network namespace (``unshare --net``; ``--map-root-user`` when not root) with no
  interface but a down loopback, when the host permits it (checked once per process);
- an audit hook installed before the code runs: no sockets, processes, signals or ctypes,
  no file but the standard library (read-only) and an empty temporary working directory;
- ``python -I -S``: no site-packages, no PYTHON* variables, no user site; an empty
  environment; a root server's child drops to ``nobody``;
- rlimits: CPU seconds (RLIMIT_CPU), memory (RLIMIT_AS), output size (RLIMIT_FSIZE on the
  result file), no new processes (RLIMIT_NPROC); a wall-clock ``configuration.timeout``
  after which the whole process group is killed.

Limits: ``configuration.sandbox`` ``cpuSeconds`` (5), ``memoryMb`` (256),
``maxOutputBytes`` (1 MiB); wall time ``configuration.timeout`` (30 s)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from troupe.engine.contract import NodeResult
from troupe.engine.tools.registry import ToolCall, ToolFailure, tool_runtime

CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text()
DEFAULT_CPU_SECONDS = 5
DEFAULT_MEMORY_MB = 256
DEFAULT_OUTPUT_BYTES = 1024 * 1024


@lru_cache(maxsize=1)
def network_isolation() -> tuple[str, ...]:
    """The command prefix that gives the child its own empty network namespace, or ``()``
    when this host does not permit one (the audit hook is then the network barrier)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    candidates = [(unshare, "--net")] if os.geteuid() == 0 else []
    candidates.append((unshare, "--net", "--map-root-user"))
    for prefix in candidates:
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=5, env={})
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def _limit(settings: dict[str, Any], name: str, default: int) -> int:
    value = settings.get(name)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else default


def run_code(code: str, tool_input: Any, *, cpu_seconds: int = DEFAULT_CPU_SECONDS,
             memory_mb: int = DEFAULT_MEMORY_MB, output_bytes: int = DEFAULT_OUTPUT_BYTES,
             timeout: float = 30.0) -> NodeResult:
    payload = json.dumps({"code": code, "input": tool_input}, default=str).encode()
    with tempfile.TemporaryDirectory(prefix="troupe-code-") as box, \
            tempfile.TemporaryDirectory(prefix="troupe-code-io-") as io_dir:
        os.chmod(box, 0o777)  # the child may run as nobody; the directory's name is unguessable
        out_path = Path(io_dir) / "out"
        err_path = Path(io_dir) / "err"
        command = [*network_isolation(), sys.executable, "-I", "-S", "-c", CHILD_SOURCE,
                   str(cpu_seconds), str(memory_mb * 1024 * 1024), str(output_bytes)]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=box, env={},
                                       start_new_session=True, close_fds=True)
            try:
                process.communicate(payload, timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return NodeResult.fail("SYS_006", f"code tool stopped at its time limit of {timeout:g}s",
                                       retryable=False, limit="time")
        returncode = process.returncode
        raw = out_path.read_bytes()[:output_bytes + 1]
        stderr = err_path.read_bytes()[-2000:].decode(errors="replace")
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not raw:
        return NodeResult.fail("BIZ_003", f"code tool stopped at its CPU limit of {cpu_seconds}s",
                               retryable=False, limit="cpu")
    lines = raw.decode(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        if len(raw) >= output_bytes or "File too large" in stderr:
            return NodeResult.fail("BIZ_003", f"code tool output exceeds its limit of {output_bytes} bytes",
                                   retryable=False, limit="output")
        if "MemoryError" in stderr:
            return NodeResult.fail("BIZ_003", f"code tool stopped at its memory limit of {memory_mb} MB",
                                   retryable=False, limit="memory")
        tail = stderr.strip().splitlines()[-1:] or [f"exit status {returncode}"]
        return NodeResult.fail("BIZ_003", f"code tool failed: {tail[0][:500]}", retryable=False)
    if report.get("ok"):
        return NodeResult.success(report.get("output"))
    kind = report.get("kind")
    if kind == "memory":
        return NodeResult.fail("BIZ_003", f"code tool stopped at its memory limit of {memory_mb} MB",
                               retryable=False, limit="memory")
    if kind == "output":
        return NodeResult.fail("BIZ_003", f"code tool output exceeds its limit of {output_bytes} bytes",
                               retryable=False, limit="output")
    return NodeResult.fail("BIZ_003", f"code tool raised {report.get('error')}", retryable=False)


@tool_runtime("code")
def run_code_tool(call: ToolCall) -> NodeResult:
    code = call.configuration.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ToolFailure("BIZ_003", "code tool has no configuration.code (it must define run(input))")
    limits = call.section("sandbox")
    return run_code(code, call.input, cpu_seconds=_limit(limits, "cpuSeconds", DEFAULT_CPU_SECONDS),
                    memory_mb=_limit(limits, "memoryMb", DEFAULT_MEMORY_MB),
                    output_bytes=_limit(limits, "maxOutputBytes", DEFAULT_OUTPUT_BYTES), timeout=call.timeout)
