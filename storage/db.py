"""Engine, unit of work, and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

MIGRATIONS = Path(__file__).parent / "migrations"
DEFERRED_CHECKPOINT_PAGES = 100_000
"""SQLite: the WAL size (pages of 4 KiB: ~400 MB) past which a commit of the running bot still
checkpoints, as a safety net: its own job checkpoints every few seconds (bot/scheduler.py,
``Database.defer_checkpoints``; why: docs/delivery.md, "The WAL checkpoint")."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def upsert_insert(dialect: str) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (PostgreSQL's or SQLite's). Imported here,
    not at the top: `dsr import` on SQLite never loads the PostgreSQL dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the sender read while an import writes; FKs are off by default in SQLite.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


class Database:
    """Owns the engine; `session()` is the unit of work that commits once at the end."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **kwargs)
        self._deferred = False
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def defer_checkpoints(self, pages: int = DEFERRED_CHECKPOINT_PAGES) -> None:
        """SQLite, for a long-running process that calls ``checkpoint()`` itself (the bot): its
        commits stop running the WAL checkpoint until the WAL holds ``pages`` pages (SQLite's
        default is 1,000, which a sweep's commit crosses, paying ~0.2 s for the copy). Other
        processes keep the default, so a big CLI import cannot grow the WAL unchecked. Pooled
        connections are closed, so every connection from now on has it."""
        if self.dialect != "sqlite" or self._deferred:
            return
        self._deferred = True

        @event.listens_for(self.engine.sync_engine, "connect")
        def _autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")
            cursor.close()

        await self.engine.dispose()

    async def checkpoint(self) -> tuple[int, int, int] | None:
        """SQLite: copy the WAL's committed pages into the database file, PASSIVE: without
        waiting for (or blocking) readers and writers; what it cannot copy now, the next one
        does. (busy, pages in the WAL, pages copied); None on PostgreSQL."""
        if self.dialect != "sqlite":
            return None
        async with self.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            found = await auto.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            row: tuple[Any, ...] = tuple(found.one())
        return int(row[0]), int(row[1]), int(row[2])

    async def revision(self) -> str | None:
        """The Alembic revision the database is at (None for a database never migrated)."""
        try:
            async with self.engine.connect() as conn:
                found = await conn.execute(text("SELECT version_num FROM alembic_version"))
                return found.scalar_one_or_none()
        except DBAPIError:  # no alembic_version table yet
            return None

    async def upgrade_if_needed(self) -> None:
        """Migrate unless already at head: one query, where Alembic alone takes half a second."""
        if await self.revision() != head_revision():
            await asyncio.to_thread(upgrade, self.url)


def head_revision() -> str:
    """The newest migration's revision, without loading Alembic.

    `.ci/new-migration` numbers revisions after their files (0001_…, 0002_…), so the highest
    file number is the head; tests/test_migrations.py checks this against Alembic's own view.
    """
    versions = (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    return max(path.name[:4] for path in versions)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Run migrations (blocking; call from a thread inside an event loop)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
