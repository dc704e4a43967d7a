"""The only way a state change talks to people: a row in the outbox, in the same transaction.

The sender (bot/sender.py) delivers rows later, rate-limited and retried; a crash between the
commit and the send loses nothing, and the idempotency key means a repeated change (a double
tap, a second sweeper) never queues the same message twice.

``enqueue`` queues one message; ``enqueue_many`` queues many in a few statements (the sweeper
queues thousands at once). Both build their rows with ``_row`` and insert them with the same
statement, so the two cannot drift apart. ``enqueue_edit`` queues an edit of a message queued
earlier (named by its key): new text, and the keyboard replaced or removed. ``_row`` alone
decides a row's method; the sender resolves the earlier message when the edit's turn comes.

Direct answers to the person who just acted (the reply to their command, a dialog editing its
own message) are sent by the handler itself: they are the response to that update, and the
person sees at once whether it worked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Dialect, Table, bindparam, or_, update
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import DriverInsert, upsert_insert
from storage.models import OutboxMessage, OutboxStatus

Keyboard = list[list[tuple[str, str]]]
"""Rows of (label, callback_data) inline buttons; labels come from templates."""

OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
CHUNK = 1000
"""Rows per executemany in ``enqueue_many``: bounds the memory of the converted rows."""


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


class Envelope(NamedTuple):
    """One message for ``enqueue_many``: the arguments of ``enqueue`` but the session and now.
    (A named tuple: a sweep builds ten thousand, and its rendering child pickles them.)"""

    key: str
    chat_id: int
    text: str
    buttons: Keyboard | None = None
    is_group: bool = False
    not_before: datetime | None = None
    document: Document | None = None
    notify_department: str | None = None
    edits: str | None = None
    """The key of the earlier message this one edits (``enqueue_edit``)."""


def _method(message: Envelope) -> str:
    if message.edits is not None:
        return "editMessageText" if message.text else "editMessageReplyMarkup"
    return "sendDocument" if message.document else "sendMessage"


def _row(message: Envelope, now: datetime) -> dict[str, Any]:
    """The outbox row of a message: the one column mapping (``COLUMNS``, every one bound)."""
    document = message.document
    return {
        "idem_key": message.key,
        "chat_id": message.chat_id,
        "is_group": message.is_group,
        "method": _method(message),
        "edits_key": message.edits,
        "text": message.text,
        "reply_markup": inline_markup(message.buttons),
        "document_name": document.name if document else None,
        "document": document.content if document else None,
        "notify_department": message.notify_department,
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "throttled": 0,
        "next_attempt_at": message.not_before or now,
        "created_at": now,
    }


COLUMNS = tuple(_row(Envelope("", 0, ""), datetime.min))


@lru_cache(maxsize=8)
def _statement(dialect: Dialect) -> DriverInsert:
    """The INSERT … ON CONFLICT (idem_key) DO NOTHING of ``COLUMNS``."""
    insert = upsert_insert(dialect.name)
    statement = (
        insert(OUTBOX)
        .values({name: bindparam(name) for name in COLUMNS})
        .on_conflict_do_nothing(index_elements=["idem_key"])
        .inline()  # no RETURNING of the id
    )
    found = DriverInsert.of(OUTBOX, statement, dialect)
    if sorted(found.columns) != sorted(COLUMNS):  # a column with a default outside the mapping
        raise RuntimeError(f"outbox insert binds {found.columns}, the mapping has {COLUMNS}")
    return found


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
    return await _insert(session, message, now)


async def _insert(session: AsyncSession, message: Envelope, now: datetime) -> bool:
    connection = await session.connection()
    statement = _statement(connection.dialect)
    values = statement.values(_row(message, now), {})
    result = await connection.exec_driver_sql(statement.sql, values)
    return bool(result.rowcount)


async def enqueue_edit(
    session: AsyncSession,
    *,
    key: str,
    edits: str,
    now: datetime,
    text: str | Callable[[str], str] | None = None,
    buttons: Keyboard | None = None,
) -> bool:
    """Queue an edit of the message queued earlier under the key ``edits``: its text becomes
    ``text`` (or ``text(earlier text)``; None keeps it) and its keyboard ``buttons`` (None
    removes it). The edit goes to that message's chat, after it in the chat's order. False
    when nothing was queued under ``edits`` (nothing to edit) or this edit was queued before.

    The sender waits while the earlier message is unsent, and counts the edit done when that
    message was given up, or when Telegram says it is unchanged or gone."""
    earlier = (
        await session.exec(
            select(OutboxMessage.chat_id, OutboxMessage.is_group, OutboxMessage.text).where(
                OutboxMessage.idem_key == edits
            )
        )
    ).first()
    if earlier is None:
        return False
    chat_id, is_group, old_text = earlier
    new_text = text(old_text) if callable(text) else (text or "")
    return await _insert(
        session, Envelope(key, chat_id, new_text, buttons, is_group, edits=edits), now
    )


async def mark_sent(session: AsyncSession, *, key: str, message_id: int, now: datetime) -> bool:
    """The handler delivered the row queued under ``key`` itself, as its direct answer: record
    Telegram's message id so later edits find it. Such a row is queued with ``not_before`` a
    little ahead, so the sender delivers it only if the handler never said it did (its process
    died, or Telegram refused the answer). False when the sender got to it first."""
    connection = await session.connection()
    result = await connection.execute(
        update(OUTBOX)
        .where(
            OUTBOX.c.idem_key == key,
            OUTBOX.c.status == OutboxStatus.PENDING,
            or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < now),
        )
        .values(status=OutboxStatus.SENT, tg_message_id=message_id, sent_at=now)
    )
    return bool(result.rowcount)


async def enqueue_many(
    session: AsyncSession, messages: Sequence[Envelope], *, now: datetime
) -> None:
    """``enqueue`` for many messages: the same statement and rows, executemany ``CHUNK`` at a
    time. The rows go to the driver as they are, converted once by the column types'
    processors: SQLAlchemy's per-row parameter handling cost more than the database's work
    (about 12 µs a row). A key already queued, by this call or before, is skipped; drivers do
    not report per-row results of an executemany reliably, so nothing is returned."""
    if not messages:
        return
    connection = await session.connection()
    statement = _statement(connection.dialect)
    memo: dict[tuple[int, Any], Any] = {}
    for start in range(0, len(messages), CHUNK):
        rows = [statement.values(_row(m, now), memo) for m in messages[start : start + CHUNK]]
        await connection.exec_driver_sql(statement.sql, rows)
