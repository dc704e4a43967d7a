"""The outbox and duty primitives every feature builds on."""

from __future__ import annotations

from datetime import date

from sqlmodel import select

from bot.clock import FrozenClock
from bot.duties import complete_duty, deadline_after, load_calendar, open_duty
from bot.outbox import Document, enqueue
from storage.db import Database
from storage.models import Duty, DutyStatus, Notice, OutboxMessage


async def test_enqueue_is_idempotent_per_key(db: Database, clock: FrozenClock) -> None:
    async with db.session() as session:
        assert await enqueue(
            session,
            key="k1",
            chat_id=5,
            text="一",
            now=clock.now(),
            buttons=[[("确认", "a1:confirm:1")]],
        )
        assert not await enqueue(session, key="k1", chat_id=5, text="二", now=clock.now())
        assert await enqueue(
            session,
            key="k2",
            chat_id=-9,
            text="群",
            now=clock.now(),
            is_group=True,
            document=Document("a.xlsx", b"PK"),
        )
    async with db.read() as session:
        rows = list(await session.exec(select(OutboxMessage).order_by(OutboxMessage.id)))  # type: ignore[arg-type]
    assert [r.text for r in rows] == ["一", "群"]
    assert rows[0].reply_markup == {
        "inline_keyboard": [[{"text": "确认", "callback_data": "a1:confirm:1"}]]
    }
    assert rows[1].method == "sendDocument" and rows[1].document == b"PK"


async def test_duty_done_late_closes_its_notices(db: Database, clock: FrozenClock) -> None:
    async with db.session() as session:
        calendar = await load_calendar(session)
        deadline = deadline_after(calendar, date(2026, 2, 13), "confirm")  # Friday before 春节
        assert deadline == date(2026, 2, 24)  # 14 Feb is a make-up Saturday: 14th, then 24th
        duty = await open_duty(
            session,
            kind="confirm",
            subject="assignment:1",
            deadline=deadline,
            responsible_role="inspector",
            department_code="SJJ",
            now=clock.now(),
        )
        again = await open_duty(
            session,
            kind="confirm",
            subject="assignment:1",
            deadline=date(2030, 1, 1),
            responsible_role="inspector",
            department_code="SJJ",
            now=clock.now(),
        )
        assert again.id == duty.id and again.deadline == deadline
        assert duty.id is not None
        session.add(Notice(duty_id=duty.id, kind="reminder", year=2026, issued_at=clock.now()))
    async with db.session() as session:
        done = await complete_duty(
            session,
            kind="confirm",
            subject="assignment:1",
            now=clock.now(),
            today=date(2026, 2, 25),
        )
    assert done is not None and done.status == DutyStatus.DONE_LATE
    async with db.read() as session:
        notice = (await session.exec(select(Notice))).one()
        duty_row = (await session.exec(select(Duty))).one()
    assert (notice.status, notice.closed_late) == ("closed", True)
    assert duty_row.status == DutyStatus.DONE_LATE
