"""Reading, chunking and indexing an agent's knowledge sources (see troupe.knowledge)."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.errors import AppError, ErrorCode, invalid

CHUNK_CHARS = 1200
CHUNK_OVERLAP = 150
MAX_SOURCE_BYTES = 5 * 1024 * 1024
MAX_CHUNKS_PER_AGENT = 5000
FETCH_TIMEOUT_S = 15.0
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml", "application/x-ndjson")
FIELD = "configuration.knowledgeBase.sources"


class _Text(HTMLParser):
    """An HTML page's visible text (scripts, styles and templates skipped)."""

    SKIP = frozenset({"script", "style", "template", "noscript", "head"})
    BLOCK = frozenset({"p", "div", "li", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def chunks_of(body: str) -> list[str]:
    """Paragraph-aligned chunks of about ``CHUNK_CHARS``, overlapping by ``CHUNK_OVERLAP``."""
    body = re.sub(r"[ \t\r\f\v]+", " ", body)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n|\n", body) if p.strip()]
    chunks: list[str] = []
    current = ""
    for paragraph in paragraphs:
        while len(paragraph) > CHUNK_CHARS:  # a very long paragraph is cut at a space
            cut = paragraph.rfind(" ", 0, CHUNK_CHARS)
            cut = cut if cut > CHUNK_CHARS // 2 else CHUNK_CHARS
            if current:
                chunks.append(current)
                current = ""
            chunks.append(paragraph[:cut].strip())
            paragraph = paragraph[max(0, cut - CHUNK_OVERLAP):].strip()
        if current and len(current) + len(paragraph) + 1 > CHUNK_CHARS:
            chunks.append(current)
            current = current[-CHUNK_OVERLAP:].split(" ", 1)[-1] + "\n" + paragraph
        else:
            current = f"{current}\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks


def _decode(data: bytes, content_type: str, where: str) -> str:
    kind = content_type.split(";")[0].strip().lower()
    if not kind.startswith(TEXT_TYPES):
        raise AppError(ErrorCode.INVALID_FILE_TYPE, f"{where}: only text sources can be indexed (got {kind or 'unknown'})",
                       field=FIELD)
    body = data.decode("utf-8", errors="replace")
    return html_text(body) if "html" in kind else body


async def _read_file(session: AsyncSession, user: Any, file_id: uuid.UUID, where: str) -> str:
    from troupe.infra.storage import get_storage
    from troupe.platform.files.service import get_file, object_key

    try:
        row = await get_file(session=session, user=user, file_id=str(file_id))
    except AppError as exc:
        raise AppError(ErrorCode.RESOURCE_NOT_FOUND, f"{where}: file not found", field=FIELD) from exc
    if int(row.size or 0) > MAX_SOURCE_BYTES:
        raise AppError(ErrorCode.FILE_TOO_LARGE, f"{where}: files over {MAX_SOURCE_BYTES} bytes are not indexed",
                       field=FIELD)
    data = await get_storage().read_bytes(object_key(row.id))
    return _decode(data, row.mime_type or "", where)


async def _fetch(url: str, where: str) -> str:
    from troupe.infra import outbound
    from troupe.infra.outbound import OutboundError

    try:
        response = await outbound.request("GET", url, timeout=FETCH_TIMEOUT_S, max_bytes=MAX_SOURCE_BYTES,
                                          raise_for_status=True)
    except OutboundError as exc:
        raise AppError(ErrorCode.EXTERNAL_SERVICE_ERROR, f"{where}: could not fetch {url}: {exc.message}",
                       field=FIELD) from exc
    return _decode(response.body, response.headers.get("content-type", "text/plain"), where)


def _kind(source: str) -> str:
    if re.match(r"^https?://", source, re.I):
        return "url"
    try:
        uuid.UUID(source)
    except ValueError:
        raise invalid(f"a knowledge source is a file id or an http(s) URL, got {source[:80]!r}", field=FIELD) from None
    return "file"


async def read_sources(session: AsyncSession, user: Any, config: dict[str, Any], *,
                       kinds: tuple[str, ...] = ("file", "url", "training")) -> list[tuple[str, str, str]]:
    """(source, kind, chunk) for every chunk of the configured sources of ``kinds``."""
    kb = config.get("knowledgeBase") or {}
    out: list[tuple[str, str, str]] = []
    for index, source in enumerate(kb.get("sources") or []):
        kind, where = _kind(str(source)), f"sources[{index}]"
        if kind not in kinds:
            continue
        body = await (_fetch(source, where) if kind == "url" else _read_file(session, user, uuid.UUID(source), where))
        out += [(str(source), kind, chunk) for chunk in chunks_of(body)]
    if "training" in kinds:
        for example in config.get("fewShotExamples") or []:
            out.append(("training", "training", f"Q: {example.get('input', '')}\nA: {example.get('output', '')}"))
    if len(out) > MAX_CHUNKS_PER_AGENT:
        raise AppError(ErrorCode.RESOURCE_LIMIT_EXCEEDED,
                       f"the knowledge sources make {len(out)} chunks; at most {MAX_CHUNKS_PER_AGENT} are indexed",
                       field=FIELD)
    return out


async def replace_chunks(session: AsyncSession, agent_id: uuid.UUID, chunks: list[tuple[str, str, str]], *,
                         kinds: tuple[str, ...] = ("file", "url", "training")) -> None:
    await session.execute(text("DELETE FROM agent_knowledge_chunks WHERE agent_id = :a AND kind = ANY(:k)"),
                          {"a": agent_id, "k": list(kinds)})
    if chunks:
        await session.execute(
            text("INSERT INTO agent_knowledge_chunks (agent_id, source, kind, position, content) "
                 "VALUES (:a, :s, :k, :p, :c)"),
            [{"a": agent_id, "s": s, "k": k, "p": n, "c": c} for n, (s, k, c) in enumerate(chunks)])


async def index_agent(session: AsyncSession, user: Any, agent: Any) -> int:
    """Index (or, knowledge off, drop) the agent's chunks; the number indexed."""
    config = dict(agent.configuration or {})
    if not (config.get("knowledgeBase") or {}).get("enabled"):
        await replace_chunks(session, agent.id, [])
        return 0
    chunks = await read_sources(session, user, config)
    await replace_chunks(session, agent.id, chunks)
    return len(chunks)


async def refresh_urls(agent_id: str) -> int:
    """Fetch the agent's URL sources again (the actor asks when they are older than
    ``updateFrequency``); a source that fails keeps its previous chunks."""
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        agent = await session.get(models.Agent, uuid.UUID(agent_id))
        if agent is None or not ((agent.configuration or {}).get("knowledgeBase") or {}).get("enabled"):
            return 0
        config = dict(agent.configuration or {})
        fresh: list[tuple[str, str, str]] = []
        for index, source in enumerate((config.get("knowledgeBase") or {}).get("sources") or []):
            if _kind(str(source)) != "url":
                continue
            try:
                body = await _fetch(str(source), f"sources[{index}]")
            except AppError:
                rows = (await session.execute(text(
                    "SELECT content FROM agent_knowledge_chunks WHERE agent_id = :a AND source = :s ORDER BY position"),
                    {"a": agent.id, "s": source})).scalars().all()
                fresh += [(str(source), "url", c) for c in rows]
                continue
            fresh += [(str(source), "url", chunk) for chunk in chunks_of(body)]
        await replace_chunks(session, agent.id, fresh, kinds=("url",))
        await session.commit()
        return len(fresh)
