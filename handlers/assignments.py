"""An assignment message's buttons: 确认接收, 申请回避 (a reason: a button or typed), 详情.
See assignments.mmd."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bot.app import Services
from bot.assignments import (
    RECUSAL_REASONS,
    Act,
    Outcome,
    can_request_recusal,
    confirm_assignment,
    details,
    recusal_reason_text,
    request_recusal,
    show_assignment,
)
from bot.outbox import Keyboard
from bot.people import Identity
from bot.render import render, text
from bot.telegram import AssignmentCb
from handlers.results import button_message, show

REASON_MIN = 2


class RecusalDialog(StatesGroup):
    reason = State()  # data: assignment_id, message_id


def reason_rows(assignment_id: int) -> Keyboard:
    rows: Keyboard = [
        [
            (
                recusal_reason_text(code),
                AssignmentCb(action="reason", assignment_id=assignment_id, reason=code).pack(),
            )
        ]
        for code in RECUSAL_REASONS
    ]
    rows.append(
        [
            (
                text("button.assignment.back"),
                AssignmentCb(action="back", assignment_id=assignment_id).pack(),
            )
        ]
    )
    return rows


async def _refuse(query: CallbackQuery, outcome: Outcome) -> None:
    await query.answer(text(f"assignment.refusal.{outcome.reason}"), show_alert=True)


async def on_assignment_button(
    query: CallbackQuery,
    callback_data: AssignmentCb,
    bot: Bot,
    state: FSMContext,
    services: Services,
    identity: Identity,
) -> None:
    """确认接收 / 申请回避 / a reason / 返回 / 详情 — each re-checked against the database."""
    message = await button_message(query)
    if message is None:
        return
    chat_id, message_id = message.chat.id, message.message_id
    action, assignment_id = callback_data.action, callback_data.assignment_id
    now = services.clock.now()
    if action == "detail":
        async with services.db.read() as session:
            parts = await details(session, assignment_id=assignment_id, identity=identity)
        if not parts:
            await query.answer(text("assignment.refusal.not_yours"), show_alert=True)
            return
        for part in parts:
            await bot.send_message(chat_id, part)
        await query.answer()
        return
    async with services.db.session() as session:
        match action:
            case "confirm":
                outcome = await confirm_assignment(
                    session,
                    assignment_id=assignment_id,
                    identity=identity,
                    now=now,
                    tz=services.settings.timezone,
                )
            case "recuse":
                outcome = await can_request_recusal(
                    session, assignment_id=assignment_id, identity=identity
                )
            case "reason" if callback_data.reason in RECUSAL_REASONS:
                outcome = await request_recusal(
                    session,
                    assignment_id=assignment_id,
                    identity=identity,
                    reason_code=callback_data.reason,
                    reason_text="",
                    now=now,
                    office_admins=services.settings.office_admins,
                )
            case _:
                outcome = await show_assignment(
                    session, assignment_id=assignment_id, identity=identity
                )
    if outcome.card is None:
        await _refuse(query, outcome)
        return
    if action == "recuse" and outcome.act is Act.DONE:
        await state.set_state(RecusalDialog.reason)
        await state.update_data(assignment_id=assignment_id, message_id=message_id)
        body = render("assignments/recusal_ask.j2", card=outcome.card.text, hint=False)
        await show(bot, chat_id, message_id, body, reason_rows(assignment_id))
        await query.answer()
        return
    if await state.get_state() == RecusalDialog.reason.state:
        await state.set_state(None)
    await show(bot, chat_id, message_id, outcome.card.text, outcome.card.buttons)
    if outcome.act is Act.STALE:
        await _refuse(query, outcome)
    else:
        await query.answer(_answer(action, outcome))


def _answer(action: str, outcome: Outcome) -> str:
    if action == "confirm":
        key = "confirmed" if outcome.act is Act.DONE else "already_confirmed"
        return text(f"assignment.answer.{key}")
    if action in ("reason", "recuse") and outcome.act is Act.ALREADY:
        return text("assignment.answer.recusal_already")
    if action == "reason":
        return text("assignment.answer.recusal_sent")
    return ""


async def on_reason_text(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """A typed recusal reason."""
    data = await state.get_data()
    reason = (message.text or "").strip()
    if len(reason) < REASON_MIN:
        await _ask_again(message, bot, state, services, identity)
        return
    async with services.db.session() as session:
        outcome = await request_recusal(
            session,
            assignment_id=int(data.get("assignment_id", 0)),
            identity=identity,
            reason_code=0,
            reason_text=reason,
            now=services.clock.now(),
            office_admins=services.settings.office_admins,
        )
    await state.set_state(None)
    if outcome.card is None:
        await message.answer(text(f"assignment.refusal.{outcome.reason}"))
        return
    await show(
        bot, message.chat.id, data.get("message_id"), outcome.card.text, outcome.card.buttons
    )


async def _ask_again(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """The reason question again, with a hint, in the same message."""
    data = await state.get_data()
    assignment_id = int(data.get("assignment_id", 0))
    async with services.db.read() as session:
        outcome = await can_request_recusal(session, assignment_id=assignment_id, identity=identity)
    if outcome.act is not Act.DONE or outcome.card is None:
        await state.set_state(None)
        await message.answer(text(f"assignment.refusal.{outcome.reason or 'closed'}"))
        return
    body = render("assignments/recusal_ask.j2", card=outcome.card.text, hint=True)
    await show(bot, message.chat.id, data.get("message_id"), body, reason_rows(assignment_id))


async def on_reason_other(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """Not text while we wait for the reason."""
    await _ask_again(message, bot, state, services, identity)


def create_router() -> Router:
    router = Router(name="assignments")
    router.callback_query.register(
        on_assignment_button, AssignmentCb.filter(), flags={"role": "inspector"}
    )
    not_command = ~F.text.startswith("/")
    router.message.register(
        on_reason_text,
        StateFilter(RecusalDialog.reason),
        F.chat.type == "private",
        F.text,
        not_command,
        flags={"role": "inspector"},
    )
    router.message.register(
        on_reason_other,
        StateFilter(RecusalDialog.reason),
        F.chat.type == "private",
        not_command,
    )
    return router
