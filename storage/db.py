"""Engine, unit of work, and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Dialect, Table, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel.ext.asyncio.session import AsyncSession

MIGRATIONS = Path(__file__).parent / "migrations"
DEFERRED_CHECKPOINT_PAGES = 100_000
"""SQLite: the WAL size (pages of 4 KiB: ~400 MB) past which a commit of the running bot still
checkpoints, as a safety net: its own job checkpoints every few seconds (bot/scheduler.py,
``Database.defer_checkpoints``; why: docs/delivery.md, "The WAL checkpoint")."""


SQLITE_PAGE_SIZE = 8192
"""Bytes a page of a new SQLite database: a million-row import writes 0.6 µs a row faster
than with SQLite's 4,096 (fewer B-tree splits and page headers; docs/imports.md). It applies
when the file is created; an existing database keeps its size."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def upsert_insert(dialect: str) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (PostgreSQL's or SQLite's). Imported here,
    not at the top: `dsr import` on SQLite never loads the PostgreSQL dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if dialect == "postgresql" else sqlite.insert


@dataclass(frozen=True)
class DriverInsert:
    """An INSERT compiled once for a dialect, with the bind processors of its parameters (the
    column types' conversions for the driver: booleans, dates and datetimes on SQLite, JSON),
    so that many rows go to the driver's executemany as they are: SQLAlchemy's per-row
    parameter handling costs more than the database's own work (about 12 µs a row)."""

    sql: str
    columns: tuple[str, ...]
    processing: tuple[tuple[int, Callable[[Any], Any], bool], ...]
    """(parameter, processor, whether its values repeat: worth remembering) for each parameter
    that has a processor."""

    @classmethod
    def of(cls, table: Table, statement: Any, dialect: Dialect) -> DriverInsert:
        """``statement``: an insert into ``table`` binding each of its columns by name
        (``values({name: bindparam(name)})``), without RETURNING (``inline()``)."""
        compiled = statement.compile(dialect=dialect)
        columns = tuple(compiled.positiontup or ())
        processing = []
        for at, name in enumerate(columns):
            kind = table.c[name].type
            process = kind.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processing.append((at, process, not isinstance(kind, JSON)))
        return cls(compiled.string, columns, tuple(processing))

    def values(self, row: Mapping[str, Any], memo: dict[tuple[int, Any], Any]) -> tuple[Any, ...]:
        """The driver's parameters for ``row``; ``memo`` keeps conversions of repeated values
        (a batch's timestamps, dates, flags) from one row to the next."""
        out = [row[name] for name in self.columns]
        for at, process, repeated in self.processing:
            value = out[at]
            if value is None:  # SQL NULL (for JSON too, not "null")
                continue
            if repeated:
                key = (at, value)
                if key not in memo:
                    memo[key] = process(value)
                out[at] = memo[key]
            else:
                out[at] = process(value)
        return tuple(out)

    async def run(self, connection: AsyncConnection, rows: Iterable[Mapping[str, Any]]) -> None:
        """executemany of ``rows`` (mappings of every column name)."""
        memo: dict[tuple[int, Any], Any] = {}
        values = [self.values(row, memo) for row in rows]
        if values:
            await connection.exec_driver_sql(self.sql, values)


async def fetch_rows(
    session: AsyncSession, statement: Any, *, typed: bool = False
) -> Sequence[Sequence[Any]]:
    """All rows of a big read as the driver returns them (tuples or asyncpg records), on the
    session's connection and transaction.

    Through SQLAlchemy's result objects a row costs about 5 µs, several times the driver's own
    fetch; the draw reads every candidate and the sweeper every due duty, so they ask the
    driver. ``typed``: each value converted as SQLAlchemy would (its column type's result
    processor: a SQLite date or timestamp string to the Python value), once per distinct value
    of a column (a batch's dates repeat)."""
    conn = await session.connection()
    dialect = conn.dialect
    if dialect.name not in ("sqlite", "postgresql") or dialect.driver not in (
        "aiosqlite",
        "asyncpg",
    ):
        return (await conn.execute(statement)).all()
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    args = [_bound(compiled, name, dialect) for name in compiled.positiontup or []]
    driver: Any = (await conn.get_raw_connection()).driver_connection
    rows: Sequence[Sequence[Any]]
    if dialect.name == "sqlite":
        cursor = await driver.execute(str(compiled), args)
        try:
            rows = await cursor.fetchall()
        finally:
            await cursor.close()
    else:
        rows = list(await driver.fetch(str(compiled), *args))
    if not typed:
        return rows
    convert = [
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    ]
    if not any(convert):
        return rows
    memos: list[dict[Any, Any]] = [{} for _ in convert]
    out: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(row)
        for at, process in enumerate(convert):
            value = values[at]
            if process is None or value is None:
                continue
            memo = memos[at]
            found = memo.get(value, memo)
            if found is memo:
                found = memo[value] = process(value)
            values[at] = found
        out.append(tuple(values))
    return out


def _bound(compiled: Any, name: str, dialect: Dialect) -> Any:
    """A parameter's value as SQLAlchemy hands it to the driver (a SQLite date as text)."""
    value = compiled.params[name]
    bind = compiled.binds.get(name)
    if bind is None or value is None:  # an expanded IN's element: ids, as they are
        return value
    process = bind.type.dialect_impl(dialect).bind_processor(dialect)
    return value if process is None else process(value)


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
            cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # a new file only
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
