"""The sweeper against a real database, with a clock that travels: the ladder reminder → 督办 →
问责, catch-up after downtime, holidays, quiet hours, two sweepers at once."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, func, select

from bot.clock import FrozenClock
from bot.config import Settings
from bot.duties import complete_duty, load_calendar, open_duty
from bot.notices import DutyRow
from bot.sweeper import Rules, in_quiet_hours, plan, reminder_date, sweep, warning_step
from bot.workdays import Calendar
from storage.db import Database
from storage.models import (
    Assignment,
    ChatBinding,
    Department,
    Draw,
    Duty,
    DutyStatus,
    Inspection,
    InspectionItem,
    Inspector,
    Notice,
    OutboxMessage,
    Person,
    RoleGrant,
    Target,
    Task,
)

ZHANG, LI, LIAISON, OFFICE_MEMBER = 501, 502, 601, 701
DEPARTMENT_GROUP, OFFICE_GROUP = -2001, -3001
TARGET_NAME, TARGET_USCC = "城关红星食品有限公司", "91330100MA27XL0A3B"


def beijing(year: int, month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    """A wall-clock time in Beijing, as the aware UTC the clock holds."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(
        UTC
    )


@dataclass
class World:
    inspection_id: int
    zhang: int
    li: int
    assignment_zhang: int
    assignment_li: int


async def build_world(
    db: Database, now: datetime, *, office_group: bool = True, department_group: bool = True
) -> World:
    """Two departments, two bound inspectors of 县市场监督管理局 assigned to one inspection, its
    liaison, an office member; the department group and (optionally) the office group."""
    async with db.session() as session:
        for code, name in (("SJJ", "县市场监督管理局"), ("SWJ", "县税务局")):
            session.add(Department(code=code, name=name, created_at=now, updated_at=now))
        zhang = Inspector(
            cert_no="Z001", name="张三", department_code="SJJ", created_at=now, updated_at=now
        )
        li = Inspector(
            cert_no="Z002", name="李四", department_code="SJJ", created_at=now, updated_at=now
        )
        target = Target(
            key=TARGET_USCC, uscc=TARGET_USCC, name=TARGET_NAME, created_at=now, updated_at=now
        )
        session.add_all([zhang, li, target])
        await session.flush()
        task = Task(
            name="2026年食品生产企业双随机抽查",
            year=2026,
            lead_department="SJJ",
            window_start=date(2026, 3, 1),
            window_end=date(2026, 6, 30),
            created_by="test",
            created_at=now,
            updated_at=now,
        )
        session.add(task)
        await session.flush()
        assert task.id is not None and target.id is not None
        draw = Draw(
            task_id=task.id,
            seed_hex="00",
            commitment="c",
            candidate_digest="d",
            committed_by="test",
            committed_at=now,
        )
        session.add(draw)
        await session.flush()
        assert draw.id is not None
        inspection = Inspection(
            draw_id=draw.id,
            target_id=target.id,
            target_key=TARGET_USCC,
            lead_department="SJJ",
            rank="1",
            window_start=date(2026, 3, 1),
            window_end=date(2026, 6, 30),
            created_at=now,
            updated_at=now,
        )
        session.add(inspection)
        await session.flush()
        assert inspection.id is not None and zhang.id is not None and li.id is not None
        session.add(
            InspectionItem(
                inspection_id=inspection.id,
                task_id=task.id,
                draw_id=draw.id,
                item_code="SC-01",
                year=2026,
            )
        )
        seats = [
            Assignment(inspection_id=inspection.id, inspector_id=who, pick_index=n, created_at=now)
            for n, who in enumerate((zhang.id, li.id))
        ]
        session.add_all(seats)
        people = [
            (ZHANG, "张三", "inspector", None, zhang.id),
            (LI, "李四", "inspector", None, li.id),
            (LIAISON, "王联络", "liaison", "SJJ", None),
            (OFFICE_MEMBER, "赵协调", "office", None, None),
        ]
        for tg, name, role, department, inspector_id in people:
            person = Person(tg_user_id=tg, display_name=name, created_at=now)
            session.add(person)
            await session.flush()
            assert person.id is not None
            session.add(
                RoleGrant(
                    person_id=person.id,
                    role=role,
                    department_code=department or ("SJJ" if inspector_id else None),
                    inspector_id=inspector_id,
                    granted_at=now,
                )
            )
        if department_group:
            session.add(
                ChatBinding(
                    chat_id=DEPARTMENT_GROUP,
                    kind="department",
                    department_code="SJJ",
                    title="市场监管局工作群",
                    bound_by=1000,
                    bound_at=now,
                )
            )
        if office_group:
            session.add(
                ChatBinding(
                    chat_id=OFFICE_GROUP, kind="office", title="协调办", bound_by=1000, bound_at=now
                )
            )
        await session.flush()
        assert seats[0].id is not None and seats[1].id is not None
        return World(inspection.id, zhang.id, li.id, seats[0].id, seats[1].id)


async def open_confirm(db: Database, world: World, clock: FrozenClock, deadline: date) -> int:
    async with db.session() as session:
        duty = await open_duty(
            session,
            kind="confirm",
            subject=f"assignment:{world.assignment_zhang}",
            deadline=deadline,
            responsible_role="inspector",
            department_code="SJJ",
            inspection_id=world.inspection_id,
            inspector_id=world.zhang,
            now=clock.now(),
        )
        assert duty.id is not None
        return duty.id


async def notices(db: Database) -> list[Notice]:
    async with db.read() as session:
        return list(await session.exec(select(Notice).order_by(col(Notice.id))))


async def outbox(db: Database) -> dict[int, list[str]]:
    """What each chat would receive, in order."""
    async with db.read() as session:
        rows = await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))
        found: dict[int, list[str]] = {}
        for row in rows:
            found.setdefault(row.chat_id, []).append(row.text)
        return found


def at(clock: FrozenClock, moment: datetime) -> None:
    clock.at = moment


# --- pure rules ---------------------------------------------------------------------------------


def test_quiet_hours_wrap_midnight() -> None:
    from datetime import time

    start, end = time(21), time(8)
    assert in_quiet_hours(time(21), start, end) and in_quiet_hours(time(7, 59), start, end)
    assert not in_quiet_hours(time(8), start, end) and not in_quiet_hours(time(20, 59), start, end)
    assert in_quiet_hours(time(13), time(12), time(14)) and not in_quiet_hours(
        time(14), time(12), time(14)
    )
    assert not in_quiet_hours(time(3), time(0), time(0))


def test_warning_steps() -> None:
    assert warning_step(61, 60) is None
    assert warning_step(60, 60) == 60 and warning_step(31, 60) == 60
    assert warning_step(30, 60) == 30 and warning_step(8, 60) == 30
    assert warning_step(7, 60) == 7 and warning_step(1, 60) == 7
    assert warning_step(0, 60) == 0 and warning_step(-40, 60) == 0


def _duty(deadline: date, opened: datetime, stage: int = 0, limit: date | None = None) -> DutyRow:
    return DutyRow(
        1, "confirm", "assignment:1", None, None, "inspector", "SJJ", deadline, stage, limit, opened
    )


def test_reminder_lead_depends_on_the_duty_length() -> None:
    calendar = Calendar()
    rules = Rules()
    # Opened Monday 2026-03-02, 2 working days: reminded 1 working day before (Tuesday).
    short = _duty(date(2026, 3, 4), beijing(2026, 3, 2))
    assert reminder_date(short, calendar, rules) == date(2026, 3, 3)
    # 20 working days: 3 working days before the deadline.
    long = _duty(date(2026, 3, 30), beijing(2026, 3, 2))
    assert reminder_date(long, calendar, rules) == date(2026, 3, 25)


def test_reminders_and_orders_skip_the_spring_festival() -> None:
    calendar = Calendar()
    rules = Rules()
    # Deadline Friday 2026-02-13 (the last working day before 春节: 14 Feb is a make-up
    # Saturday, then 15–23 Feb are off). 20-day duty: reminded 3 working days before = 10 Feb.
    duty = _duty(date(2026, 2, 13), beijing(2026, 1, 10))
    assert reminder_date(duty, calendar, rules) == date(2026, 2, 10)
    step = plan(duty, date(2026, 2, 10), calendar, rules)
    # The first working day after the deadline is the make-up Saturday 14 Feb.
    assert step.notice == "reminder" and step.next_check_on == date(2026, 2, 14)
    reminded = _duty(date(2026, 2, 13), beijing(2026, 1, 10), stage=1)
    step = plan(reminded, date(2026, 2, 14), calendar, rules)
    # Supervision deadline: 5 working days after 14 Feb, over the holiday: 24–28 Feb (28 is a
    # make-up Saturday), so Saturday 28 Feb; the accountability check is on Monday 2 March.
    assert step.notice == "supervision" and step.supervision_deadline == date(2026, 2, 28)
    assert step.next_check_on == date(2026, 3, 2)


def test_a_visit_after_the_deadline_skips_the_reminder() -> None:
    calendar = Calendar()
    duty = _duty(date(2026, 3, 4), beijing(2026, 3, 2))
    step = plan(duty, date(2026, 3, 10), calendar, Rules())
    assert step.notice == "supervision" and step.stage == 2
    assert step.supervision_deadline == date(2026, 3, 17)


def test_next_check_is_always_after_today() -> None:
    calendar = Calendar()
    rules = Rules()
    start = date(2026, 1, 1)
    for offset in range(0, 120, 3):
        today = start + timedelta(days=offset)
        for stage in range(4):
            for deadline_offset in (-10, -1, 0, 1, 2, 5, 30):
                deadline = today + timedelta(days=deadline_offset)
                limit = deadline + timedelta(days=7) if stage >= 2 else None
                duty = _duty(deadline, beijing(2025, 12, 20), stage, limit)
                assert plan(duty, today, calendar, rules).next_check_on > today


# --- the ladder ---------------------------------------------------------------------------------


async def test_full_ladder_reaches_the_right_people(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    # Monday 2 March 09:00: an assignment delivered, to confirm in 2 working days (Wednesday).
    duty_id = await open_confirm(db, world, clock, date(2026, 3, 4))

    planned = await sweep(db, clock, settings)
    assert (planned.due, planned.planned, planned.reminders) == (1, 1, 0)
    assert await notices(db) == []
    again = await sweep(db, clock, settings)
    assert again.due == 0

    at(clock, beijing(2026, 3, 3, 8))  # Tuesday 08:00: 1 working day before the deadline
    report = await sweep(db, clock, settings)
    assert report.reminders == 1
    sent = await outbox(db)
    assert set(sent) == {ZHANG, LIAISON}  # the responsible inspector, copied to the liaison
    assert "懒政提醒单" in sent[ZHANG][0] and TARGET_NAME in sent[ZHANG][0]
    assert "2026年3月4日" in sent[ZHANG][0]
    # The liaison's copy: alone in this sweep, so the reminder itself, not a one-line digest.
    (copy,) = sent[LIAISON]
    assert copy.startswith("⏰ <b>懒政提醒单</b>（抄送）") and "三单汇总" not in copy
    assert TARGET_NAME in copy and "责任人：张三" in copy and "期限：2026年3月4日" in copy
    assert "本提醒已发给责任人" in copy
    assert "本提醒已发给责任人" not in sent[ZHANG][0] and "（抄送）" not in sent[ZHANG][0]

    at(clock, beijing(2026, 3, 4, 18))  # the deadline day itself: nothing yet
    assert (await sweep(db, clock, settings)).due == 0

    at(clock, beijing(2026, 3, 5, 8))  # Thursday: overdue
    report = await sweep(db, clock, settings)
    assert report.supervisions == 1
    sent = await outbox(db)
    order = sent[LIAISON][-1]  # the order itself (the only one), with the target
    assert order.startswith("🔴 <b>怠政督办单</b> 督〔2026〕1号") and TARGET_NAME in order
    assert "督办期限：2026年3月12日" in order and "三单汇总" not in order
    group = sent[DEPARTMENT_GROUP][0]  # the group card: no target, no person
    assert group.startswith("🔴 <b>怠政督办单</b> 督〔2026〕1号") and "三单汇总" not in group
    assert TARGET_NAME not in group and TARGET_USCC not in group
    assert "张三" not in group and "督办期限：<b>2026年3月12日" in group
    assert sent[OFFICE_GROUP][0] == group  # copied to the office group, no target details
    assert ZHANG not in sent or len(sent[ZHANG]) == 1

    at(clock, beijing(2026, 3, 12, 10))  # the supervision deadline: still a day to do it
    assert (await sweep(db, clock, settings)).due == 0
    at(clock, beijing(2026, 3, 13, 8))
    report = await sweep(db, clock, settings)
    assert report.accountabilities == 1
    sent = await outbox(db)
    card = sent[OFFICE_GROUP][-1]
    assert "问〔2026〕1号" in card and "督〔2026〕1号" in card and TARGET_NAME not in card
    async with db.read() as session:
        row = (
            await session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.chat_id == OFFICE_GROUP)
                .order_by(col(OutboxMessage.id).desc())
            )
        ).first()
        duty = await session.get(Duty, duty_id)
    assert row is not None and row.is_group and row.reply_markup is not None
    labels = [b["text"] for line in row.reply_markup["inline_keyboard"] for b in line]
    assert labels == ["⚖️ 问责", "✅ 免责"]
    assert duty is not None and duty.stage == 3 and duty.supervision_deadline == date(2026, 3, 12)

    at(clock, beijing(2026, 4, 30, 10))
    assert (await sweep(db, clock, settings)).due == 0
    kinds = [(n.kind, n.seq, n.status) for n in await notices(db)]
    assert kinds == [
        ("reminder", None, "open"),
        ("supervision", 1, "open"),
        ("accountability", 1, "open"),
    ]


async def test_done_late_closes_every_open_notice(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    await open_confirm(db, world, clock, date(2026, 3, 4))
    await sweep(db, clock, settings)
    at(clock, beijing(2026, 3, 5, 9))
    report = await sweep(db, clock, settings)  # straight to 督办: the reminder day was missed
    assert (report.reminders, report.supervisions) == (0, 1)
    async with db.session() as session:
        done = await complete_duty(
            session,
            kind="confirm",
            subject=f"assignment:{world.assignment_zhang}",
            now=clock.now(),
            today=date(2026, 3, 5),
        )
    assert done is not None and done.status == DutyStatus.DONE_LATE
    (notice,) = await notices(db)
    assert (notice.status, notice.closed_late) == ("closed", True)
    at(clock, beijing(2026, 3, 20, 9))
    assert (await sweep(db, clock, settings)).due == 0


async def test_a_duty_done_in_time_gets_nothing_more(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    await open_confirm(db, world, clock, date(2026, 3, 4))
    await sweep(db, clock, settings)
    at(clock, beijing(2026, 3, 3, 9))
    await sweep(db, clock, settings)
    async with db.session() as session:
        await complete_duty(
            session,
            kind="confirm",
            subject=f"assignment:{world.assignment_zhang}",
            now=clock.now(),
            today=date(2026, 3, 3),
        )
    (reminder,) = await notices(db)
    assert (reminder.status, reminder.closed_late) == ("closed", False)
    at(clock, beijing(2026, 3, 30, 9))
    assert (await sweep(db, clock, settings)).due == 0
    assert len(await notices(db)) == 1


async def test_catch_up_after_downtime_happens_once(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    await open_confirm(db, world, clock, date(2026, 3, 4))
    async with db.session() as session:
        await open_duty(
            session,
            kind="inspect",
            subject=f"inspection:{world.inspection_id}",
            deadline=date(2026, 3, 20),
            responsible_role="inspector",
            department_code="SJJ",
            inspection_id=world.inspection_id,
            now=clock.now(),
        )
    # Down from Monday morning until the Monday after: both are overdue by then.
    at(clock, beijing(2026, 3, 23, 10))
    first = await sweep(db, clock, settings)
    assert (first.due, first.reminders, first.supervisions) == (2, 0, 2)
    second = await sweep(db, clock, settings)
    assert second.due == 0
    numbers = sorted(n.seq or 0 for n in await notices(db))
    assert numbers == [1, 2]
    # Both orders reach the liaison (the group's duty, inspect, too) in one digest.
    (digest,) = (await outbox(db))[LIAISON]
    assert "怠政督办单 2 份" in digest and "督〔2026〕1号" in digest and "督〔2026〕2号" in digest
    assert "实施检查并录入结果" in digest and "张三、李四" in digest


async def test_group_duty_reminds_every_member(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    async with db.session() as session:
        await open_duty(
            session,
            kind="inspect",
            subject=f"inspection:{world.inspection_id}",
            deadline=date(2026, 3, 5),
            responsible_role="inspector",
            department_code="SJJ",
            inspection_id=world.inspection_id,
            now=clock.now(),
        )
    report = await sweep(db, clock, settings)  # 3 working days before Thursday: today
    assert report.reminders == 1
    sent = await outbox(db)
    assert set(sent) == {ZHANG, LI, LIAISON}
    assert "张三、李四" in sent[LIAISON][0]


async def test_quiet_hours_hold_everything_until_eight(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    at(clock, beijing(2026, 3, 2, 22))
    await open_confirm(db, world, clock, date(2026, 3, 3))  # due tomorrow: remind at once
    report = await sweep(db, clock, settings)
    assert report.quiet and report.due == 0
    at(clock, beijing(2026, 3, 3, 7, 59))
    assert (await sweep(db, clock, settings)).quiet
    at(clock, beijing(2026, 3, 3, 8))
    assert (await sweep(db, clock, settings)).reminders == 1
    # Overdue at midnight; the order waits for 08:00 on Wednesday.
    at(clock, beijing(2026, 3, 4, 0, 5))
    assert (await sweep(db, clock, settings)).quiet
    at(clock, beijing(2026, 3, 4, 8))
    assert (await sweep(db, clock, settings)).supervisions == 1


async def test_quiet_hours_are_configurable(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    from datetime import time

    settings.quiet_start, settings.quiet_end = time(8, 30), time(9, 30)
    world = await build_world(db, clock.now())
    await open_confirm(db, world, clock, date(2026, 3, 3))
    assert (await sweep(db, clock, settings)).quiet  # 09:00 is inside 08:30–09:30
    at(clock, beijing(2026, 3, 2, 9, 30))
    assert (await sweep(db, clock, settings)).reminders == 1


async def test_without_office_group_the_office_is_told_privately(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now(), office_group=False, department_group=False)
    await open_confirm(db, world, clock, date(2026, 3, 4))
    at(clock, beijing(2026, 3, 5, 9))
    await sweep(db, clock, settings)
    sent = await outbox(db)
    # Office members and OFFICE_ADMINS get the private text (with the target) instead.
    assert TARGET_NAME in sent[OFFICE_MEMBER][0] and TARGET_NAME in sent[1000][0]
    assert DEPARTMENT_GROUP not in sent


async def test_two_sweepers_at_once_issue_one_notice_each(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    async with db.session() as session:
        for n in range(40):
            await open_duty(
                session,
                kind="review",
                subject=f"inspection:{world.inspection_id}:{n}",
                deadline=date(2026, 3, 4),
                responsible_role="liaison",
                department_code="SJJ",
                inspection_id=world.inspection_id,
                now=clock.now(),
            )
    at(clock, beijing(2026, 3, 10, 9))
    other = Database(db.url)
    try:
        reports = await asyncio.gather(
            *(sweep(database, clock, settings, batch=7) for database in (db, other, db, other))
        )
    finally:
        await other.dispose()
    assert sum(r.supervisions for r in reports) == 40
    rows = await notices(db)
    assert len(rows) == 40 and sorted(n.seq or 0 for n in rows) == list(range(1, 41))
    async with db.read() as session:
        queued = list(await session.exec(select(OutboxMessage)))
    # A review is the liaison's own duty: each order to them on its own; the department and
    # office groups have them in digests, one per batch (how many batches each sweeper got
    # is up to the race; a batch of one order gives its group card instead), and every order
    # in exactly one digest or card of each group.
    own = [m for m in queued if m.chat_id == LIAISON]
    assert len(own) == 40 and all(m.idem_key.startswith("notice:supervision:") for m in own)
    assert sum(r.messages for r in reports) == len(queued) == 40 + sum(r.digests for r in reports)
    for group in (DEPARTMENT_GROUP, OFFICE_GROUP):
        copies = [m for m in queued if m.chat_id == group]
        for m in copies:
            single = len(re.findall(r"督〔2026〕(\d+)号", m.text)) == 1
            kind = "notice:supervision:" if single else "notice:digest:"
            assert m.idem_key.startswith(kind)
        listed = [n for m in copies for n in re.findall(r"督〔2026〕(\d+)号", m.text)]
        assert sorted(int(n) for n in listed) == list(range(1, 41))


async def open_many(db: Database, clock: FrozenClock, count: int, deadline: date) -> None:
    async with db.session() as session:
        for n in range(count):
            await open_duty(
                session,
                kind="confirm",
                subject=f"assignment:bulk:{deadline}:{n}",
                deadline=deadline,
                responsible_role="inspector",
                department_code="SJJ",
                inspection_id=1,
                inspector_id=1,
                now=clock.now(),
            )


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def test_copies_are_one_digest_per_recipient(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    assert (world.inspection_id, world.zhang) == (1, 1)
    await open_many(db, clock, 120, date(2026, 3, 3))  # 1 working day: remind today
    await open_many(db, clock, 150, date(2026, 2, 27))  # overdue: 督办 at once
    report = await sweep(db, clock, settings)
    assert (report.reminders, report.supervisions) == (120, 150)
    async with db.read() as session:
        queued = list(await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))))
        ids = sorted(n.id or 0 for n in await session.exec(select(Notice)))
    to = {chat: [m for m in queued if m.chat_id == chat] for chat in {m.chat_id for m in queued}}
    # The responsible inspector: each reminder on its own (the orders go to the department).
    assert len(to[ZHANG]) == 120 and all(TARGET_NAME in m.text for m in to[ZHANG])
    assert set(to) == {ZHANG, LIAISON, DEPARTMENT_GROUP, OFFICE_GROUP}
    assert report.messages == len(queued) == 120 + report.digests

    liaison = to[LIAISON]  # 270 lines: more than one message can hold
    parts = len(liaison)
    assert parts > 1 and all(utf16(m.text) <= 4096 for m in liaison)
    assert [m.idem_key for m in liaison] == [
        f"notice:digest:{ids[0]}-{ids[-1]}:{LIAISON}:{part}" for part in range(1, parts + 1)
    ]
    for part, message in enumerate(liaison, start=1):
        assert f"（{part}/{parts}）" in message.text and "新签发 270 份" in message.text
        assert "怠政督办单 150 份" in message.text and "懒政提醒单 120 份" in message.text
    text = "\n".join(m.text for m in liaison)
    assert "/notices" in liaison[-1].text and "/notices" not in liaison[0].text
    lines = re.findall(r"^(\d+)\. ", text, flags=re.MULTILINE)
    assert [int(n) for n in lines] == list(range(1, 271))
    numbers = re.findall(r"督〔2026〕(\d+)号", text)
    assert sorted(int(n) for n in numbers) == list(range(1, 151))
    assert text.index("<b>怠政督办单</b>") < text.index("<b>懒政提醒单</b>")
    assert text.count(TARGET_NAME) == 270 and "责任人：张三" in text

    for group in (DEPARTMENT_GROUP, OFFICE_GROUP):  # the orders only, without targets
        messages = to[group]
        assert all(m.is_group and utf16(m.text) <= 4096 for m in messages)
        text = "\n".join(m.text for m in messages)
        assert sorted(int(n) for n in re.findall(r"督〔2026〕(\d+)号", text)) == list(range(1, 151))
        assert TARGET_NAME not in text and TARGET_USCC not in text and "张三" not in text
        assert "懒政提醒单" not in text

    again = await sweep(db, clock, settings)
    assert again.due == 0
    async with db.read() as session:
        assert (await session.exec(select(func.count()).select_from(OutboxMessage))).one() == len(
            queued
        )
        states = await session.exec(
            select(
                col(Duty.stage),
                col(Duty.next_check_on),
                col(Duty.supervision_deadline),
                func.count(),
            )
            .group_by(col(Duty.stage), col(Duty.next_check_on), col(Duty.supervision_deadline))
            .order_by(col(Duty.stage))
        )
        # Reminded: next look the day after the deadline; supervised: new deadline 9 March.
        assert list(states) == [
            (1, date(2026, 3, 4), None, 120),
            (2, date(2026, 3, 10), date(2026, 3, 9), 150),
        ]


async def test_a_batch_that_fails_queues_nothing(
    db: Database, clock: FrozenClock, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash in the middle of a batch: its notices, messages and digests roll back together;
    the next sweep issues them, exactly once."""
    import bot.sweeper

    world = await build_world(db, clock.now())
    await open_confirm(db, world, clock, date(2026, 2, 27))
    await open_many(db, clock, 3, date(2026, 2, 27))

    async def broken(*_: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(bot.sweeper, "_move_on", broken)
    with pytest.raises(RuntimeError):
        await sweep(db, clock, settings)
    assert await notices(db) == [] and await outbox(db) == {}
    monkeypatch.undo()
    assert (await sweep(db, clock, settings)).supervisions == 4
    assert (await sweep(db, clock, settings)).due == 0
    sent = await outbox(db)
    assert [len(sent[chat]) for chat in (LIAISON, DEPARTMENT_GROUP, OFFICE_GROUP)] == [1, 1, 1]
    assert "怠政督办单 4 份" in sent[LIAISON][0]


async def test_reopening_a_finished_duty_starts_a_new_round(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    first = await open_confirm(db, world, clock, date(2026, 3, 4))
    at(clock, beijing(2026, 3, 3, 9))
    await sweep(db, clock, settings)
    async with db.session() as session:
        await complete_duty(
            session,
            kind="confirm",
            subject=f"assignment:{world.assignment_zhang}",
            now=clock.now(),
            today=date(2026, 3, 3),
        )
    second = await open_confirm(db, world, clock, date(2026, 3, 5))
    assert second != first
    at(clock, beijing(2026, 3, 4, 9))
    assert (await sweep(db, clock, settings)).reminders == 1
    async with db.read() as session:
        old = await session.get(Duty, first)
    assert old is not None and old.subject == f"assignment:{world.assignment_zhang}#{first}"
    assert len(await notices(db)) == 2


async def test_estimated_deadlines_say_so(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    world = await build_world(db, clock.now())
    at(clock, beijing(2026, 12, 28, 9))
    await open_confirm(db, world, clock, date(2027, 1, 5))
    await sweep(db, clock, settings)
    at(clock, beijing(2027, 1, 4, 9))
    assert (await sweep(db, clock, settings)).reminders == 1
    text = (await outbox(db))[ZHANG][0]
    assert "暂按双休日估算" in text


async def test_office_is_warned_before_the_calendar_runs_out(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    await build_world(db, clock.now())
    assert not (await sweep(db, clock, settings)).calendar_warning
    at(clock, beijing(2026, 11, 1, 9))  # 60 days before 31 December 2026
    assert (await sweep(db, clock, settings)).calendar_warning
    assert not (await sweep(db, clock, settings)).calendar_warning  # once per step
    at(clock, beijing(2026, 12, 2, 9))
    assert (await sweep(db, clock, settings)).calendar_warning  # 30 days before
    warnings = (await outbox(db))[OFFICE_GROUP]
    assert len(warnings) == 2 and "2027年" in warnings[0] and "/holidays" in warnings[0]


async def test_loaded_holidays_move_the_ladder(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    from bot.duties import load_holidays

    async with db.session() as session:
        report = await load_holidays(
            session,
            [["日期", "类型"], ["2027-01-01", "休"], ["2027-01-04", "休"], ["2027-01-09", "班"]],
            actor="test",
            now=clock.now(),
        )
        assert report.applied and report.known_until == date(2027, 12, 31)
        calendar = await load_calendar(session)
    assert not calendar.is_working_day(date(2027, 1, 4))
    assert calendar.working_days_add(date(2026, 12, 31), 1) == date(2027, 1, 5)
    assert calendar.is_working_day(date(2027, 1, 9))
    # A corrected file for the year replaces what was loaded before.
    async with db.session() as session:
        report = await load_holidays(
            session, [["日期", "类型"], ["2027-01-01", "休"]], actor="test", now=clock.now()
        )
        assert report.replaced == 3
        calendar = await load_calendar(session)
    assert calendar.is_working_day(date(2027, 1, 4))


async def test_a_bad_holiday_file_changes_nothing(db: Database, clock: FrozenClock) -> None:
    from bot.duties import load_holidays

    async with db.session() as session:
        report = await load_holidays(
            session,
            [["日期", "类型"], ["2027-01-01", "休"], ["2027-02-30", "休"], ["2027-01-09", "上"]],
            actor="test",
            now=clock.now(),
        )
    assert not report.applied
    assert [(e.row, e.reason) for e in report.errors] == [(3, "date_invalid"), (4, "type_invalid")]
    async with db.read() as session:
        assert (await load_calendar(session)).known_until() == date(2026, 12, 31)


async def test_a_voided_inspection_withdraws_its_notices(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    from bot.duties import cancel_duties
    from bot.notices import Scope, list_pending

    world = await build_world(db, clock.now())
    await open_confirm(db, world, clock, date(2026, 3, 4))
    at(clock, beijing(2026, 3, 5, 9))
    assert (await sweep(db, clock, settings)).supervisions == 1
    async with db.session() as session:
        await cancel_duties(session, inspection_id=world.inspection_id, now=clock.now())
    (notice,) = await notices(db)
    assert notice.status == "cancelled"
    at(clock, beijing(2026, 3, 20, 9))
    assert (await sweep(db, clock, settings)).due == 0
    async with db.read() as session:
        found = await list_pending(
            session,
            Scope(everything=True),
            calendar=await load_calendar(session),
            today=date(2026, 3, 20),
            tz="Asia/Shanghai",
        )
    assert found.items == [] and found.total == 0


async def add_inspection(db: Database, now: datetime, deadlines: dict[str, int]) -> int:
    """A second task (with these deadline overrides), its draw and an inspection of it."""
    async with db.session() as session:
        task = Task(
            name="2026年特种设备双随机抽查",
            year=2026,
            lead_department="SJJ",
            window_start=date(2026, 3, 1),
            window_end=date(2026, 6, 30),
            deadlines=deadlines,
            created_by="test",
            created_at=now,
            updated_at=now,
        )
        session.add(task)
        await session.flush()
        assert task.id is not None
        draw = Draw(
            task_id=task.id,
            seed_hex="01",
            commitment="c",
            candidate_digest="d",
            committed_by="test",
            committed_at=now,
        )
        session.add(draw)
        await session.flush()
        assert draw.id is not None
        inspection = Inspection(
            draw_id=draw.id,
            target_id=1,
            target_key=TARGET_USCC,
            lead_department="SJJ",
            rank="2",
            window_start=date(2026, 3, 1),
            window_end=date(2026, 6, 30),
            created_at=now,
            updated_at=now,
        )
        session.add(inspection)
        await session.flush()
        assert inspection.id is not None
        return inspection.id


async def test_a_task_sets_its_own_supervision_deadline(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    """A task with deadlines["supervision"] = 2: its overdue duty's 督办单 gives 2 working days;
    in the same batch, a duty of a task without one gets the default 5."""
    world = await build_world(db, clock.now())
    short = await add_inspection(db, clock.now(), {"supervision": 2, "confirm": 3})
    async with db.session() as session:
        for inspection_id, subject in ((world.inspection_id, "default"), (short, "short")):
            await open_duty(
                session,
                kind="review",
                subject=f"inspection:{subject}",
                deadline=date(2026, 3, 4),
                responsible_role="liaison",
                department_code="SJJ",
                inspection_id=inspection_id,
                now=clock.now(),
            )
    at(clock, beijing(2026, 3, 5, 9))  # Thursday: both overdue
    report = await sweep(db, clock, settings)
    assert report.supervisions == 2
    async with db.read() as session:
        rows = await session.exec(
            select(
                col(Duty.inspection_id),
                col(Duty.stage),
                col(Duty.supervision_deadline),
                col(Notice.deadline),
            )
            .join(Notice, col(Notice.duty_id) == col(Duty.id))
            .order_by(col(Duty.id))
        )
        found = {inspection_id: rest for inspection_id, *rest in rows}
    # Thursday + 2 working days: Monday 9 March; + 5: Thursday 12 March.
    assert found[short] == [2, date(2026, 3, 9), date(2026, 3, 9)]
    assert found[world.inspection_id] == [2, date(2026, 3, 12), date(2026, 3, 12)]
    sent = "\n".join((await outbox(db))[LIAISON])
    assert "督办期限：2026年3月9日（周一）" in sent and "督办期限：2026年3月12日（周四）" in sent

    # The short order runs out first: 问责 on Tuesday 10 March, the other still waits.
    at(clock, beijing(2026, 3, 10, 9))
    assert (await sweep(db, clock, settings)).accountabilities == 1
    at(clock, beijing(2026, 3, 13, 9))
    assert (await sweep(db, clock, settings)).accountabilities == 1


async def test_a_big_batch_renders_in_a_child_process(
    db: Database, clock: FrozenClock, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From ``FORK_AT`` notices a batch's messages are rendered in a forked child: the same
    messages arrive; a child that fails fails the batch, which queues nothing."""
    import multiprocessing.context

    import bot.notices

    forks: list[int] = []
    start = multiprocessing.context.ForkProcess.start

    def counted(process: multiprocessing.context.ForkProcess) -> None:
        start(process)
        forks.append(process.pid or 0)

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", counted)
    monkeypatch.setattr(bot.notices, "FORK_AT", 3)
    await build_world(db, clock.now())
    await open_many(db, clock, 2, date(2026, 3, 3))  # reminded today

    def broken(_batch: object) -> None:
        raise ValueError("a template went wrong")

    monkeypatch.setattr(bot.notices, "_parts", broken)
    await open_many(db, clock, 3, date(2026, 2, 27))  # overdue: 督办
    with pytest.raises(ValueError, match="a template went wrong"):
        await sweep(db, clock, settings)
    assert len(forks) == 1 and await notices(db) == [] and await outbox(db) == {}
    monkeypatch.undo()
    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", counted)
    monkeypatch.setattr(bot.notices, "FORK_AT", 3)

    report = await sweep(db, clock, settings)
    assert (report.reminders, report.supervisions) == (2, 3) and len(forks) == 2
    assert forks[1] not in (0, forks[0])
    sent = await outbox(db)
    assert len(sent[ZHANG]) == 2 and all(TARGET_NAME in t for t in sent[ZHANG])
    (liaison,) = sent[LIAISON]
    assert "新签发 5 份" in liaison and "督〔2026〕3号" in liaison and TARGET_NAME in liaison
    (group,) = sent[DEPARTMENT_GROUP]
    assert "怠政督办单 3 份" in group and TARGET_NAME not in group
    assert (await sweep(db, clock, settings)).due == 0
