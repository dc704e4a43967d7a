"""The background of `dsr run`: jobs run at once (catching up), the sender delivers what they
queue, and stopping lets a send in flight finish."""

from __future__ import annotations

import asyncio

from bot.app import Services
from bot.clock import FrozenClock
from bot.config import Settings
from bot.outbox import enqueue
from bot.scheduler import Background, PeriodicJob, periodic_jobs
from bot.sender import Sender
from storage.db import Database
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
    (job,) = periodic_jobs(Services(settings=settings, db=db, clock=clock))
    assert job.name == "sweeper" and job.every == settings.sweep_every_s == 60
    await job.run()  # an empty database: nothing due, no error
