"""The only way a state change talks to people: a row in the outbox, in the same transaction.

The sender (bot/sender.py) delivers rows later, rate-limited and retried; a crash between the
commit and the send loses nothing, and the idempotency key means a repeated change (a double
tap, a second sweeper) never queues the same message twice.

``enqueue`` queues one message; ``enqueue_many`` queues many in a few statements (the sweeper
queues thousands at once). Both build their rows with ``_row``, so the two cannot drift apart.

Direct answers to the person who just acted (the reply to their command, a dialog editing its
own message) are sent by the handler itself: they are the response to that update, and the
person sees at once whether it worked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import OutboxMessage, OutboxStatus

Keyboard = list[list[tuple[str, str]]]
"""Rows of (label, callback_data) inline buttons; labels come from templates."""

OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
CHUNK = 1000
"""Rows per statement in ``enqueue_many``: bounds memory and PostgreSQL's bind parameters."""


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


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message for ``enqueue_many``: the arguments of ``enqueue`` but the session and now."""

    key: str
    chat_id: int
    text: str
    buttons: Keyboard | None = None
    is_group: bool = False
    not_before: datetime | None = None
    document: Document | None = None
    notify_department: str | None = None


def _row(message: Envelope, now: datetime) -> dict[str, Any]:
    """The outbox row of a message: the one column mapping. Optional columns that are empty are
    left out (SQL NULL) rather than bound: no JSON ``null`` for a message without buttons."""
    row: dict[str, Any] = {
        "idem_key": message.key,
        "chat_id": message.chat_id,
        "is_group": message.is_group,
        "method": "sendDocument" if message.document else "sendMessage",
        "text": message.text,
        "notify_department": message.notify_department,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": message.not_before or now,
        "created_at": now,
    }
    if message.buttons:
        row["reply_markup"] = inline_markup(message.buttons)
    if message.document:
        row["document_name"] = message.document.name
        row["document"] = message.document.content
    return row


def _insert(session: AsyncSession) -> Any:
    """INSERT … ON CONFLICT (idem_key) DO NOTHING, in the session's dialect."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(OUTBOX).on_conflict_do_nothing(index_elements=["idem_key"])


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
    message = Envelope(
        key, chat_id, text, buttons, is_group, not_before, document, notify_department
    )
    result = await session.exec(_insert(session).values(**_row(message, now)))
    return bool(result.rowcount)


async def enqueue_many(
    session: AsyncSession, messages: Sequence[Envelope], *, now: datetime
) -> None:
    """``enqueue`` for many messages: executemany, ``CHUNK`` rows a statement. The same rows and
    the same idempotency: a key already queued (by this call or before) is skipped. Drivers do
    not report per-row results of an executemany reliably, so nothing is returned."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for message in messages:
        row = _row(message, now)
        shapes.setdefault(tuple(row), []).append(row)  # executemany wants one set of columns
    statement = _insert(session)
    for rows in shapes.values():
        for start in range(0, len(rows), CHUNK):
            await session.exec(statement, params=rows[start : start + CHUNK])
