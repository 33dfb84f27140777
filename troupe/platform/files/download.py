"""Streaming a stored file to the client, with a safe Content-Disposition and
single byte ranges (``Range: bytes=a-b``, ``a-``, ``-n``)."""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi.responses import StreamingResponse

from troupe.db import models
from troupe.errors import AppError, ErrorCode
from troupe.infra.storage import get_storage
from troupe.platform.files.service import object_key
from troupe.platform.files.sniff import safe_name

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def content_disposition(name: str, *, inline: bool) -> str:
    name = safe_name(name)
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a satisfiable single range; None = whole file."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None  # unsupported forms (several ranges) get the whole file, as RFC 9110 allows
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    else:
        start, end = max(size - int(last), 0), size
    if start >= size or start >= end:
        raise AppError(ErrorCode.VALIDATION_ERROR, "Requested range not satisfiable", status=416,
                       headers={"Content-Range": f"bytes */{size}"})
    return start, end


async def file_response(file: models.File, *, inline: bool, range_header: str | None) -> StreamingResponse:
    storage = get_storage()
    if not await storage.exists(object_key(file.id)):
        raise AppError(ErrorCode.STORAGE_ERROR, "The stored object of this file is missing")
    size = int(file.size)
    selected = _parse_range(range_header, size)
    start, end = selected or (0, size)
    headers = {
        "Content-Disposition": content_disposition(file.filename, inline=inline),
        "Content-Length": str(end - start),
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-store",
    }
    if selected:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    body = storage.iter_range(object_key(file.id), start, end)
    return StreamingResponse(body, status_code=206 if selected else 200, media_type=file.mime_type,
                             headers=headers)
