"""The 三单 services without Telegram: numbering, decisions, the list per scope, the export."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from io import BytesIO
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlmodel import col, func, select

from bot.clock import FrozenClock
from bot.config import Settings
from bot.duties import complete_duty, day_text, deadline_text, load_calendar, open_duty
from bot.notices import (
    DutyRow,
    NoticeProblem,
    People,
    Route,
    Scope,
    Subject,
    allocate_numbers,
    decide,
    decision_buttons,
    export_notices,
    list_pending,
    number_label,
    reason_buttons,
    reason_text,
    route,
)
from bot.outbox import Document, Envelope, enqueue, enqueue_many
from bot.sweeper import sweep
from bot.telegram import NoticeCb
from bot.workdays import Calendar
from storage.db import Database
from storage.models import Notice, NoticeCounter, OutboxMessage
from tests.test_sweeper import (
    DEPARTMENT_GROUP,
    LIAISON,
    TARGET_NAME,
    TARGET_USCC,
    World,
    at,
    beijing,
    build_world,
    open_confirm,
)

TZ = "Asia/Shanghai"


def test_labels() -> None:
    assert number_label("supervision", 2026, 17) == "督〔2026〕17号"
    assert number_label("accountability", 2027, 3) == "问〔2027〕3号"
    assert number_label("reminder", 2026, None) is None
    assert day_text(date(2026, 3, 4)) == "2026年3月4日（周三）"
    calendar = Calendar()
    assert deadline_text(calendar, date(2026, 3, 2), date(2026, 3, 4)) == "2026年3月4日（周三）"
    assert "暂按双休日估算" in deadline_text(calendar, date(2026, 12, 30), date(2027, 1, 5))
    assert reason_text("e", 5) == "法定时限尚未届满" and reason_text("e", 6) is None
    assert reason_text("x", 1) is None
    labels = [label for (label, _data), *_ in reason_buttons(7, "h")]
    assert labels[:4] == [
        "未按规定检查造成不良后果",
        "未经批准未按时公示",
        "未移送涉嫌犯罪案件",
        "拒绝或拖延执行抽查任务",
    ]
    assert all(len(data.encode()) <= 64 for row in reason_buttons(10**9, "e") for _, data in row)
    ((hold, hold_data), (exempt, exempt_data)), *_ = decision_buttons(17)
    assert (hold, exempt) == ("⚖️ 问责", "✅ 免责")
    assert hold_data == NoticeCb(action="hold", notice_id=17).pack()
    assert exempt_data == NoticeCb(action="exempt", notice_id=17).pack()


def _people(*, office_group: bool) -> People:
    people = People(office=[701, 1000], departments={"SJJ": "县市场监督管理局"})
    people.inspectors[1].append(501)
    people.inspectors[2].append(502)
    people.liaisons["SJJ"].extend([601, 602])
    people.department_groups["SJJ"].append(-2001)
    if office_group:
        people.office_groups.append(-3001)
    return people


def _row(role: str, inspector_id: int | None = None) -> DutyRow:
    return DutyRow(
        1, "confirm", "x", 9, inspector_id, role, "SJJ", date(2026, 3, 4), 0, None, datetime.now()
    )


def test_route_gives_the_responsible_their_own_and_copies_a_digest() -> None:
    """Who gets a notice's own message, and who finds it in their digest (bot.notices)."""
    people = _people(office_group=True)
    group = Subject("对象", "代码", (), (1, 2))
    # 懒政提醒单: the responsible person; the liaisons in their digest.
    assert route("reminder", _row("inspector", 1), group, people) == Route(
        own=(501,), copies=(601, 602)
    )
    assert route("reminder", _row("inspector"), group, people) == Route(  # the group's duty
        own=(501, 502), copies=(601, 602)
    )
    assert route("reminder", _row("liaison"), None, people) == Route(own=(601, 602))
    assert route("reminder", _row("office"), None, people) == Route(
        own=(701, 1000), copies=(601, 602)
    )
    # 怠政督办单: to the department and the office, in digests; the liaisons' own duty: theirs.
    assert route("supervision", _row("inspector", 1), group, people) == Route(
        copies=(601, 602), group_copies=(-2001, -3001)
    )
    assert route("supervision", _row("liaison"), None, people) == Route(
        own=(601, 602), group_copies=(-2001, -3001)
    )
    # 失职问责单: the office decides each one: its own card, with buttons.
    assert route("accountability", _row("inspector", 1), group, people) == Route(
        own=(-3001,), own_group=True
    )
    private = _people(office_group=False)
    assert route("accountability", _row("liaison"), None, private) == Route(own=(701, 1000))
    assert route("supervision", _row("inspector", 1), group, private) == Route(
        copies=(601, 602, 701, 1000), group_copies=(-2001,)
    )
    assert route("supervision", _row("office"), None, private) == Route(
        own=(701, 1000), copies=(601, 602), group_copies=(-2001,)
    )


async def test_enqueue_many_queues_what_enqueue_would(db: Database, clock: FrozenClock) -> None:
    """One column mapping for both: the same rows, and a key already queued is skipped."""
    later = clock.now().replace(hour=5)
    async with db.session() as session:
        assert await enqueue(session, key="k:0", chat_id=5, text="单条", now=clock.now())
        await enqueue_many(
            session,
            [
                Envelope("k:0", 5, "重复：跳过"),
                Envelope("k:1", 5, "按钮", buttons=[[("问责", "n1:hold:1::0")]]),
                Envelope("k:2", -9, "群", is_group=True, notify_department="SJJ"),
                Envelope("k:3", 6, "文件", document=Document("a.xlsx", b"PK"), not_before=later),
                Envelope("k:1", 5, "同一批里重复：跳过"),
            ],
            now=clock.now(),
        )
        assert not await enqueue(session, key="k:2", chat_id=-9, text="再来", now=clock.now())
    async with db.read() as session:
        rows = list(await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))))
        nulls = (
            await session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(col(OutboxMessage.reply_markup).is_(None))
            )
        ).one()
    assert [(r.idem_key, r.text) for r in rows] == [
        ("k:0", "单条"),
        ("k:1", "按钮"),
        ("k:2", "群"),
        ("k:3", "文件"),
    ]
    assert nulls == 3  # SQL NULL without buttons, not a JSON null
    assert rows[1].reply_markup == {
        "inline_keyboard": [[{"text": "问责", "callback_data": "n1:hold:1::0"}]]
    }
    assert rows[2].is_group and rows[2].notify_department == "SJJ"
    assert (rows[3].method, rows[3].document_name, rows[3].document) == (
        "sendDocument",
        "a.xlsx",
        b"PK",
    )
    assert rows[3].next_attempt_at == later and rows[0].next_attempt_at == clock.now()
    assert all(r.status == "pending" and r.attempts == 0 and r.throttled == 0 for r in rows)
    assert all(r.created_at == clock.now() for r in rows)


async def test_numbers_are_gap_free_per_kind_and_year_under_concurrency(db: Database) -> None:
    other = Database(db.url)

    async def take(database: Database, kind: str, year: int, count: int) -> int:
        async with database.session() as session:
            return await allocate_numbers(session, kind, year, count)

    try:
        firsts = await asyncio.gather(
            *(
                take(database, "supervision", 2026, 3)
                for database in (db, other, db, other, db, other)
            ),
            take(db, "supervision", 2027, 2),
            take(other, "accountability", 2026, 1),
        )
    finally:
        await other.dispose()
    assert sorted(firsts[:6]) == [1, 4, 7, 10, 13, 16]
    assert firsts[6:] == [1, 1]

    async def rolled_back() -> None:
        async with db.session() as session:
            await allocate_numbers(session, "supervision", 2026, 5)
            raise RuntimeError("the sweep failed")

    with pytest.raises(RuntimeError):
        await rolled_back()
    async with db.read() as session:
        counters = {(c.kind, c.year): c.last for c in await session.exec(select(NoticeCounter))}
    assert counters == {
        ("supervision", 2026): 18,
        ("supervision", 2027): 2,
        ("accountability", 2026): 1,
    }


async def _accountability(db: Database, clock: FrozenClock, settings: Settings) -> World:
    world = await build_world(db, clock.now())
    await open_confirm(db, world, clock, date(2026, 3, 4))
    at(clock, beijing(2026, 3, 5))
    await sweep(db, clock, settings)
    at(clock, beijing(2026, 3, 13))
    await sweep(db, clock, settings)
    return world


async def _decide(
    db: Database, clock: FrozenClock, notice_id: int, decision: str, reason: str
) -> None:
    async with db.session() as session:
        await decide(
            session,
            notice_id=notice_id,
            decision=decision,
            reason=reason,
            typed=False,
            actor="tg:1000",
            now=clock.now(),
            today=clock.now().date(),
            calendar=await load_calendar(session),
            tz=TZ,
        )


async def test_decisions_are_recorded_once(
    db: Database, clock: FrozenClock, settings: Settings
) -> None:
    await _accountability(db, clock, settings)
    async with db.read() as session:
        notices = {n.kind: n for n in await session.exec(select(Notice))}
    supervision, accountability = notices["supervision"], notices["accountability"]
    assert accountability.id is not None and supervision.id is not None
    with pytest.raises(NoticeProblem) as problem:
        await _decide(db, clock, supervision.id, "h", "理由")
    assert problem.value.key == "not_found"
    with pytest.raises(NoticeProblem):
        await _decide(db, clock, accountability.id, "e", "   ")
    await _decide(db, clock, accountability.id, "e", "已按清单和计划履职")
    with pytest.raises(NoticeProblem) as problem:
        await _decide(db, clock, accountability.id, "h", "改主意")
    assert problem.value.key == "already_decided"
    async with db.read() as session:
        decided = await session.get(Notice, accountability.id)
        told = list(
            await session.exec(
                select(OutboxMessage).where(col(OutboxMessage.idem_key).startswith("notice:dec"))
            )
        )
    assert decided is not None and (decided.decision, decided.status) == ("免责", "decided")
    assert {m.chat_id for m in told} == {LIAISON, DEPARTMENT_GROUP}


async def test_pending_list_per_scope(db: Database, clock: FrozenClock, settings: Settings) -> None:
    world = await _accountability(db, clock, settings)
    async with db.session() as session:
        await open_duty(
            session,
            kind="review",
            subject="inspection:99",
            deadline=date(2026, 3, 16),
            responsible_role="liaison",
            department_code="SWJ",
            now=clock.now(),
        )
    at(clock, beijing(2026, 3, 13, 10))
    await sweep(db, clock, settings)  # 3 working days before 16 March: a reminder for SWJ

    async def pending(scope: Scope) -> list[tuple[str, str]]:
        async with db.read() as session:
            found = await list_pending(
                session,
                scope,
                calendar=await load_calendar(session),
                today=date(2026, 3, 13),
                tz=TZ,
            )
        return [(item.notice.kind, item.duty.department_code) for item in found.items]

    assert await pending(Scope(everything=True)) == [
        ("reminder", "SWJ"),
        ("accountability", "SJJ"),
    ]
    assert await pending(Scope(departments=("SWJ",))) == [("reminder", "SWJ")]
    assert await pending(Scope(inspector_ids=(world.zhang,))) == [("accountability", "SJJ")]
    assert await pending(Scope(inspector_ids=(world.li,))) == []
    assert await pending(Scope()) == []


async def test_export_lists_every_notice_with_its_state(
    db: Database, clock: FrozenClock, settings: Settings, tmp_path: Path
) -> None:
    world = await _accountability(db, clock, settings)
    async with db.read() as session:
        accountability = (
            await session.exec(select(Notice).where(Notice.kind == "accountability"))
        ).one()
    assert accountability.id is not None
    await _decide(db, clock, accountability.id, "h", "拒绝或拖延执行抽查任务")
    async with db.session() as session:
        await complete_duty(
            session,
            kind="confirm",
            subject=f"assignment:{world.assignment_zhang}",
            now=clock.now(),
            today=date(2026, 3, 13),
        )
    out = tmp_path / "ledger.xlsx"
    async with db.read() as session:
        count = await export_notices(
            session, out, calendar=await load_calendar(session), today=date(2026, 3, 13), tz=TZ
        )
        pending = await export_notices(
            session,
            tmp_path / "pending.xlsx",
            calendar=await load_calendar(session),
            today=date(2026, 3, 13),
            tz=TZ,
            pending_only=True,
        )
    assert (count, pending) == (2, 0)
    sheet = load_workbook(BytesIO(out.read_bytes())).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:4] == ("编号", "类型", "状态", "部门")
    supervision, accountability_row = rows[1], rows[2]
    assert supervision[:3] == ("督〔2026〕1号", "怠政督办单", "逾期办结")
    assert accountability_row[:3] == ("问〔2026〕1号", "失职问责单", "已决定")
    assert accountability_row[5:7] == (TARGET_NAME, TARGET_USCC)
    assert accountability_row[13:15] == ("问责", "拒绝或拖延执行抽查任务")
