"""What a file is, from its first bytes (never from the name or the client's
Content-Type alone), and whether we accept it.

Accepted: common images, PDF, plain text formats, office documents, archives,
audio and video. Refused (VAL_007): executables and scripts, HTML and SVG
(active content that would run if a share were opened inline), and any
binary we cannot identify.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import dataclass, field

HEAD_BYTES = 8192

_OFFICE = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
}
_TEXT_BY_EXT = {
    ".csv": "text/csv", ".md": "text/markdown", ".markdown": "text/markdown", ".json": "application/json",
    ".yaml": "application/yaml", ".yml": "application/yaml", ".tsv": "text/tab-separated-values",
}

TYPE_OF: dict[str, str] = {
    "image/png": "image", "image/jpeg": "image", "image/gif": "image", "image/webp": "image",
    "image/bmp": "image",
    "application/pdf": "document", "text/plain": "document", "text/csv": "document",
    "text/markdown": "document", "application/json": "document", "application/yaml": "document",
    "text/tab-separated-values": "document", "application/rtf": "document",
    **{mime: "document" for mime in _OFFICE.values()},
    "application/zip": "archive", "application/gzip": "archive", "application/x-7z-compressed": "archive",
    "application/x-tar": "archive", "application/x-bzip2": "archive",
    "audio/mpeg": "audio", "audio/wav": "audio", "audio/ogg": "audio", "audio/flac": "audio",
    "video/mp4": "video", "video/webm": "video", "video/quicktime": "video",
}
ALLOWED_MIME = frozenset(TYPE_OF)


@dataclass
class Sniffed:
    mime: str
    type: str | None  # None = refused
    metadata: dict[str, int] = field(default_factory=dict)


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _looks_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return not head  # an empty file is (empty) text
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sniffed window is fine.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"


_ACTIVE_MARKUP = re.compile(rb"<\s*(!doctype\s+html|html|svg|script|iframe|\?xml)", re.IGNORECASE)


def _image_size(mime: str, head: bytes) -> dict[str, int]:
    if mime == "image/png" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return {"width": width, "height": height}
    if mime == "image/gif" and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return {"width": width, "height": height}
    return {}


def sniff(head: bytes, filename: str) -> Sniffed:
    mime = _magic(head, filename)
    return Sniffed(mime=mime, type=TYPE_OF.get(mime), metadata=_image_size(mime, head))


def _magic(head: bytes, filename: str) -> str:
    ext = _ext(filename)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"BM") and len(head) > 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"{\\rtf"):
        return "application/rtf"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _OFFICE.get(ext, "application/zip")
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "application/x-7z-compressed"
    if head.startswith(b"BZh"):
        return "application/x-bzip2"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "application/x-tar"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith((b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xca\xfe\xba\xbe")):
        return "application/x-executable"
    if _looks_text(head):
        if head.lstrip().startswith(b"#!"):
            return "text/x-script"
        if _ACTIVE_MARKUP.search(head):
            return "text/html"
        return _TEXT_BY_EXT.get(ext, "text/plain")
    return "application/octet-stream"


_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/<>:|?*]')


def safe_name(name: str | None, *, fallback: str = "file") -> str:
    """A display name with no path, control characters or quoting tricks."""
    name = unicodedata.normalize("NFC", (name or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = _UNSAFE.sub("_", name).strip(" .")
    return name[:255] or fallback
