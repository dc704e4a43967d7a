"""Assignment delivery, confirmation and the unreachable-inspector path (service level)."""

from __future__ import annotations

from sqlmodel import col, select

from bot.assignments import announce_assignments, deliver_waiting
from bot.clock import FrozenClock
from storage.db import Database
from storage.models import Assignment, AuditLog, Duty, OutboxMessage
from tests.inspection_factory import (
    INSPECTOR_A,
    INSPECTOR_B,
    LIAISON_SJJ,
    bind_inspector,
    build_world,
)


async def outbox(db: Database) -> list[OutboxMessage]:
    async with db.read() as session:
        return list(await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))))


async def test_announce_delivers_each_seat_once_with_everything(
    db: Database, clock: FrozenClock
) -> None:
    world = await build_world(db, clock.now())
    for _ in range(2):  # a second call (a retried job) queues nothing new
        async with db.session() as session:
            await announce_assignments(session, draw_id=world.draw_id, now=clock.now())
    rows = await outbox(db)
    assert [r.chat_id for r in rows] == [INSPECTOR_A, INSPECTOR_B]
    body = rows[0].text
    for needle in (
        "城关示范超市有限公司",
        world.uscc,
        "城关镇人民路 8 号",
        "C 类（较高风险）",
        "经营异常名录",
        "投诉举报 4 次",
        "食品经营许可情况检查",
        "食品安全法",
        "李四",
        "13800000002",
        "牵头部门：县市场监督管理局",
        "2026-02-23 至 2026-03-31",
        "2026-03-04",  # confirm within 2 working days of Monday 2026-03-02
        "现场",
    ):
        assert needle in body, needle
    labels = [b["text"] for row in rows[0].reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert labels == ["✅ 确认接收", "🙋 申请回避", "📄 详情"]
    assert rows[0].notify_department == "SJJ-CG"
    async with db.read() as session:
        seats = list(await session.exec(select(Assignment)))
        duties = list(await session.exec(select(Duty).where(Duty.kind == "confirm")))
    assert all(s.delivered_at is not None for s in seats)
    assert sorted(d.subject for d in duties) == [f"assignment:{i}" for i in world.assignment_ids]


async def test_unbound_inspector_waits_and_liaison_is_told(
    db: Database, clock: FrozenClock
) -> None:
    world = await build_world(db, clock.now(), bind=(False, True))
    async with db.session() as session:
        await announce_assignments(session, draw_id=world.draw_id, now=clock.now())
    rows = await outbox(db)
    assert sorted(r.chat_id for r in rows) == [INSPECTOR_B, LIAISON_SJJ]
    told = next(r for r in rows if r.chat_id == LIAISON_SJJ)
    assert "张三" in told.text and "邀请链接" in told.text
    async with db.read() as session:
        waiting = await session.get(Assignment, world.assignment_ids[0])
    assert waiting is not None and waiting.delivered_at is None

    async with db.session() as session:
        await bind_inspector(session, INSPECTOR_A, world.inspector_ids[0], "SJJ-CG", clock.now())
        assert await deliver_waiting(session, tg_user_id=INSPECTOR_A, now=clock.now()) == 1
    async with db.session() as session:
        assert await deliver_waiting(session, tg_user_id=INSPECTOR_A, now=clock.now()) == 0
    rows = await outbox(db)
    assert [r.chat_id for r in rows].count(INSPECTOR_A) == 1
    async with db.read() as session:
        audit = list(await session.exec(select(AuditLog.action)))
    assert "assignment.unreachable" in audit and audit.count("assignment.deliver") == 2


async def test_recusal_without_a_qualified_replacement_goes_to_the_office(
    db: Database, clock: FrozenClock
) -> None:
    from bot.assignments import Act, decide_recusal, request_recusal
    from bot.people import load_identity
    from storage.models import RecusalRequest

    world = await build_world(db, clock.now())
    now = clock.now()
    async with db.session() as session:
        await announce_assignments(session, draw_id=world.draw_id, now=now)
    for n, tg in enumerate((INSPECTOR_A, INSPECTOR_B)):
        async with db.session() as session:
            identity = await load_identity(session, tg, [])
            asked = await request_recusal(
                session,
                assignment_id=world.assignment_ids[n],
                identity=identity,
                reason_code=2,
                reason_text="",
                now=now,
            )
            assert asked.act is Act.DONE
            request = (
                await session.exec(
                    select(RecusalRequest).where(
                        RecusalRequest.assignment_id == world.assignment_ids[n]
                    )
                )
            ).one()
        async with db.session() as session:
            liaison = await load_identity(session, LIAISON_SJJ, [])
            decided = await decide_recusal(
                session,
                request_id=request.id or 0,
                identity=liaison,
                approve=True,
                now=now,
                office_admins=[1000],
            )
            assert decided.act is Act.DONE
    rows = await outbox(db)
    # The spare took the first seat; nobody is left for the second: the office decides.
    assert any(r.chat_id == 1000 and "无法抽取替补人员" in r.text for r in rows)
    async with db.read() as session:
        seats = list(await session.exec(select(Assignment).order_by(col(Assignment.id))))
    assert [s.status for s in seats] == ["recused", "recused", "pending"]
