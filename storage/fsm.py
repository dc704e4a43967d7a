"""aiogram FSM storage in our database, so dialog state survives restarts and is shared by
every bot process (Redis is used instead when REDIS_URL is set)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from sqlalchemy import Table

from bot.clock import Clock
from storage.db import Database, upsert_insert
from storage.models import FsmRecord

StateType = str | State | None
FSM_RECORD: Table = FsmRecord.__table__  # type: ignore[attr-defined]


def storage_key(key: StorageKey) -> str:
    return ":".join(
        str(part)
        for part in (
            key.bot_id,
            key.chat_id,
            key.user_id,
            key.thread_id or "",
            key.business_connection_id or "",
            key.destiny,
        )
    )


class DatabaseStorage(BaseStorage):
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def _write(self, key: StorageKey, **values: Any) -> None:
        """Insert or update the chat's row in one statement: two updates of a chat that has
        no row yet (a double tap, two bot processes) must not both try to insert it."""
        now = self.clock.now()
        insert = upsert_insert(self.db.dialect)
        statement = insert(FSM_RECORD).values(key=storage_key(key), updated_at=now, **values)
        async with self.db.session() as session:
            await session.exec(
                statement.on_conflict_do_update(
                    index_elements=["key"], set_={"updated_at": now, **values}
                )
            )

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        await self._write(key, state=state.state if isinstance(state, State) else state)

    async def get_state(self, key: StorageKey) -> str | None:
        async with self.db.read() as session:
            row = await session.get(FsmRecord, storage_key(key))
            return None if row is None else row.state

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self._write(key, data=dict(data))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        async with self.db.read() as session:
            row = await session.get(FsmRecord, storage_key(key))
            return {} if row is None else dict(row.data or {})

    async def close(self) -> None:
        """The database belongs to the application, which closes it."""
