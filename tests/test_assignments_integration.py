"""With the real draw service (issue #3): an executed draw announces every seat, and an approved
recusal draws the replacement into the same verifiable record."""

from __future__ import annotations

from sqlmodel import col, select

from bot.assignments import Act, decide_recusal, request_recusal
from bot.clock import FrozenClock
from bot.draws import verify_draw
from bot.people import load_identity
from storage.db import Database
from storage.models import Assignment, Duty, Inspector, OutboxMessage, Person, Role, RoleGrant
from tests.test_draws import new_task, run_draw, seeded

OFFICE = 1000


async def test_executed_draw_announces_seats_and_recusal_replaces(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock, targets=30, inspectors=6, swj_inspectors=0)
    now = clock.now()
    async with db.session() as session:
        inspectors = list(await session.exec(select(Inspector).order_by(col(Inspector.id))))
        for n, inspector in enumerate(inspectors):
            person = Person(tg_user_id=5000 + n, display_name=inspector.name, created_at=now)
            session.add(person)
            await session.flush()
            assert person.id is not None
            session.add(
                RoleGrant(
                    person_id=person.id,
                    role=Role.INSPECTOR,
                    department_code=inspector.department_code,
                    inspector_id=inspector.id,
                    granted_at=now,
                )
            )
        task_id = await new_task(session, now)
    draw_id = await run_draw(db, now, task_id)

    async with db.read() as session:
        seats = list(await session.exec(select(Assignment).where(Assignment.status == "pending")))
        keys = set(await session.exec(select(OutboxMessage.idem_key)))
        confirm = list(await session.exec(select(Duty).where(Duty.kind == "confirm")))
    assert seats and all(s.delivered_at is not None for s in seats)
    delivered = {k.split(":")[2] for k in keys if k.startswith("assignment:deliver:")}
    assert delivered == {str(s.id) for s in seats}
    assert len(confirm) == len(seats)

    seat = seats[0]
    async with db.session() as session:
        tg = 5000 + [i.id for i in inspectors].index(seat.inspector_id)
        identity = await load_identity(session, tg, [])
        asked = await request_recusal(
            session,
            assignment_id=seat.id or 0,
            identity=identity,
            reason_code=1,
            reason_text="",
            now=now,
        )
        assert asked.act is Act.DONE
    async with db.session() as session:
        office = await load_identity(session, OFFICE, [OFFICE])
        decided = await decide_recusal(
            session, request_id=1, identity=office, approve=True, now=now, office_admins=[OFFICE]
        )
        again = await decide_recusal(
            session, request_id=1, identity=office, approve=True, now=now, office_admins=[OFFICE]
        )
    assert decided.act is Act.DONE and again.act is Act.ALREADY
    async with db.read() as session:
        old = await session.get(Assignment, seat.id)
        new = (
            await session.exec(select(Assignment).where(Assignment.replaces_id == seat.id))
        ).all()
        verification = await verify_draw(session, draw_id=draw_id)
    assert old is not None and old.status == "recused"
    assert len(new) <= 1 and verification.consistent and verification.replacements == 1
