"""Dialog state survives a restart: a new storage object over the same database sees it."""

from __future__ import annotations

import os

import pytest
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import StorageKey

from bot.app import Services, create_storage
from bot.clock import FrozenClock
from bot.config import Settings
from storage.db import Database
from storage.fsm import DatabaseStorage


class Dialog(StatesGroup):
    step = State()


KEY = StorageKey(bot_id=1, chat_id=2, user_id=3)


async def test_state_and_data_survive_a_new_storage(db: Database, clock: FrozenClock) -> None:
    first = DatabaseStorage(db, clock)
    await first.set_state(KEY, Dialog.step)
    await first.update_data(KEY, {"draft": {"date": "2026-03-02"}, "n": 1})
    await first.close()

    second = DatabaseStorage(db, clock)
    assert await second.get_state(KEY) == "Dialog:step"
    assert await second.get_data(KEY) == {"draft": {"date": "2026-03-02"}, "n": 1}
    await second.set_state(KEY, None)
    await second.set_data(KEY, {})
    assert await second.get_state(KEY) is None
    assert await second.get_data(KEY) == {}
    other = StorageKey(bot_id=1, chat_id=2, user_id=4)
    assert await second.get_state(other) is None


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL not set")
async def test_redis_is_used_when_configured(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    from aiogram.fsm.storage.redis import RedisStorage

    settings.redis_url = os.environ["REDIS_URL"]
    storage = create_storage(Services(settings=settings, db=db, clock=clock))
    assert isinstance(storage, RedisStorage)
    try:
        await storage.set_state(KEY, Dialog.step)
        assert await storage.get_state(KEY) == "Dialog:step"
        await storage.set_state(KEY, None)
    finally:
        await storage.close()


def test_database_storage_by_default(db: Database, clock: FrozenClock, settings: Settings) -> None:
    settings.redis_url = None
    assert isinstance(
        create_storage(Services(settings=settings, db=db, clock=clock)), DatabaseStorage
    )
