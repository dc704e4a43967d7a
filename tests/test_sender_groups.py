"""Groups and the outbox: a group that removed the bot gets its refused messages once the bot
is added back (my_chat_member through the real dispatcher)."""

from __future__ import annotations

from sqlmodel import select

from bot.outbox import enqueue
from storage.models import ChatBinding, OutboxMessage, Person, Role, RoleGrant
from tests.harness import Harness, text_of, unique

GROUP = -100_700
LIAISON = 900
MEMBER = 801


async def _department_with_group(h: Harness) -> None:
    h.person(LIAISON, "联络员王")
    h.person(MEMBER, "检查员张")
    h.group(GROUP, "市场监管局工作群", LIAISON, MEMBER)
    now = h.services.clock.now()
    async with h.services.db.session() as session:
        person = Person(tg_user_id=LIAISON, display_name="联络员王", created_at=now)
        session.add(person)
        await session.flush()
        assert person.id is not None
        session.add(
            RoleGrant(person_id=person.id, role=Role.LIAISON, department_code="D1", granted_at=now)
        )
        session.add(
            ChatBinding(
                chat_id=GROUP,
                kind="department",
                department_code="D1",
                title="市场监管局工作群",
                bound_by=LIAISON,
                bound_at=now,
            )
        )


async def _queue(h: Harness, *texts: str) -> None:
    async with h.services.db.session() as session:
        for body in texts:
            await enqueue(
                session,
                key=f"test:group:{body}",
                chat_id=GROUP,
                text=body,
                now=h.services.clock.now(),
                is_group=True,
                notify_department="D1",
            )


async def _statuses(h: Harness) -> dict[str, str]:
    async with h.services.db.read() as session:
        rows = await session.exec(select(OutboxMessage).where(OutboxMessage.chat_id == GROUP))
        return {row.text: row.status for row in rows}


async def test_a_group_that_removed_the_bot_gets_its_messages_when_the_bot_is_back(
    harness: Harness,
) -> None:
    h = harness
    await _department_with_group(h)
    await h.feed(h.fake.kick_bot(GROUP, by_user_id=MEMBER))
    await _queue(h, "督办汇总一", "督办汇总二")
    assert await h.deliver() == 1  # only the liaison's notice: the group refused with 403
    assert await _statuses(h) == {"督办汇总一": "failed", "督办汇总二": "failed"}
    notice = text_of(unique(h.fake.sent_by_bot(LIAISON)))
    assert "市场监管局工作群" in notice and "督办" not in notice

    # Removed again by someone else: not a way back in, nothing is queued.
    await h.feed(h.fake.kick_bot(GROUP, by_user_id=LIAISON))
    assert await h.deliver() == 0

    await h.feed(h.fake.add_bot(GROUP, by_user_id=LIAISON))
    assert await h.deliver() == 2
    assert [m.text for m in h.fake.sent_by_bot(GROUP)] == ["督办汇总一", "督办汇总二"]
    assert await _statuses(h) == {"督办汇总一": "sent", "督办汇总二": "sent"}


async def test_the_bot_added_to_a_group_with_nothing_refused_sends_nothing(
    harness: Harness,
) -> None:
    h = harness
    await _department_with_group(h)
    await _queue(h, "周报")
    assert await h.deliver() == 1
    await h.feed(h.fake.kick_bot(GROUP, by_user_id=MEMBER))
    await h.feed(h.fake.add_bot(GROUP, by_user_id=MEMBER))
    assert await h.deliver() == 0
    assert [m.text for m in h.fake.sent_by_bot(GROUP)] == ["周报"]
    assert await _statuses(h) == {"周报": "sent"}
