"""The background of `dsr run`: jobs run at once (catching up), the sender delivers what they
queue, and stopping lets a send in flight finish."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.app import Services
from bot.clock import FrozenClock
from bot.config import Settings
from bot.outbox import enqueue
from bot.scheduler import Background, PeriodicJob, periodic_jobs
from bot.sender import Sender
from storage.db import DEFERRED_CHECKPOINT_PAGES, Database
from tests.test_sender import ScriptedTransport


async def test_a_job_runs_at_start_and_its_messages_go_out(
    db: Database, clock: FrozenClock
) -> None:
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1
        async with db.session() as session:
            await enqueue(
                session, key=f"job:{runs}", chat_id=5, text=f"第{runs}次", now=clock.now()
            )

    transport = ScriptedTransport()
    # A long idle: only the job's wake-up can make the sender look at the outbox in time.
    async with Background(Sender(db, transport, clock), [PeriodicJob("job", 3600, job)], idle=60):
        await asyncio.wait_for(transport.delivered.wait(), 5)
    assert runs == 1 and transport.sent == [(5, "第1次")]


async def test_stopping_lets_the_send_in_flight_finish(db: Database, clock: FrozenClock) -> None:
    async with db.session() as session:
        await enqueue(session, key="slow", chat_id=5, text="慢", now=clock.now())
    transport = ScriptedTransport(pause=0.3)
    background = Background(Sender(db, transport, clock), [], idle=0.01)
    await background.start()
    await asyncio.wait_for(transport.called.wait(), 5)
    await background.stop()
    assert transport.sent == [(5, "慢")]
    assert await Sender(db, transport, clock).drain() == 0  # recorded as sent


async def test_the_sweeper_is_a_periodic_job(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    job = periodic_jobs(Services(settings=settings, db=db, clock=clock))[0]
    assert job.name == "sweeper" and job.every == settings.sweep_every_s == 60
    await job.run()  # an empty database: nothing due, no error


def size(file: Path) -> int:
    return file.stat().st_size


async def test_the_running_bot_checkpoints_sqlite_itself(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    """On SQLite `dsr run` takes the WAL checkpoint off its commits (a sweep's commit ran it,
    ~0.2 s) and checkpoints in a job of its own, and at shutdown; other processes (the CLI)
    keep SQLite's default of checkpointing past 1,000 pages."""
    jobs = periodic_jobs(Services(settings=settings, db=db, clock=clock))
    if db.dialect != "sqlite":
        assert [job.name for job in jobs] == ["sweeper"]
        pytest.skip("PostgreSQL has no WAL checkpoint to take over")
    checkpoint = jobs[1]
    assert checkpoint.name == "checkpoint" and checkpoint.every == 10

    async def autocheckpoint(database: Database) -> int:
        async with database.read() as session:
            return int((await session.exec(text("PRAGMA wal_autocheckpoint"))).scalar_one())  # type: ignore[call-overload]

    assert await autocheckpoint(db) == 1000  # a pooled connection from before
    file = Path(db.url.split(":///", 1)[1])
    cli = Database(db.url)
    try:
        async with Background(Sender(db, ScriptedTransport(), clock), [checkpoint], idle=60):
            assert await autocheckpoint(db) == DEFERRED_CHECKPOINT_PAGES > 1000
            assert await autocheckpoint(cli) == 1000
            before = size(file)
            async with db.session() as session:  # ~6 MB: past 1,000 pages of WAL
                for n in range(3000):
                    await enqueue(
                        session, key=f"big:{n}", chat_id=n, text="字" * 600, now=clock.now()
                    )
            # The commit copied nothing into the database file: it is all still in the WAL.
            assert size(file) == before
        # The checkpoint at shutdown did.
        assert size(file) > before + 4_000_000
        done = await db.checkpoint()
        assert done is not None and done[0] == 0 and done[1] == done[2] > 1000
    finally:
        await cli.dispose()
