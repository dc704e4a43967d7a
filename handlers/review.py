"""Decisions of liaisons and the office: recusal requests (x1) and 复核 of results (v1:
通过, or 退回 with a typed reason). See review.mmd."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bot.app import Services
from bot.assignments import Act, decide_recusal, recusal_buttons, show_recusal
from bot.people import Identity
from bot.render import render, text
from bot.results import Answer, review, review_buttons, review_card
from bot.telegram import RecusalCb, ReviewCb
from handlers.results import button_message, show, typed_decision_shown


class ReviewDialog(StatesGroup):
    reason = State()  # data: result_id, version, message_id


async def on_recusal_button(
    query: CallbackQuery,
    callback_data: RecusalCb,
    bot: Bot,
    services: Services,
    identity: Identity,
) -> None:
    """同意回避 / 不同意 / show: by the inspector's liaison or the office, exactly once."""
    message = await button_message(query)
    if message is None:
        return
    async with services.db.session() as session:
        if callback_data.action in ("approve", "reject"):
            decision = await decide_recusal(
                session,
                request_id=callback_data.request_id,
                identity=identity,
                approve=callback_data.action == "approve",
                now=services.clock.now(),
                tz=services.settings.timezone,
                office_admins=services.settings.office_admins,
            )
        else:
            decision = await show_recusal(
                session, request_id=callback_data.request_id, identity=identity
            )
    if decision.act is Act.REFUSED:
        await query.answer(text(f"review.refusal.{decision.reason}"), show_alert=True)
        return
    rows = (
        recusal_buttons(callback_data.request_id)
        if callback_data.action == "show" and decision.act is Act.DONE
        else None
    )
    await show(bot, message.chat.id, message.message_id, decision.text, rows)
    if callback_data.action == "show":
        await query.answer()
    elif decision.act is Act.DONE:
        await query.answer(text("assignment.answer.decided"))
    elif decision.act is Act.STALE:
        await query.answer(text(f"assignment.refusal.{decision.reason}"), show_alert=True)
    else:
        await query.answer(text("assignment.answer.already_decided"), show_alert=True)


async def on_review_button(
    query: CallbackQuery,
    callback_data: ReviewCb,
    bot: Bot,
    state: FSMContext,
    services: Services,
    identity: Identity,
) -> None:
    """通过 / 退回 (asks for the reason) / show — for this submission only."""
    message = await button_message(query)
    if message is None:
        return
    result_id, version = callback_data.result_id, callback_data.version
    async with services.db.session() as session:
        if callback_data.action == "approve":
            reply = await review(
                session,
                result_id=result_id,
                version=version,
                identity=identity,
                approve=True,
                now=services.clock.now(),
                tz=services.settings.timezone,
                office_admins=services.settings.office_admins,
            )
        else:
            reply = await review_card(
                session, result_id=result_id, version=version, identity=identity
            )
    if reply.answer is Answer.REFUSED or (reply.answer is Answer.STALE and not reply.text):
        await query.answer(text(f"review.refusal.{reply.reason}"), show_alert=True)
        return
    chat_id, message_id = message.chat.id, message.message_id
    if reply.answer is Answer.STALE:
        await show(bot, chat_id, message_id, reply.text)
        await query.answer(text(f"review.refusal.{reply.reason}"), show_alert=True)
        return
    if callback_data.action == "approve":
        await show(bot, chat_id, message_id, reply.text)
        key = "approved" if reply.answer is Answer.DONE else "already"
        await query.answer(text(f"review.answer.{key}"))
        return
    if callback_data.action == "return":
        await state.set_state(ReviewDialog.reason)
        await state.update_data(result_id=result_id, version=version, message_id=message_id)
        body = render("review/return_ask.j2", summary=reply.text)
        back = ReviewCb(action="show", result_id=result_id, version=version).pack()
        await show(bot, chat_id, message_id, body, [[(text("button.result.cancel"), back)]])
        await query.answer(text("review.answer.ask_reason"))
        return
    if await state.get_state() == ReviewDialog.reason.state:
        await state.set_state(None)
    await show(bot, chat_id, message_id, reply.text, review_buttons(result_id, version))
    await query.answer()


async def on_return_reason(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """The reason of 退回; the result goes back to its inspectors as a draft."""
    data = await state.get_data()
    async with services.db.session() as session:
        reply = await review(
            session,
            result_id=int(data.get("result_id", 0)),
            version=int(data.get("version", 0)),
            identity=identity,
            approve=False,
            reason=message.text or "",
            now=services.clock.now(),
            tz=services.settings.timezone,
            office_admins=services.settings.office_admins,
        )
    await typed_decision_shown(
        message, bot, state, reply, too_short="reason_short", refusals="review.refusal"
    )


async def on_return_other(message: Message) -> None:
    """Not text while we wait for the reason."""
    await message.answer(text("review.refusal.reason_short"))


def create_router() -> Router:
    router = Router(name="review")
    router.callback_query.register(on_recusal_button, RecusalCb.filter(), flags={"role": "known"})
    router.callback_query.register(on_review_button, ReviewCb.filter(), flags={"role": "known"})
    not_command = ~F.text.startswith("/")
    router.message.register(
        on_return_reason,
        StateFilter(ReviewDialog.reason),
        F.chat.type == "private",
        F.text,
        not_command,
        flags={"role": "known"},
    )
    router.message.register(
        on_return_other, StateFilter(ReviewDialog.reason), F.chat.type == "private", not_command
    )
    return router
