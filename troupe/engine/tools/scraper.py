"""``scraper`` tools: fetch one page through the outbound guard and extract its text,
its links and a CSS-selected part, with selectolax (the Lexbor HTML5 parser).

URL: ``input.url`` or, without one, ``configuration.endpoint``. ``configuration.scraper``:
``selector`` (a CSS selector; ``input.selector`` overrides it), ``maxLinks`` (100) and
``maxTextChars`` (100000). Script, style and template contents are not text.

Output: ``{"url", "status", "title", "text", "links": [{"href", "text"}],
"selected": [{"text", "html"}]}`` (links resolved against the final URL, ``selected``
empty without a selector)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin

from troupe.engine.contract import NodeResult
from troupe.engine.tools.registry import ToolCall, ToolFailure, tool_runtime

DEFAULT_MAX_LINKS = 100
DEFAULT_MAX_TEXT = 100_000
MAX_SELECTED = 50


def _clean(text: str) -> str:
    return " ".join(text.split())


def extract(html: str, base_url: str, *, selector: str | None, max_links: int, max_text: int) -> dict[str, Any]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = _clean(title_node.text()) if title_node is not None else ""
    selected: list[dict[str, str]] = []
    if selector:
        try:
            matches = tree.css(selector)
        except Exception as exc:  # selectolax raises plain errors for a selector it cannot parse
            raise ToolFailure("VAL_001", f"invalid CSS selector {selector!r}: {exc}") from exc
        selected = [{"text": _clean(node.text(separator=" ")), "html": node.html or ""}
                    for node in matches[:MAX_SELECTED]]
    links: list[dict[str, str]] = []
    for node in tree.css("a[href]"):
        href = (node.attributes.get("href") or "").strip()
        if not href or href.startswith(("javascript:", "#")):
            continue
        links.append({"href": urljoin(base_url, href), "text": _clean(node.text())})
        if len(links) >= max_links:
            break
    tree.strip_tags(["script", "style", "noscript", "template"])
    body = tree.body or tree.root
    text = _clean(body.text(separator=" ")) if body is not None else ""
    return {"title": title, "text": text[:max_text], "links": links, "selected": selected}


@tool_runtime("scraper")
def run_scraper(call: ToolCall) -> NodeResult:
    from troupe.infra import outbound

    data = call.input if isinstance(call.input, dict) else {}
    settings = call.section("scraper")
    url = data.get("url") or call.configuration.get("endpoint")
    if not isinstance(url, str) or not url:
        raise ToolFailure("VAL_001", "scraper needs input.url or configuration.endpoint")
    selector = data.get("selector") or settings.get("selector")

    async def fetch() -> Any:
        return await outbound.request("GET", url, headers={"Accept": "text/html,application/xhtml+xml"},
                                      timeout=call.timeout)

    try:
        response = asyncio.run(fetch())
    except outbound.OutboundError as exc:
        return NodeResult.fail(str(exc.code), exc.message, retryable=exc.retryable)
    if response.status >= 400:
        return NodeResult.fail("SYS_003", f"HTTP {response.status} from {url}",
                               retryable=response.status >= 500 or response.status == 429)
    parts = extract(response.text, response.final_url, selector=selector if isinstance(selector, str) else None,
                    max_links=int(settings.get("maxLinks") or DEFAULT_MAX_LINKS),
                    max_text=int(settings.get("maxTextChars") or DEFAULT_MAX_TEXT))
    return NodeResult.success({"url": response.final_url, "status": response.status, **parts})
