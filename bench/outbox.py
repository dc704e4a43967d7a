"""How close the delivery engine gets to Telegram's flood limits without tripping them.

Queues 10,000 messages to 500 private chats and 400 to 20 groups (shuffled, as real notices
interleave), then one `Sender` delivers them through aiogram to the local Bot-API fake
(bot/fakeapi), which enforces the same quotas with sliding windows and answers 429 with
retry_after when they are broken. The fake runs in its own process, as Telegram would: sharing
the sender's event loop would make the bench measure the fake's CPU time as much as ours. The
one `Settings`; the bench multiplies Telegram's quotas by `--scale` (10: 300 messages/s overall,
200/min per group, 10/s per chat) so the run takes about half a minute.

    .venv/bin/python -m bench.outbox [--scale 10] [--database-url sqlite|postgresql://…]
                                     [--transport aiogram|memory]

A fresh SQLite file by default; with a PostgreSQL URL, a throwaway database next to the one
named (dropped afterwards). Every message must arrive exactly once and in order per chat, or the
bench fails. rate_fraction is messages per second (over the sender's whole run, first claim to
last result recorded) divided by the configured overall limit. The last line is:

    sent=N seconds=N rate_fraction=N throttled_429=N
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import func, make_url, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers every table)
from bot.app import create_bot
from bot.clock import SystemClock
from bot.config import Settings
from bot.fakeapi import DEFAULT_TOKEN, FakeTelegram, RateLimits, run_fake_server
from bot.fakeapi.limits import RateLimiter
from bot.outbox import enqueue
from bot.sender import OUTBOX, DeliveryLimiter, Outgoing, Sender, Throttled
from bot.telegram import AiogramTransport
from storage.db import Database

PRIVATE_CHATS = 500
PRIVATE_MESSAGES = 10_000
GROUPS = 20
GROUP_MESSAGES = 400


def fake_limits(settings: Settings) -> RateLimits:
    """The fake enforces exactly what the sender's limiter is configured to respect."""
    return RateLimits(
        global_per_second=settings.rate_global_per_s,
        group_per_minute=settings.rate_group_per_min,
        chat_per_second=settings.rate_chat_per_s,
    )


def scaled(scale: int, database_url: str) -> Settings:
    base = Settings(_env_file=None)
    return Settings(
        _env_file=None,
        bot_token=DEFAULT_TOKEN,
        database_url=database_url,
        rate_global_per_s=base.rate_global_per_s * scale,
        rate_group_per_min=base.rate_group_per_min * scale,
        rate_chat_per_s=base.rate_chat_per_s * scale,
    )


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@asynccontextmanager
async def fresh_database(base_url: str, workdir: Path) -> AsyncIterator[str]:
    """An empty database with the schema of storage/models.py."""
    if base_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{workdir / 'outbox.sqlite3'}"
        drop = None
    else:
        base_url = Settings(_env_file=None, database_url=base_url).database_url
        name = f"dsr_bench_outbox_{os.getpid()}"
        url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
        await _admin(base_url, f'CREATE DATABASE "{name}"')
        drop = (base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    try:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)
        await engine.dispose()
        yield url
    finally:
        if drop is not None:
            await _admin(*drop)


def workload(seed: int = 20260302) -> list[tuple[int, bool]]:
    """(chat_id, is_group) per message, shuffled so chats interleave as real notices do."""
    rng = random.Random(seed)
    private = [100_000 + n % PRIVATE_CHATS for n in range(PRIVATE_MESSAGES)]
    groups = [-100_000 - n % GROUPS for n in range(GROUP_MESSAGES)]
    messages = [(chat, False) for chat in private] + [(chat, True) for chat in groups]
    rng.shuffle(messages)
    return messages


def serve_fake(conn: Connection, limits: RateLimits, chats: list[int]) -> None:
    """Child process: the fake Bot API. Sends its URL, then on request what every chat got."""

    async def serve() -> None:
        fake = FakeTelegram(DEFAULT_TOKEN, limits=limits, keep_calls=False)
        for chat_id in chats:
            if chat_id > 0:
                fake.register_user(chat_id, f"检查员{chat_id}")
            else:
                fake.register_group(chat_id, f"部门工作群{-chat_id}")
        async with run_fake_server(fake) as base_url:
            conn.send(base_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            received = {chat_id: [m.text for m in fake.sent_by_bot(chat_id)] for chat_id in chats}
            refused = dict(fake.limiter.refused)
            conn.send((fake.throttled_429, refused, received, time.process_time()))

    asyncio.run(serve())


class MemoryTelegram:
    """`--transport memory`: the fake's flood windows without HTTP or aiogram, to measure the
    engine alone (claims, lanes, limiter, recording) when the CPU is the bottleneck."""

    def __init__(self, limits: RateLimits) -> None:
        self.windows = RateLimiter(limits)
        self.groups: set[int] = set()
        self.received: dict[int, list[str]] = defaultdict(list)
        self.throttled_429 = 0
        self.refused = self.windows.refused

    async def deliver(self, message: Outgoing) -> int:
        await asyncio.sleep(0.002)  # a round trip
        is_group = message.chat_id in self.groups
        retry_after = self.windows.admit(message.chat_id, is_group, time.monotonic())
        if retry_after is not None:
            self.throttled_429 += 1
            raise Throttled(retry_after)
        self.received[message.chat_id].append(message.text)
        return len(self.received[message.chat_id])


def timeline(stamps: list[datetime]) -> str:
    """Messages recorded in each second of the run: the ramp-up and the tail show here."""
    first = min(stamps)
    seconds = Counter(int((stamp - first).total_seconds()) for stamp in stamps)
    return " ".join(str(seconds[n]) for n in range(max(seconds) + 1))


async def run(settings: Settings, fake: Connection | None) -> tuple[int, float, int]:
    db = Database(settings.database_url)
    clock = SystemClock()
    expected: dict[int, list[str]] = defaultdict(list)
    messages = workload()
    for start in range(0, len(messages), 2000):
        async with db.session() as session:
            for chat_id, is_group in messages[start : start + 2000]:
                body = f"通知 {chat_id} 第 {len(expected[chat_id]) + 1} 条"
                expected[chat_id].append(body)
                await enqueue(
                    session,
                    key=f"bench:{chat_id}:{len(expected[chat_id])}",
                    chat_id=chat_id,
                    text=body,
                    now=clock.now(),
                    is_group=is_group,
                )

    limiter = DeliveryLimiter.from_settings(settings)
    if fake is None:
        memory = MemoryTelegram(fake_limits(settings))
        memory.groups = {chat_id for chat_id, is_group in messages if is_group}
        sender = Sender(db, memory, clock, limiter=limiter)
        started = time.perf_counter()
        sent = await sender.drain()
        seconds = time.perf_counter() - started
        throttled_429, refused, received = (
            memory.throttled_429,
            dict(memory.refused),
            memory.received,
        )
    else:
        settings.telegram_api_base = fake.recv()
        bot = create_bot(settings)
        try:
            sender = Sender(db, AiogramTransport(bot), clock, limiter=limiter)
            started, cpu = time.perf_counter(), time.process_time()
            sent = await sender.drain()
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            await bot.session.close()
        fake.send("report")
        throttled_429, refused, received, fake_cpu = fake.recv()
        print(
            f"CPU: the sender {cpu:.1f} s ({cpu / len(messages) * 1000:.2f} ms a message), "
            f"the fake's process {fake_cpu:.1f} s in all"
        )

    for chat_id, bodies in expected.items():
        got = received[chat_id]
        if got != bodies:
            raise SystemExit(f"chat {chat_id}: expected {len(bodies)} in order, got {got[:5]}…")
    async with db.read() as session:
        recorded = (
            await session.exec(  # type: ignore[call-overload]
                select(func.count()).where(
                    OUTBOX.c.status == "sent", OUTBOX.c.tg_message_id.is_not(None)
                )
            )
        ).scalar_one()
        stamps = (await session.exec(select(OUTBOX.c.sent_at))).scalars().all()  # type: ignore[call-overload]
    await db.dispose()
    print(f"messages recorded per second of the run: {timeline(stamps)}")
    if sent != len(messages) or recorded != len(messages):
        raise SystemExit(f"sent {sent}, recorded {recorded}, queued {len(messages)}")
    print(
        f"sender stats: {sender.stats}, overall rate at the end ×{sender.limiter.slowdown:.2f}; "
        f"429s by full quota: {refused or 'none'}; "
        f"per chat order and exactly-once verified for {len(expected)} chats"
    )
    return sent, seconds, throttled_429


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=int, default=10, help="multiply Telegram's quotas")
    parser.add_argument("--database-url", default="sqlite")
    parser.add_argument(
        "--transport",
        choices=["aiogram", "memory"],
        default="aiogram",
        help="aiogram over HTTP to the fake (the benchmark), or the fake's limits in memory",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    backend = "SQLite" if args.database_url.startswith("sqlite") else "PostgreSQL"

    chats = sorted({chat_id for chat_id, _ in workload()})
    ours, theirs = multiprocessing.Pipe()
    limits = fake_limits(scaled(args.scale, "sqlite://"))
    child = multiprocessing.Process(target=serve_fake, args=(theirs, limits, chats), daemon=True)
    if args.transport == "aiogram":
        child.start()

    async def bench() -> tuple[int, float, int, Settings]:
        with tempfile.TemporaryDirectory(prefix="dsr-bench-outbox-") as tmp:
            async with fresh_database(args.database_url, Path(tmp)) as url:
                settings = scaled(args.scale, url)
                connection = ours if args.transport == "aiogram" else None
                sent, seconds, throttled = await run(settings, connection)
                return sent, seconds, throttled, settings

    try:
        sent, seconds, throttled, settings = asyncio.run(bench())
    finally:
        if child.pid is not None:
            child.join(timeout=10)
            if child.is_alive():
                child.terminate()
    fraction = sent / seconds / settings.rate_global_per_s
    print(
        f"{backend}: {sent:,} messages in {seconds:.1f} s = {sent / seconds:.1f}/s against "
        f"{settings.rate_global_per_s}/s overall, {settings.rate_group_per_min}/min per group, "
        f"{settings.rate_chat_per_s}/s per chat"
    )
    print(
        f"sent={sent} seconds={seconds:.2f} rate_fraction={fraction:.3f} throttled_429={throttled}"
    )


if __name__ == "__main__":
    main()
