"""Issue 3 end to end: the office creates a task in the /task dialog, draws it in the office
group (commitment, 执行抽取), the groups see counts only, the liaison gets the list privately,
/verify, /void. Real updates through the real dispatcher against the Bot API fake."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from typer.testing import CliRunner

from bot.app import register_commands
from bot.cli import app
from bot.clock import FrozenClock
from bot.draws import commit_draw, verify_text
from bot.fakeapi import StoredMessage
from bot.tasks import create_task
from bot.telegram import DrawCb, TaskCb
from storage.models import (
    Draw,
    DrawStatus,
    Inspection,
    OutboxMessage,
    Person,
    Role,
    RoleGrant,
    Target,
    Task,
)
from tests.harness import OFFICE, Harness, text_of, unique, unique_text
from tests.test_draws import (
    OFFICE_CHAT,
    SJJ_CHAT,
    SWJ_CHAT,
    TODAY,
    build_world,
    run_draw,
    spec,
)
from tests.test_draws import _two_tasks as two_tasks

LIAISON_SJJ = 3101
LIAISON_SWJ = 3102
INSPECTOR_TG = 3201
USCC = re.compile(r"91[0-9A-Z]{16}")


def answer(h: Harness) -> dict[str, Any]:
    """The bot's answer to the latest button press (toast or alert)."""
    found = h.fake.callback_answer(list(h.fake.callbacks)[-1])
    assert found is not None
    return found


async def press(h: Harness, user: int, message: StoredMessage, label: str) -> StoredMessage:
    """Press a button of the dialog's message; the dialog edits that message in place."""
    await h.press(user, message, label)
    return h.fake.message(message.chat_id, message.message_id)


async def typed(h: Harness, user: int, text: str) -> StoredMessage:
    return unique(await h.send(user, text))


async def world(h: Harness) -> list[Target]:
    for user, name in ((LIAISON_SJJ, "李联络"), (LIAISON_SWJ, "王联络"), (INSPECTOR_TG, "检查员")):
        h.person(user, name)
    h.group(OFFICE_CHAT, "协调办工作群", OFFICE, LIAISON_SJJ)
    h.group(SJJ_CHAT, "市场监管局工作群", OFFICE, LIAISON_SJJ, INSPECTOR_TG)
    h.group(SWJ_CHAT, "税务局工作群", OFFICE, LIAISON_SWJ)
    async with h.services.db.session() as session:
        now = h.services.clock.now()
        built = await build_world(session, now, targets=60, inspectors=8)
        for user, department in ((LIAISON_SJJ, "SJJ"), (LIAISON_SWJ, "SWJ")):
            person = Person(tg_user_id=user, display_name=str(user), created_at=now)
            session.add(person)
            await session.flush()
            assert person.id is not None
            session.add(
                RoleGrant(
                    person_id=person.id,
                    role=Role.LIAISON,
                    department_code=department,
                    granted_at=now,
                )
            )
        return built.targets


async def create_task_in_dialog(h: Harness) -> StoredMessage:
    """/task, every step: typed answers, buttons, garbage, 返回."""
    ask = await typed(h, OFFICE, "/task")
    assert "任务名称" in text_of(ask) and ask.button_texts() == ["取消"]
    ask = await typed(h, OFFICE, "2026年食品销售者“双随机”抽查")
    assert "年度" in text_of(ask)
    ask = await press(h, OFFICE, ask, "2026")
    assert "参与部门" in text_of(ask) and "县市场监督管理局" in ask.button_texts()
    assert "城关市场监管所" not in ask.button_texts()  # stations are chosen with the mode
    hint = await typed(h, OFFICE, "XX")
    assert "不在部门名录" in text_of(hint)
    ask = await press(h, OFFICE, ask, "县市场监督管理局")
    assert "✅ 县市场监督管理局" in ask.button_texts()
    ask = await press(h, OFFICE, ask, "完成（已选 1 项）")
    assert "抽查事项" in text_of(ask)
    ask = await press(h, OFFICE, ask, "SC001 食品销售者检查")
    ask = await press(h, OFFICE, ask, "完成（已选 1 项）")
    assert "检查对象范围" in text_of(ask)
    assert "看不懂" in text_of(unique(await h.send(OFFICE, "随便")))
    ask = await press(h, OFFICE, ask, "不限（全部对象）")
    assert "抽查比例方式" in text_of(ask)
    ask = await press(h, OFFICE, ask, "统一比例")
    assert "统一比例" in text_of(ask)
    assert "不是有效的比例" in text_of(unique(await h.send(OFFICE, "很多")))
    ask = await typed(h, OFFICE, "3%")
    assert "检查期限" in text_of(ask)
    assert "两个日期" in text_of(unique(await h.send(OFFICE, "下个月")))
    ask = await typed(h, OFFICE, "2026-04-01 至 2026-06-30")
    assert "选派方式" in text_of(ask)
    ask = await press(h, OFFICE, ask, "全局内随机")
    assert "检查组" in text_of(ask)
    ask = await press(h, OFFICE, ask, "2 人")
    assert "检查方式" in text_of(ask)
    ask = await press(h, OFFICE, ask, "现场")
    assert "合并为一次联合检查" in text_of(ask)
    ask = await press(h, OFFICE, ask, "◀ 返回")
    assert "检查方式" in text_of(ask)
    ask = await press(h, OFFICE, ask, "现场")
    ask = await press(h, OFFICE, ask, "允许合并联合检查")
    summary = text_of(ask)
    assert "请确认抽查任务" in summary and "县市场监督管理局" in summary
    assert "统一比例 3%" in summary and "SC001 食品销售者检查" in summary
    assert "低于 5%" in summary  # a general item below 5%: the office is warned
    return ask


async def test_office_creates_draws_verifies_and_voids(harness: Harness) -> None:
    h = harness
    targets = await world(h)
    names = {t.name for t in targets}

    ask = await create_task_in_dialog(h)
    done = await press(h, OFFICE, ask, "✔️ 创建任务")
    assert "已创建" in text_of(done) and "/draw 1" in text_of(done)
    assert done.button_texts() == []
    async with h.services.db.read() as session:
        task = (await session.exec(select(Task))).one()
    assert task.ratio_policy == "flat" and task.ratios == {"flat": "0.03"}

    listing = unique_text(await h.send(OFFICE, "/tasks", OFFICE_CHAT))
    assert "#1 2026年食品销售者“双随机”抽查" in listing and "未抽取" in listing
    assert "本群不是协调办工作群" in unique_text(await h.send(OFFICE, "/tasks", SJJ_CHAT))

    # Step 1: the commitment, in the office group.
    assert "用法" in unique_text(await h.send(OFFICE, "/draw", OFFICE_CHAT))
    assert "没有编号为 9" in unique_text(await h.send(OFFICE, "/draw 9", OFFICE_CHAT))
    refused = unique_text(await h.send(LIAISON_SJJ, "/draw 1", OFFICE_CHAT))
    assert "仅限协调办" in refused
    committed = unique(await h.send(OFFICE, "/draw 1", OFFICE_CHAT))
    async with h.services.db.read() as session:
        draw = (await session.exec(select(Draw))).one()
    assert draw.commitment in text_of(committed) and draw.seed_hex not in text_of(committed)
    assert committed.button_texts() == ["执行抽取", "放弃"]
    assert "待执行" in unique_text(await h.send(OFFICE, "/tasks", OFFICE_CHAT))

    # Step 2: only the office may execute; then the seed is revealed.
    await h.press(LIAISON_SJJ, committed, "执行抽取")
    assert "仅限协调办" in str(answer(h)["text"])
    executed = await press(h, OFFICE, committed, "执行抽取")
    assert "已执行" in text_of(executed) and executed.button_texts() == []
    await h.deliver()
    office = [text_of(m) for m in h.fake.sent_by_bot(OFFICE_CHAT)]
    result = next(t for t in office if "抽取结果" in t)
    assert draw.seed_hex in result and "/verify 1" in result
    department = h.fake.last_bot_message(SJJ_CHAT)
    assert "县市场监督管理局" in text_of(department)
    assert department.button_texts() == ["联络员：私信获取本部门名单"]
    # Target names and USCCs never reach a group.
    for chat in (OFFICE_CHAT, SJJ_CHAT, SWJ_CHAT):
        for message in h.fake.sent_by_bot(chat):
            shown = text_of(message)
            assert not USCC.search(shown), shown
            assert not any(name in shown for name in names), shown

    # The liaison's list, privately; nobody else may have it.
    await h.press(INSPECTOR_TG, department, "联络员：私信获取本部门名单")
    assert "还没有绑定身份" in str(answer(h)["text"])
    await h.press(OFFICE, department, "联络员：私信获取本部门名单")
    assert "仅限部门信息联络员" in str(answer(h)["text"])
    await h.press(LIAISON_SJJ, department, "联络员：私信获取本部门名单")
    assert "私信" in str(answer(h)["text"])
    await h.deliver()
    private = text_of(h.fake.last_bot_message(LIAISON_SJJ))
    async with h.services.db.read() as session:
        drawn = list(await session.exec(select(Inspection.target_key)))
    assert drawn and all(key in private for key in drawn) and "检查组" in private
    await h.press(LIAISON_SJJ, department, "联络员：私信获取本部门名单")
    assert "此前已经" in str(answer(h)["text"])

    # Anyone bound may verify; in a group the answer carries no keys.
    verified = unique_text(await h.send(LIAISON_SJJ, "/verify 1", OFFICE_CHAT))
    assert "一致" in verified
    assert "一致" in unique_text(await h.send(LIAISON_SJJ, "/verify 1"))
    assert "用法" in unique_text(await h.send(OFFICE, "/verify 抽取"))

    # Void: a reason is required; the record stays and still verifies.
    assert "请写明作废原因" in unique_text(await h.send(OFFICE, "/void 1", OFFICE_CHAT))
    voided = unique_text(await h.send(OFFICE, "/void 1 检查对象名录有误", OFFICE_CHAT))
    assert "已作废" in voided and "/draw 1" in voided
    await h.deliver()
    assert "已作废" in text_of(h.fake.last_bot_message(SJJ_CHAT))
    assert "已经作废" in unique_text(await h.send(OFFICE, "/void 1 again", OFFICE_CHAT))
    again = unique_text(await h.send(OFFICE, "/verify 1"))
    assert "一致" in again and "已作废" in again
    async with h.services.db.read() as session:
        stored = await session.get(Draw, 1)
    assert stored is not None and stored.status == DrawStatus.VOIDED and stored.record


async def test_dialog_cancel_stale_buttons_and_private_only(harness: Harness) -> None:
    h = harness
    await world(h)
    assert "私聊" in unique_text(await h.send(OFFICE, "/task", OFFICE_CHAT))
    refused = unique_text(await h.send(LIAISON_SJJ, "/task"))
    assert "仅限协调办" in refused

    ask = await typed(h, OFFICE, "/task")
    old = await typed(h, OFFICE, "测试任务")
    assert "年度" in text_of(old)
    assert ask.button_texts() == []  # the previous question lost its buttons
    photo = unique_text(await h.upload(OFFICE, b"PK", "x.xlsx"))
    assert "文字回答" in photo
    cancelled = await press(h, OFFICE, old, "取消")
    assert "已取消" in text_of(cancelled) and cancelled.button_texts() == []
    assert "年度" not in unique_text(await h.send(OFFICE, "随便说点什么"))  # no dialog now

    # /cancel works too; a button of an earlier step (replayed) is stale and changes nothing.
    await typed(h, OFFICE, "/task")
    assert "已取消" in unique_text(await h.send(OFFICE, "/cancel"))
    first = await typed(h, OFFICE, "/task")
    ask = await typed(h, OFFICE, "第二个任务")
    replay = TaskCb(step="name", act="cancel").pack()
    await h.feed(h.fake.press_button(OFFICE, first, replay, check_keyboard=False))
    assert "过期" in str(answer(h)["text"])
    ask = await press(h, OFFICE, ask, "2026")
    assert "参与部门" in text_of(ask)


async def test_commitment_from_private_chat_and_abandon(harness: Harness) -> None:
    h = harness
    await world(h)
    async with h.services.db.session() as session:
        await create_task(session, spec(), actor="test", now=h.services.clock.now(), today=TODAY)
    private = unique(await h.send(OFFICE, "/draw 1 异地交叉"))
    assert "异地交叉" in text_of(private) and "协调办工作群" in text_of(private)
    await h.deliver()
    posted = h.fake.last_bot_message(OFFICE_CHAT)
    assert "抽取承诺" in text_of(posted) and posted.button_texts() == ["执行抽取", "放弃"]
    assert "待执行" in unique_text(await h.send(OFFICE, "/draw 1"))
    dropped = await press(h, OFFICE, posted, "放弃")
    assert "已放弃" in text_of(dropped)
    stale = await press(h, OFFICE, private, "执行抽取")
    assert "已经放弃" in str(answer(h)["text"]) and "异地交叉" in text_of(stale)
    # The outbox retires the private copy's buttons too.
    await h.deliver()
    retired = h.fake.message(OFFICE, private.message_id)
    assert retired.button_texts() == [] and "已放弃：抽取 #1" in text_of(retired)
    assert "异地交叉" in text_of(retired)  # the commitment is still there to read
    assert "看不懂" in unique_text(await h.send(OFFICE, "/draw 1 乱写"))
    assert "协调办工作群或私聊" in unique_text(await h.send(OFFICE, "/draw 1", SJJ_CHAT))
    # Absurd numbers, typed or forged into a button, are unknown, not a crash.
    huge = "99999999999999999999"
    assert "没有编号为" in unique_text(await h.send(OFFICE, f"/draw {huge}"))
    assert "没有编号为" in unique_text(await h.send(OFFICE, f"/verify {huge}"))
    forged = DrawCb(act="run", draw_id=int(huge)).pack()
    await h.feed(h.fake.press_button(OFFICE, posted, forged, check_keyboard=False))
    assert "没有编号为" in str(answer(h)["text"])
    forged = DrawCb(act="list", draw_id=1, n=7).pack()
    await h.feed(h.fake.press_button(LIAISON_SJJ, posted, forged, check_keyboard=False))
    assert "过期" in str(answer(h)["text"])


async def test_executed_privately_the_group_copy_loses_its_buttons(harness: Harness) -> None:
    h = harness
    await world(h)
    async with h.services.db.session() as session:
        await create_task(session, spec(), actor="test", now=h.services.clock.now(), today=TODAY)
    private = unique(await h.send(OFFICE, "/draw 1"))
    await h.deliver()
    posted = h.fake.last_bot_message(OFFICE_CHAT)
    assert posted.button_texts() == ["执行抽取", "放弃"]
    executed = await press(h, OFFICE, private, "执行抽取")
    assert "已执行" in text_of(executed) and executed.button_texts() == []
    await h.deliver()
    group_copy = h.fake.message(OFFICE_CHAT, posted.message_id)
    assert group_copy.button_texts() == [] and "已执行：抽取 #1" in text_of(group_copy)
    assert "抽取承诺" in text_of(group_copy)
    # The private copy, edited by the handler, is not edited again by the outbox.
    assert text_of(h.fake.message(OFFICE, private.message_id)) == text_of(executed)
    # A stale press (an old client still showing the buttons) gets the clear refusal.
    replay = DrawCb(act="run", draw_id=1).pack()
    await h.feed(h.fake.press_button(OFFICE, group_copy, replay, check_keyboard=False))
    assert "已经执行过了" in str(answer(h)["text"])
    async with h.services.db.read() as session:
        rows = {
            row.idem_key: row
            for row in await session.exec(
                select(OutboxMessage).where(col(OutboxMessage.idem_key).startswith("draws:commit"))
            )
        }
    edit = rows[f"draws:commit_executed:1:{OFFICE_CHAT}"]
    assert edit.status == "sent" and edit.edits_key == f"draws:commit:1:{OFFICE_CHAT}"
    assert rows[f"draws:commit:1:{OFFICE}"].tg_message_id == private.message_id
    assert f"draws:commit_executed:1:{OFFICE}" not in rows

    # Voided: every copy says so, the one edited by the handler too.
    assert "已作废" in unique_text(await h.send(OFFICE, "/void 1 名录有误"))
    await h.deliver()
    for chat, message in ((OFFICE_CHAT, posted), (OFFICE, private)):
        shown = text_of(h.fake.message(chat, message.message_id))
        assert "已作废：抽取 #1" in shown and "已执行：" not in shown


def _run_checker(checker: Path, record: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(checker), str(record)], capture_output=True, text=True, check=False
    )


def _checker_from_docs() -> str:
    """The ~35-line third-party checker of docs/draw.md §9, as published."""
    doc = (Path(__file__).parent.parent / "docs" / "draw.md").read_text("utf-8")
    section = doc.split("## 9. Verification", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_record_is_sent_as_a_file_that_verifies(harness: Harness, tmp_path: Path) -> None:
    h = harness
    await world(h)
    now = h.services.clock.now()
    async with h.services.db.session() as session:
        await create_task(session, spec(), actor="test", now=now, today=TODAY)
        await create_task(session, spec(name="第二个任务"), actor="test", now=now, today=TODAY)
    executed = await run_draw(h.services.db, now, 1)
    async with h.services.db.session() as session:
        pending = await commit_draw(session, task_id=2, actor="test", now=now)

    assert "用法" in unique_text(await h.send(OFFICE, "/record"))
    assert "没有编号为 9 的抽取" in unique_text(await h.send(OFFICE, "/record 9"))
    not_yet = unique_text(await h.send(OFFICE, f"/record {pending.draw_id}"))
    assert "还没有可核验的记录" in not_yet
    assert "仅限协调办" in unique_text(await h.send(LIAISON_SJJ, f"/record {executed}"))
    in_department = unique_text(await h.send(OFFICE, f"/record {executed}", SJJ_CHAT))
    assert "协调办工作群或私聊" in in_department

    # Privately: the record as a document, with how to verify it.
    sent = unique(await h.send(OFFICE, f"/record {executed}"))
    assert sent.document is not None and sent.document["file_name"] == f"draw-{executed}.json"
    caption = text_of(sent)
    assert f"dsr verify draw-{executed}.json" in caption and "docs/draw.md" in caption
    content = h.fake.file_bytes(sent.document["file_id"]).decode("utf-8")
    assert verify_text(content) == []  # what `dsr verify FILE.json` runs

    # The same bytes as `dsr draw record`; the checker published in docs/draw.md agrees.
    exported = tmp_path / "exported.json"
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["draw", "record", str(executed), "--out", str(exported)],
        env={"DATABASE_URL": h.services.settings.database_url},
    )
    assert result.exit_code == 0, result.output
    assert exported.read_text("utf-8") == content
    checker = tmp_path / "check.py"
    checker.write_text(_checker_from_docs(), "utf-8")
    received = tmp_path / f"draw-{executed}.json"
    received.write_text(content, "utf-8")
    checked = await asyncio.to_thread(_run_checker, checker, received)
    assert checked.returncode == 0 and "一致" in checked.stdout, checked.stdout + checked.stderr
    # A record with one selected key changed does not verify, with either checker.
    data = json.loads(content)
    stratum = next(s for s in data["strata"] if s["selected"])
    stratum["selected"][0] = next(k for k in stratum["candidates"] if k not in stratum["selected"])
    received.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    assert verify_text(received.read_text("utf-8"))
    checked = await asyncio.to_thread(_run_checker, checker, received)
    assert checked.returncode == 1 and "不一致" in checked.stdout

    # In the office group: the file goes to the asker privately (it names every candidate).
    in_group = unique_text(await h.send(OFFICE, f"/record {executed}", OFFICE_CHAT))
    assert "已私信发送" in in_group and not USCC.search(in_group)
    private = h.fake.last_bot_message(OFFICE)
    assert private.document is not None and private.message_id != sent.message_id
    assert h.fake.file_bytes(private.document["file_id"]).decode("utf-8") == content
    assert all(m.document is None for m in h.fake.sent_by_bot(OFFICE_CHAT))
    h.fake.block_bot(OFFICE)
    blocked = unique_text(await h.send(OFFICE, f"/record {executed}", OFFICE_CHAT))
    assert "无法私信您" in blocked and "/start" in blocked


async def test_record_is_in_the_menus_and_in_help(harness: Harness) -> None:
    h = harness
    await world(h)
    await register_commands(h.bot)
    for scope in ("all_private_chats", "all_group_chats"):
        menu = {c["command"]: c["description"] for c in h.fake.my_commands({"type": scope})}
        assert "完整记录" in menu["record"]
    assert "/record 抽取号" in unique_text(await h.send(OFFICE, "/help"))
    assert "/record" not in unique_text(await h.send(LIAISON_SJJ, "/help"))


async def test_merge_in_the_office_group_and_privately(harness: Harness) -> None:
    h = harness
    h.group(OFFICE_CHAT, "协调办工作群", OFFICE)
    h.group(SJJ_CHAT, "市场监管局工作群", OFFICE)
    clock = h.services.clock
    assert isinstance(clock, FrozenClock)
    _draw_a, draw_b, keys_a = await two_tasks(h.services.db, clock, mergeable=False)
    async with h.services.db.read() as session:
        names = set(await session.exec(select(Target.name)))

    assert "用法" in unique_text(await h.send(OFFICE, "/merge", OFFICE_CHAT))
    assert "没有编号为 99 的抽取" in unique_text(await h.send(OFFICE, "/merge 99", OFFICE_CHAT))
    wrong = unique_text(await h.send(OFFICE, f"/merge {draw_b}", SJJ_CHAT))
    assert "协调办工作群或私聊" in wrong
    in_group = unique_text(await h.send(OFFICE, f"/merge {draw_b}", OFFICE_CHAT))
    assert f"本次合并为联合检查 {len(keys_a)} 户" in in_group
    assert f"/merge {draw_b}" in in_group and not any(n in in_group for n in names)
    assert not USCC.search(in_group)
    private = unique_text(await h.send(OFFICE, f"/merge {draw_b}"))
    assert "没有可以再合并的检查" in private and f"此前已合并 {len(keys_a)} 户" in private
    async with h.services.db.read() as session:
        merged = list(
            await session.exec(select(Target.name).where(col(Target.key).in_(list(keys_a))))
        )
    assert merged and all(name in private for name in merged)
