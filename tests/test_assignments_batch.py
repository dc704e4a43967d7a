"""Executing a big draw works in bulk: a few statements for thousands of seats (issue #3)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import event
from sqlmodel import col, func, select

from bot.clock import FrozenClock
from bot.draws import commit_draw, execute_draw
from bot.duties import DutySpec, open_duties, open_duty
from storage.db import Database
from storage.models import (
    Assignment,
    AuditLog,
    Duty,
    DutyStatus,
    Inspection,
    InspectionStatus,
    OutboxMessage,
)
from tests.test_draws import new_task, seeded
from tests.test_draws_merge_notice import _bind_everyone


async def test_open_duties_keeps_open_ones_and_starts_a_new_round_after_finished_ones(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock, targets=1, inspectors=2, swj_inspectors=0)
    now = clock.now()
    async with db.session() as session:
        kept = await open_duty(
            session,
            kind="confirm",
            subject="assignment:1",
            deadline=date(2026, 3, 4),
            responsible_role="inspector",
            department_code="SJJ",
            now=now,
        )
        done = await open_duty(
            session,
            kind="review",
            subject="inspection:7",
            deadline=date(2026, 3, 5),
            responsible_role="liaison",
            department_code="SJJ",
            now=now,
        )
        done.status = DutyStatus.DONE
        session.add(done)
    specs = [
        DutySpec("confirm", "assignment:1", date(2026, 4, 1), "inspector", "SJJ"),  # open: kept
        DutySpec("review", "inspection:7", date(2026, 4, 2), "liaison", "SWJ"),  # a new round
        DutySpec("confirm", "assignment:2", date(2026, 4, 3), "inspector", "SJJ", None, 2),
        DutySpec("confirm", "assignment:2", date(2026, 4, 9), "inspector", "SJJ"),  # repeated
    ]
    async with db.session() as session:
        opened = await open_duties(session, specs, now=now)
    assert opened == 2
    async with db.read() as session:
        rows = {(d.kind, d.subject): d for d in await session.exec(select(Duty))}
    assert set(rows) == {
        ("confirm", "assignment:1"),
        ("review", f"inspection:7#{done.id}"),
        ("review", "inspection:7"),
        ("confirm", "assignment:2"),
    }
    assert rows[("confirm", "assignment:1")].deadline == date(2026, 3, 4)  # unchanged
    assert rows[("confirm", "assignment:1")].id == kept.id
    assert rows[("review", f"inspection:7#{done.id}")].status == DutyStatus.DONE
    fresh = rows[("review", "inspection:7")]
    assert fresh.status == DutyStatus.OPEN and fresh.department_code == "SWJ"
    two = rows[("confirm", "assignment:2")]
    assert (two.deadline, two.inspector_id, two.responsible_role) == (
        date(2026, 4, 3),
        2,
        "inspector",
    )
    assert two.next_check_on < now.date()  # due at once, like open_duty
    async with db.session() as session:
        assert await open_duties(session, specs, now=now) == 0  # idempotent


async def _execute_counting(db: Database, clock: FrozenClock, task_id: int) -> int:
    """Execute the task's draw; how many SQL statements the execution ran."""
    async with db.session() as session:
        commitment = await commit_draw(session, task_id=task_id, actor="t", now=clock.now())
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        async with db.session() as session:
            await execute_draw(session, draw_id=commitment.draw_id, actor="t", now=clock.now())
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return statements


async def _counts(db: Database) -> dict[str, int]:
    async with db.read() as session:

        async def n(statement: Any) -> int:
            return int((await session.exec(statement)).one())

        return {
            "inspections": await n(
                select(func.count()).where(Inspection.status == InspectionStatus.ASSIGNED)
            ),
            "seats": await n(select(func.count()).select_from(Assignment)),
            "delivered": await n(
                select(func.count()).where(col(Assignment.delivered_at).is_not(None))
            ),
            "confirm": await n(select(func.count()).where(Duty.kind == "confirm")),
            "inspect": await n(select(func.count()).where(Duty.kind == "inspect")),
            "cards": await n(
                select(func.count()).where(
                    col(OutboxMessage.idem_key).startswith("assignment:deliver:")
                )
            ),
            "audit": await n(select(func.count()).where(AuditLog.action == "assignment.deliver")),
        }


async def test_execution_uses_the_same_few_statements_for_more_inspections(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock, targets=100, inspectors=12, swj_inspectors=0)
    await _bind_everyone(db, clock)
    async with db.session() as session:
        small_task = await new_task(
            session, clock.now(), ratio_policy="flat", ratios={"flat": "0.2"}
        )
    small = await _execute_counting(db, clock, small_task)
    first = await _counts(db)
    assert first["inspections"] >= 10
    seats = first["seats"]
    assert first["delivered"] == first["cards"] == first["confirm"] == first["audit"] == seats
    assert first["inspect"] == first["inspections"]
    # The rest of the targets (the first draw's are in its open inspections, another window).
    async with db.session() as session:
        big_task = await new_task(
            session,
            clock.now(),
            ratio_policy="all",
            window_start=date(2026, 7, 1),
            window_end=date(2026, 9, 30),
        )
    big = await _execute_counting(db, clock, big_task)
    both = await _counts(db)
    assert both["inspections"] - first["inspections"] > 3 * first["inspections"]
    assert both["delivered"] == both["cards"] == both["confirm"] == both["audit"] == both["seats"]
    assert both["inspect"] == both["inspections"]
    # Four times the inspections, not four times the statements (one chunk holds 500 ids).
    assert big <= small + 10, (small, big)


async def test_every_card_names_its_own_inspector(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock, targets=12, inspectors=6, swj_inspectors=0)
    chats = await _bind_everyone(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now(), ratio_policy="all")
    async with db.session() as session:
        commitment = await commit_draw(session, task_id=task_id, actor="t", now=clock.now())
    async with db.session() as session:
        await execute_draw(session, draw_id=commitment.draw_id, actor="t", now=clock.now())
    async with db.read() as session:
        seats = list(await session.exec(select(Assignment)))
        cards = {
            m.idem_key: m
            for m in await session.exec(
                select(OutboxMessage).where(
                    col(OutboxMessage.idem_key).startswith("assignment:deliver:")
                )
            )
        }
        from storage.models import Inspector

        names = {i.id: i.name for i in await session.exec(select(Inspector))}
    assert seats and len(cards) == len(seats)
    for seat in seats:
        card = cards[f"assignment:deliver:{seat.id}:{chats[seat.inspector_id]}"]
        assert f"{names[seat.inspector_id]}（您）" in card.text
        assert f"第 {seat.inspection_id} 号检查" in card.text
        assert card.notify_department == "SJJ"
