"""Merging adds items to an inspection: the inspectors already on it are told (issue #3)."""

from __future__ import annotations

from sqlmodel import col, select

from bot.clock import FrozenClock
from bot.draws import merge_draw
from storage.db import Database
from storage.models import (
    Assignment,
    Inspection,
    InspectionStatus,
    Inspector,
    OutboxMessage,
    Person,
    Role,
    RoleGrant,
    Target,
)
from tests.test_draws import draw_tax_task, new_task, run_draw, seeded

FIRST_CHAT = 7_000_000


async def _bind_everyone(db: Database, clock: FrozenClock) -> dict[int, int]:
    """Every inspector opened their invite: inspector id → private chat."""
    chats: dict[int, int] = {}
    async with db.session() as session:
        for inspector in await session.exec(select(Inspector).order_by(col(Inspector.id))):
            assert inspector.id is not None
            person = Person(tg_user_id=FIRST_CHAT + inspector.id, created_at=clock.now())
            session.add(person)
            await session.flush()
            assert person.id is not None
            session.add(
                RoleGrant(
                    person_id=person.id,
                    role=Role.INSPECTOR,
                    inspector_id=inspector.id,
                    granted_at=clock.now(),
                )
            )
            chats[inspector.id] = person.tg_user_id
    return chats


async def test_merge_tells_the_inspectors_already_on_the_visit_what_was_added(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock, targets=30, inspectors=8, swj_inspectors=5)
    chats = await _bind_everyone(db, clock)
    async with db.session() as session:
        a = await new_task(session, clock.now(), ratio_policy="all", name="市场监管任务")
    draw_a = await run_draw(db, clock.now(), a)
    draw_b = await draw_tax_task(db, clock, mergeable=False)
    async with db.read() as session:
        before = set(await session.exec(select(OutboxMessage.idem_key)))
        # A's visits with a group, and who sits on them (all told at A's execution).
        kept = {
            i.id: i
            for i in await session.exec(
                select(Inspection).where(
                    Inspection.draw_id == draw_a, Inspection.status == InspectionStatus.ASSIGNED
                )
            )
        }
        seats = list(
            await session.exec(select(Assignment).where(col(Assignment.inspection_id).in_(kept)))
        )
    assert kept and all(s.delivered_at is not None for s in seats)
    assert not any(k.startswith("draws:merged:") for k in before)

    async with db.session() as session:
        report = await merge_draw(session, draw_id=draw_b, actor="test", now=clock.now())
    assert {m.inspection_id for m in report.merged_now} == set(kept)

    async with db.read() as session:
        told = {
            m.idem_key: m
            for m in await session.exec(
                select(OutboxMessage).where(col(OutboxMessage.idem_key).startswith("draws:merged:"))
            )
        }
        names = {t.id: t.name for t in await session.exec(select(Target))}
        swj = set(
            await session.exec(select(Inspector.id).where(Inspector.department_code == "SWJ"))
        )
    # One private message per inspector who was already on a kept visit, none to the newcomers.
    assert {m.chat_id for m in told.values()} == {chats[s.inspector_id] for s in seats}
    assert len(told) == len(seats)
    assert not {chats[i] for i in swj if i is not None} & {m.chat_id for m in told.values()}
    for seat in seats:
        inspection = kept[seat.inspection_id]
        message = next(
            m
            for k, m in told.items()
            if k.endswith(f":{seat.id}") and m.chat_id == chats[seat.inspector_id]
        )
        shown = message.text
        assert f"第 {inspection.id} 号检查" in shown
        assert names[inspection.target_id] in shown
        assert "SW001 发票使用检查" in shown and "县税务局" in shown
        assert "SC001" not in shown  # only what was added
        assert "2026-05-01 至 2026-06-30" in shown  # the merged visit's window
        assert message.reply_markup is not None
        labels = [b["text"] for row in message.reply_markup["inline_keyboard"] for b in row]
        assert labels == ["📄 详情"]

    # Merging again adds nothing and tells nobody twice.
    async with db.session() as session:
        again = await merge_draw(session, draw_id=draw_b, actor="test", now=clock.now())
    assert not again.merged_now
    async with db.read() as session:
        after = list(
            await session.exec(
                select(OutboxMessage.idem_key).where(
                    col(OutboxMessage.idem_key).startswith("draws:merged:")
                )
            )
        )
    assert len(after) == len(told)
