"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import storage.models  # noqa: F401
from bot.config import Settings
from storage.db import upgrade


async def _diff(url: str) -> list[object]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), SQLModel.metadata
            )
        )
    await engine.dispose()
    return list(diff)


def test_sqlite_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite3'}"
    upgrade(url)
    assert asyncio.run(_diff(url)) == []


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="PostgreSQL not configured",
)
def test_postgres_migrations_match_models() -> None:
    url = Settings(database_url=os.environ["DATABASE_URL"]).database_url
    # Its own scratch database: suites of several checkouts may run on one server at once.
    server, scratch = url.rsplit("/", 1)[0], f"dsr_migration_check_{os.getpid()}"

    async def admin(*statements: str) -> None:
        engine = create_async_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
        await engine.dispose()

    asyncio.run(admin(f"DROP DATABASE IF EXISTS {scratch}", f"CREATE DATABASE {scratch}"))
    try:
        upgrade(f"{server}/{scratch}")
        assert asyncio.run(_diff(f"{server}/{scratch}")) == []
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
