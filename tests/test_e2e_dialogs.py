"""Issue #4 end to end: assignments, recusal, the result dialog, co-signature, review, follow-up
and transfer, through the real dispatcher and the Bot API fake. People see messages and press
buttons; the database is checked for what must (and must not) have happened."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, func, select

from bot.assignments import announce_assignments
from bot.fakeapi import StoredMessage
from bot.telegram import ResultCb
from storage.models import (
    Assignment,
    AuditLog,
    CoSignature,
    Duty,
    Evidence,
    FollowUp,
    Inspection,
    OutboxMessage,
    RecusalRequest,
    Result,
    ResultItem,
    Review,
    Transfer,
)
from tests.harness import Harness, running, text_of, unique
from tests.inspection_factory import (
    INSPECTOR_A,
    INSPECTOR_B,
    INSPECTOR_C,
    LIAISON_SJJ,
    LIAISON_SWJ,
    STRANGER,
    World,
    build_world,
)

JPEG = b"\xff\xd8\xff\xe0" + b"evidence-photo" * 50 + b"\xff\xd9"


async def start(h: Harness, **kwargs: object) -> World:
    """The world after a draw, announced and delivered."""
    for tg, name in (
        (INSPECTOR_A, "张三"),
        (INSPECTOR_B, "李四"),
        (INSPECTOR_C, "王五"),
        (LIAISON_SJJ, "市场监管联络员"),
        (LIAISON_SWJ, "税务联络员"),
        (STRANGER, "路人"),
    ):
        h.person(tg, name)
    world = await build_world(h.services.db, h.services.clock.now(), **kwargs)  # type: ignore[arg-type]
    async with h.services.db.session() as session:
        await announce_assignments(session, draw_id=world.draw_id, now=h.services.clock.now())
    await h.deliver()
    return world


def last(h: Harness, chat: int) -> StoredMessage:
    return h.fake.last_bot_message(chat)


async def press(h: Harness, user: int, message: StoredMessage, label: str) -> StoredMessage:
    """Press a button of a message; the dialog edits that same message (no new ones)."""
    new = await h.press(user, message, label)
    assert new == [], [m.text for m in new]
    return h.fake.message(message.chat_id, message.message_id)


async def type_in(h: Harness, user: int, dialog: StoredMessage, words: str) -> StoredMessage:
    """Type an answer; the dialog message above is edited in place."""
    new = await h.send(user, words)
    assert new == [], [m.text for m in new]
    return h.fake.message(dialog.chat_id, dialog.message_id)


def card_of(h: Harness, user: int) -> StoredMessage:
    """The assignment message (the latest one, if a replacement brought another)."""
    return [
        m
        for m in h.fake.sent_by_bot(user)
        if "📋 检查任务" in text_of(m) and "详情" not in text_of(m).splitlines()[0]
    ][-1]


async def confirm_both(h: Harness) -> None:
    for user in (INSPECTOR_A, INSPECTOR_B):
        card = card_of(h, user)
        card = await press(h, user, card, "✅ 确认接收")
        assert "您已确认接收" in text_of(card)


async def open_entry(h: Harness, user: int = INSPECTOR_A) -> StoredMessage:
    listing = unique(await h.send(user, "/tasks"))
    assert "待录入结果" in text_of(listing) or "草稿" in text_of(listing)
    label = next(b for b in listing.button_texts() if "录入" in b)
    return await press(h, user, listing, label)


async def enter_result(h: Harness, *, photo: bool = True, category: str = "8") -> StoredMessage:
    """A's whole dialog: date, method, item 1 with a problem (and a photo), item 2 fine."""
    dialog = await open_entry(h)
    assert "检查日期" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "今天")
    assert "检查方式" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "现场")
    assert "第 1/2 项" in text_of(dialog)
    label = next(b for b in dialog.button_texts() if b.startswith(f"{category} "))
    dialog = await press(h, INSPECTOR_A, dialog, label)
    assert "发现的问题" in text_of(dialog)
    dialog = await type_in(h, INSPECTOR_A, dialog, "食品经营许可证已过期，仍在经营")
    assert "后续处置方式" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "责令改正")
    assert "整改期限" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "15 天")
    assert "证据" in text_of(dialog)
    if photo:
        h.mark(INSPECTOR_A)
        await h.feed(h.fake.user_photo(INSPECTOR_A, INSPECTOR_A, JPEG))
        assert h.new(INSPECTOR_A) == []
        dialog = h.fake.message(dialog.chat_id, dialog.message_id)
        assert "证据已保存" in text_of(dialog) and "已附证据：1 个" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "下一项 ➡️")
    assert "第 2/2 项" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "1 未发现问题")
    dialog = await press(h, INSPECTOR_A, dialog, "完成，去核对 ➡️")
    assert "请核对后提交" in text_of(dialog)
    return dialog


async def test_full_path_with_photo_cosignature_and_review(harness: Harness) -> None:
    h = harness
    world = await start(h)
    card = last(h, INSPECTOR_A)
    assert "城关示范超市有限公司" in text_of(card) and "李四" in text_of(card)
    assert card.button_texts() == ["✅ 确认接收", "🙋 申请回避", "📄 详情"]
    details = await h.press(INSPECTOR_A, card, "📄 详情")
    assert details and "检查内容" in text_of(details[0]) and "抽查依据" in text_of(details[0])
    await confirm_both(h)
    async with h.services.db.read() as session:
        inspection = await session.get(Inspection, world.inspection_id)
        assert inspection is not None and inspection.status == "confirmed"

    summary = await enter_result(h)
    body = text_of(summary)
    assert "8 发现问题，依法责令立即改正或者限期改正" in body and "整改期限 2026-03-17" in body
    assert "证据：1 个文件" in body
    summary = await press(h, INSPECTOR_A, summary, "✅ 提交")
    assert "检查结果已提交" in text_of(summary) and summary.button_texts() == []

    await h.deliver()
    cosign = last(h, INSPECTOR_B)
    assert "请核对检查结果" in text_of(cosign) and "食品经营许可证已过期" in text_of(cosign)
    async with h.services.db.read() as session:
        result = (await session.exec(select(Result))).one()
        assert result.status == "submitted" and result.version == 1
    cosign = await press(h, INSPECTOR_B, cosign, "✅ 确认无误")
    assert "您已确认无误" in text_of(cosign)
    await h.deliver()
    assert "检查组全部确认无误" in text_of(last(h, INSPECTOR_A))

    review = last(h, LIAISON_SJJ)
    assert "请复核检查结果" in text_of(review) and review.button_texts() == ["✅ 通过", "↩️ 退回"]
    review = await press(h, LIAISON_SJJ, review, "✅ 通过")
    assert "已复核通过" in text_of(review)
    await h.deliver()
    assert "后续处置" in text_of(last(h, INSPECTOR_A))
    async with h.services.db.read() as session:
        result = (await session.exec(select(Result))).one()
        inspection = await session.get(Inspection, world.inspection_id)
        evidence = (await session.exec(select(Evidence))).one()
        followup = (await session.exec(select(FollowUp))).one()
        duties = {(d.kind, d.status) for d in await session.exec(select(Duty))}
        signatures = list(await session.exec(select(CoSignature)))
    assert result.status == "approved" and inspection is not None
    assert inspection.status == "approved"
    assert len(evidence.sha256) == 64 and evidence.kind == "photo" and evidence.size == len(JPEG)
    assert followup.action == "rectify" and followup.status == "open"
    assert {("confirm", "done"), ("cosign", "done"), ("review", "done")} <= duties
    assert ("publish", "open") in duties and ("followup", "open") in duties
    assert sorted(s.status for s in signatures) == ["confirmed", "entered"]

    # 后续处置 from /tasks: progress, then completion with a date.
    listing = unique(await h.send(INSPECTOR_A, "/tasks"))
    board = await press(
        h, INSPECTOR_A, listing, next(b for b in listing.button_texts() if "后续处置" in b)
    )
    assert "责令改正" in text_of(board)
    ask = await press(h, INSPECTOR_A, board, "第 1 项记录办结")
    ask = await type_in(h, INSPECTOR_A, ask, "已重新办理许可证，整改完成")
    assert "办结日期" in text_of(ask)
    ask = await type_in(h, INSPECTOR_A, ask, "明天")
    assert "没看懂这个日期" in text_of(ask)
    board = await press(h, INSPECTOR_A, ask, "今天")
    assert "已办结" in text_of(board)
    async with h.services.db.read() as session:
        followup = (await session.exec(select(FollowUp))).one()
        open_duties = list(await session.exec(select(Duty).where(Duty.status == "open")))
    assert followup.status == "done"
    assert [d.kind for d in open_duties] == ["publish"]


def answer_of(h: Harness) -> dict[str, object]:
    """What the bot answered to the latest button press (the toast or alert)."""
    query_id = h.fake.calls_to("answerCallbackQuery")[-1].params["callback_query_id"]
    found = h.fake.callback_answer(str(query_id))
    assert found is not None
    return found


async def forge(h: Harness, user: int, message: StoredMessage, data: str) -> list[StoredMessage]:
    """A callback the message never offered (a forged or replayed payload)."""
    h.mark(message.chat_id)
    await h.feed(h.fake.press_button(user, message, data, check_keyboard=False))
    return h.new(message.chat_id)


async def test_recusal_approved_draws_the_replacement_and_tells_everyone(harness: Harness) -> None:
    h = harness
    world = await start(h)
    card = card_of(h, INSPECTOR_A)
    card = await press(h, INSPECTOR_A, card, "🙋 申请回避")
    assert "请点下方常见理由" in text_of(card)
    card = await press(h, INSPECTOR_A, card, "与检查对象存在利害关系")
    assert "已申请回避" in text_of(card) and card.button_texts() == ["📄 详情"]
    await h.deliver()
    # Station SJJ-CG has no liaison: its parent department's liaison decides.
    request = last(h, LIAISON_SJJ)
    assert "回避申请" in text_of(request) and "张三" in text_of(request)
    assert request.button_texts() == ["同意回避", "不同意"]
    # Another department's liaison cannot decide it.
    h.person(LIAISON_SWJ, "税务联络员")
    own = unique(await h.send(LIAISON_SWJ, "/review"))
    await forge(h, LIAISON_SWJ, own, request.callback_data("同意回避"))
    assert answer_of(h)["show_alert"] is True

    decided = await press(h, LIAISON_SJJ, request, "同意回避")
    assert "已同意" in text_of(decided) and "王五" in text_of(decided)
    approve = decided.history[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await forge(h, LIAISON_SJJ, decided, approve)  # a double tap: no second replacement
    assert "已经处理过了" in str(answer_of(h).get("text"))
    await h.deliver()
    assert "回避申请已同意" in text_of(last(h, INSPECTOR_A))
    assert "检查组人员变更" in text_of(last(h, INSPECTOR_B))
    replacement = card_of(h, INSPECTOR_C)
    assert "替补" in text_of(replacement) and replacement.button_texts()[0] == "✅ 确认接收"
    async with h.services.db.read() as session:
        from bot.draws import verify_draw

        seats = list(await session.exec(select(Assignment).order_by(col(Assignment.id))))
        requests = list(await session.exec(select(RecusalRequest)))
        verification = await verify_draw(session, draw_id=world.draw_id)
        duty = (
            await session.exec(select(Duty).where(Duty.subject == f"assignment:{seats[0].id}"))
        ).one()
    assert [s.status for s in seats] == ["recused", "pending", "pending"]
    assert seats[2].replaces_id == seats[0].id and seats[2].delivered_at is not None
    assert len(requests) == 1 and requests[0].status == "approved"
    assert requests[0].replacement_id == seats[2].id
    assert verification.replacements == 1 and verification.consistent
    assert duty.status == "done"


async def test_recusal_double_tap_and_rejection_with_typed_reason(harness: Harness) -> None:
    h = harness
    await start(h)
    card = card_of(h, INSPECTOR_B)
    card = await press(h, INSPECTOR_B, card, "🙋 申请回避")
    assert await h.send(INSPECTOR_B, "x") == []  # too short: asked again, in place
    card = h.fake.message(card.chat_id, card.message_id)
    assert "至少 2 个字" in text_of(card)
    card = await type_in(h, INSPECTOR_B, card, "我的妻子在该公司担任会计")
    assert "已申请回避" in text_of(card)
    await h.deliver()
    request = last(h, LIAISON_SJJ)
    assert "我的妻子在该公司担任会计" in text_of(request)
    reject = request.callback_data("不同意")
    decided = await press(h, LIAISON_SJJ, request, "不同意")
    assert "未同意" in text_of(decided)
    await forge(h, LIAISON_SJJ, decided, reject)  # a repeated update: nothing more happens
    assert "已经处理过了" in str(answer_of(h).get("text"))
    await h.deliver()
    told = last(h, INSPECTOR_B)
    assert "回避申请未获同意" in text_of(told)
    told = await press(h, INSPECTOR_B, told, "✅ 确认接收")
    assert "您已确认接收" in text_of(told)
    async with h.services.db.read() as session:
        seats = list(await session.exec(select(Assignment).order_by(col(Assignment.id))))
        requests = list(await session.exec(select(RecusalRequest)))
    assert [s.status for s in seats] == ["pending", "confirmed"]
    assert [r.status for r in requests] == ["rejected"]


async def test_forged_and_replayed_callbacks_change_nothing(harness: Harness) -> None:
    h = harness
    world = await start(h)
    a_card = card_of(h, INSPECTOR_A)
    b_card = card_of(h, INSPECTOR_B)
    # B forges A's 确认接收 on his own message.
    await forge(h, INSPECTOR_B, b_card, a_card.callback_data("✅ 确认接收"))
    assert answer_of(h)["show_alert"] is True
    # A stranger (no roles) and the spare inspector (not in the group).
    stranger_chat = unique(await h.send(STRANGER, "/start"))
    await forge(h, STRANGER, stranger_chat, a_card.callback_data("✅ 确认接收"))
    assert "还没有绑定身份" in str(answer_of(h).get("text"))
    spare = unique(await h.send(INSPECTOR_C, "/tasks"))
    open_a = ResultCb(action="open", inspection_id=world.inspection_id).pack()
    await forge(h, INSPECTOR_C, spare, open_a)
    assert answer_of(h)["show_alert"] is True
    cancel_a = ResultCb(action="cancel", inspection_id=world.inspection_id).pack()
    await forge(h, INSPECTOR_C, spare, cancel_a)
    assert answer_of(h)["show_alert"] is True
    assert "城关示范超市" not in text_of(h.fake.message(spare.chat_id, spare.message_id))
    # Garbage that is not our callback data at all.
    await forge(h, INSPECTOR_A, a_card, "a1:confirm:notanumber")
    # A double tap on 确认接收: one confirmation.
    await confirm_both(h)
    await forge(
        h,
        INSPECTOR_A,
        a_card,
        a_card.history[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
    )
    assert "已经确认过了" in str(answer_of(h).get("text"))
    async with h.services.db.read() as session:
        confirmed = list(
            await session.exec(select(AuditLog).where(AuditLog.action == "assignment.confirm"))
        )
        results = (await session.exec(select(func.count()).select_from(Result))).one()
    assert len(confirmed) == 2 and results == 0
    # A result dialog button replayed from an old message is refused; a double tap is ignored.
    dialog = await open_entry(h)
    today = dialog.callback_data("今天")
    dialog = await press(h, INSPECTOR_A, dialog, "今天")
    await forge(h, INSPECTOR_A, dialog, today)
    assert "已记录" in str(answer_of(h).get("text"))
    assert "检查方式" in text_of(h.fake.message(dialog.chat_id, dialog.message_id))
    # B cannot drive A's dialog by replaying its payloads.
    await forge(h, INSPECTOR_B, b_card, dialog.callback_data("现场"))
    assert answer_of(h)["show_alert"] is True
    async with h.services.db.read() as session:
        result = (await session.exec(select(Result))).one()
    assert result.method is None and result.entered_by == world.inspector_ids[0]


async def test_garbage_at_every_step_gets_a_hint_and_never_sticks(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    dialog = await open_entry(h)

    async def garbage(words: str, hint: str) -> None:
        shown = await type_in(h, INSPECTOR_A, dialog, words)
        assert hint in text_of(shown), text_of(shown)

    async def upload(hint: str) -> None:
        h.mark(INSPECTOR_A)
        await h.feed(h.fake.user_document(INSPECTOR_A, INSPECTOR_A, b"%PDF-1.4", "记录.pdf"))
        assert h.new(INSPECTOR_A) == []
        assert hint in text_of(h.fake.message(dialog.chat_id, dialog.message_id))

    await garbage("前天下午", "没看懂这个日期")
    await garbage("2099-01-01", "不能晚于今天")
    await garbage("2026-01-05", "不能早于检查时间开始日 2026-02-23")
    await upload("现在不是上传证据的步骤")
    dialog = await type_in(h, INSPECTOR_A, dialog, "3月1日")
    assert "检查方式" in text_of(dialog)
    await garbage("随便", "请点按钮选择检查方式")
    dialog = await type_in(h, INSPECTOR_A, dialog, "书面")
    await garbage("11", "输入 1 到 10 的数字")
    dialog = await type_in(h, INSPECTOR_A, dialog, "9")
    assert "发现的问题" in text_of(dialog)
    await garbage("x", "内容太短")
    dialog = await type_in(h, INSPECTOR_A, dialog, "进货台账缺失，需进一步调查")
    await garbage("改正", "请点下方按钮选择")
    dialog = await press(h, INSPECTOR_A, dialog, "责令改正")
    await garbage("2026-02-28", "整改期限须晚于检查日期")
    await garbage("下个月", "没看懂这个日期")
    dialog = await type_in(h, INSPECTOR_A, dialog, "2026-04-10")
    assert "证据" in text_of(dialog)
    await garbage("这是照片", "可以发送照片或文件")
    h.services.settings.evidence_max_mb = 0  # everything is too big now
    await upload("超过 0 MB")
    h.services.settings.evidence_max_mb = 20
    await upload("证据已保存")
    await upload("这个文件已经附过了")  # the same bytes twice are kept once
    dialog = await press(h, INSPECTOR_A, dialog, "下一项 ➡️")
    dialog = await type_in(h, INSPECTOR_A, dialog, "6")
    dialog = await press(h, INSPECTOR_A, dialog, "完成，去核对 ➡️")
    await garbage("提交吧", "请核对后点“提交”")
    # 返回 walks back through the steps; 修改 jumps and comes back to the summary.
    dialog = await press(h, INSPECTOR_A, dialog, "↩️ 返回")
    assert "第 2/2 项" in text_of(dialog) and "证据" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "完成，去核对 ➡️")
    dialog = await press(h, INSPECTOR_A, dialog, "修改方式")
    dialog = await press(h, INSPECTOR_A, dialog, "现场")
    assert "请核对后提交" in text_of(dialog) and "检查方式：现场" in text_of(dialog)
    async with h.services.db.read() as session:
        evidence = list(await session.exec(select(Evidence)))
        items = list(await session.exec(select(ResultItem).order_by(col(ResultItem.position))))
    assert len(evidence) == 1 and evidence[0].kind == "document"
    assert [i.category for i in items] == [9, 6]
    assert (
        items[0].rectify_deadline is not None
        and items[0].rectify_deadline.isoformat() == "2026-04-10"
    )
    # Leaving keeps the draft; /tasks resumes at the summary.
    dialog = await press(h, INSPECTOR_A, dialog, "✖️ 取消")
    assert "草稿已保存" in text_of(dialog)
    assert await h.send(INSPECTOR_A, "随便说点什么") != []  # outside the dialog: the usual hint
    resumed = await open_entry(h)
    assert "请核对后提交" in text_of(resumed)


async def test_restart_mid_dialog_then_resume(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    dialog = await open_entry(h)
    dialog = await press(h, INSPECTOR_A, dialog, "昨天")
    dialog = await press(h, INSPECTOR_A, dialog, "网络")
    dialog = await press(h, INSPECTOR_A, dialog, "2 未按规定公示应当公示的信息")
    assert "发现的问题" in text_of(dialog)

    # The bot restarts: a new bot and dispatcher on the same database (and state store).
    from bot.app import create_bot, create_dispatcher

    bot = create_bot(h.services.settings)
    dispatcher = create_dispatcher(h.services)
    try:
        again = Harness(h.fake, bot, dispatcher, h.services, h.sender)
        dialog = await type_in(again, INSPECTOR_A, dialog, "未按规定公示年度报告")
        assert "后续处置方式" in text_of(dialog)
        # A later restart with the dialog message gone from view: /tasks resumes the draft.
        listing = unique(await again.send(INSPECTOR_A, "/tasks"))
        assert "草稿" in text_of(listing)
        resumed = await press(
            again, INSPECTOR_A, listing, next(b for b in listing.button_texts() if "继续录入" in b)
        )
        assert "后续处置方式" in text_of(resumed)
        assert dialog.button_texts() == []  # the older dialog message lost its buttons
        resumed = await press(again, INSPECTOR_A, resumed, "列入经营异常名录")
        assert "证据" in text_of(resumed)
    finally:
        await dispatcher.storage.close()
        await bot.session.close()
    async with h.services.db.read() as session:
        result = (await session.exec(select(Result))).one()
        item = (await session.exec(select(ResultItem).where(ResultItem.position == 0))).one()
    assert result.method == "网络" and result.inspection_date is not None
    assert result.inspection_date.isoformat() == "2026-03-01"
    assert (item.category, item.findings, item.action) == (2, "未按规定公示年度报告", "abnormal")


async def test_returned_by_the_reviewer_then_resubmitted(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    summary = await enter_result(h, photo=False)
    await press(h, INSPECTOR_A, summary, "✅ 提交")
    await h.deliver()
    await press(h, INSPECTOR_B, last(h, INSPECTOR_B), "✅ 确认无误")
    await h.deliver()
    first_review = last(h, LIAISON_SJJ)
    asked = await press(h, LIAISON_SJJ, first_review, "↩️ 退回")
    assert "请直接输入退回理由" in text_of(asked)
    assert await h.send(LIAISON_SJJ, "整改期限过长，请按规定改为 7 天") == []
    returned = h.fake.message(asked.chat_id, asked.message_id)
    assert "已退回修改" in text_of(returned)
    await h.deliver()
    told = last(h, INSPECTOR_A)
    assert "被复核退回" in text_of(told) and "7 天" in text_of(told)
    assert "被复核退回" in text_of(last(h, INSPECTOR_B))

    dialog = await press(h, INSPECTOR_A, told, "📝 修改结果")
    assert "复核退回：整改期限过长" in text_of(dialog) and "请核对后提交" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "修改第 1 项")
    dialog = await press(h, INSPECTOR_A, dialog, "8 发现问题，依法责令立即改正或者限期改正")
    dialog = await press(h, INSPECTOR_A, dialog, "↩️ 返回")  # back to the category, unchanged
    dialog = await press(h, INSPECTOR_A, dialog, "8 发现问题，依法责令立即改正或者限期改正")
    assert "发现的问题" in text_of(dialog)
    dialog = await type_in(h, INSPECTOR_A, dialog, "食品经营许可证已过期，仍在经营")
    dialog = await press(h, INSPECTOR_A, dialog, "责令改正")
    dialog = await press(h, INSPECTOR_A, dialog, "7 天")
    dialog = await press(h, INSPECTOR_A, dialog, "完成，去核对 ➡️")
    assert "整改期限 2026-03-09" in text_of(dialog)
    await press(h, INSPECTOR_A, dialog, "✅ 提交")
    await h.deliver()
    await press(h, INSPECTOR_B, last(h, INSPECTOR_B), "✅ 确认无误")
    await h.deliver()
    # The first round's 通过 is stale now: that round was decided (returned), nothing changes.
    old_approve = first_review.history[0]["reply_markup"]["inline_keyboard"][0][0]
    await forge(h, LIAISON_SJJ, returned, old_approve["callback_data"])
    assert "已经处理过了" in str(answer_of(h).get("text"))
    second = last(h, LIAISON_SJJ)
    assert "第 2 次提交" in text_of(second)
    await press(h, LIAISON_SJJ, second, "✅ 通过")
    async with h.services.db.read() as session:
        result = (await session.exec(select(Result))).one()
        reviews = list(await session.exec(select(Review).order_by(col(Review.id))))
        signatures = list(await session.exec(select(CoSignature)))
    assert result.status == "approved" and result.version == 2
    assert [(r.version, r.decision) for r in reviews] == [(1, "returned"), (2, "approved")]
    assert len(signatures) == 4  # two per submission, all kept


async def test_objection_by_a_coinspector_sends_it_back(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    summary = await enter_result(h, photo=False)
    await press(h, INSPECTOR_A, summary, "✅ 提交")
    await h.deliver()
    cosign = await press(h, INSPECTOR_B, last(h, INSPECTOR_B), "❗ 有异议")
    assert "请直接输入异议内容" in text_of(cosign)
    assert await h.send(INSPECTOR_B, "第 2 项标签也有问题") == []
    assert "您已提出异议" in text_of(h.fake.message(cosign.chat_id, cosign.message_id))
    await h.deliver()
    assert "李四：第 2 项标签也有问题" in text_of(last(h, INSPECTOR_A))
    async with h.services.db.read() as session:
        result = (await session.exec(select(Result))).one()
        cosign_duty = (await session.exec(select(Duty).where(Duty.kind == "cosign"))).one()
    assert result.status == "draft" and cosign_duty.status == "done"


async def test_transfer_is_acknowledged_by_the_receiving_department(harness: Harness) -> None:
    h = harness
    await start(h)
    await confirm_both(h)
    dialog = await open_entry(h)
    for label in ("今天", "现场", "9 发现问题，待后续调查处理"):
        dialog = await press(h, INSPECTOR_A, dialog, label)
    dialog = await type_in(h, INSPECTOR_A, dialog, "涉嫌偷逃税款，发票开具不规范")
    dialog = await press(h, INSPECTOR_A, dialog, "移送")
    assert "移送（抄告）的部门" in text_of(dialog)
    dialog = await type_in(h, INSPECTOR_A, dialog, "局")  # several match: narrowed, not chosen
    assert "找到多个部门" in text_of(dialog)
    dialog = await press(h, INSPECTOR_A, dialog, "县税务局")
    dialog = await press(h, INSPECTOR_A, dialog, "下一项 ➡️")
    dialog = await press(h, INSPECTOR_A, dialog, "1 未发现问题")
    dialog = await press(h, INSPECTOR_A, dialog, "完成，去核对 ➡️")
    assert "移送县税务局" in text_of(dialog)
    await press(h, INSPECTOR_A, dialog, "✅ 提交")
    await h.deliver()
    await press(h, INSPECTOR_B, last(h, INSPECTOR_B), "✅ 确认无误")
    await h.deliver()
    await press(h, LIAISON_SJJ, last(h, LIAISON_SJJ), "✅ 通过")
    await h.deliver()
    notice = last(h, LIAISON_SWJ)
    assert "移送（抄告）" in text_of(notice) and "涉嫌偷逃税款" in text_of(notice)
    # The lead department's liaison cannot acknowledge for the receiving department.
    mine = unique(await h.send(LIAISON_SJJ, "/review"))
    await forge(h, LIAISON_SJJ, mine, notice.callback_data("✅ 确认接收"))
    assert answer_of(h)["show_alert"] is True
    waiting = unique(await h.send(LIAISON_SWJ, "/review"))
    assert "移送接收" in text_of(waiting)
    done = await press(h, LIAISON_SWJ, notice, "✅ 确认接收")
    assert "已确认接收" in text_of(done)
    await forge(
        h,
        LIAISON_SWJ,
        done,
        notice.history[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
    )
    await h.deliver()
    assert "移送已被接收" in text_of(last(h, INSPECTOR_A))
    async with h.services.db.read() as session:
        transfer = (await session.exec(select(Transfer))).one()
        followup = (await session.exec(select(FollowUp))).one()
        ack = (await session.exec(select(Duty).where(Duty.kind == "transfer_ack"))).one()
        acks = list(
            await session.exec(select(AuditLog).where(AuditLog.action == "transfer.acknowledge"))
        )
    assert transfer.status == "acknowledged" and transfer.to_department == "SWJ"
    assert followup.status == "done" and ack.status == "done" and len(acks) == 1


async def test_unbound_inspector_gets_the_assignment_on_binding(harness: Harness) -> None:
    h = harness
    await start(h, bind=(False, True))
    told = last(h, LIAISON_SJJ)
    assert "张三" in text_of(told) and "邀请链接" in text_of(told)
    assert h.fake.sent_by_bot(INSPECTOR_A) == []
    from bot.people import issue_invites
    from storage.models import Role

    async with h.services.db.session() as session:
        (invite,) = await issue_invites(
            session,
            role=Role.INSPECTOR,
            actor="tg:1000",
            now=h.services.clock.now(),
            ttl_days=14,
            department_code="SJJ-CG",
        )
    greeting = unique(await h.send(INSPECTOR_A, f"/start {invite.code}"))
    assert "张三" in text_of(greeting)
    await h.deliver()
    card = card_of(h, INSPECTOR_A)
    assert "城关示范超市有限公司" in text_of(card)
    await press(h, INSPECTOR_A, card, "✅ 确认接收")
    async with h.services.db.read() as session:
        sent = list(
            await session.exec(select(OutboxMessage).where(OutboxMessage.chat_id == INSPECTOR_A))
        )
    assert len(sent) == 1


async def test_worklists_for_liaison_and_office(harness: Harness) -> None:
    h = harness
    await start(h)
    liaison = unique(await h.send(LIAISON_SJJ, "/tasks"))
    assert "本部门进行中的检查" in text_of(liaison) and "张三、李四" in text_of(liaison)
    office = unique(await h.send(1000, "/tasks"))
    assert "抽查任务" in text_of(office) and "2026 年第一批" in text_of(office)
    card = await press(h, INSPECTOR_B, card_of(h, INSPECTOR_B), "🙋 申请回避")
    await press(h, INSPECTOR_B, card, "与检查对象存在利害关系")
    for person in (LIAISON_SJJ, 1000):
        waiting = unique(await h.send(person, "/tasks"))
        assert "回避申请：城关示范超市有限公司（李四）" in text_of(waiting)
        assert "🙋 回避审批：城关示范超市有限公司（李四）" in waiting.button_texts()
    nothing = unique(await h.send(INSPECTOR_C, "/review"))
    assert "您目前没有这类事项" in text_of(nothing)
    h.services.clock.advance(timedelta(days=3))  # type: ignore[attr-defined]
    overdue = unique(await h.send(INSPECTOR_A, "/tasks"))
    assert "待确认接收，期限 2026-03-04 ⚠️ 已逾期" in text_of(overdue)


async def test_dialog_state_survives_a_second_harness(
    harness: Harness,
) -> None:
    """running() builds a whole new bot and fake on the same database: the draft is there."""
    h = harness
    await start(h)
    await confirm_both(h)
    dialog = await open_entry(h)
    await press(h, INSPECTOR_A, dialog, "今天")
    async with running(h.services.db, h.services.settings, h.services.clock) as h2:  # type: ignore[arg-type]
        h2.person(INSPECTOR_A, "张三")
        listing = unique(await h2.send(INSPECTOR_A, "/tasks"))
        resumed = await press(
            h2, INSPECTOR_A, listing, next(b for b in listing.button_texts() if "继续录入" in b)
        )
        assert "检查方式" in text_of(resumed)
