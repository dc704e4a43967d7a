"""Shared fixtures: a migrated database per test (SQLite by default, PostgreSQL when
TEST_DATABASE_URL / DATABASE_URL says so), a frozen clock, settings."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers every table)
from bot.clock import FrozenClock
from bot.config import Settings
from storage.db import Database, alembic_config
from tests.harness import OFFICE, Harness, markup_shown, running

DATA = Path(__file__).parent / "data"
_MIGRATED: set[str] = set()
_TEMPLATE_DIR = tempfile.mkdtemp(prefix="dsr-test-template-")


def _stamp_head(url: str) -> None:
    """The schema came from the models; tell Alembic it is current, so `dsr` commands that
    migrate on start (tests call them too) find nothing to do."""
    command.stamp(alembic_config(url), "head")


def _sqlite_template() -> Path:
    """The schema from the models (tests/test_migrations.py proves migrations give the same)."""
    path = Path(_TEMPLATE_DIR) / "schema.sqlite3"
    if not path.exists():
        engine = create_engine(f"sqlite:///{path}")
        SQLModel.metadata.create_all(engine)
        engine.dispose()
        _stamp_head(f"sqlite+aiosqlite:///{path}")
    return path


def _base_url() -> str:
    raw = os.environ.get("DATABASE_URL", "")
    return Settings(database_url=raw).database_url if raw else ""


@pytest.fixture
def clock() -> FrozenClock:
    # A Monday morning in Beijing (UTC+8): 2026-03-02 09:00.
    return FrozenClock(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    base = _base_url()
    if base.startswith("postgresql"):
        yield base
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}"


async def _create_postgres_schema(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sql("DROP SCHEMA public CASCADE"))
        await conn.execute(sql("CREATE SCHEMA public"))
        await conn.run_sync(SQLModel.metadata.create_all)
    await engine.dispose()
    await asyncio.to_thread(_stamp_head, url)


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in reversed(SQLModel.metadata.sorted_tables))
        await conn.execute(sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    if db_url.startswith("postgresql"):
        if db_url not in _MIGRATED:
            await _create_postgres_schema(db_url)
            _MIGRATED.add(db_url)
        await _reset_postgres(db_url)
    else:
        # Migrating once and copying the file keeps each test's database fresh and cheap.
        template = _sqlite_template()
        shutil.copyfile(template, db_url.split(":///", 1)[1])
    database = Database(db_url)
    yield database
    await database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        _env_file=None,
        bot_token="123456789:AAFakeTokenForOfflineTestsAndDemos_0000",
        database_url=db_url,
        office_admins=[1000],
        bot_username="dsr_test_bot",
    )


@pytest.fixture
async def harness(db: Database, settings: Settings, clock: FrozenClock) -> AsyncIterator[Harness]:
    if os.environ.get("REDIS_URL"):
        # Dialog state lives in Redis in this run: start each test from an empty one.
        from redis.asyncio import Redis

        redis = Redis.from_url(os.environ["REDIS_URL"])
        await redis.flushdb()
        await redis.aclose()
        settings.redis_url = os.environ["REDIS_URL"]
    async with running(db, settings, clock) as h:
        h.person(OFFICE, "协调办管理员")
        yield h
        assert markup_shown(h.fake) == [], "raw HTML shown to a person (escaped twice?)"
