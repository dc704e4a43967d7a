"""Issue #4, the gaps closed after it landed, end to end through the real dispatcher: wrong
evidence withdrawn from a draft, 申请回避 after 确认接收 (from /tasks), local "since" dates
in /review and /tasks, and double taps and foreign callbacks on the remaining buttons."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlmodel import col, select

from bot.fakeapi import StoredMessage
from storage.models import (
    Assignment,
    AuditLog,
    CoSignature,
    Evidence,
    FollowUp,
    FollowUpEntry,
    Inspection,
    RecusalRequest,
    Result,
    ResultItem,
    Review,
)
from tests.harness import Harness, text_of, unique
from tests.inspection_factory import INSPECTOR_A, INSPECTOR_B, INSPECTOR_C, LIAISON_SJJ
from tests.test_e2e_dialogs import (
    JPEG,
    answer_of,
    card_of,
    confirm_both,
    enter_result,
    forge,
    last,
    open_entry,
    press,
    start,
    type_in,
)

PDF = b"%PDF-1.4 inspection record"


async def to_first_evidence(h: Harness) -> StoredMessage:
    dialog = await open_entry(h)
    for label in ("今天", "现场", "8 发现问题，依法责令立即改正或者限期改正"):
        dialog = await press(h, INSPECTOR_A, dialog, label)
    dialog = await type_in(h, INSPECTOR_A, dialog, "食品经营许可证已过期，仍在经营")
    dialog = await press(h, INSPECTOR_A, dialog, "责令改正")
    dialog = await press(h, INSPECTOR_A, dialog, "15 天")
    assert "证据" in text_of(dialog) and dialog.button_texts()[0] == "下一项 ➡️"
    return dialog


async def nothing_found(h: Harness, dialog: StoredMessage) -> StoredMessage:
    """A's dialog from its first step to the summary: today, on site, both items fine."""
    for label in ("今天", "现场", "1 未发现问题", "下一项 ➡️", "1 未发现问题", "完成，去核对 ➡️"):
        dialog = await press(h, INSPECTOR_A, dialog, label)
    assert "请核对后提交" in text_of(dialog)
    return dialog


async def send_photo(h: Harness, data: bytes = JPEG) -> None:
    h.mark(INSPECTOR_A)
    await h.feed(h.fake.user_photo(INSPECTOR_A, INSPECTOR_A, data))
    assert h.new(INSPECTOR_A) == []  # the dialog's message is edited, nothing new is sent


async def test_wrong_evidence_is_withdrawn_from_the_draft_but_kept_on_record(
    harness: Harness,
) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    dialog = await to_first_evidence(h)
    await send_photo(h)
    assert await h.upload(INSPECTOR_A, PDF, "现场笔录.pdf") == []
    dialog = h.fake.message(dialog.chat_id, dialog.message_id)
    body = text_of(dialog)
    assert "已附证据：2 个" in body and "1. 照片" in body and "2. 文件 现场笔录.pdf" in body
    assert dialog.button_texts()[:3] == ["🗑 删除第 1 个", "🗑 删除第 2 个", "下一项 ➡️"]
    drop_photo = dialog.callback_data("🗑 删除第 1 个")

    dialog = await press(h, INSPECTOR_A, dialog, "🗑 删除第 1 个")
    body = text_of(dialog)
    assert "已附证据：1 个" in body and "1. 文件 现场笔录.pdf" in body and "2. " not in body
    assert "证据已撤回" in str(answer_of(h).get("text"))
    await forge(h, INSPECTOR_A, dialog, drop_photo)  # a double tap withdraws nothing more
    assert "已经撤回" in str(answer_of(h).get("text"))
    # B cannot withdraw A's evidence by replaying the payload.
    await forge(h, INSPECTOR_B, card_of(h, INSPECTOR_B), dialog.callback_data("🗑 删除第 1 个"))
    assert answer_of(h)["show_alert"] is True

    # The same photo sent again is put back (kept once); withdrawn again, it stays withdrawn.
    await send_photo(h)
    dialog = h.fake.message(dialog.chat_id, dialog.message_id)
    assert "已附证据：2 个" in text_of(dialog) and "证据已保存" in text_of(dialog)
    assert "1. 照片" in text_of(dialog) and "2. 文件 现场笔录.pdf" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "🗑 删除第 1 个")
    assert "已附证据：1 个" in text_of(dialog) and "1. 文件 现场笔录.pdf" in text_of(dialog)

    dialog = await press(h, INSPECTOR_A, dialog, "下一项 ➡️")
    dialog = await press(h, INSPECTOR_A, dialog, "1 未发现问题")
    dialog = await press(h, INSPECTOR_A, dialog, "完成，去核对 ➡️")
    assert "证据：1 个文件" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "✅ 提交")
    await h.deliver()
    cosign = last(h, INSPECTOR_B)
    assert "证据：1 个文件" in text_of(cosign)
    # Submitted: nothing can be withdrawn any more, not even by replaying the button.
    await forge(h, INSPECTOR_A, dialog, drop_photo)
    assert "撤回" not in str(answer_of(h).get("text"))
    await press(h, INSPECTOR_B, cosign, "✅ 确认无误")
    await h.deliver()
    assert "证据：1 个文件" in text_of(last(h, LIAISON_SJJ))

    async with h.services.db.read() as session:
        files = list(await session.exec(select(Evidence).order_by(col(Evidence.id))))
        withdrawals = list(
            await session.exec(
                select(AuditLog)
                .where(AuditLog.action == "result.evidence_withdraw")
                .order_by(col(AuditLog.id))
            )
        )
        submitted = (
            await session.exec(select(AuditLog).where(AuditLog.action == "result.submit"))
        ).one()
    assert [(f.kind, f.withdrawn_by) for f in files] == [("photo", INSPECTOR_A), ("document", None)]
    assert files[0].withdrawn_at == h.services.clock.now()
    assert [w.actor for w in withdrawals] == [f"tg:{INSPECTOR_A}"] * 2
    assert {w.detail["sha256"] for w in withdrawals} == {files[0].sha256}
    assert submitted.detail["summary"]["items"][0]["evidence"] == 1


async def test_confirmed_inspector_asks_for_recusal_from_tasks(harness: Harness) -> None:
    h = harness
    world = await start(h)
    await confirm_both(h)
    listing = unique(await h.send(INSPECTOR_A, "/tasks"))
    assert listing.button_texts() == ["📝 录入结果：城关示范超市有限公司", "🙋 申请回避"]
    asked = await press(h, INSPECTOR_A, listing, "🙋 申请回避")
    assert "请点下方常见理由" in text_of(asked)
    reason = asked.callback_data("与检查对象存在利害关系")
    card = await press(h, INSPECTOR_A, asked, "与检查对象存在利害关系")
    assert "已申请回避" in text_of(card)
    await forge(h, INSPECTOR_A, card, reason)  # a double tap: still one request
    assert "回避申请已在审核中" in str(answer_of(h).get("text"))
    await h.deliver()
    request = last(h, LIAISON_SJJ)
    assert "回避申请" in text_of(request) and "张三" in text_of(request)
    approve = request.callback_data("同意回避")
    decided = await press(h, LIAISON_SJJ, request, "同意回避")
    assert "已同意" in text_of(decided) and "王五" in text_of(decided)
    await forge(h, LIAISON_SJJ, decided, approve)  # a double tap: one replacement
    await h.deliver()
    assert "回避申请已同意" in text_of(last(h, INSPECTOR_A))
    assert "替补" in text_of(card_of(h, INSPECTOR_C))
    mine = unique(await h.send(INSPECTOR_A, "/tasks"))
    assert "城关示范超市" not in text_of(mine) and mine.button_texts() == []
    async with h.services.db.read() as session:
        seats = list(await session.exec(select(Assignment).order_by(col(Assignment.id))))
        requests = list(await session.exec(select(RecusalRequest)))
    assert [s.status for s in seats] == ["recused", "confirmed", "pending"]
    assert len(requests) == 1 and requests[0].replacement_id == seats[2].id
    assert seats[2].inspection_id == world.inspection_id
    # The group had all confirmed; with a newcomer it waits for the newcomer again.
    async with h.services.db.read() as session:
        inspection = await session.get(Inspection, world.inspection_id)
    assert inspection is not None and inspection.status == "assigned"
    await press(h, INSPECTOR_C, card_of(h, INSPECTOR_C), "✅ 确认接收")
    async with h.services.db.read() as session:
        inspection = await session.get(Inspection, world.inspection_id)
    assert inspection is not None and inspection.status == "confirmed"


async def test_recusal_from_tasks_rejected_then_gone_once_submitted(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    listing = unique(await h.send(INSPECTOR_B, "/tasks"))
    asked = await press(h, INSPECTOR_B, listing, "🙋 申请回避")
    card = await type_in(h, INSPECTOR_B, asked, "到店后发现店主是我的表哥")
    assert "已申请回避" in text_of(card)
    await h.deliver()
    await press(h, LIAISON_SJJ, last(h, LIAISON_SJJ), "不同意")
    await h.deliver()
    assert "回避申请未获同意" in text_of(last(h, INSPECTOR_B))
    again = unique(await h.send(INSPECTOR_B, "/tasks"))
    assert "🙋 申请回避" in again.button_texts()  # confirmed again, nothing submitted yet

    # Once A has submitted the result, no one in the group is offered 申请回避 any more.
    dialog = await nothing_found(h, await open_entry(h))
    await press(h, INSPECTOR_A, dialog, "✅ 提交")
    for user in (INSPECTOR_A, INSPECTOR_B):
        shown = unique(await h.send(user, "/tasks"))
        assert "🙋 申请回避" not in shown.button_texts()
    # Replaying the old 申请回避 button changes nothing either.
    await forge(h, INSPECTOR_B, again, again.callback_data("🙋 申请回避"))
    assert answer_of(h)["show_alert"] is True
    async with h.services.db.read() as session:
        seats = list(await session.exec(select(Assignment).order_by(col(Assignment.id))))
        requests = list(await session.exec(select(RecusalRequest)))
    assert [s.status for s in seats] == ["confirmed", "confirmed"]
    assert [r.status for r in requests] == ["rejected"]


async def test_since_dates_are_local_dates(harness: Harness) -> None:
    """2026-03-02 15:59 UTC is still 2 March in Beijing; 16:00 UTC is already 3 March."""
    h = harness
    await start(h)
    clock = h.services.clock
    for user, at in ((INSPECTOR_A, "15:59:59"), (INSPECTOR_B, "16:00:00")):
        clock.at = datetime.fromisoformat(f"2026-03-02T{at}").replace(tzinfo=UTC)  # type: ignore[attr-defined]
        card = await press(h, user, card_of(h, user), "🙋 申请回避")
        await press(h, user, card, "与检查对象存在利害关系")
    for command in ("/review", "/tasks"):
        lines = text_of(unique(await h.send(LIAISON_SJJ, command))).splitlines()
        a = next(line for line in lines if "（张三）" in line)
        b = next(line for line in lines if "（李四）" in line)
        assert "2026-03-02 起" in a and "2026-03-03 起" in b, (a, b)


async def test_double_taps_on_submit_and_cosign_make_one_of_each(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    dialog = await nothing_found(h, await open_entry(h))
    submit = dialog.callback_data("✅ 提交")
    await press(h, INSPECTOR_A, dialog, "✅ 提交")
    await forge(h, INSPECTOR_A, dialog, submit)
    assert "已提交" in str(answer_of(h).get("text"))
    await h.deliver()
    cosign = last(h, INSPECTOR_B)
    confirm = cosign.callback_data("✅ 确认无误")
    # A (the enterer) cannot co-sign in B's place.
    await forge(h, INSPECTOR_A, dialog, confirm)
    assert answer_of(h)["show_alert"] is True
    cosign = await press(h, INSPECTOR_B, cosign, "✅ 确认无误")
    await forge(h, INSPECTOR_B, cosign, confirm)
    assert "已经处理过了" in str(answer_of(h).get("text"))
    await h.deliver()
    reviews = [m for m in h.fake.sent_by_bot(LIAISON_SJJ) if "请复核检查结果" in text_of(m)]
    # B cannot review (not a liaison of the lead department).
    await forge(h, INSPECTOR_B, cosign, reviews[0].callback_data("✅ 通过"))
    assert answer_of(h)["show_alert"] is True
    async with h.services.db.read() as session:
        results = list(await session.exec(select(Result)))
        signatures = list(await session.exec(select(CoSignature)))
        cosigned = list(
            await session.exec(select(AuditLog).where(AuditLog.action == "result.cosign"))
        )
    assert [(r.status, r.version) for r in results] == [("cosigned", 1)]
    assert sorted(s.status for s in signatures) == ["confirmed", "entered"]
    assert len(cosigned) == 1 and len(reviews) == 1


async def test_garbage_at_the_department_step_and_in_typed_reasons(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    dialog = await open_entry(h)
    for label in ("今天", "现场", "9 发现问题，待后续调查处理"):
        dialog = await press(h, INSPECTOR_A, dialog, label)
    dialog = await type_in(h, INSPECTOR_A, dialog, "涉嫌无证经营")
    dialog = await press(h, INSPECTOR_A, dialog, "移送")
    dialog = await type_in(h, INSPECTOR_A, dialog, "火星管理局")
    assert "没有找到这个部门" in text_of(dialog)
    dialog = await type_in(h, INSPECTOR_A, dialog, "？？")
    assert "没有找到这个部门" in text_of(dialog)
    assert await h.upload(INSPECTOR_A, PDF, "x.pdf") == []
    dialog = h.fake.message(dialog.chat_id, dialog.message_id)
    assert "现在不是上传证据的步骤" in text_of(dialog)
    dialog = await type_in(h, INSPECTOR_A, dialog, "县税务局")
    assert "证据" in text_of(dialog)  # the dialog is still usable after the garbage
    dialog = await press(h, INSPECTOR_A, dialog, "下一项 ➡️")
    assert "第 2/2 项" in text_of(dialog)
    async with h.services.db.read() as session:
        result = (await session.exec(select(Result))).one()
        items = list(await session.exec(select(ResultItem).order_by(col(ResultItem.position))))
    assert result.status == "draft"
    assert (items[0].action, items[0].transfer_department) == ("transfer", "SWJ")


async def tap_twice(h: Harness, user: int, message: StoredMessage, label: str) -> None:
    """Two taps on the same button processed at the same time (the running bot handles
    updates concurrently)."""
    data = message.callback_data(label)
    first = h.fake.press_button(user, message, data)
    second = h.fake.press_button(user, message, data)
    outcomes = await asyncio.gather(h.feed(first), h.feed(second), return_exceptions=True)
    for outcome in outcomes:  # both have finished: nothing is left running after the test
        if isinstance(outcome, BaseException):
            raise outcome


async def test_simultaneous_double_taps_make_one_of_each(harness: Harness) -> None:
    h = harness
    await start(h)
    await tap_twice(h, INSPECTOR_B, card_of(h, INSPECTOR_B), "🙋 申请回避")
    asked = h.fake.message(INSPECTOR_B, card_of(h, INSPECTOR_B).message_id)
    await tap_twice(h, INSPECTOR_B, asked, "与检查对象存在利害关系")
    await h.deliver()
    await tap_twice(h, LIAISON_SJJ, last(h, LIAISON_SJJ), "同意回避")
    await h.deliver()
    for user in (INSPECTOR_A, INSPECTOR_C):
        await tap_twice(h, user, card_of(h, user), "✅ 确认接收")
    listing = unique(await h.send(INSPECTOR_A, "/tasks"))
    await tap_twice(h, INSPECTOR_A, listing, "📝 录入结果：城关示范超市有限公司")
    dialog = await nothing_found(h, h.fake.message(listing.chat_id, listing.message_id))
    await tap_twice(h, INSPECTOR_A, dialog, "✅ 提交")
    await h.deliver()
    await tap_twice(h, INSPECTOR_C, last(h, INSPECTOR_C), "✅ 确认无误")
    await h.deliver()
    await tap_twice(h, LIAISON_SJJ, last(h, LIAISON_SJJ), "✅ 通过")
    async with h.services.db.read() as session:
        seats = list(await session.exec(select(Assignment).order_by(col(Assignment.id))))
        requests = list(await session.exec(select(RecusalRequest)))
        results = list(await session.exec(select(Result)))
        signatures = list(await session.exec(select(CoSignature)))
        reviews = list(await session.exec(select(Review)))
    assert [s.status for s in seats] == ["confirmed", "recused", "confirmed"]
    assert [r.status for r in requests] == ["approved"]
    assert [(r.status, r.version) for r in results] == [("approved", 1)]
    assert sorted(s.status for s in signatures) == ["confirmed", "entered"]
    assert [r.decision for r in reviews] == ["approved"]


async def test_follow_up_notes_are_not_doubled_nor_written_by_others(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    summary = await enter_result(h, photo=False)
    await press(h, INSPECTOR_A, summary, "✅ 提交")
    await h.deliver()
    await press(h, INSPECTOR_B, last(h, INSPECTOR_B), "✅ 确认无误")
    await h.deliver()
    await press(h, LIAISON_SJJ, last(h, LIAISON_SJJ), "✅ 通过")
    listing = unique(await h.send(INSPECTOR_A, "/tasks"))
    board = await press(h, INSPECTOR_A, listing, "📌 后续处置：城关示范超市有限公司")
    complete = board.callback_data("第 1 项记录办结")
    # B is in the group, but the follow-up is A's (谁录入、谁负责).
    await forge(h, INSPECTOR_B, card_of(h, INSPECTOR_B), complete)
    assert answer_of(h)["show_alert"] is True
    ask = await press(h, INSPECTOR_A, board, "第 1 项记录进展")
    ask = await type_in(h, INSPECTOR_A, ask, "已当场责令停止销售，店主承诺三天内办证")
    today = ask.callback_data("今天")
    board = await press(h, INSPECTOR_A, ask, "今天")
    assert "已记录" in text_of(board) or "进展" in text_of(board)
    await forge(h, INSPECTOR_A, board, today)  # a double tap on 今天: still one note
    assert answer_of(h)["show_alert"] is True  # that question was answered already
    async with h.services.db.read() as session:
        notes = list(await session.exec(select(FollowUpEntry)))
        followup = (await session.exec(select(FollowUp))).one()
    assert [(n.kind, n.text) for n in notes] == [
        ("progress", "已当场责令停止销售，店主承诺三天内办证")
    ]
    assert followup.status == "open"
