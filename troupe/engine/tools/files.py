"""``file`` tools: read, write and list files in the calling company's storage area,
through fsspec (troupe.infra.storage: local disk or S3, as the deployment stores uploads).

The area of company ``C`` is the storage prefix ``companies/C/files/``, below it
``configuration.file.root`` (optional sub-folder). A call needs a company (a workflow's,
or ``companyId`` on ``POST /api/tools/:id/test``).

Input: ``{"operation": "read" | "write" | "list", "path": "notes/today.txt",
"content": "...", "encoding": "utf-8" | "base64"}``. Paths are relative: an absolute path,
``..``, a backslash or any character outside letters, digits, ``-``, ``_``, ``.`` and ``/``
is refused, so a call can never leave the company's area. ``configuration.file``
``readOnly`` (default false) refuses writes; ``maxBytes`` (default 1 MiB) caps a read or
write. Output: ``read`` ``{"path", "content", "encoding", "size"}``; ``write``
``{"path", "size"}``; ``list`` ``{"path", "files": [{"name", "size"}]}``."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Any

from troupe.engine.contract import NodeResult
from troupe.engine.tools.registry import ToolCall, ToolFailure, tool_runtime

DEFAULT_MAX_BYTES = 1024 * 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def relative_path(value: Any, *, field: str, allow_empty: bool = False) -> str:
    """``value`` as a safe relative path (segments joined by ``/``), or ToolFailure VAL_001."""
    if not isinstance(value, str):
        raise ToolFailure("VAL_001", f"{field} must be a string")
    text = value.strip()
    if text.startswith(("/", "~")) or "\\" in text or re.match(r"^[A-Za-z]:", text):
        raise ToolFailure("VAL_001", f"{field} must be a relative path inside the company's storage area")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ToolFailure("VAL_001", f"{field} must not contain '..'")
    if not parts and not allow_empty:
        raise ToolFailure("VAL_001", f"{field} is empty")
    for part in parts:
        if not _SEGMENT.match(part) or len(part) > 255:
            raise ToolFailure("VAL_001", f"{field}: {part!r} is not an allowed file or folder name")
    return "/".join(parts)


def company_area(company_id: str | None) -> str:
    if not company_id:
        raise ToolFailure("VAL_001", "file tools need a company (run them in a company's workflow, or send "
                          "companyId when testing)")
    try:
        return f"companies/{uuid.UUID(str(company_id)).hex}/files"
    except ValueError as exc:
        raise ToolFailure("VAL_001", "companyId is not a valid id") from exc


@tool_runtime("file")
def run_file(call: ToolCall) -> NodeResult:
    from troupe.infra.storage import get_storage

    settings = call.section("file")
    data = call.input if isinstance(call.input, dict) else {}
    operation = data.get("operation", "read")
    if operation not in ("read", "write", "list"):
        raise ToolFailure("VAL_001", "file tool operation must be read, write or list")
    base = company_area(call.context.company_id)
    root = relative_path(settings.get("root") or "", field="configuration.file.root", allow_empty=True)
    path = relative_path(data.get("path", ""), field="input.path", allow_empty=operation == "list")
    key = "/".join(p for p in (base, root, path) if p)
    max_bytes = int(settings.get("maxBytes") or DEFAULT_MAX_BYTES)
    storage = get_storage()
    fs, target = storage.fs, storage.path(key)
    try:
        if operation == "list":
            try:
                entries = fs.ls(target, detail=True)
            except FileNotFoundError:
                entries = []
            files = [{"name": e["name"].rstrip("/").rsplit("/", 1)[-1], "size": int(e.get("size") or 0),
                      "type": "directory" if e.get("type") == "directory" else "file"} for e in entries]
            return NodeResult.success({"path": path, "files": sorted(files, key=lambda f: f["name"])})
        if operation == "read":
            try:
                size = int(fs.size(target))
            except FileNotFoundError:
                return NodeResult.fail("RES_001", f"file {path!r} not found", retryable=False)
            if size > max_bytes:
                raise ToolFailure("VAL_008", f"file {path!r} is {size} bytes; the tool reads at most {max_bytes}")
            raw = fs.cat_file(target)
            encoding = data.get("encoding") or "utf-8"
            try:
                content = raw.decode("utf-8") if encoding == "utf-8" else base64.b64encode(raw).decode()
            except UnicodeDecodeError:
                content, encoding = base64.b64encode(raw).decode(), "base64"
            return NodeResult.success({"path": path, "content": content, "encoding": encoding, "size": size})
        if settings.get("readOnly"):
            raise ToolFailure("BIZ_003", "this file tool is read-only (configuration.file.readOnly)")
        content = data.get("content")
        if not isinstance(content, str):
            raise ToolFailure("VAL_001", "input.content must be a string to write")
        try:
            blob = base64.b64decode(content, validate=True) if data.get("encoding") == "base64" \
                else content.encode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise ToolFailure("VAL_001", "input.content is not valid base64") from exc
        if len(blob) > max_bytes:
            raise ToolFailure("VAL_008", f"content is {len(blob)} bytes; the tool writes at most {max_bytes}")
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(target, blob)
        return NodeResult.success({"path": path, "size": len(blob)})
    except OSError as exc:
        return NodeResult.fail("SYS_008", f"storage error: {type(exc).__name__}", retryable=True)
