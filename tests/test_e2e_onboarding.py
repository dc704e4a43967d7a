"""Onboarding end to end: real updates through the real dispatcher, the bot talking HTTP to the
local Bot API fake. Assertions are on what people see and what the database holds."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from io import BytesIO

import pytest
from openpyxl import load_workbook
from sqlmodel import col, func, select

from bot.app import register_commands
from storage.models import ChatBinding, Department, Invite, RoleGrant, Target
from tests.conftest import DATA
from tests.factories import (
    DEPARTMENT_HEADER,
    DEPARTMENTS,
    INSPECTOR_HEADER,
    TARGET_HEADER,
    inspector_rows,
    target_rows,
)
from tests.harness import OFFICE, Harness, text_of, unique, unique_text

LINK = re.compile(r"https://t\.me/dsr_test_bot\?start=([A-Za-z0-9_-]+)")


def csv_bytes(
    header: Sequence[str], rows: Sequence[Sequence[object]], encoding: str = "utf-8"
) -> bytes:
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    return ("\n".join(lines) + "\n").encode(encoding)


async def load_directories(h: Harness, inspectors: int = 2) -> None:
    await h.send(OFFICE, "/import")
    reply = unique(await h.upload(OFFICE, csv_bytes(DEPARTMENT_HEADER, DEPARTMENTS), "部门.csv"))
    assert "导入完成" in text_of(reply) and "新增：3" in text_of(reply)
    reply = unique(
        await h.upload(
            OFFICE,
            csv_bytes(INSPECTOR_HEADER, inspector_rows(inspectors)),
            "人员.csv",
            caption="/import inspectors",
        )
    )
    assert "执法检查人员名录库" in text_of(reply) and f"新增：{inspectors}" in text_of(reply)


async def invite_codes(h: Harness, args: str = "") -> list[str]:
    replies = await h.send(OFFICE, f"/invite {args}".strip())
    assert replies[-1].document is not None
    return LINK.findall(text_of(replies[0]))


async def test_stranger_is_told_how_to_join_and_refused(harness: Harness) -> None:
    h = harness
    stranger = h.person(42, "路人")
    assert "邀请链接" in unique_text(await h.send(stranger, "/start"))
    assert "邀请链接" in unique_text(await h.send(stranger, "你好"))
    refused = unique(await h.send(stranger, "/import"))
    assert "还没有绑定身份" in text_of(refused)
    helped = unique_text(await h.send(stranger, "/help"))
    assert "/import" not in helped and "尚未绑定身份" in helped
    async with h.services.db.read() as session:
        assert (await session.exec(select(func.count()).select_from(RoleGrant))).one() == 0


async def test_invite_bind_used_and_expired_codes(harness: Harness) -> None:
    h = harness
    await load_directories(h, inspectors=3)
    codes = await invite_codes(h, "SJJ")
    assert len(codes) == 3

    inspector = h.person(501, "tg昵称")
    greeting = unique_text(await h.send(inspector, f"/start {codes[0]}"))
    assert "检查员0" in greeting and "执法检查人员" in greeting and "县市场监督管理局" in greeting
    me = unique_text(await h.send(inspector, "/me"))
    assert "检查员0" in me and "执法检查人员" in me
    assert "已经用这个邀请链接绑定过" in unique_text(await h.send(inspector, f"/start {codes[0]}"))

    other = h.person(502, "别人")
    assert "已经被使用过" in unique_text(await h.send(other, f"/start {codes[0]}"))
    assert "无效" in unique_text(await h.send(other, "/start notacode"))
    h.services.clock.advance(timedelta(days=15))  # type: ignore[attr-defined]
    assert "已过期" in unique_text(await h.send(other, f"/start {codes[1]}"))
    async with h.services.db.read() as session:
        grants = list(await session.exec(select(RoleGrant)))
        used = (
            await session.exec(
                select(func.count()).select_from(Invite).where(col(Invite.used_at).is_not(None))
            )
        ).one()
    assert len(grants) == 1 and used == 1


async def test_invites_file_lists_every_link(harness: Harness) -> None:
    h = harness
    await load_directories(h, inspectors=2)
    replies = await h.send(OFFICE, "/invite")
    assert replies[-1].document is not None
    sheet = load_workbook(BytesIO(h.fake.file_bytes(replies[-1].document["file_id"]))).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:2] == ("姓名", "角色") and len(rows) == 3
    assert all(LINK.fullmatch(str(r[3])) for r in rows[1:])
    # Issued at 09:00 Beijing time, valid 14 days: the office reads its own clock, not UTC.
    assert rows[0][4] == "有效期至" and {r[4] for r in rows[1:]} == {"2026-03-16 09:00"}


async def test_help_depends_on_role(harness: Harness) -> None:
    h = harness
    await load_directories(h, inspectors=1)
    office_help = unique_text(await h.send(OFFICE, "/help"))
    assert "/import" in office_help and "/invite" in office_help

    (code,) = await invite_codes(h)
    inspector = h.person(601, "张")
    await h.send(inspector, f"/start {code}")
    inspector_help = unique_text(await h.send(inspector, "/help"))
    assert "执法检查人员" in inspector_help and "/import" not in inspector_help
    refused = unique(await h.send(inspector, "/invite"))
    assert "仅限协调办" in text_of(refused)

    replies = await h.send(OFFICE, "/invite liaison SWJ 王五")
    (liaison_code,) = LINK.findall(text_of(replies[0]))
    liaison = h.person(602, "王")
    greeting = unique_text(await h.send(liaison, f"/start {liaison_code}"))
    assert "县税务局" in greeting and "信息联络员" in greeting
    assert "部门联络员" in unique_text(await h.send(liaison, "/help"))


async def test_group_binding_survives_supergroup_migration(harness: Harness) -> None:
    h = harness
    await load_directories(h, inspectors=0)
    stranger = h.person(77, "群友")
    group = h.group(-200, "税务局工作群", OFFICE, stranger)
    assert "还没有绑定身份" in unique_text(await h.send(stranger, "/bind department SWJ", group))
    assert "不在部门名录" in unique_text(await h.send(OFFICE, "/bind department NOPE", group))
    bound = unique_text(await h.send(OFFICE, "/bind department SWJ", group))
    assert "县税务局" in bound and "SWJ" in bound

    for update in h.fake.migrate_group_to_supergroup(-200, -100200):
        await h.feed(update)
    me = unique_text(await h.send(OFFICE, "/me", -100200))
    assert "县税务局（SWJ）工作群" in me
    async with h.services.db.read() as session:
        binding = (await session.exec(select(ChatBinding))).one()
    assert binding.chat_id == -100200


async def test_office_group_import_with_bad_rows_and_error_file(harness: Harness) -> None:
    h = harness
    office_group = h.group(-300, "协调办", OFFICE)
    await h.send(OFFICE, "/bind office", office_group)
    rows = target_rows(5)
    rows[2][1] = "91330102MA2H3X4Y5A"
    replies = await h.upload(
        OFFICE,
        csv_bytes(TARGET_HEADER, rows, "gbk"),
        "对象.csv",
        caption="/import",
        chat_id=office_group,
    )
    report, error_file = replies
    assert "新增：4" in text_of(report) and "拒绝：1" in text_of(report)
    assert "第 4 行“统一社会信用代码”" in text_of(report)
    assert (
        error_file.document is not None and error_file.document["file_name"] == "对象.errors.xlsx"
    )
    async with h.services.db.read() as session:
        assert (await session.exec(select(func.count()).select_from(Target))).one() == 4

    department_group = h.group(-400, "部门群", OFFICE)
    wrong = unique_text(
        await h.upload(OFFICE, b"x", "a.csv", caption="/import", chat_id=department_group)
    )
    assert "私聊或协调办工作群" in wrong


async def test_import_dialog_guides_and_rejects_bad_files(harness: Harness) -> None:
    h = harness
    asked = unique_text(await h.send(OFFICE, "/import targets"))
    assert "检查对象名录库" in asked
    assert "以“文件”形式发送" in unique_text(await h.send(OFFICE, "这是文字"))
    reply = unique(await h.upload(OFFICE, b"\x89PNG....", "照片.png"))
    assert "类型不支持" in text_of(reply) and "未写入任何数据" in text_of(reply)
    await h.send(OFFICE, "/import")
    reply = unique(
        await h.upload(OFFICE, csv_bytes(["名称", "统一社会信用代码"], [["甲", "x"]]), "少列.csv")
    )
    assert "缺少必填列" in text_of(reply)
    await h.send(OFFICE, "/import")
    assert "已取消" in unique_text(await h.send(OFFICE, "/cancel"))
    async with h.services.db.read() as session:
        assert (await session.exec(select(func.count()).select_from(Department))).one() == 0


async def test_commands_are_registered_per_scope(harness: Harness) -> None:
    await register_commands(harness.bot)
    private = harness.fake.my_commands({"type": "all_private_chats"})
    group = harness.fake.my_commands({"type": "all_group_chats"})
    assert {c["command"] for c in private} >= {"start", "help", "me", "import", "invite"}
    assert {c["command"] for c in group} >= {"bind", "help"}
    assert all(re.search(r"[\u4e00-\u9fff]", c["description"]) for c in private + group)


async def test_long_import_shows_progress_in_one_edited_message(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import handlers.imports

    monkeypatch.setattr(handlers.imports, "PROGRESS_EVERY_S", 0.0)
    h = harness
    reply = unique(
        await h.upload(
            OFFICE, csv_bytes(TARGET_HEADER, target_rows(5000)), "大.csv", caption="/import"
        )
    )
    assert "新增：5000" in text_of(reply)
    steps = [version["text"] for version in reply.history]
    assert steps[0].startswith("正在导入") and any("已处理" in step for step in steps)


async def test_published_list_sent_in_chat_gets_report_and_workbook(harness: Harness) -> None:
    h = harness
    source = DATA / "hainan-2020" / "76-附件1.海南省市场监管领域部门联合抽查事项清单（第二版）.xls"
    report, workbook = await h.upload(OFFICE, source.read_bytes(), source.name, caption="/import")
    assert "导入完成" in text_of(report) and "83" in text_of(report)
    assert "新建部门" in text_of(report)
    assert workbook.document is not None and workbook.document["file_name"].endswith(".report.xlsx")
    sheets = load_workbook(BytesIO(h.fake.file_bytes(workbook.document["file_id"]))).sheetnames
    assert "新建部门" in sheets


async def test_outbox_messages_reach_people_and_403_is_recorded(harness: Harness) -> None:
    from bot.outbox import enqueue
    from storage.models import OutboxMessage

    h = harness
    reachable = h.person(801, "甲")
    never_opened = h.person(802, "乙", started=False)
    async with h.services.db.session() as session:
        for user in (reachable, never_opened):
            await enqueue(
                session,
                key=f"t:{user}",
                chat_id=user,
                text="<b>通知</b>",
                now=h.services.clock.now(),
                buttons=[[("好", "x")]],
            )
    assert await h.deliver() == 1
    message = h.fake.last_bot_message(reachable)
    assert message.text == "通知" and message.button_texts() == ["好"]
    async with h.services.db.read() as session:
        rows = {r.chat_id: r for r in await session.exec(select(OutboxMessage))}
    assert rows[reachable].status == "sent" and rows[reachable].tg_message_id == message.message_id
    assert rows[never_opened].status == "failed"
    assert await h.deliver() == 0
