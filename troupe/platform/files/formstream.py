"""Streaming multipart/form-data: the file part goes to storage as it arrives.

Starlette's form parser spools the whole upload to a temporary file before the
handler runs, so a size cap could only be checked afterwards. Here the body is
parsed chunk by chunk with python-multipart; the file's first bytes are sniffed
before anything is stored, and the cap is enforced on the bytes received.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from troupe.errors import AppError, ErrorCode, invalid
from troupe.infra.storage import Writer
from troupe.platform.files.sniff import HEAD_BYTES

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 50
# Framing and text fields on top of the file itself.
BODY_OVERHEAD = MAX_FIELD_BYTES + 16 * 1024


@dataclass
class ReceivedFile:
    filename: str
    content_type: str | None
    head: bytes
    size: int
    writer: Writer


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)
    is_file: bool = False


def too_large(limit: int, *, quota: bool = False) -> AppError:
    if quota:
        return AppError(ErrorCode.QUOTA_EXCEEDED, "Storage quota exceeded", details={"remainingBytes": limit})
    return AppError(ErrorCode.FILE_TOO_LARGE, f"File exceeds the {limit} byte limit",
                    details={"maxBytes": limit})


async def receive_form(request: Request, *, file_field: str, limit: int, quota_limited: bool,
                       on_head: Callable[[bytes, str, str | None], None],
                       open_writer: Callable[[], Awaitable[Writer]]) -> tuple[dict[str, list[str]], ReceivedFile]:
    """Parse the body; store the part named ``file_field`` through ``open_writer``.

    ``on_head(head, filename, content_type)`` sees the first bytes before any
    are stored and may raise (refused type). On any failure the partly written
    object is removed."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise invalid("Expected multipart/form-data", code=ErrorCode.INVALID_FORMAT)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + BODY_OVERHEAD:
        raise too_large(limit, quota=quota_limited)

    fields: dict[str, list[str]] = {}
    events: list[tuple[str, object]] = []
    current = _Part()
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[header_field.decode("latin-1").lower()] = header_value.decode("utf-8", "replace")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disp = parse_options_header(current.headers.get("content-disposition"))
        current.name = disp.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disp:
            current.filename = disp[b"filename"].decode("utf-8", "replace")
        current.is_file = current.name == file_field
        if current.is_file:
            events.append(("file_start", (current.filename, current.headers.get("content-type"))))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current.is_file:
            events.append(("file_data", bytes(data[start:end])))
        else:
            current.data.extend(data[start:end])
            if len(current.data) > MAX_FIELD_BYTES:
                raise invalid(f"Field {current.name} is too long", field=current.name)

    def on_part_end() -> None:
        if current.is_file:
            events.append(("file_end", None))
        elif current.name:
            fields.setdefault(current.name, []).append(current.data.decode("utf-8", "replace"))
            if sum(len(v) for v in fields.values()) > MAX_FIELDS:
                raise invalid("Too many form fields")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end,
    })

    received: ReceivedFile | None = None
    seen_file = False
    head = bytearray()
    name = ""
    content_type: str | None = None
    size = 0

    async def start_writing() -> None:
        nonlocal received
        on_head(bytes(head), name, content_type)
        writer = await open_writer()
        received = ReceivedFile(filename=name, content_type=content_type, head=bytes(head), size=0, writer=writer)
        await writer.write(bytes(head))

    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except AppError:
                raise
            except Exception as exc:  # python-multipart's parse errors
                raise invalid(f"Malformed multipart body: {exc}", field="body",
                              code=ErrorCode.INVALID_FORMAT) from exc
            for kind, payload in events:
                if kind == "file_start":
                    if seen_file:
                        raise invalid(f"Only one {file_field} part is accepted", field=file_field)
                    seen_file = True
                    name, content_type = payload  # type: ignore[misc]
                    name = name or ""
                elif kind == "file_data":
                    size += len(payload)  # type: ignore[arg-type]
                    if size > limit:
                        await _drain(request, declared)
                        raise too_large(limit, quota=quota_limited)
                    if received is None:
                        head.extend(payload)  # type: ignore[arg-type]
                        if len(head) >= HEAD_BYTES:
                            await start_writing()
                    else:
                        await received.writer.write(payload)  # type: ignore[arg-type]
                elif kind == "file_end" and received is None:
                    await start_writing()
            events.clear()
        parser.finalize()
        if not seen_file or received is None:
            raise AppError(ErrorCode.REQUIRED_FIELD_MISSING, f"{file_field} is required", field=file_field)
        await received.writer.close()
    except BaseException:
        if received is not None:
            await received.writer.abort()
        raise
    received.size = size
    return fields, received


async def _drain(request: Request, declared: str | None) -> None:
    """Read what is left of a body whose length is known and bounded, so the
    client gets the 413 instead of a reset connection; an unbounded (chunked)
    body is not read further."""
    if declared is None:
        return
    try:
        async for _ in request.stream():
            pass
    except Exception:  # the client may have stopped sending; the 413 still goes out
        pass
