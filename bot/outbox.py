"""The only way a state change talks to people: a row in the outbox, in the same transaction.

The sender (bot/sender.py) delivers rows later, rate-limited and retried; a crash between the
commit and the send loses nothing, and the idempotency key means a repeated change (a double
tap, a second sweeper) never queues the same message twice.

Direct answers to the person who just acted (the reply to their command, a dialog editing its
own message) are sent by the handler itself: they are the response to that update, and the
person sees at once whether it worked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import OutboxMessage, OutboxStatus

Keyboard = list[list[tuple[str, str]]]
"""Rows of (label, callback_data) inline buttons; labels come from templates."""


def inline_markup(rows: Keyboard | None) -> dict[str, Any] | None:
    if not rows:
        return None
    return {
        "inline_keyboard": [
            [{"text": label, "callback_data": data} for label, data in row] for row in rows
        ]
    }


@dataclass(frozen=True)
class Document:
    name: str
    content: bytes


async def enqueue(
    session: AsyncSession,
    *,
    key: str,
    chat_id: int,
    text: str,
    now: datetime,
    buttons: Keyboard | None = None,
    is_group: bool = False,
    not_before: datetime | None = None,
    document: Document | None = None,
    notify_department: str | None = None,
) -> bool:
    """Queue one message; False when a message with this key was already queued."""
    values = {
        "idem_key": key,
        "chat_id": chat_id,
        "is_group": is_group,
        "method": "sendDocument" if document else "sendMessage",
        "text": text,
        "reply_markup": inline_markup(buttons),
        "document_name": document.name if document else None,
        "document": document.content if document else None,
        "notify_department": notify_department,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": not_before or now,
        "created_at": now,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=["idem_key"])
    result = await session.exec(statement)
    return bool(result.rowcount)
