"""录入结果: the guided result dialog (one message, edited in place) and co-signature.

The draft is in the database (bot/results.py); the dialog state only says which step this
chat is on and which message is the dialog, so a restart loses nothing. See results.mmd.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import replace
from typing import Any

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.app import Services
from bot.assignments import TELEGRAM_TEXT_LIMIT
from bot.outbox import Keyboard
from bot.people import Identity
from bot.render import render, text
from bot.results import (
    ACTIONS,
    METHODS,
    RECTIFY_QUICK_DAYS,
    Answer,
    EvidenceFile,
    Kind,
    Reply,
    Screen,
    Step,
    Turn,
    View,
    add_evidence,
    answer,
    cosign,
    cosign_buttons,
    cosign_card,
    go_back,
    leave,
    next_step,
    open_dialog,
    show_step,
    submit,
    withdraw_evidence,
)
from bot.telegram import CoSignCb, ResultCb

log = logging.getLogger(__name__)


class ResultDialog(StatesGroup):
    active = State()  # data: inspection_id, step, message_id, editing


class CoSignDialog(StatesGroup):
    comment = State()  # data: cosign_id, message_id


# --- showing one message in place -----------------------------------------------------------------


def markup(rows: Keyboard | None) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=label, callback_data=data) for label, data in row]
            for row in rows
        ]
    )


async def show(
    bot: Bot, chat_id: int, message_id: int | None, body: str, rows: Keyboard | None = None
) -> int:
    """Edit the dialog's message; send a new one when it cannot be edited. Its id is returned."""
    if message_id:
        try:
            await bot.edit_message_text(
                text=body, chat_id=chat_id, message_id=message_id, reply_markup=markup(rows)
            )
            return message_id
        except TelegramBadRequest as error:
            if "not modified" in error.message:
                return message_id
            log.info("dialog message %s not editable (%s); sending anew", message_id, error.message)
    sent = await bot.send_message(chat_id, body, reply_markup=markup(rows))
    return sent.message_id


async def drop_keyboard(bot: Bot, chat_id: int, message_id: int | None) -> None:
    """An older dialog message loses its buttons, so only one message drives the dialog."""
    if not message_id:
        return
    with contextlib.suppress(TelegramBadRequest):
        await bot.edit_message_reply_markup(
            chat_id=chat_id, message_id=message_id, reply_markup=None
        )


async def edit_in_place(
    message: Message, body: str, keyboard: InlineKeyboardMarkup | None = None
) -> None:
    """Edit a message the bot sent. Telegram answers 400 "message is not modified" when it
    already reads so (a copy pressed twice, a progress count that did not move): that is fine."""
    try:
        await message.edit_text(body, reply_markup=keyboard)
    except TelegramBadRequest as error:
        if "not modified" not in error.message:
            raise


async def button_message(query: CallbackQuery) -> Message | None:
    """The message a pressed button belongs to; None (and the person told) when Telegram no
    longer gives it to us (too old to edit)."""
    if isinstance(query.message, Message):
        return query.message
    await query.answer(text("result.answer.too_old"), show_alert=True)
    return None


async def typed_decision_shown(
    message: Message, bot: Bot, state: FSMContext, reply: Reply, *, too_short: str, refusals: str
) -> None:
    """The outcome of a typed comment (有异议) or reason (退回): asked again when `too_short`,
    else the question's message shows the decision (or a refusal under `refusals`)."""
    if reply.answer is Answer.STALE and reply.reason == too_short:
        await message.answer(text(f"{refusals}.{too_short}"))
        return
    data = await state.get_data()
    await state.set_state(None)
    if reply.text:
        await show(bot, message.chat.id, data.get("message_id"), reply.text)
    else:
        await message.answer(text(f"{refusals}.{reply.reason}"))


# --- the dialog's screens -------------------------------------------------------------------------


def _cb(view: View, action: str, value: str = "", step: Step | None = None) -> str:
    assert view.dossier is not None
    shown = step or view.step
    return ResultCb(
        action=action,
        inspection_id=view.dossier.inspection_id,
        step=shown.key if shown else "",
        value=value,
    ).pack()


def keyboard(view: View) -> Keyboard:
    """The buttons of a step; every step ends with 返回 and 取消."""
    step = view.step
    assert step is not None
    rows: Keyboard = []
    match step.kind:
        case Kind.DATE:
            rows.append(
                [
                    (text("button.result.today"), _cb(view, "pick", "today")),
                    (text("button.result.yesterday"), _cb(view, "pick", "yesterday")),
                ]
            )
        case Kind.METHOD:
            labels = [(m, _cb(view, "pick", str(n))) for n, m in enumerate(METHODS)]
            rows.extend([labels[:2], labels[2:]])
        case Kind.CATEGORY:
            for n in range(1, 11):
                label = text("button.result.category", n=n, label=text(f"result.category.{n}"))
                rows.append([(label, _cb(view, "pick", str(n)))])
        case Kind.ACTION:
            for action in ACTIONS:
                rows.append([(text(f"result.action.{action}"), _cb(view, "pick", action))])
        case Kind.DEADLINE:
            rows.append(
                [
                    (text("button.result.days", days=days), _cb(view, "pick", f"d{days}"))
                    for days in RECTIFY_QUICK_DAYS
                ]
            )
        case Kind.DEPARTMENT:
            for department_id, name in view.departments:
                rows.append([(name, _cb(view, "pick", str(department_id)))])
            paging = []
            if view.page > 0:
                paging.append(
                    (text("button.result.prev_page"), _cb(view, "page", str(view.page - 1)))
                )
            if view.page + 1 < view.pages:
                paging.append(
                    (text("button.result.next_page"), _cb(view, "page", str(view.page + 1)))
                )
            if paging:
                rows.append(paging)
        case Kind.EVIDENCE:
            assert view.draft is not None and view.item is not None
            withdraw = [
                (text("button.result.withdraw", n=n), _cb(view, "drop", str(f.id)))
                for n, f in enumerate(view.item.files, 1)
            ]
            rows.extend(withdraw[i : i + 3] for i in range(0, len(withdraw), 3))
            last = step.item == len(view.draft.items) - 1 or view.editing
            label = "button.result.to_summary" if last else "button.result.next_item"
            rows.append([(text(label), _cb(view, "next"))])
        case Kind.SUMMARY:
            assert view.draft is not None
            rows.append([(text("button.result.submit"), _cb(view, "submit"))])
            rows.append(
                [
                    (text("button.result.edit_date"), _cb(view, "edit", step=Step(Kind.DATE))),
                    (text("button.result.edit_method"), _cb(view, "edit", step=Step(Kind.METHOD))),
                ]
            )
            edits = [
                (
                    text("button.result.edit_item", n=item.position + 1),
                    _cb(view, "edit", step=Step(Kind.CATEGORY, item.position)),
                )
                for item in view.draft.items
            ]
            rows.extend(edits[i : i + 3] for i in range(0, len(edits), 3))
    rows.append(
        [
            (text("button.result.back"), _cb(view, "back")),
            (text("button.result.cancel"), _cb(view, "cancel")),
        ]
    )
    return rows


def screen_text(view: View, services: Services) -> str:
    for limit in (300, 100, 30):
        body = render(
            "results/step.j2",
            v=view,
            d=view.dossier,
            r=view.draft,
            step=view.step,
            item=view.item,
            evidence_mb=evidence_limit_mb(services),
            summary_limit=limit,
        )
        if len(body) <= TELEGRAM_TEXT_LIMIT:
            break
    return body[:TELEGRAM_TEXT_LIMIT]


def evidence_limit_mb(services: Services) -> int:
    return min(services.settings.evidence_max_mb, services.settings.telegram_file_max_mb)


async def present(
    view: View,
    *,
    bot: Bot,
    chat_id: int,
    state: FSMContext,
    services: Services,
    message_id: int | None = None,
) -> int | None:
    """Show whatever the service decided (in `message_id`, else the dialog's own message) and
    remember where the dialog is."""
    if message_id is None:
        message_id = (await state.get_data()).get("message_id")
    if view.screen is Screen.STEP:
        assert view.step is not None and view.dossier is not None
        shown = await show(bot, chat_id, message_id, screen_text(view, services), keyboard(view))
        await state.set_state(ResultDialog.active)
        await state.update_data(
            inspection_id=view.dossier.inspection_id,
            step=view.step.key,
            message_id=shown,
            editing=view.editing,
        )
        return shown
    await state.set_state(None)
    if view.screen is Screen.SUBMITTED:
        assert view.dossier is not None and view.draft is not None
        body = render("results/submitted.j2", d=view.dossier, r=view.draft)
    elif view.screen is Screen.LEFT:
        assert view.dossier is not None
        body = render("results/left.j2", d=view.dossier)
        resume = ResultCb(action="open", inspection_id=view.dossier.inspection_id).pack()
        return await show(
            bot, chat_id, message_id, body, [[(text("button.result.resume"), resume)]]
        )
    else:
        body = render("results/refused.j2", reason=view.reason, d=view.dossier)
    return await show(bot, chat_id, message_id, body)


# --- callbacks ------------------------------------------------------------------------------------


async def on_result_button(
    query: CallbackQuery,
    callback_data: ResultCb,
    bot: Bot,
    state: FSMContext,
    services: Services,
    identity: Identity,
) -> None:
    """Any button of the dialog: re-checked against the draft and this chat's dialog state."""
    message = await button_message(query)
    if message is None:
        return
    data = await state.get_data()
    chat_id = message.chat.id
    inspection_id = callback_data.inspection_id
    same = data.get("inspection_id") == inspection_id and data.get("message_id")
    action = callback_data.action
    if action != "open" and same and data.get("message_id") != message.message_id:
        await query.answer(text("result.answer.old_message"), show_alert=True)
        return
    if (
        action in ("pick", "next", "back", "page", "drop")
        and same
        and data.get("step") != callback_data.step
    ):
        await query.answer(text("result.answer.double_tap"))  # a second tap of a past step
        return
    turn = Turn(
        inspection_id=inspection_id,
        identity=identity,
        now=services.clock.now(),
        tz=services.settings.timezone,
        editing=bool(data.get("editing")) if same else False,
    )
    step = callback_data.step
    view: View | None
    async with services.db.session() as session:
        match action:
            case "open":
                resume = data.get("step") if data.get("inspection_id") == inspection_id else None
                view = await open_dialog(session, turn, resume=resume)
            case "pick":
                view = await answer(session, turn, step=step, value=callback_data.value)
            case "next":
                view = await next_step(session, turn, step=step)
            case "drop" if callback_data.value.isdigit():
                view = await withdraw_evidence(
                    session, turn, step=step, evidence_id=int(callback_data.value)
                )
            case "page":
                page = int(callback_data.value) if callback_data.value.isdigit() else 0
                view = await show_step(session, turn, step=step, page=page)
            case "edit":
                view = await show_step(session, replace(turn, editing=True), step=step)
            case "back":
                view = await go_back(session, turn, step=step) or await leave(session, turn)
            case "cancel":
                view = await leave(session, turn)
            case "submit":
                view = await submit(session, turn, office_admins=services.settings.office_admins)
            case _:
                view = View(Screen.REFUSED, reason="not_yours")
    if view.screen is Screen.REFUSED:
        await query.answer(
            render("results/refused.j2", reason=view.reason, d=None), show_alert=True
        )
        return
    if action == "open" and data.get("message_id") and data.get("message_id") != message.message_id:
        await drop_keyboard(bot, chat_id, data.get("message_id"))
    await present(
        view,
        bot=bot,
        chat_id=chat_id,
        message_id=message.message_id,
        state=state,
        services=services,
    )
    await query.answer(_answer_text(view))


def _answer_text(view: View) -> str:
    if view.screen is Screen.SUBMITTED:
        return text("result.answer.submitted")
    if view.hint:
        return text("result.answer.see_hint")
    if view.notice:
        return text(f"result.notice.{view.notice}")
    return ""


# --- typed input, photos and files ----------------------------------------------------------------


def _turn(data: dict[str, Any], services: Services, identity: Identity) -> Turn:
    """The dialog as this chat's state remembers it."""
    return Turn(
        inspection_id=int(data.get("inspection_id", 0)),
        identity=identity,
        now=services.clock.now(),
        tz=services.settings.timezone,
        editing=bool(data.get("editing")),
    )


async def on_dialog_text(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """A typed answer (a date, findings, a department name...) to the current step."""
    data = await state.get_data()
    async with services.db.session() as session:
        view = await answer(
            session,
            _turn(data, services, identity),
            step=str(data.get("step", "")),
            value=message.text or "",
            typed=True,
        )
    await present(view, bot=bot, chat_id=message.chat.id, state=state, services=services)


async def on_dialog_file(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """A photo or document: evidence for the current item (checked for size, then hashed)."""
    data = await state.get_data()
    step = str(data.get("step", ""))
    parsed = Step.parse(step)
    turn = _turn(data, services, identity)
    limit_mb = evidence_limit_mb(services)
    if message.photo:
        photo = message.photo[-1]
        kind, file_id, unique_id, name, size = (
            "photo",
            photo.file_id,
            photo.file_unique_id,
            None,
            photo.file_size,
        )
    else:
        assert message.document is not None
        document = message.document
        kind, file_id, unique_id = "document", document.file_id, document.file_unique_id
        name, size = document.file_name, document.file_size
    hint = ""
    if parsed is None or parsed.kind is not Kind.EVIDENCE:
        hint = "evidence_here"
    elif size is not None and size > limit_mb * 1024 * 1024:
        hint = "evidence_too_big"
    if hint:
        async with services.db.session() as session:
            view = await show_step(session, turn, step=step, hint=hint)
    else:
        downloaded = await bot.download(file_id)
        assert downloaded is not None
        content = downloaded.read()
        evidence = EvidenceFile(
            kind=kind,
            file_id=file_id,
            file_unique_id=unique_id,
            file_name=name,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
        )
        async with services.db.session() as session:
            view = await add_evidence(session, turn, step=step, file=evidence)
    await present(view, bot=bot, chat_id=message.chat.id, state=state, services=services)


async def on_dialog_other(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """Stickers, voice, locations...: the current step again, with a hint."""
    data = await state.get_data()
    async with services.db.session() as session:
        view = await show_step(
            session,
            _turn(data, services, identity),
            step=str(data.get("step", "")),
            hint="unsupported",
        )
    await present(view, bot=bot, chat_id=message.chat.id, state=state, services=services)


# --- co-signature ---------------------------------------------------------------------------------


async def on_cosign_button(
    query: CallbackQuery,
    callback_data: CoSignCb,
    bot: Bot,
    state: FSMContext,
    services: Services,
    identity: Identity,
) -> None:
    """确认无误 / 有异议 (asks for the comment) / show (the summary with both buttons)."""
    message = await button_message(query)
    if message is None:
        return
    action = callback_data.action
    async with services.db.session() as session:
        if action == "confirm":
            reply = await cosign(
                session,
                cosign_id=callback_data.cosign_id,
                identity=identity,
                confirm=True,
                now=services.clock.now(),
                tz=services.settings.timezone,
                office_admins=services.settings.office_admins,
            )
        else:
            reply = await cosign_card(session, cosign_id=callback_data.cosign_id, identity=identity)
    if reply.answer is Answer.REFUSED or (reply.answer is Answer.STALE and not reply.text):
        await query.answer(text(f"result.refusal.{reply.reason}"), show_alert=True)
        return
    if action == "confirm":
        await show(bot, message.chat.id, message.message_id, reply.text)
        await query.answer(
            text(
                "result.answer.cosigned" if reply.answer is Answer.DONE else "result.answer.already"
            )
        )
        return
    if action == "object":
        await state.set_state(CoSignDialog.comment)
        await state.update_data(cosign_id=callback_data.cosign_id, message_id=message.message_id)
        body = render("results/object_ask.j2", summary=reply.text)
        rows = [
            [
                (
                    text("button.result.cancel"),
                    CoSignCb(action="show", cosign_id=callback_data.cosign_id).pack(),
                )
            ]
        ]
        await show(bot, message.chat.id, message.message_id, body, rows)
        await query.answer()
        return
    await state.set_state(None)
    await show(
        bot,
        message.chat.id,
        message.message_id,
        reply.text,
        cosign_buttons(callback_data.cosign_id),
    )
    await query.answer()


async def on_objection_text(
    message: Message, bot: Bot, state: FSMContext, services: Services, identity: Identity
) -> None:
    """The comment of 有异议."""
    data = await state.get_data()
    cosign_id = int(data.get("cosign_id", 0))
    async with services.db.session() as session:
        reply = await cosign(
            session,
            cosign_id=cosign_id,
            identity=identity,
            confirm=False,
            comment=message.text or "",
            now=services.clock.now(),
            tz=services.settings.timezone,
        )
    await typed_decision_shown(
        message, bot, state, reply, too_short="comment_short", refusals="result.refusal"
    )


async def on_objection_other(message: Message) -> None:
    """Anything but text while we wait for the objection's comment."""
    await message.answer(text("result.refusal.comment_short"))


def create_router() -> Router:
    router = Router(name="results")
    router.callback_query.register(on_result_button, ResultCb.filter(), flags={"role": "inspector"})
    router.callback_query.register(on_cosign_button, CoSignCb.filter(), flags={"role": "inspector"})
    private = Router(name="results-private")
    private.message.filter(F.chat.type == "private")
    not_command = ~F.text.startswith("/")
    private.message.register(
        on_dialog_text,
        StateFilter(ResultDialog.active),
        F.text,
        not_command,
        flags={"role": "inspector"},
    )
    private.message.register(
        on_dialog_file,
        StateFilter(ResultDialog.active),
        F.photo | F.document,
        flags={"role": "inspector"},
    )
    private.message.register(
        on_dialog_other, StateFilter(ResultDialog.active), not_command, flags={"role": "inspector"}
    )
    private.message.register(
        on_objection_text,
        StateFilter(CoSignDialog.comment),
        F.text,
        not_command,
        flags={"role": "inspector"},
    )
    private.message.register(
        on_objection_other,
        StateFilter(CoSignDialog.comment),
        not_command,
        flags={"role": "inspector"},
    )
    router.include_router(private)
    return router
