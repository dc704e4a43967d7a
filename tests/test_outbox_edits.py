"""Outbox edits: a row that edits a message the outbox sent earlier, named by its key."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import select

from bot.clock import FrozenClock
from bot.outbox import OUTBOX, enqueue, enqueue_edit, mark_sent
from bot.sender import (
    CLAIM_SECONDS,
    DeliveryError,
    Forbidden,
    Outgoing,
    Rejected,
    RetryLater,
    Throttled,
)
from storage.db import Database
from storage.models import OutboxMessage
from tests.harness import Harness, text_of
from tests.test_sender import ScriptedTransport, sender

BUTTONS = [[("执行抽取", "d1:run:1:0"), ("放弃", "d1:drop:1:0")]]


class EditingTransport(ScriptedTransport):
    """Like ScriptedTransport; edits are recorded as (chat, message id, text), return the
    edited message's id, and raise the errors of ``edit_script``."""

    def __init__(self, pause: float = 0.0) -> None:
        super().__init__(pause)
        self.edits: list[tuple[int, int, str]] = []
        self.edit_script: dict[int, list[DeliveryError]] = defaultdict(list)

    async def deliver(self, message: Outgoing) -> int:
        if message.message_id is None:
            return await super().deliver(message)
        self.calls.append((asyncio.get_running_loop().time(), message.chat_id, message.text))
        errors = self.edit_script.get(message.chat_id)
        if errors:
            raise errors.pop(0)
        self.edits.append((message.chat_id, message.message_id, message.text))
        return message.message_id


async def send_and_edit(db: Database, clock: FrozenClock, chat_id: int, name: str) -> None:
    async with db.session() as session:
        await enqueue(
            session,
            key=f"t:msg:{name}",
            chat_id=chat_id,
            text=name,
            buttons=BUTTONS,
            now=clock.now(),
        )
        assert await enqueue_edit(
            session,
            key=f"t:edit:{name}",
            edits=f"t:msg:{name}",
            text=lambda old: f"{old}\n已执行",
            now=clock.now(),
        )


async def stored(db: Database) -> dict[str, OutboxMessage]:
    async with db.read() as session:
        return {row.idem_key: row for row in await session.exec(select(OutboxMessage))}


async def test_an_edit_changes_the_sent_message_and_removes_its_buttons(harness: Harness) -> None:
    h = harness
    user = h.person(801, "甲")
    db, clock = h.services.db, h.services.clock
    assert isinstance(clock, FrozenClock)
    await send_and_edit(db, clock, user, "<b>抽取承诺</b>")
    assert await h.deliver() == 2  # sent and edited in one lane: the id came from memory
    (message,) = h.fake.sent_by_bot(user)
    assert text_of(message) == "抽取承诺\n已执行" and message.button_texts() == []
    assert message.history[0]["reply_markup"] is not None  # it had buttons before
    rows = await stored(db)
    edit = rows["t:edit:<b>抽取承诺</b>"]
    assert edit.method == "editMessageText" and edit.status == "sent"
    assert edit.tg_message_id == rows["t:msg:<b>抽取承诺</b>"].tg_message_id == message.message_id

    # Only the keyboard: no text, editMessageReplyMarkup.
    async with db.session() as session:
        await enqueue(
            session, key="t:msg:2", chat_id=user, text="二", buttons=BUTTONS, now=clock.now()
        )
    assert await h.deliver() == 1
    async with db.session() as session:
        assert await enqueue_edit(session, key="t:edit:2", edits="t:msg:2", now=clock.now())
        assert not await enqueue_edit(session, key="t:edit:2", edits="t:msg:2", now=clock.now())
        assert not await enqueue_edit(session, key="t:edit:9", edits="t:msg:9", now=clock.now())
    assert await h.deliver() == 1  # resolved from the database this time
    second = h.fake.sent_by_bot(user)[1]
    assert text_of(second) == "二" and second.button_texts() == []
    assert (await stored(db))["t:edit:2"].method == "editMessageReplyMarkup"


async def test_not_modified_and_not_found_count_as_done(harness: Harness) -> None:
    h = harness
    user = h.person(801, "甲")
    db, clock = h.services.db, h.services.clock
    assert isinstance(clock, FrozenClock)
    await send_and_edit(db, clock, user, "一")
    await h.deliver()
    async with db.session() as session:
        # The same text again: Telegram says "message is not modified".
        await enqueue_edit(
            session, key="t:again", edits="t:msg:一", text="一\n已执行", now=clock.now()
        )
    assert await h.deliver() == 0
    (message,) = h.fake.sent_by_bot(user)
    h.fake.delete_message(message)
    async with db.session() as session:
        await enqueue_edit(session, key="t:gone", edits="t:msg:一", text="三", now=clock.now())
    assert await h.deliver() == 0
    rows = await stored(db)
    assert rows["t:again"].status == rows["t:gone"].status == "skipped"
    assert "not modified" in (rows["t:again"].last_error or "")
    assert "not found" in (rows["t:gone"].last_error or "")
    assert h.sender.stats.skipped == 2 and len(message.history) == 1  # edited once


async def test_an_edit_of_a_message_given_up_does_nothing(db: Database, clock: FrozenClock) -> None:
    await send_and_edit(db, clock, 1, "坏")
    await send_and_edit(db, clock, 2, "好")
    transport = EditingTransport()
    transport.script[1] = [Rejected("message is too long")]
    assert await sender(db, transport, clock).drain() == 2  # chat 2's message and edit
    assert [call[1] for call in transport.calls].count(1) == 1  # the edit made no request
    rows = await stored(db)
    assert rows["t:msg:坏"].status == "failed"
    assert rows["t:edit:坏"].status == "skipped" and "坏" in (rows["t:edit:坏"].last_error or "")
    assert transport.edits == [(2, 1, "好\n已执行")]


async def test_an_edit_waits_for_its_message_and_follows_the_usual_rules(
    db: Database, clock: FrozenClock
) -> None:
    await send_and_edit(db, clock, 1, "承诺")
    transport = EditingTransport()
    transport.script[1] = [RetryLater("timeout")]
    engine = sender(db, transport, clock)
    assert await engine.drain() == 0  # the message backs off; its edit waits behind it
    assert transport.edits == []
    clock.advance(timedelta(seconds=2))
    transport.edit_script[1] = [Throttled(0.05), RetryLater("reset")]
    assert await engine.drain() == 1  # the message; the edit: a 429, then a backoff
    assert transport.edits == []
    clock.advance(timedelta(seconds=2))
    assert await engine.drain() == 1
    assert transport.edits == [(1, 1, "承诺\n已执行")]
    rows = await stored(db)
    assert rows["t:edit:承诺"].attempts == 2 and rows["t:edit:承诺"].throttled == 1

    # 403 on an edit fails it, like a send.
    await send_and_edit(db, clock, 2, "群")
    transport.script[2] = [Forbidden("bot was kicked")]
    await engine.drain()  # the message is refused, and the edit queued behind it with it
    rows = await stored(db)
    assert rows["t:msg:群"].status == rows["t:edit:群"].status == "failed"


async def test_a_handler_delivered_row_is_edited_and_sent_only_if_the_handler_did_not(
    db: Database, clock: FrozenClock
) -> None:
    async with db.session() as session:
        for chat in (1, 2):
            await enqueue(
                session,
                key=f"t:msg:{chat}",
                chat_id=chat,
                text="直接回复",
                buttons=BUTTONS,
                not_before=clock.now() + timedelta(seconds=60),
                now=clock.now(),
            )
        assert await mark_sent(session, key="t:msg:1", message_id=77, now=clock.now())
        for chat in (1, 2):
            await enqueue_edit(
                session, key=f"t:edit:{chat}", edits=f"t:msg:{chat}", text="改", now=clock.now()
            )
    transport = EditingTransport()
    engine = sender(db, transport, clock)
    assert await engine.drain() == 1  # chat 2 waits for its handler; chat 1's id is known
    assert transport.edits == [(1, 77, "改")] and transport.sent == []
    clock.advance(timedelta(seconds=60))  # chat 2's handler died: the sender sends it
    assert await engine.drain() == 2
    assert transport.sent == [(2, "直接回复")] and transport.edits[1] == (2, 1, "改")
    async with db.session() as session:
        assert not await mark_sent(session, key="t:msg:2", message_id=5, now=clock.now())


async def test_a_crash_between_edit_and_record_edits_again_harmlessly(harness: Harness) -> None:
    h = harness
    user = h.person(801, "甲")
    db, clock = h.services.db, h.services.clock
    assert isinstance(clock, FrozenClock)
    await send_and_edit(db, clock, user, "承诺")
    # A sender claimed both rows and died before sending anything.
    crashed = h.sender.__class__(db, h.sender.transport, clock, name="crashed")
    assert len(await crashed._claim(10)) == 2
    assert await h.deliver() == 0
    clock.advance(timedelta(seconds=CLAIM_SECONDS + 1))
    assert await h.deliver() == 2
    # Now as if the edit went out but its row was never marked: it goes out again.
    async with db.session() as session:
        connection = await session.connection()
        await connection.execute(
            update(OUTBOX)
            .where(OUTBOX.c.idem_key == "t:edit:承诺")
            .values(status="pending", tg_message_id=None, claimed_by=None, claimed_until=None)
        )
    assert await h.deliver() == 0
    (message,) = h.fake.sent_by_bot(user)
    assert text_of(message) == "承诺\n已执行" and message.button_texts() == []
    assert len(message.history) == 1  # Telegram saw "not modified": one edit, one message
    assert (await stored(db))["t:edit:承诺"].status == "skipped"


async def test_two_senders_send_and_edit_each_message_once_in_order(
    db: Database, clock: FrozenClock
) -> None:
    chats = range(1, 61)
    for chat in chats:
        await send_and_edit(db, clock, chat, f"{chat}")
    transport = EditingTransport(pause=0.002)
    first = sender(db, transport, clock, batch=20, per_chat=1)
    second = sender(db, transport, clock, batch=20, per_chat=1)
    first_run = asyncio.create_task(first.drain())
    await transport.delivered.wait()
    counts = [await second.drain(), await first_run]
    assert sum(counts) == 2 * len(chats) and min(counts) > 0
    assert sorted(transport.sent) == sorted((chat, f"{chat}") for chat in chats)
    ids = {chat: n + 1 for n, (chat, _) in enumerate(transport.sent)}
    assert sorted(transport.edits) == sorted((chat, ids[chat], f"{chat}\n已执行") for chat in chats)
    rows = await stored(db)
    assert {row.status for row in rows.values()} == {"sent"}
