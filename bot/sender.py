"""Drains the outbox: claims due rows, sends them through a transport, records the result.

The transport is a Protocol so this module knows nothing of aiogram (bot/telegram.py
implements it). Claims make two bot processes never send the same row.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlmodel import col, or_, select

from bot.clock import Clock
from storage.db import Database
from storage.models import OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)


class Forbidden(Exception):
    """The recipient blocked the bot or never opened it (Telegram 403)."""


class RetryLater(Exception):
    """Flood control (429) or a network problem: try again after `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


@dataclass(frozen=True)
class Outgoing:
    chat_id: int
    method: str
    text: str
    reply_markup: dict[str, Any] | None
    document_name: str | None
    document: bytes | None


class Transport(Protocol):
    async def deliver(self, message: Outgoing) -> int:
        """Send; return Telegram's message id. Raises Forbidden or RetryLater."""
        ...


CLAIM_SECONDS = 60
MAX_ATTEMPTS = 8


class Sender:
    def __init__(self, db: Database, transport: Transport, clock: Clock, batch: int = 200) -> None:
        self.db = db
        self.transport = transport
        self.clock = clock
        self.batch = batch
        self.name = f"sender-{secrets.token_hex(4)}"

    async def _claim(self) -> list[OutboxMessage]:
        now = self.clock.now()
        async with self.db.session() as session:
            query = (
                select(OutboxMessage)
                .where(
                    OutboxMessage.status == OutboxStatus.PENDING,
                    col(OutboxMessage.next_attempt_at) <= now,
                    or_(
                        col(OutboxMessage.claimed_until).is_(None),
                        col(OutboxMessage.claimed_until) < now,
                    ),
                )
                .order_by(col(OutboxMessage.id))
                .limit(self.batch)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(await session.exec(query))
            for row in rows:
                row.claimed_by = self.name
                row.claimed_until = now + timedelta(seconds=CLAIM_SECONDS)
                session.add(row)
        return rows

    async def drain(self) -> int:
        """Send everything due now; returns how many were sent."""
        sent = 0
        while rows := await self._claim():
            for row in rows:
                sent += await self._send(row)
            if len(rows) < self.batch:
                break
        return sent

    async def _send(self, row: OutboxMessage) -> int:
        outgoing = Outgoing(
            row.chat_id, row.method, row.text, row.reply_markup, row.document_name, row.document
        )
        try:
            message_id = await self.transport.deliver(outgoing)
        except Forbidden as error:
            await self._finish(row, OutboxStatus.FAILED, error=f"forbidden: {error}")
            return 0
        except RetryLater as error:
            await self._retry(row, error.seconds)
            return 0
        await self._finish(row, OutboxStatus.SENT, message_id=message_id)
        return 1

    async def _finish(
        self,
        row: OutboxMessage,
        status: str,
        *,
        message_id: int | None = None,
        error: str | None = None,
    ) -> None:
        async with self.db.session() as session:
            fresh = await session.get(OutboxMessage, row.id)
            assert fresh is not None
            fresh.status = status
            fresh.attempts += 1
            fresh.tg_message_id = message_id
            fresh.last_error = error
            fresh.sent_at = self.clock.now() if status == OutboxStatus.SENT else None
            fresh.claimed_until = None
            session.add(fresh)

    async def _retry(self, row: OutboxMessage, seconds: float) -> None:
        async with self.db.session() as session:
            fresh = await session.get(OutboxMessage, row.id)
            assert fresh is not None
            fresh.attempts += 1
            if fresh.attempts >= MAX_ATTEMPTS:
                fresh.status = OutboxStatus.FAILED
            fresh.next_attempt_at = self.clock.now() + timedelta(seconds=seconds)
            fresh.claimed_until = None
            session.add(fresh)
