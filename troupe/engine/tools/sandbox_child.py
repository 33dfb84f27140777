"""The program a ``code`` tool's sandboxed process runs (``python -I -S -c <this source>``).

Never imported by Troupe: troupe.engine.tools.code passes its source text. It reads
``{"code", "input"}`` from stdin, then, before any user code: sets the CPU, address
space, file size and process limits, drops root to ``nobody``, and installs an audit
hook that refuses sockets, processes, ctypes and any file outside the standard library
(read-only) and its own empty working directory. The result is one JSON line on stdout.
"""

import io
import json
import os
import resource
import sys
import sysconfig
import traceback

BLOCKED_MODULES = frozenset({
    "socket", "_socket", "ssl", "_ssl", "select", "selectors", "asyncio", "ctypes", "_ctypes",
    "subprocess", "_posixsubprocess", "multiprocessing", "_multiprocessing", "mmap", "pty", "resource",
    "http", "ftplib", "smtplib", "telnetlib", "xmlrpc", "webbrowser",
})
BLOCKED_EVENTS = ("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                  "os.system", "os.kill", "os.killpg", "ctypes.", "os.chdir",
                  "os.chmod", "os.chown", "os.link", "os.symlink", "os.putenv", "os.setxattr", "os.truncate",
                  "os.startfile", "shutil.", "pty.", "sys._current_frames", "sys.setprofile", "sys.settrace",
                  "resource.setrlimit", "os.chroot", "os.mkfifo", "os.mknod", "fcntl.", "mmap.")
# Imported before privileges are dropped: a server whose Python lives in a directory only
# root may read (pyenv under /root) still offers these to the tool's code.
PRELOAD = ("math", "cmath", "statistics", "re", "datetime", "decimal", "fractions", "collections",
           "collections.abc", "itertools", "functools", "operator", "string", "random", "hashlib", "hmac",
           "base64", "binascii", "textwrap", "unicodedata", "heapq", "bisect", "copy", "dataclasses", "enum",
           "typing", "uuid", "calendar", "time", "zoneinfo", "difflib", "csv", "html", "struct", "array",
           "pprint", "numbers", "secrets", "ipaddress", "urllib.parse")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _limits(cpu_seconds: int, memory_bytes: int, output_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() == 0:
        try:  # the real root: become nobody, so the kernel's own permissions apply too
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        except OSError:
            pass  # a mapped root of a user namespace has no nobody to become
    if os.geteuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _hook_for(readable: tuple[str, ...], workdir: str):
    def allowed(path: str, write: bool) -> bool:
        real = os.path.realpath(path)
        if real == workdir or real.startswith(workdir + os.sep):
            return True
        return not write and any(real == root or real.startswith(root + os.sep) for root in readable)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
            if not allowed(os.fsdecode(path), write):
                raise PermissionError(f"sandbox: no access to {os.fsdecode(path)!r}")
        elif event in ("os.listdir", "os.scandir"):
            # The import system lists the standard library's directories; nothing else.
            path = args[0] if args and args[0] is not None else "."
            if isinstance(path, int) or not allowed(os.fsdecode(path), False):
                raise PermissionError(f"sandbox: no listing of {path!r}")
        elif event == "import":
            if str(args[0]).split(".")[0] in BLOCKED_MODULES:
                raise ImportError(f"sandbox: module {args[0]!r} is not available")
        elif event.startswith(BLOCKED_EVENTS):
            raise PermissionError(f"sandbox: {event} is not allowed")

    return hook


def main() -> None:
    cpu_seconds, memory_bytes, output_bytes = (int(v) for v in sys.argv[1:4])
    payload = json.loads(sys.stdin.buffer.read())
    out = sys.stdout
    paths = sysconfig.get_paths()
    readable = tuple(sorted({os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if paths.get(k)}))
    workdir = os.path.realpath(os.getcwd())
    namespace: dict = {"__name__": "__troupe_tool__", "__builtins__": __builtins__}
    for module in PRELOAD:
        __import__(module)
    os.environ.clear()
    _limits(cpu_seconds, memory_bytes, output_bytes)
    sys.addaudithook(_hook_for(readable, workdir))
    sys.stdout = io.StringIO()  # the user's prints are not the result
    try:
        exec(compile(payload["code"], "<tool>", "exec"), namespace)
        run = namespace.get("run")
        if not callable(run):
            raise NameError("the code must define run(input)")
        result = {"ok": True, "output": run(payload["input"])}
        line = json.dumps(result)
    except MemoryError:
        line = json.dumps({"ok": False, "kind": "memory", "error": "MemoryError"})
    except BaseException as exc:  # the user's error, reported to the caller
        frames = traceback.format_exception_only(type(exc), exc)
        line = json.dumps({"ok": False, "kind": "error", "error": "".join(frames).strip()[-2000:]})
    if len(line.encode()) >= output_bytes:
        line = json.dumps({"ok": False, "kind": "output", "error": f"{len(line.encode())} bytes"})
    out.write(line + "\n")
    out.flush()


main()
