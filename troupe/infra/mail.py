"""The one mail sender: SMTP when ``SMTP_HOST`` is set, otherwise a development
outbox (one JSON file per message under ``<data_dir>/outbox``).

The system settings' ``general`` section brands every message: ``siteName`` is
the sender's display name and signs the footer, ``supportEmail`` (when set) is
named in the footer, and ``siteUrl`` (default FRONTEND_URL) is the base of links."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path
from typing import Any

from troupe.config import get_settings
from troupe.errors import AppError, ErrorCode
from troupe.timeutil import iso, utcnow

log = logging.getLogger(__name__)


async def send_mail(*, to: str, subject: str, body: str, html: str | None = None,
                    headers: dict[str, str] | None = None) -> str:
    """Send one message; returns its Message-ID. SMTP failures raise SYS_003."""
    from troupe import runtime_settings

    settings = get_settings()
    general = (await runtime_settings.current()).general
    sender = formataddr((general.site_name, settings.email_from))
    footer = f"\n\n-- \n{general.site_name}"
    if general.support_email:
        footer += f"\nSupport: {general.support_email}"
    body = body.rstrip("\n") + footer + "\n"
    message_id = make_msgid(domain=settings.email_from.rsplit("@", 1)[-1] or "troupe.local")
    if settings.smtp_host:
        msg = _build(to=to, subject=subject, body=body, html=html, headers=headers, message_id=message_id,
                     sender=sender)
        try:
            await asyncio.to_thread(_smtp_send, msg)
        except (OSError, smtplib.SMTPException) as exc:
            log.error("SMTP delivery to %s failed: %s", to, exc)
            raise AppError(ErrorCode.EXTERNAL_SERVICE_ERROR, "The mail server refused the message") from exc
        return message_id
    record = {"id": message_id, "from": sender, "to": to, "subject": subject, "body": body,
              "html": html, "headers": headers or {}, "createdAt": iso(utcnow())}
    await asyncio.to_thread(_write_outbox, settings.outbox_dir, record)
    return message_id


async def mail_link_base() -> str | None:
    """Base URL of links in mail (no trailing slash): ``general.siteUrl``, else FRONTEND_URL."""
    from troupe import runtime_settings

    url = (await runtime_settings.current()).general.site_url
    return str(url).rstrip("/") if url else None


def _build(*, to: str, subject: str, body: str, html: str | None, headers: dict[str, str] | None,
           message_id: str, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    return msg


def _smtp_send(msg: EmailMessage) -> None:
    settings = get_settings()
    context = ssl.create_default_context()
    timeout = settings.outbound_timeout.total_seconds()
    # Port 465 is implicit TLS; otherwise upgrade with STARTTLS when asked to (or on 587).
    if settings.smtp_secure and settings.smtp_port == 465:
        server: smtplib.SMTP = smtplib.SMTP_SSL(settings.smtp_host or "", settings.smtp_port, timeout=timeout,
                                                context=context)
    else:
        server = smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=timeout)
    with server:
        if not isinstance(server, smtplib.SMTP_SSL) and (settings.smtp_secure or settings.smtp_port == 587):
            server.starttls(context=context)
        if settings.smtp_user:
            server.login(settings.smtp_user, settings.smtp_pass or "")
        server.send_message(msg)


def _write_outbox(directory: Path, record: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # Sortable name: the time first, so listing order is sending order.
    stamp = record["createdAt"].replace(":", "").replace("-", "").replace(".", "")
    name = f"{stamp}-{os.urandom(4).hex()}.json"
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(directory / name)  # atomic: readers never see half a message


def read_outbox(to: str | None = None, *, directory: Path | None = None) -> list[dict[str, Any]]:
    """Messages in the development outbox, oldest first; ``to`` filters by recipient."""
    directory = directory or get_settings().outbox_dir
    if not directory.is_dir():
        return []
    messages = []
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text())
        if to is None or record.get("to", "").lower() == to.lower():
            messages.append(record)
    return messages
