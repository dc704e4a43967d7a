"""后续处置: the responsible inspector records progress and completion (text, then date); the
receiving department's liaison acknowledges a transfer. See followups.mmd."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bot.app import Services
from bot.clock import local_date
from bot.followups import (
    acknowledge_transfer,
    board,
    check_entry,
    check_entry_text,
    followup_buttons,
    record_entry,
    show_transfer,
)
from bot.outbox import Keyboard
from bot.people import Identity
from bot.render import render, text
from bot.results import parse_date
from bot.telegram import FollowUpCb, TransferCb
from handlers.results import button_message, show


class FollowUpDialog(StatesGroup):
    text = State()  # data: followup_id, kind, message_id
    date = State()  # data: followup_id, kind, body, message_id


async def _board(
    bot: Bot,
    chat_id: int,
    message_id: int | None,
    services: Services,
    identity: Identity,
    inspection_id: int,
    notice: str = "",
) -> bool:
    async with services.db.read() as session:
        shown = await board(session, inspection_id=inspection_id, identity=identity)
    if shown is None:
        return False
    body = render("followups/board.j2", b=shown, notice=notice)
    await show(bot, chat_id, message_id, body, followup_buttons(shown.followups))
    return True


def _cancel_row(followup_id: int) -> Keyboard:
    return [[(text("button.result.cancel"), FollowUpCb(action="cancel", ref=followup_id).pack())]]


def _date_rows(followup_id: int) -> Keyboard:
    return [
        [
            (text("button.result.today"), FollowUpCb(action="today", ref=followup_id).pack()),
            (
                text("button.result.yesterday"),
                FollowUpCb(action="yesterday", ref=followup_id).pack(),
            ),
        ],
        *_cancel_row(followup_id),
    ]


async def on_followup_button(
    query: CallbackQuery,
    callback_data: FollowUpCb,
    bot: Bot,
    state: FSMContext,
    services: Services,
    identity: Identity,
) -> None:
    """list / progress / complete / today / yesterday / cancel."""
    message = await button_message(query)
    if message is None:
        return
    chat_id, message_id = message.chat.id, message.message_id
    action, ref = callback_data.action, callback_data.ref
    if action == "list":
        await state.set_state(None)
        if not await _board(bot, chat_id, message_id, services, identity, ref):
            await query.answer(text("followup.hint.not_yours"), show_alert=True)
            return
        await query.answer()
        return
    kind = "completion" if action == "complete" else "progress"
    if action in ("today", "yesterday", "cancel"):
        data = await state.get_data()
        if data.get("followup_id") != ref:
            await query.answer(text("result.answer.old_message"), show_alert=True)
            return
        kind = str(data.get("kind", "progress"))
    async with services.db.read() as session:
        check = await check_entry(session, followup_id=ref, identity=identity, kind=kind)
    if check.followup is None or (not check.ok and action != "cancel"):
        await query.answer(text(f"followup.hint.{check.hint}"), show_alert=True)
        return
    inspection_id = check.followup.inspection_id
    if action == "cancel":
        await state.set_state(None)
        await _board(bot, chat_id, message_id, services, identity, inspection_id)
        await query.answer()
        return
    if action in ("progress", "complete"):
        await state.set_state(FollowUpDialog.text)
        await state.update_data(followup_id=ref, kind=kind, message_id=message_id)
        body = render("followups/ask_text.j2", kind=kind, hint="")
        await show(bot, chat_id, message_id, body, _cancel_row(ref))
        await query.answer()
        return
    data = await state.get_data()
    today = local_date(services.clock, services.settings.timezone)
    on_date = today if action == "today" else today - timedelta(days=1)
    await _record(bot, chat_id, message_id, state, services, identity, data, on_date)
    await query.answer()


async def _record(
    bot: Bot,
    chat_id: int,
    message_id: int | None,
    state: FSMContext,
    services: Services,
    identity: Identity,
    data: dict[str, Any],
    on_date: date,
) -> None:
    followup_id = int(str(data.get("followup_id", 0)))
    kind = str(data.get("kind", "progress"))
    async with services.db.session() as session:
        outcome = await record_entry(
            session,
            followup_id=followup_id,
            identity=identity,
            kind=kind,
            body=str(data.get("body", "")),
            on_date=on_date,
            now=services.clock.now(),
            tz=services.settings.timezone,
        )
    if not outcome.ok and outcome.hint.startswith("date"):
        body = render("followups/ask_date.j2", kind=kind, hint=outcome.hint)
        await show(bot, chat_id, message_id, body, _date_rows(followup_id))
        return
    await state.clear()  # the question is answered: a repeated tap of its buttons is stale
    if outcome.followup is None:
        await bot.send_message(chat_id, text(f"followup.hint.{outcome.hint}"))
        return
    notice = "" if not outcome.ok else ("completed" if kind == "completion" else "saved")
    await _board(
        bot, chat_id, message_id, services, identity, outcome.followup.inspection_id, notice
    )


async def on_entry_text(message: Message, bot: Bot, state: FSMContext) -> None:
    """The text of a progress or completion note; then the date is asked."""
    data = await state.get_data()
    followup_id = int(data.get("followup_id", 0))
    kind = str(data.get("kind", "progress"))
    hint = check_entry_text(message.text or "") if message.text else "type_text"
    if hint:
        body = render("followups/ask_text.j2", kind=kind, hint=hint)
        await show(bot, message.chat.id, data.get("message_id"), body, _cancel_row(followup_id))
        return
    await state.set_state(FollowUpDialog.date)
    await state.update_data(body=(message.text or "").strip())
    body = render("followups/ask_date.j2", kind=kind, hint="")
    await show(bot, message.chat.id, data.get("message_id"), body, _date_rows(followup_id))


async def on_entry_date(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """A typed date of the note."""
    data = await state.get_data()
    today = local_date(services.clock, services.settings.timezone)
    on_date = parse_date(message.text or "", today) if message.text else None
    if on_date is None:
        body = render("followups/ask_date.j2", kind=str(data.get("kind", "progress")), hint="date")
        await show(
            bot,
            message.chat.id,
            data.get("message_id"),
            body,
            _date_rows(int(data.get("followup_id", 0))),
        )
        return
    await _record(
        bot, message.chat.id, data.get("message_id"), state, services, identity, data, on_date
    )


async def on_transfer_button(
    query: CallbackQuery,
    callback_data: TransferCb,
    bot: Bot,
    services: Services,
    identity: Identity,
) -> None:
    """确认接收 of a transfer by the receiving department's liaison (or show it)."""
    message = await button_message(query)
    if message is None:
        return
    async with services.db.session() as session:
        if callback_data.action == "ack":
            outcome = await acknowledge_transfer(
                session,
                transfer_id=callback_data.transfer_id,
                identity=identity,
                now=services.clock.now(),
                tz=services.settings.timezone,
            )
        else:
            outcome = await show_transfer(
                session, transfer_id=callback_data.transfer_id, identity=identity
            )
    if outcome.act == "refused":
        await query.answer(text("review.refusal.not_yours"), show_alert=True)
        return
    rows: Keyboard | None = None
    if callback_data.action == "show" and outcome.act == "done":
        ack = TransferCb(action="ack", transfer_id=callback_data.transfer_id).pack()
        rows = [[(text("button.transfer.ack"), ack)]]
    await show(bot, message.chat.id, message.message_id, outcome.text, rows)
    if callback_data.action == "ack":
        key = "acknowledged" if outcome.act == "done" else "already"
        await query.answer(text(f"review.answer.{key}"))
    else:
        await query.answer()


def create_router() -> Router:
    router = Router(name="followups")
    router.callback_query.register(
        on_followup_button, FollowUpCb.filter(), flags={"role": "inspector"}
    )
    router.callback_query.register(on_transfer_button, TransferCb.filter(), flags={"role": "known"})
    private = F.chat.type == "private"
    not_command = ~F.text.startswith("/")
    router.message.register(
        on_entry_text,
        StateFilter(FollowUpDialog.text),
        private,
        not_command,
        flags={"role": "inspector"},
    )
    router.message.register(
        on_entry_date,
        StateFilter(FollowUpDialog.date),
        private,
        not_command,
        flags={"role": "inspector"},
    )
    return router
