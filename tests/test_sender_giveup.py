"""Giving up after repeated network failures: the office is told, once per batch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

import bot.sender as sender_module
from bot.clock import FrozenClock
from bot.outbox import enqueue
from bot.sender import RetryLater
from storage.db import Database
from storage.models import ChatBinding, OutboxMessage, Person, Role, RoleGrant
from tests.test_sender import ScriptedTransport, sender

OFFICE_GROUP = -100_900
DEPARTMENT_GROUP = -100_901
INSPECTOR = 801
STRANGER = 802
FINE = 803


async def _setup(db: Database, clock: FrozenClock, *, office_group: bool = True) -> None:
    async with db.session() as session:
        session.add(Person(tg_user_id=INSPECTOR, display_name="检查员张", created_at=clock.now()))
        for chat_id, kind, title in (
            (OFFICE_GROUP, "office", "协调办工作群"),
            (DEPARTMENT_GROUP, "department", "食药科工作群"),
        ):
            if kind == "office" and not office_group:
                continue
            session.add(
                ChatBinding(
                    chat_id=chat_id,
                    kind=kind,
                    department_code="D1" if kind == "department" else None,
                    title=title,
                    bound_by=1,
                    bound_at=clock.now(),
                )
            )


async def _queue(db: Database, clock: FrozenClock, *messages: tuple[str, int, str]) -> None:
    async with db.session() as session:
        for key, chat_id, body in messages:
            await enqueue(
                session,
                key=key,
                chat_id=chat_id,
                text=body,
                now=clock.now(),
                is_group=chat_id < 0,
            )


async def _statuses(db: Database) -> dict[str, str]:
    async with db.read() as session:
        rows = await session.exec(select(OutboxMessage))
        return {row.idem_key: row.status for row in rows}


async def test_giving_up_on_several_chats_tells_the_office_once(
    db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "MAX_ATTEMPTS", 2)
    await _setup(db, clock)
    await _queue(
        db,
        clock,
        ("notice:reminder:1:801", INSPECTOR, "懒政提醒单：某某公司"),
        ("notice:digest:1-9:-100901:1", DEPARTMENT_GROUP, "督办汇总"),
        ("assignment:deliver:5:802", STRANGER, "检查任务：某某商店"),
        ("draws:list:3:803", FINE, "抽查名单"),
    )
    transport = ScriptedTransport()
    for chat in (INSPECTOR, DEPARTMENT_GROUP, STRANGER):
        transport.script[chat] = [RetryLater("connection reset")] * 2
    engine = sender(db, transport, clock)
    assert await engine.drain() == 1  # only FINE; the others back off
    assert transport.texts(OFFICE_GROUP) == []

    clock.advance(timedelta(minutes=10))
    assert await engine.drain() == 1  # the office's notice; the three are given up
    statuses = await _statuses(db)
    assert [statuses[k] for k in sorted(statuses) if not k.startswith("delivery:")] == [
        "failed",
        "sent",
        "failed",
        "failed",
    ]
    (notice,) = transport.texts(OFFICE_GROUP)
    assert "以下 3 条消息" in notice and "重试 2 次" in notice
    assert "检查员张：1 条（三单通知）" in notice
    assert "工作群“食药科工作群”：1 条（三单通知）" in notice
    assert "Telegram 用户 802：1 条（检查任务）" in notice
    assert "某某" not in notice and "抽查" not in notice  # never the messages themselves
    async with db.read() as session:
        row = (
            await session.exec(select(OutboxMessage).where(OutboxMessage.chat_id == OFFICE_GROUP))
        ).one()
    assert row.is_group and row.idem_key.startswith("delivery:gave_up:")

    clock.advance(timedelta(hours=1))
    assert await engine.drain() == 0  # told once


async def test_without_an_office_group_the_office_members_are_told_privately(
    db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "MAX_ATTEMPTS", 1)
    await _setup(db, clock, office_group=False)
    async with db.session() as session:
        office = Person(tg_user_id=700, display_name="协调办李", created_at=clock.now())
        session.add(office)
        await session.flush()
        assert office.id is not None
        session.add(RoleGrant(person_id=office.id, role=Role.OFFICE, granted_at=clock.now()))
    await _queue(db, clock, ("notice:reminder:1:801", INSPECTOR, "懒政提醒单"))
    transport = ScriptedTransport()
    transport.script[INSPECTOR] = [RetryLater("timeout")]
    assert await sender(db, transport, clock).drain() == 1
    (notice,) = transport.texts(700)
    assert "检查员张：1 条（三单通知）" in notice


async def test_giving_up_on_a_notice_to_the_office_tells_nobody(
    db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "MAX_ATTEMPTS", 1)
    await _setup(db, clock)
    await _queue(db, clock, ("delivery:gave_up:1-1:-100900", OFFICE_GROUP, "消息发送失败"))
    transport = ScriptedTransport()
    transport.script[OFFICE_GROUP] = [RetryLater("timeout")]
    assert await sender(db, transport, clock).drain() == 0
    assert await _statuses(db) == {"delivery:gave_up:1-1:-100900": "failed"}


async def test_without_an_office_group_the_office_admins_are_told_too(
    db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "MAX_ATTEMPTS", 1)
    await _setup(db, clock, office_group=False)
    await _queue(db, clock, ("notice:reminder:1:801", INSPECTOR, "懒政提醒单"))
    transport = ScriptedTransport()
    transport.script[INSPECTOR] = [RetryLater("timeout")]
    # 701 is only in OFFICE_ADMINS: no Person, no OFFICE role.
    engine = sender(db, transport, clock, office_admins=[701])
    assert await engine.drain() == 1
    (notice,) = transport.texts(701)
    assert "检查员张：1 条（三单通知）" in notice
    assert await _statuses(db) == {
        "notice:reminder:1:801": "failed",
        "delivery:gave_up:1-1:701": "sent",
    }


async def test_with_an_office_group_the_office_admins_are_not_told_privately(
    db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "MAX_ATTEMPTS", 1)
    await _setup(db, clock)
    await _queue(db, clock, ("notice:reminder:1:801", INSPECTOR, "懒政提醒单"))
    transport = ScriptedTransport()
    transport.script[INSPECTOR] = [RetryLater("timeout")]
    assert await sender(db, transport, clock, office_admins=[701]).drain() == 1
    assert len(transport.texts(OFFICE_GROUP)) == 1 and transport.texts(701) == []
