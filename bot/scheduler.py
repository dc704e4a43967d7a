"""What runs beside polling in `dsr run`: the outbox sender and the periodic jobs.

APScheduler (``AsyncIOScheduler``) only wakes things up. Every job reads what is due from the
database, which is the record, so a missed tick, a restart or a second process loses nothing:
each job runs once at start-up (after downtime, the first sweep catches up on everything due),
then every `every` seconds; ticks missed while one run is still going are coalesced into one.

The sender is not an APScheduler job: it is one long task (``Sender.run``) that looks for due
rows every ``sender_idle_s`` seconds, and at once when a job that may have queued messages ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from bot.sender import Sender

if TYPE_CHECKING:
    from bot.app import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    every: float
    """Seconds between runs."""
    run: Callable[[], Awaitable[object]]
    at_start: Callable[[], Awaitable[object]] | None = None
    """Awaited once when the background starts, before any job runs."""
    at_stop: Callable[[], Awaitable[object]] | None = None
    """Awaited once at shutdown, after the sender has stopped."""


CHECKPOINT_EVERY_S = 10.0
"""SQLite: seconds between the bot's WAL checkpoints (docs/delivery.md, "The WAL checkpoint")."""


def periodic_jobs(services: Services) -> list[PeriodicJob]:
    """The jobs of the running bot; each one only reads the database to know what is due.

    On SQLite the bot's commits leave the WAL checkpoint to a job of its own (PASSIVE, every
    ``CHECKPOINT_EVERY_S`` and at shutdown) instead of running it inside whichever commit
    crosses SQLite's 1,000 pages, such as a sweep's (docs/delivery.md)."""
    from bot.notices import prepare_messages
    from bot.sweeper import sweep

    settings = services.settings
    db = services.db

    async def sweep_now() -> object:
        return await sweep(db, services.clock, settings)

    async def prepare_sweep() -> None:
        prepare_messages()

    jobs = [PeriodicJob("sweeper", settings.sweep_every_s, sweep_now, at_start=prepare_sweep)]
    if db.dialect == "sqlite":
        jobs.append(
            PeriodicJob(
                "checkpoint",
                CHECKPOINT_EVERY_S,
                db.checkpoint,
                at_start=db.defer_checkpoints,
                at_stop=db.checkpoint,
            )
        )
    return jobs


class Background:
    """Starts the sender loop and the periodic jobs; `stop()` lets sends in flight finish."""

    def __init__(
        self,
        sender: Sender,
        jobs: list[PeriodicJob],
        *,
        idle: float = 1.0,
        scheduler: AsyncIOScheduler | None = None,
    ) -> None:
        self.sender = sender
        self.jobs = jobs
        self.idle = idle
        self.scheduler = scheduler or AsyncIOScheduler(timezone=UTC)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._sender_task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Something was queued: look at the outbox now rather than at the next idle tick."""
        self._wake.set()

    async def start(self) -> None:
        self._stop.clear()
        for job in self.jobs:
            if job.at_start is not None:
                await job.at_start()
        self._sender_task = asyncio.create_task(
            self.sender.run(self._stop, wake=self._wake, idle=self.idle), name="outbox-sender"
        )
        for job in self.jobs:
            self.scheduler.add_job(
                self._runner(job),
                IntervalTrigger(seconds=job.every, timezone=UTC),
                id=job.name,
                name=job.name,
                next_run_time=datetime.now(UTC),  # at once: catch up after downtime
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,  # a late tick still runs (once, coalesced)
            )
        self.scheduler.start()

    def _runner(self, job: PeriodicJob) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await job.run()
            except Exception:
                log.exception("periodic job %s failed; it runs again at the next tick", job.name)
            finally:
                self.wake()

        return run

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self._stop.set()
        if self._sender_task is not None:
            await self._sender_task
            self._sender_task = None
        for job in self.jobs:
            if job.at_stop is not None:
                try:
                    await job.at_stop()
                except Exception:
                    log.exception("the last run of %s at shutdown failed", job.name)

    async def __aenter__(self) -> Background:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
