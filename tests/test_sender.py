"""The delivery engine: exactly-once claims, per-chat order, 429, backoff, 403 and the limiter."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlmodel import col, select

import bot.sender as sender_module
from bot.clock import Clock, FrozenClock
from bot.fakeapi.limits import RateLimiter, RateLimits, SlidingWindow
from bot.outbox import enqueue
from bot.sender import (
    CLAIM_SECONDS,
    DeliveryError,
    DeliveryLimiter,
    Forbidden,
    Moved,
    Outgoing,
    Rejected,
    RetryLater,
    Sender,
    ServerWindow,
    Throttled,
    requeue_forbidden,
)
from storage.db import Database
from storage.models import OutboxMessage, Person, Role, RoleGrant
from tests.harness import Harness, text_of, unique

LIAISON = 900
INSPECTOR = 801


class ScriptedTransport:
    """Records what was sent; raises the errors scripted for a chat, one per call, first."""

    def __init__(self, pause: float = 0.0) -> None:
        self.sent: list[tuple[int, str]] = []
        self.calls: list[tuple[float, int, str]] = []
        self.script: dict[int, list[DeliveryError]] = defaultdict(list)
        self.pause = pause
        self.called = asyncio.Event()
        self.delivered = asyncio.Event()

    async def deliver(self, message: Outgoing) -> int:
        self.calls.append((asyncio.get_running_loop().time(), message.chat_id, message.text))
        self.called.set()
        if self.pause:
            await asyncio.sleep(self.pause)
        errors = self.script.get(message.chat_id)
        if errors:
            raise errors.pop(0)
        self.sent.append((message.chat_id, message.text))
        self.delivered.set()
        return len(self.sent)

    def texts(self, chat_id: int) -> list[str]:
        return [text for chat, text in self.sent if chat == chat_id]


async def queue(
    db: Database, clock: Clock, *messages: tuple[int, str], notify_department: str | None = None
) -> None:
    async with db.session() as session:
        for chat_id, text in messages:
            key = f"test:{chat_id}:{text}"
            await enqueue(
                session,
                key=key,
                chat_id=chat_id,
                text=text,
                now=clock.now(),
                notify_department=notify_department,
            )


async def rows(db: Database) -> dict[str, OutboxMessage]:
    async with db.read() as session:
        return {row.text: row for row in await session.exec(select(OutboxMessage))}


def sender(db: Database, transport: ScriptedTransport, clock: FrozenClock, **kw: object) -> Sender:
    return Sender(db, transport, clock, jitter=lambda: 0.5, **kw)  # type: ignore[arg-type]


async def test_sends_each_chat_in_order_and_records_the_message_id(
    db: Database, clock: FrozenClock
) -> None:
    await queue(db, clock, *[(chat, f"{chat}-{n}") for n in range(5) for chat in (1, 2, -3)])
    transport = ScriptedTransport(pause=0.001)
    assert await sender(db, transport, clock).drain() == 15
    for chat in (1, 2, -3):
        assert transport.texts(chat) == [f"{chat}-{n}" for n in range(5)]
    stored = await rows(db)
    ids = {text: n + 1 for n, (_, text) in enumerate(transport.sent)}
    assert all(row.status == "sent" and row.sent_at == clock.now() for row in stored.values())
    assert {text: row.tg_message_id for text, row in stored.items()} == ids
    assert await sender(db, transport, clock).drain() == 0


async def test_a_crash_after_the_commit_loses_nothing_and_sends_once(
    db: Database, clock: FrozenClock
) -> None:
    await queue(db, clock, (1, "任务"), (2, "通知"))
    # The process that committed died before sending; the next one finds the rows.
    transport = ScriptedTransport()
    assert await sender(db, transport, clock).drain() == 2
    assert await sender(db, transport, clock).drain() == 0
    assert sorted(transport.sent) == [(1, "任务"), (2, "通知")]


async def test_rows_claimed_by_a_crashed_sender_go_out_once_its_claim_expires(
    db: Database, clock: FrozenClock
) -> None:
    await queue(db, clock, (1, "a"), (1, "b"), (2, "c"))
    crashed = sender(db, ScriptedTransport(), clock)
    assert len(await crashed._claim(10)) == 3  # claimed, then the process died
    transport = ScriptedTransport()
    survivor = sender(db, transport, clock)
    assert await survivor.drain() == 0  # the claim still stands
    clock.advance(timedelta(seconds=CLAIM_SECONDS + 1))
    assert await survivor.drain() == 3
    assert await survivor.drain() == 0
    assert transport.sent == [(1, "a"), (1, "b"), (2, "c")]


async def test_two_senders_at_once_deliver_each_message_once_in_order(
    db: Database, clock: FrozenClock
) -> None:
    chats = range(1, 121)
    messages = [(chat, f"{chat}:{n}") for n in range(5) for chat in chats]
    await queue(db, clock, *messages)
    transport = ScriptedTransport(pause=0.002)
    first = sender(db, transport, clock, batch=40, per_chat=2)
    second = sender(db, transport, clock, batch=40, per_chat=2)
    # The second starts once the first holds claims, so both must take part whatever the
    # scheduler does (a plain gather let one sender finish everything on PostgreSQL).
    first_run = asyncio.create_task(first.drain())
    await transport.delivered.wait()
    counts = [await second.drain(), await first_run]
    assert sum(counts) == len(messages) and min(counts) > 0  # both took part
    assert sorted(transport.sent) == sorted(messages)
    for chat in chats:
        assert transport.texts(chat) == [f"{chat}:{n}" for n in range(5)]
    assert {row.status for row in (await rows(db)).values()} == {"sent"}


async def test_429_waits_retry_after_for_that_chat_and_costs_no_attempt(
    db: Database, clock: FrozenClock
) -> None:
    await queue(db, clock, (1, "first"), (1, "second"))
    transport = ScriptedTransport()
    transport.script[1] = [Throttled(0.3)]
    engine = sender(db, transport, clock)
    assert await engine.drain() == 2
    assert transport.texts(1) == ["first", "second"]
    (refused, _, _), (retried, _, _) = transport.calls[:2]
    assert retried - refused >= 0.3
    stored = await rows(db)
    assert stored["first"].throttled == 1 and stored["first"].attempts == 1
    assert engine.stats.throttled == 1


async def test_a_long_retry_after_goes_back_to_the_database(
    db: Database, clock: FrozenClock
) -> None:
    # "other" goes first: chat 1's bucket was idle, so its 429 pauses every chat for 30 s.
    await queue(db, clock, (2, "other"), (1, "first"), (1, "second"))
    transport = ScriptedTransport()
    transport.script[1] = [Throttled(sender_module.MAX_INLINE_WAIT + 20)]
    assert await sender(db, transport, clock).drain() == 1
    assert transport.sent == [(2, "other")]
    stored = await rows(db)
    assert stored["first"].next_attempt_at == clock.now() + timedelta(seconds=30)
    assert stored["first"].attempts == 0 and stored["first"].throttled == 1
    assert stored["second"].claimed_until is None  # waits behind "first", unclaimed
    clock.advance(timedelta(seconds=30))
    assert await sender(db, transport, clock).drain() == 2
    assert transport.texts(1) == ["first", "second"]


async def test_a_429_on_an_idle_chat_pauses_every_chat() -> None:
    limiter = DeliveryLimiter(global_per_s=None, group_per_min=None, chat_per_s=1)
    assert not limiter.throttled(2, 0.2, chat_was_idle=False)  # its own quota: that chat only
    assert limiter.slowdown == 1.0
    assert limiter.throttled(1, 0.2, chat_was_idle=True)  # the overall quota: everyone
    assert limiter.slowdown == 0.95  # and a little slower from now on
    loop = asyncio.get_running_loop()
    start = loop.time()
    await limiter.turn(99, False)
    assert loop.time() - start >= 0.19


async def test_429_from_the_fake_bot_api_is_honoured(harness: Harness) -> None:
    h = harness
    user = h.person(801, "甲")
    h.fake.limiter = RateLimiter(
        RateLimits(global_per_second=None, group_per_minute=None, chat_per_second=1)
    )
    await queue(h.services.db, h.services.clock, (user, "一"), (user, "二"))
    assert await h.deliver() == 2  # the second one got "retry after 1" and waited for it
    assert [m.text for m in h.fake.sent_by_bot(user)] == ["一", "二"]
    assert h.fake.throttled_429 == 1 and h.sender.stats.throttled == 1


async def test_network_errors_back_off_and_keep_the_chat_in_order(
    db: Database, clock: FrozenClock
) -> None:
    await queue(db, clock, (1, "first"), (1, "second"), (2, "other"))
    transport = ScriptedTransport()
    transport.script[1] = [RetryLater("timeout"), RetryLater("reset")]
    engine = sender(db, transport, clock)
    assert await engine.drain() == 1  # only chat 2; chat 1 waits for its first message
    stored = await rows(db)
    assert stored["first"].attempts == 1 and "timeout" in (stored["first"].last_error or "")
    # backoff(1): ceiling 2 s, half fixed and half jitter (0.5 here): 1.5 s
    assert stored["first"].next_attempt_at == clock.now() + timedelta(seconds=1.5)
    clock.advance(timedelta(seconds=1.5))
    assert await engine.drain() == 0
    stored = await rows(db)
    assert stored["first"].next_attempt_at == clock.now() + timedelta(seconds=3)
    clock.advance(timedelta(seconds=3))
    assert await engine.drain() == 2
    assert transport.texts(1) == ["first", "second"]
    assert (await rows(db))["first"].attempts == 3


async def test_network_errors_give_up_after_max_attempts(
    db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "MAX_ATTEMPTS", 2)
    await queue(db, clock, (1, "lost"))
    transport = ScriptedTransport()
    transport.script[1] = [RetryLater("down"), RetryLater("down")]
    engine = sender(db, transport, clock)
    await engine.drain()
    clock.advance(timedelta(minutes=10))
    await engine.drain()
    row = (await rows(db))["lost"]
    assert row.status == "failed" and row.attempts == 2 and "down" in (row.last_error or "")


async def test_rejected_and_moved(db: Database, clock: FrozenClock) -> None:
    await queue(db, clock, (1, "bad"), (1, "good"), (-5, "group"))
    transport = ScriptedTransport()
    transport.script[1] = [Rejected("message is too long")]
    transport.script[-5] = [Moved(-1005)]
    assert await sender(db, transport, clock).drain() == 2
    assert sorted(transport.sent) == [(-1005, "group"), (1, "good")]
    stored = await rows(db)
    assert stored["bad"].status == "failed" and stored["group"].chat_id == -1005


async def _people(db: Database, clock: Clock) -> None:
    async with db.session() as session:
        for tg_user_id, name in ((LIAISON, "联络员王"), (INSPECTOR, "检查员张")):
            person = Person(tg_user_id=tg_user_id, display_name=name, created_at=clock.now())
            session.add(person)
            await session.flush()
            assert person.id is not None
            role = Role.LIAISON if tg_user_id == LIAISON else Role.INSPECTOR
            session.add(
                RoleGrant(
                    person_id=person.id, role=role, department_code="D1", granted_at=clock.now()
                )
            )


async def test_403_gives_up_and_tells_the_liaison_once_per_episode(
    db: Database, clock: FrozenClock
) -> None:
    await _people(db, clock)
    await queue(db, clock, (INSPECTOR, "任务一"), (INSPECTOR, "任务二"), notify_department="D1")
    transport = ScriptedTransport()
    transport.script[INSPECTOR] = [Forbidden("bot was blocked by the user")]
    engine = sender(db, transport, clock)
    assert await engine.drain() == 1  # only the notice; the second task is not even tried
    stored = await rows(db)
    assert {stored[t].status for t in ("任务一", "任务二")} == {"failed"}
    assert len(transport.calls) == 2
    ((chat, notice),) = transport.sent
    assert chat == LIAISON and "检查员张" in notice and "2 条消息" in notice
    assert "任务" not in notice  # never what the messages were about

    # Still blocked: another refused message is the same episode, no second notice.
    await queue(db, clock, (INSPECTOR, "任务三"), notify_department="D1")
    transport.script[INSPECTOR] = [Forbidden("bot was blocked by the user")]
    assert await engine.drain() == 0

    # They open the bot: everything refused goes out, in order.
    async with db.session() as session:
        assert await requeue_forbidden(session, INSPECTOR, clock.now()) == 3
    assert await engine.drain() == 3
    assert transport.texts(INSPECTOR) == ["任务一", "任务二", "任务三"]

    # Blocked again later: a new episode, a new notice.
    await queue(db, clock, (INSPECTOR, "任务四"), notify_department="D1")
    transport.script[INSPECTOR] = [Forbidden("bot was blocked by the user")]
    assert await engine.drain() == 1
    assert len(transport.texts(LIAISON)) == 2


async def test_403_then_start_delivers_the_assignment(harness: Harness) -> None:
    h = harness
    db, clock = h.services.db, h.services.clock
    await _people(db, clock)
    h.person(LIAISON, "联络员王")
    h.person(INSPECTOR, "检查员张", started=False)
    await queue(db, clock, (INSPECTOR, "<b>检查任务</b>"), notify_department="D1")
    assert await h.deliver() == 1
    notice = text_of(unique(h.fake.sent_by_bot(LIAISON)))
    assert "检查员张" in notice and "邀请链接" in notice
    assert h.fake.sent_by_bot(INSPECTOR) == []

    await h.send(INSPECTOR, "/start")
    await h.deliver()
    assert [m.text for m in h.fake.sent_by_bot(INSPECTOR)][-1] == "检查任务"
    async with db.read() as session:
        row = (
            await session.exec(select(OutboxMessage).where(OutboxMessage.chat_id == INSPECTOR))
        ).one()
    assert row.status == "sent" and row.tg_message_id is not None


@pytest.mark.parametrize(("limit", "window", "lanes"), [(5, 0.1, 1), (4, 0.1, 6), (1, 0.05, 3)])
async def test_the_server_never_counts_more_than_its_window(
    limit: int, window: float, lanes: int
) -> None:
    """The server stamps a request anywhere between our send and its answer (here: at a random
    point of a random round trip); the fake's own sliding window must admit every one."""
    server = SlidingWindow(limit, window)
    ours = ServerWindow(limit, window)
    loop = asyncio.get_running_loop()
    rng = random.Random(limit * 100 + lanes)
    gate = asyncio.Lock()  # one request counted at a time, as the sender's gate does
    refused: list[float] = []
    stamps: list[float] = []

    async def lane() -> None:
        for _ in range(limit * 3):
            async with gate:
                await ours.room()
                answer = ours.take()
            trip = rng.uniform(0, window / 2)
            await asyncio.sleep(trip * rng.random())
            now = loop.time()
            if server.retry_after("k", now) is None:
                server.record("k", now)
                stamps.append(now)
            else:
                refused.append(now)
            await asyncio.sleep(trip * rng.random())
            answer.set_result(loop.time())

    await asyncio.gather(*(lane() for _ in range(lanes)))
    assert refused == []
    assert len(stamps) == limit * 3 * lanes


async def test_a_request_never_answered_is_presumed_answered_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender_module, "PRESUME_AFTER", 0.1)
    ours = ServerWindow(1, 0.05)
    loop = asyncio.get_running_loop()
    ours.take()  # lost: never answered
    started = loop.time()
    await ours.room()
    # taken as answered 0.1 s after it went, then one more window: not aiogram's 60 s (the
    # upper bound leaves a busy machine room)
    assert 0.15 <= loop.time() - started < 2.0
    assert ours.presumed == 1


async def test_the_limiter_keeps_a_chat_within_its_quota(db: Database, clock: FrozenClock) -> None:
    await queue(db, clock, *[(7, f"m{n}") for n in range(12)], (8, "other"))
    transport = ScriptedTransport()
    limiter = DeliveryLimiter(global_per_s=100, group_per_min=None, chat_per_s=10)
    assert await sender(db, transport, clock, limiter=limiter).drain() == 13
    quota = RateLimiter(
        RateLimits(global_per_second=100, group_per_minute=None, chat_per_second=10)
    )
    for at, chat, _ in transport.calls:
        assert quota.admit(chat, False, at) is None
    sends = [at for at, chat, _ in transport.calls if chat == 7]
    # Ten go without waiting for a window (about 0.1 s, paced by the overall quota; a busy
    # machine once took 0.9 s, so only the window itself is the line); the eleventh waits for
    # the first one's window.
    assert sends[9] - sends[0] < 1.0 <= sends[10] - sends[0]


async def test_requeue_touches_only_that_chats_403s(db: Database, clock: FrozenClock) -> None:
    await queue(db, clock, (1, "a"), (2, "b"))
    async with db.session() as session:
        for row in await session.exec(select(OutboxMessage)):
            row.status = "failed"
            row.last_error = "forbidden: blocked" if row.text == "a" else "rejected: too long"
            session.add(row)
    async with db.session() as session:
        assert await requeue_forbidden(session, 1, clock.now()) == 1
        assert await requeue_forbidden(session, 2, clock.now()) == 0
    async with db.read() as session:
        pending = await session.exec(
            select(OutboxMessage.text).where(col(OutboxMessage.status) == "pending")
        )
        assert list(pending) == ["a"]


async def test_the_overall_window_spreads_requests_instead_of_bursting() -> None:
    ours = ServerWindow(100, 1.0, paced=True)  # 100 a second: one each 9 ms (PACE 0.9)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(11):
        await ours.room()
        ours.take().set_result(loop.time())
    assert loop.time() - started >= 10 * 0.01 * sender_module.PACE - 0.001
    assert loop.time() - started < 1.0  # paced, not held for the window (of 1 s)
