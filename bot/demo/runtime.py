"""One process, one event loop: the fake Telegram and the web page on one port, the real bot
polling it with what runs beside it in `dsr run` (the outbox sender and the periodic 三单
sweep, `bot.scheduler.Background`), and the demo's clock.

The bot is built by the same factories as `dsr run` (`bot.app`); only its settings differ: the
Bot API base is the fake's URL, the database is the demo's own, and `Services.clock` is the
demo's clock, which the sender and the sweeper read too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from aiogram import Bot, Dispatcher
from aiohttp import web
from sqlalchemy import text as sql
from sqlmodel import SQLModel, select

from bot.app import Services, create_bot, create_dispatcher, register_commands
from bot.config import Settings
from bot.demo.clock import DemoClock, next_working_morning, office_hours_start
from bot.demo.county import (
    BOT_NAME,
    BOT_USERNAME,
    TARGET_COUNT,
    Generated,
    People,
    generate_county,
    load_people,
)
from bot.demo.web import create_web_app
from bot.duties import load_calendar
from bot.fakeapi import DEFAULT_TOKEN, FakeTelegram, RateLimits
from bot.scheduler import Background, periodic_jobs
from bot.sender import DeliveryLimiter, Sender
from bot.sweeper import SweepReport, sweep
from bot.telegram import AiogramTransport
from bot.workdays import Calendar
from storage.db import Database, is_sqlite, upgrade
from storage.models import AppSetting

log = logging.getLogger(__name__)

DEMO_DATABASE = "sqlite+aiosqlite:///./data/demo.sqlite3"
GENERATED_KEY = "demo_generated"
OFFSET_KEY = "demo_clock_offset"


@dataclass
class DemoOptions:
    database_url: str = DEMO_DATABASE
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    speed: float = 0.0  # working days per minute of real time; 0: only when asked
    reset: bool = False
    # "migrate": Alembic, as `dsr run`; "models": create_all (tests); "ready": leave it alone.
    schema: Literal["migrate", "models", "ready"] = "migrate"
    timezone: str = "Asia/Shanghai"
    keep_calls: bool = False  # the fake's call log, for tests
    start: datetime | None = None  # a fresh county's demo time; default: now, in office hours
    targets: int = TARGET_COUNT


@dataclass
class Advanced:
    """What one 'next working day' did."""

    before: datetime
    after: datetime
    swept: SweepReport
    delivered: int


@dataclass
class Demo:
    """The running demo, for the web routes, the headless check and tests."""

    options: DemoOptions
    db: Database
    clock: DemoClock
    fake: FakeTelegram
    people: People
    services: Services
    bot: Bot
    dispatcher: Dispatcher
    background: Background
    drainer: Sender
    base_url: str = ""
    generated: Generated | None = None
    startup_seconds: float = 0.0
    speed: float = 0.0
    clock_version: int = 0  # bumped whenever the clock jumps or its speed changes
    calendar_cache: Calendar = field(default_factory=Calendar)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _deliver_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _auto: asyncio.Task[None] | None = None

    @property
    def timezone(self) -> str:
        return self.services.settings.timezone

    async def advance(self) -> Advanced:
        """Jump to 09:00 of the next working day, then let every duty that fell due be
        escalated and every message be delivered, as the morning run of the real bot does."""
        async with self._lock:
            before = self.clock.now()
            async with self.db.read() as session:
                self.calendar_cache = await load_calendar(session)
            self.clock.travel_to(next_working_morning(self.calendar_cache, before, self.timezone))
            await save_offset(self.db, self.clock.offset)
            self.clock_version += 1
            swept = await self.sweep()
            delivered = await self.deliver()
            self.fake.notify_changed()
            log.info("demo clock: %s -> %s", before, self.clock.now())
            return Advanced(before, self.clock.now(), swept, delivered)

    async def sweep(self) -> SweepReport:
        """The 三单 sweep the running bot does on its schedule, now, at the demo's time."""
        return await sweep(self.db, self.clock, self.services.settings)

    async def settled(self, within: float = 10.0) -> bool:
        """True once the bot has handled every update sent so far: polling handles updates one
        at a time and confirms them with its next getUpdates, after the handler returned."""
        return await self.fake.wait_until(lambda: not self.fake.pending_updates(), within)

    async def refresh_calendar(self) -> None:
        async with self.db.read() as session:
            self.calendar_cache = await load_calendar(session)

    async def deliver(self) -> int:
        """Send what the outbox holds now, without the flood pacing of the background sender
        (the fake has no flood limits): after 下一个工作日 the page shows the notices at once.
        Claims keep the two senders off each other's rows, and each chat's rows in order."""
        async with self._deliver_lock:  # one drain at a time: a sender is not re-entrant
            return await self.drainer.drain()

    def set_speed(self, per_minute: float) -> None:
        """Advance automatically, `per_minute` working days per real minute (0 stops)."""
        self.speed = max(0.0, per_minute)
        if self._auto is not None:
            self._auto.cancel()
            self._auto = None
        if self.speed > 0:
            self._auto = asyncio.create_task(self._auto_advance(60.0 / self.speed))
        self.clock_version += 1
        self.fake.notify_changed()

    async def _auto_advance(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.advance()
            except Exception:
                log.exception("automatic advance failed")

    async def stop_auto(self) -> None:
        if self._auto is not None:
            self._auto.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._auto
            self._auto = None


async def prepare_database(options: DemoOptions) -> Database:
    """The demo's own database: wiped with `reset`, migrated, and holding the county."""
    url = Settings(_env_file=None, database_url=options.database_url).database_url
    if options.reset:
        await _wipe(url)
    if options.schema == "migrate":
        await asyncio.to_thread(upgrade, url)
    db = Database(url)
    if options.schema == "models":
        async with db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)
    return db


async def _wipe(url: str) -> None:
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                await asyncio.to_thread(Path(path + suffix).unlink, missing_ok=True)
        return
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(sql("DROP SCHEMA public CASCADE"))
            await conn.execute(sql("CREATE SCHEMA public"))
    finally:
        await db.dispose()


async def _setting(db: Database, name: str) -> str | None:
    async with db.read() as session:
        row = (await session.exec(select(AppSetting).where(AppSetting.name == name))).first()
    return row.value if row else None


async def _save_setting(db: Database, name: str, value: str) -> None:
    async with db.session() as session:
        row = (await session.exec(select(AppSetting).where(AppSetting.name == name))).first()
        row = row or AppSetting(name=name, value="")
        row.value = value
        session.add(row)


async def save_offset(db: Database, offset: timedelta) -> None:
    """The demo's time survives a restart: deadlines in the database were computed with it."""
    await _save_setting(db, OFFSET_KEY, f"{offset.total_seconds():.3f}")


async def ensure_county(db: Database, clock: DemoClock, options: DemoOptions) -> Generated | None:
    """Generate the county once; a fresh county starts in office hours of a working day."""
    if await _setting(db, GENERATED_KEY) is not None:
        offset = await _setting(db, OFFSET_KEY)
        clock.offset = timedelta(seconds=float(offset or 0))
        return None
    if options.start is not None:
        clock.travel_to(options.start)
    else:
        async with db.read() as session:
            calendar = await load_calendar(session)
        clock.travel_to(office_hours_start(calendar, clock.now(), options.timezone))
    workdir = Path(tempfile.mkdtemp(prefix="dsr-demo-"))
    try:
        generated = await generate_county(db, clock, workdir, targets=options.targets)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    await save_offset(db, clock.offset)
    summary = ",".join(f"{k}={v}" for k, v in generated.counts.items())
    await _save_setting(db, GENERATED_KEY, summary)
    return generated


def populate_fake(fake: FakeTelegram, people: People) -> None:
    """Everyone has pressed Start; every group has the bot as an administrator."""
    for persona in people.personas:
        if persona.tg_user_id not in fake.users:
            fake.register_user(persona.tg_user_id, persona.name, language_code="zh-hans")
    for group in people.groups:
        if group.chat_id not in fake.chats:
            fake.register_group(
                group.chat_id, group.title, "supergroup", members=group.members, bot_admin=True
            )


def demo_settings(options: DemoOptions, db_url: str, base_url: str) -> Settings:
    return Settings(
        _env_file=None,
        bot_token=DEFAULT_TOKEN,
        database_url=db_url,
        telegram_api_base=base_url,
        redis_url=options.redis_url,
        office_admins=[],
        timezone=options.timezone,
        bot_username=BOT_USERNAME,
    )


@asynccontextmanager
async def run_demo(options: DemoOptions) -> AsyncIterator[Demo]:
    """Start everything; leaving the block stops everything (Ctrl-C included)."""
    started = time.perf_counter()
    db = await prepare_database(options)
    clock = DemoClock()
    tasks: list[asyncio.Task[None]] = []
    runner: web.AppRunner | None = None
    bot: Bot | None = None
    dispatcher: Dispatcher | None = None
    demo: Demo | None = None
    running: Background | None = None
    try:
        generated = await ensure_county(db, clock, options)
        people = await load_people(db)
        fake = FakeTelegram(
            DEFAULT_TOKEN,
            bot_username=BOT_USERNAME,
            bot_first_name=BOT_NAME,
            # Flood control is off: handlers answer directly, and a trainer clicking fast in a
            # group must not lose the bot's answer to a 429 (tests/test_fakeapi.py covers it).
            limits=RateLimits.disabled(),
            clock=clock.timestamp,
            keep_calls=options.keep_calls,
        )
        populate_fake(fake, people)
        sock = _listen(options.host, options.port)
        base_url = f"http://{options.host}:{sock.getsockname()[1]}"
        settings = demo_settings(options, db.url, base_url)
        services = Services(settings=settings, db=db, clock=clock)
        bot = create_bot(settings)
        dispatcher = create_dispatcher(services)
        transport = AiogramTransport(bot)
        sender = Sender(
            db,
            transport,
            clock,
            limiter=DeliveryLimiter.from_settings(settings),
            name="demo",
            office_admins=settings.office_admins,
        )
        background = Background(sender, periodic_jobs(services), idle=settings.sender_idle_s)
        demo = Demo(
            options=options,
            db=db,
            clock=clock,
            fake=fake,
            people=people,
            services=services,
            bot=bot,
            dispatcher=dispatcher,
            background=background,
            drainer=Sender(
                db, transport, clock, name="demo-now", office_admins=settings.office_admins
            ),
            base_url=base_url,
            generated=generated,
        )
        runner = web.AppRunner(create_web_app(demo), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await demo.refresh_calendar()
        await bot.me()
        await register_commands(bot)
        tasks.append(
            asyncio.create_task(
                # One update at a time, in order: a trainer clicking the moment a message
                # changes must meet the state a slower click would (see Demo.settled).
                dispatcher.start_polling(
                    bot, handle_signals=False, close_bot_session=False, handle_as_tasks=False
                )
            )
        )
        await background.start()
        running = background
        demo.set_speed(options.speed)
        demo.startup_seconds = time.perf_counter() - started
        yield demo
    finally:
        # In order: no more clock jumps or updates, then let sends in flight finish while the
        # fake still answers, then close the bot, the web server and the database.
        if demo is not None:
            await demo.stop_auto()
        if dispatcher is not None:
            with contextlib.suppress(RuntimeError):  # polling never started
                await dispatcher.stop_polling()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if running is not None:
            await running.stop()
        if dispatcher is not None:
            await dispatcher.storage.close()
        if bot is not None:
            await bot.session.close()
        if runner is not None:
            await runner.cleanup()
        await db.dispose()


def _listen(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so the bot knows the fake's URL even for port 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock
