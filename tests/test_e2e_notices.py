"""The 三单 end to end: the sweeper queues, the sender delivers to the Bot API fake, people read
and press buttons; the office decides 问责 / 免责; /notices; /holidays."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlmodel import col, select

from bot.clock import FrozenClock
from bot.config import Settings
from bot.fakeapi import StoredMessage
from bot.sweeper import sweep
from storage.models import AuditLog, Holiday, Notice
from tests.harness import OFFICE, Harness, text_of, unique, unique_text
from tests.test_sweeper import (
    DEPARTMENT_GROUP,
    LI,
    LIAISON,
    OFFICE_GROUP,
    OFFICE_MEMBER,
    TARGET_NAME,
    TARGET_USCC,
    ZHANG,
    World,
    at,
    beijing,
    build_world,
    open_confirm,
    open_many,
)


async def setup(h: Harness, *, office_group: bool = True) -> World:
    for user, name in ((ZHANG, "张三"), (LI, "李四"), (LIAISON, "王联络"), (OFFICE_MEMBER, "赵")):
        h.person(user, name)
    h.group(DEPARTMENT_GROUP, "市场监管局工作群", LIAISON, ZHANG, LI, OFFICE)
    if office_group:
        h.group(OFFICE_GROUP, "协调办工作群", OFFICE, OFFICE_MEMBER, LIAISON)
    return await build_world(h.services.db, h.services.clock.now(), office_group=office_group)


def clock_of(h: Harness) -> FrozenClock:
    clock = h.services.clock
    assert isinstance(clock, FrozenClock)
    return clock


async def climb_to_accountability(h: Harness, world: World, settings: Settings) -> StoredMessage:
    """Open a 2-day duty on Monday 2 March and let it go unanswered until 问〔2026〕1号."""
    clock = clock_of(h)
    await open_confirm(h.services.db, world, clock, date(2026, 3, 4))
    for day in (2, 3, 5, 13):
        at(clock, beijing(2026, 3, day, 9))
        await sweep(h.services.db, clock, settings)
        await h.deliver()
    card = h.fake.last_bot_message(OFFICE_GROUP)
    assert "问〔2026〕1号" in text_of(card)
    return card


def answer(h: Harness) -> dict[str, Any]:
    """The bot's answer to the latest button press."""
    query_id = list(h.fake.callbacks)[-1]
    found = h.fake.callback_answer(query_id)
    assert found is not None
    return found


async def test_ladder_as_people_see_it_then_exemption(harness: Harness, settings: Settings) -> None:
    h = harness
    world = await setup(h)
    card = await climb_to_accountability(h, world, settings)

    reminder = text_of(h.fake.sent_by_bot(ZHANG)[0])
    assert "懒政提醒单" in reminder and TARGET_NAME in reminder
    liaison = [text_of(m) for m in h.fake.sent_by_bot(LIAISON)]
    assert "懒政提醒单" in liaison[0] and "督〔2026〕1号" in liaison[1]
    # The liaison is the addressee of the 督办单: the formal notice, not a one-line digest.
    assert liaison[1].startswith("🔴 怠政督办单 督〔2026〕1号") and "三单汇总" not in liaison[1]
    assert "请于 2026年3月12日（周四） 前办结" in liaison[1] and TARGET_NAME in liaison[1]
    assert "督办期限：2026年3月12日（周四）" in liaison[1] and "责任人：张三" in liaison[1]
    group = [text_of(m) for m in h.fake.sent_by_bot(DEPARTMENT_GROUP)]
    assert len(group) == 1 and group[0].startswith("🔴 怠政督办单 督〔2026〕1号")
    assert "督办期限：2026年3月12日（周四）" in group[0] and "张三" not in group[0]
    office = [text_of(m) for m in h.fake.sent_by_bot(OFFICE_GROUP)]
    assert len(office) == 2 and "督〔2026〕1号" in office[0]
    for message in group + office:
        assert TARGET_NAME not in message and TARGET_USCC not in message
    assert card.button_texts() == ["⚖️ 问责", "✅ 免责"]

    assert await h.press(OFFICE, card, "✅ 免责") == []
    card = h.fake.message(OFFICE_GROUP, card.message_id)
    assert "已按清单和计划履职" in card.button_texts() and "↩️ 返回" in card.button_texts()
    await h.press(OFFICE, card, "↩️ 返回")
    card = h.fake.message(OFFICE_GROUP, card.message_id)
    assert card.button_texts() == ["⚖️ 问责", "✅ 免责"]
    await h.press(OFFICE, card, "✅ 免责")
    card = h.fake.message(OFFICE_GROUP, card.message_id)
    await h.press(OFFICE, card, "受技术条件限制未能发现问题")
    assert answer(h)["text"] == "已记录：免责"
    card = h.fake.message(OFFICE_GROUP, card.message_id)
    assert card.button_texts() == [] and "决定：免责" in text_of(card)
    assert TARGET_NAME not in text_of(card)

    await h.deliver()
    told = text_of(h.fake.last_bot_message(LIAISON))
    assert "问〔2026〕1号" in told and "免责" in told and "受技术条件限制" in told
    assert TARGET_NAME in told
    in_group = text_of(h.fake.last_bot_message(DEPARTMENT_GROUP))
    assert "免责" in in_group and TARGET_NAME not in in_group
    async with h.services.db.read() as session:
        notice = (await session.exec(select(Notice).where(Notice.kind == "accountability"))).one()
        audit = (
            await session.exec(select(AuditLog).where(AuditLog.action == "notice.decide"))
        ).one()
    assert (notice.decision, notice.decision_reason) == ("免责", "受技术条件限制未能发现问题")
    assert notice.decided_by == f"tg:{OFFICE}" and audit.entity_id == str(notice.id)


async def test_copies_arrive_as_one_digest(harness: Harness, settings: Settings) -> None:
    """A morning with many notices: the responsible inspector gets each reminder; the liaison,
    the department group and the office group each get one list (in as many messages as
    Telegram's 4096 characters need: the fake refuses longer ones)."""
    h = harness
    await setup(h)
    clock = clock_of(h)
    await open_many(h.services.db, clock, 2, date(2026, 3, 3))  # reminded today
    await open_many(h.services.db, clock, 100, date(2026, 2, 27))  # overdue: 督办
    report = await sweep(h.services.db, clock, settings)
    assert (report.reminders, report.supervisions) == (2, 100)
    await h.deliver()

    own = [text_of(m) for m in h.fake.sent_by_bot(ZHANG)]
    assert len(own) == 2 and all("懒政提醒单" in t and TARGET_NAME in t for t in own)
    liaison = [text_of(m) for m in h.fake.sent_by_bot(LIAISON)]
    assert len(liaison) == report.digests - len(h.fake.sent_by_bot(DEPARTMENT_GROUP)) - len(
        h.fake.sent_by_bot(OFFICE_GROUP)
    )
    assert len(liaison) > 1 and all("新签发 102 份" in t for t in liaison)
    assert "（1/" in liaison[0] and "/notices" in liaison[-1]
    listed = "\n".join(liaison)
    assert all(f"督〔2026〕{n}号" in listed for n in range(1, 101))
    for group in (DEPARTMENT_GROUP, OFFICE_GROUP):
        texts = [text_of(m) for m in h.fake.sent_by_bot(group)]
        assert texts and all("怠政督办单 100 份" in t for t in texts)
        assert all(TARGET_NAME not in t and "张三" not in t for t in texts)

    # /notices has the details behind the list.
    details = unique_text(await h.send(LIAISON, "/notices"))
    assert "督〔2026〕" in details and TARGET_NAME in details


async def test_a_single_copy_is_the_notice_itself_and_two_are_a_digest(
    harness: Harness, settings: Settings
) -> None:
    """Without an office group the office members read the 督办单 privately: one order in a
    sweep arrives in full (number, target, new deadline); two in the next sweep, as a list."""
    h = harness
    await setup(h, office_group=False)
    clock = clock_of(h)
    await open_many(h.services.db, clock, 1, date(2026, 2, 27))  # overdue: 督办 at once
    report = await sweep(h.services.db, clock, settings)
    assert (report.supervisions, report.digests) == (1, 4)  # liaison, group, office member, admin
    await h.deliver()
    (order,) = [text_of(m) for m in h.fake.sent_by_bot(OFFICE_MEMBER)]
    assert order.startswith("🔴 怠政督办单 督〔2026〕1号") and "三单汇总" not in order
    assert TARGET_NAME in order and TARGET_USCC in order and "责任人：张三" in order
    assert "请于 2026年3月9日（周一） 前办结" in order and "抄送：协调办" in order
    (liaison,) = [text_of(m) for m in h.fake.sent_by_bot(LIAISON)]
    assert liaison == order
    (group,) = [text_of(m) for m in h.fake.sent_by_bot(DEPARTMENT_GROUP)]
    assert group.startswith("🔴 怠政督办单 督〔2026〕1号") and "督办期限：2026年3月9日" in group
    assert TARGET_NAME not in group and TARGET_USCC not in group and "张三" not in group
    async with h.services.db.read() as session:
        notice = (await session.exec(select(Notice))).one()
    assert (notice.seq, notice.deadline) == (1, date(2026, 3, 9))

    at(clock, beijing(2026, 3, 3, 9))
    await open_many(h.services.db, clock, 2, date(2026, 3, 2))
    await sweep(h.services.db, clock, settings)
    await h.deliver()
    digest = text_of(h.fake.last_bot_message(OFFICE_MEMBER))
    assert "三单汇总" in digest and "怠政督办单 2 份" in digest
    assert "督〔2026〕2号" in digest and "督〔2026〕3号" in digest
    assert len(h.fake.sent_by_bot(OFFICE_MEMBER)) == 2


async def test_typed_reason_and_a_second_press(harness: Harness, settings: Settings) -> None:
    h = harness
    world = await setup(h)
    card = await climb_to_accountability(h, world, settings)
    await h.press(LIAISON, card, "⚖️ 问责")  # a liaison in the office group may not decide
    assert "仅限协调办" in answer(h)["text"]
    await h.press(OFFICE, card, "⚖️ 问责")
    card = h.fake.message(OFFICE_GROUP, card.message_id)
    assert "拒绝或拖延执行抽查任务" in card.button_texts()
    prompt = unique(await h.press(OFFICE, card, "✏️ 其他理由（手动输入）"))
    assert "问〔2026〕1号" in text_of(prompt) and "问责" in text_of(prompt)
    h.mark(OFFICE_GROUP)
    await h.feed(
        h.fake.user_message(
            OFFICE,
            OFFICE_GROUP,
            "三次督办仍未确认，影响检查进度",
            reply_to_message_id=prompt.message_id,
        )
    )
    recorded = unique_text(h.new(OFFICE_GROUP))
    assert "问责" in recorded and "三次督办仍未确认" in recorded
    card = h.fake.message(OFFICE_GROUP, card.message_id)
    assert card.button_texts() == [] and "决定：问责" in text_of(card)

    await h.deliver()
    in_group = text_of(h.fake.last_bot_message(DEPARTMENT_GROUP))
    # A typed reason may name anyone or anything: it goes to the liaison only.
    assert "问责" in in_group and "三次督办" not in in_group and "私信" in in_group
    assert "三次督办仍未确认" in text_of(h.fake.last_bot_message(LIAISON))

    # A stale card (another office member's copy) cannot decide again.
    async with h.services.db.read() as session:
        notice = (await session.exec(select(Notice).where(Notice.kind == "accountability"))).one()
    from bot.telegram import NoticeCb

    forged = NoticeCb(action="pick", notice_id=notice.id or 0, decision="e", reason=1).pack()
    await h.feed(h.fake.press_button(OFFICE, card, forged, check_keyboard=False))
    assert "已经作出决定" in answer(h)["text"]
    async with h.services.db.read() as session:
        again = await session.get(Notice, notice.id)
    assert again is not None and again.decision == "问责"


async def test_typed_reason_can_be_cancelled(harness: Harness, settings: Settings) -> None:
    h = harness
    world = await setup(h, office_group=False)
    clock = clock_of(h)
    await open_confirm(h.services.db, world, clock, date(2026, 3, 4))
    at(clock, beijing(2026, 3, 5, 9))
    await sweep(h.services.db, clock, settings)
    at(clock, beijing(2026, 3, 13, 9))
    await sweep(h.services.db, clock, settings)
    await h.deliver()
    card = h.fake.last_bot_message(OFFICE)  # no office group: privately, with the target
    assert "问〔2026〕1号" in text_of(card) and TARGET_NAME in text_of(card)
    await h.press(OFFICE, card, "✅ 免责")
    card = h.fake.message(OFFICE, card.message_id)
    await h.press(OFFICE, card, "✏️ 其他理由（手动输入）")
    assert "已取消" in unique_text(await h.send(OFFICE, "/cancel"))
    async with h.services.db.read() as session:
        notice = (await session.exec(select(Notice).where(Notice.kind == "accountability"))).one()
    assert notice.decision is None


async def test_notices_lists_per_scope(harness: Harness, settings: Settings) -> None:
    h = harness
    world = await setup(h)
    clock = clock_of(h)
    await open_confirm(h.services.db, world, clock, date(2026, 3, 4))
    at(clock, beijing(2026, 3, 5, 9))
    await sweep(h.services.db, clock, settings)
    at(clock, beijing(2026, 3, 13, 9))
    await sweep(h.services.db, clock, settings)

    liaison = unique_text(await h.send(LIAISON, "/notices"))
    assert "问〔2026〕1号" in liaison and TARGET_NAME in liaison and "待决定" in liaison
    zhang = unique_text(await h.send(ZHANG, "/notices"))
    assert "问〔2026〕1号" in zhang
    assert "没有待办" in unique_text(await h.send(LI, "/notices"))
    group = unique_text(await h.send(LIAISON, "/notices", DEPARTMENT_GROUP))
    assert "问〔2026〕1号" in group and TARGET_NAME not in group and "张三" not in group

    office = unique(await h.send(OFFICE, "/notices"))
    assert office.button_texts() == ["处理 问〔2026〕1号"]
    card = unique(await h.press(OFFICE, office, "处理 问〔2026〕1号"))
    assert card.button_texts() == ["⚖️ 问责", "✅ 免责"] and TARGET_NAME in text_of(card)
    await h.press(OFFICE, card, "✅ 免责")
    card = h.fake.message(OFFICE, card.message_id)
    await h.press(OFFICE, card, "法定时限尚未届满")
    # Decided, but the duty is still not done: its 督办单 stays on the list.
    after = unique_text(await h.send(ZHANG, "/notices"))
    assert "督〔2026〕1号" in after and "问〔2026〕1号" not in after

    stranger = h.person(9, "路人")
    assert "还没有绑定身份" in unique_text(await h.send(stranger, "/notices"))


async def test_office_loads_holidays_by_file(harness: Harness) -> None:
    h = harness
    await setup(h)
    asked = unique_text(await h.send(OFFICE, "/holidays"))
    assert "2026年12月31日" in asked and "休" in asked
    bad = unique_text(
        await h.upload(OFFICE, "日期,类型\n2027-01-01,休\n2027-13-01,休\n".encode(), "假.csv")
    )
    assert "未加载" in bad and "第 3 行" in bad
    rows = "日期,类型\n2027-01-01,休\n2027-02-06,休\n2027-02-07,班\n"
    report = unique_text(
        await h.upload(OFFICE, rows.encode(), "2027节假日.csv", caption="/holidays")
    )
    assert "已加载" in report and "2027" in report and "2027年12月31日" in report
    async with h.services.db.read() as session:
        days = list(await session.exec(select(Holiday).order_by(col(Holiday.day))))
    assert [(d.day, d.working) for d in days] == [
        (date(2027, 1, 1), False),
        (date(2027, 2, 6), False),
        (date(2027, 2, 7), True),
    ]
    assert "仅限协调办" in unique_text(await h.send(LIAISON, "/holidays"))
    wrong = unique_text(await h.send(OFFICE, "/holidays", DEPARTMENT_GROUP))
    assert "私聊或协调办工作群" in wrong
