"""/notices, the office's 问责 / 免责 on a 失职问责单, and /holidays (the office's calendar file).

Decision flow (handlers/notices.mmd): [问责] [免责] → the reasons of that list, 其他理由 and 返回 →
a reason records the decision; 其他理由 asks for a typed reason (a reply, which Telegram
delivers to the bot even in a group with privacy mode on).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from aiogram import Bot, F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    Document,
    ForceReply,
    Message,
)

from bot.app import Services
from bot.chats import binding_of
from bot.clock import local_date
from bot.duties import calendar_status, load_calendar, load_holidays
from bot.notices import (
    ACCOUNTABILITY,
    DECISION_WORDS,
    Listed,
    NoticeProblem,
    Scope,
    decide,
    decision_buttons,
    list_pending,
    one_notice,
    reason_buttons,
    reason_text,
)
from bot.outbox import Keyboard
from bot.people import Identity
from bot.render import render, text
from bot.telegram import NoticeCb
from handlers.results import edit_in_place, markup
from storage.tabular import FileProblem, open_rows

SHOW_LIMIT = 5
"""Undecided 失职问责单 offered as buttons under the office's /notices."""


class ReasonDialog(StatesGroup):
    typing = State()


class HolidayDialog(StatesGroup):
    waiting_file = State()


def _is_group(message: Message) -> bool:
    return message.chat.type != "private"


def _card(listed: Listed, group: bool) -> str:
    """The 失职问责单 as the office sees it in this chat (no target details in a group)."""
    if group:
        return render(
            "notices/accountability_group.j2", notice=listed.notice, duty=listed.duty.public()
        )
    return render("notices/accountability.j2", notice=listed.notice, duty=listed.duty)


# --- /notices -----------------------------------------------------------------------------------


async def notices_list(message: Message, identity: Identity, services: Services) -> None:
    """/notices: pending 三单 of the caller's scope (in a group: the group's department)."""
    settings = services.settings
    group = _is_group(message)
    async with services.db.read() as session:
        if group:
            binding = await binding_of(session, message.chat.id)
            if binding is None:
                await message.answer(render("notices/not_bound.j2"))
                return
            scope = (
                Scope(everything=True)
                if binding.kind == "office"
                else Scope(departments=(binding.department_code or "",))
            )
        else:
            scope = Scope(
                everything=identity.is_office,
                departments=tuple(identity.liaison_departments),
                inspector_ids=tuple(identity.inspector_ids),
            )
        found = await list_pending(
            session,
            scope,
            calendar=await load_calendar(session),
            today=local_date(services.clock, settings.timezone),
            tz=settings.timezone,
        )
    buttons: Keyboard = []
    if identity.is_office and scope.everything:
        waiting = [
            item
            for item in found.items
            if item.notice.kind == ACCOUNTABILITY and item.notice.decision is None
        ]
        buttons = [
            [
                (
                    text("notice.button.show", number=item.notice.number),
                    NoticeCb(action="show", notice_id=item.notice.id).pack(),
                )
            ]
            for item in waiting[:SHOW_LIMIT]
        ]
    items = [Listed(i.notice, i.duty.public()) for i in found.items] if group else found.items
    await message.answer(
        render(
            "notices/list.j2",
            items=items,
            counts=found.counts,
            undecided=found.undecided,
            total=found.total,
            group=group,
        ),
        reply_markup=markup(buttons),
    )


# --- the decision -------------------------------------------------------------------------------


async def _pending_card(services: Services, notice_id: int) -> tuple[Listed | None, str | None]:
    """The notice if it still waits for a decision, else the answer key explaining why not."""
    settings = services.settings
    async with services.db.read() as session:
        listed = await one_notice(
            session,
            notice_id,
            calendar=await load_calendar(session),
            today=local_date(services.clock, settings.timezone),
            tz=settings.timezone,
        )
    if listed is None or listed.notice.kind != ACCOUNTABILITY:
        return None, "not_found"
    if listed.notice.decision is not None:
        return listed, "already_decided"
    return listed, None


async def _refuse(callback: CallbackQuery, key: str, listed: Listed | None = None) -> None:
    """A short alert; a decided card pressed again is brought up to date (buttons removed)."""
    await callback.answer(text(f"notice.answer.{key}"), show_alert=True)
    decided = listed is not None and listed.notice.decision is not None
    if decided and listed is not None and isinstance(callback.message, Message):
        await edit_in_place(callback.message, _card(listed, _is_group(callback.message)))


async def choose(callback: CallbackQuery, callback_data: NoticeCb, services: Services) -> None:
    """问责 / 免责 / 返回: switch the card's buttons."""
    listed, problem = await _pending_card(services, callback_data.notice_id)
    if problem is not None:
        await _refuse(callback, problem, listed)
        return
    if callback_data.action == "back":
        rows = decision_buttons(callback_data.notice_id)
        answer = text("notice.answer.back")
    else:
        decision = "h" if callback_data.action == "hold" else "e"
        rows = reason_buttons(callback_data.notice_id, decision)
        answer = text("notice.answer.pick_reason", decision=DECISION_WORDS[decision])
    if isinstance(callback.message, Message):
        await callback.message.edit_reply_markup(reply_markup=markup(rows))
    await callback.answer(answer)


async def show(callback: CallbackQuery, callback_data: NoticeCb, services: Services) -> None:
    """处理 问〔…〕 under /notices: the card again, with its decision buttons."""
    listed, problem = await _pending_card(services, callback_data.notice_id)
    if problem is not None or listed is None:
        await _refuse(callback, problem or "not_found")
        return
    if isinstance(callback.message, Message):
        await callback.message.answer(
            _card(listed, _is_group(callback.message)),
            reply_markup=markup(decision_buttons(listed.notice.id)),
        )
    await callback.answer()


async def _decide(
    services: Services,
    identity: Identity,
    *,
    notice_id: int,
    decision: str,
    reason: str,
    typed: bool,
) -> tuple[Listed | None, str | None]:
    settings = services.settings
    try:
        async with services.db.session() as session:
            listed = await decide(
                session,
                notice_id=notice_id,
                decision=decision,
                reason=reason,
                typed=typed,
                actor=f"tg:{identity.tg_user_id}",
                now=services.clock.now(),
                today=local_date(services.clock, settings.timezone),
                calendar=await load_calendar(session),
                tz=settings.timezone,
            )
    except NoticeProblem as problem:
        return None, problem.key
    return listed, None


async def pick(
    callback: CallbackQuery, callback_data: NoticeCb, services: Services, identity: Identity
) -> None:
    """A reason from the list: the decision is recorded and sent to the department."""
    reason = reason_text(callback_data.decision, callback_data.reason)
    if reason is None:
        await _refuse(callback, "not_found")
        return
    listed, problem = await _decide(
        services,
        identity,
        notice_id=callback_data.notice_id,
        decision=callback_data.decision,
        reason=reason,
        typed=False,
    )
    if problem is not None or listed is None:
        current, _ = await _pending_card(services, callback_data.notice_id)
        await _refuse(callback, problem or "not_found", current)
        return
    if isinstance(callback.message, Message):
        await edit_in_place(callback.message, _card(listed, _is_group(callback.message)))
    await callback.answer(text("notice.answer.decided", decision=listed.notice.decision))


async def ask_reason(
    callback: CallbackQuery, callback_data: NoticeCb, services: Services, state: FSMContext
) -> None:
    """其他理由: ask for the reason as a reply."""
    listed, problem = await _pending_card(services, callback_data.notice_id)
    if problem is not None or listed is None or callback_data.decision not in DECISION_WORDS:
        await _refuse(callback, problem or "not_found", listed)
        return
    card = callback.message if isinstance(callback.message, Message) else None
    await state.set_state(ReasonDialog.typing)
    await state.update_data(
        notice_id=listed.notice.id,
        decision=callback_data.decision,
        card_chat=card.chat.id if card else None,
        card_message=card.message_id if card else None,
    )
    if card is not None:
        await card.answer(
            render(
                "notices/reason_prompt.j2",
                number=listed.notice.number,
                decision=DECISION_WORDS[callback_data.decision],
            ),
            # Not selective: nobody is mentioned and the card is not a reply, so a selective
            # ForceReply would open the reply field for no one.
            # https://core.telegram.org/bots/api#forcereply
            reply_markup=ForceReply(),
        )
    await callback.answer(text("notice.answer.type_reason"))


async def reason_typed(
    message: Message, bot: Bot, services: Services, identity: Identity, state: FSMContext
) -> None:
    """The typed reason: record the decision, and update the card it was asked from."""
    reason = (message.text or "").strip()
    if not reason:
        await message.answer(text("notice.answer.reason_empty"))
        return
    data = await state.get_data()
    await state.clear()
    listed, problem = await _decide(
        services,
        identity,
        notice_id=int(data["notice_id"]),
        decision=str(data["decision"]),
        reason=reason,
        typed=True,
    )
    if problem is not None or listed is None:
        await message.answer(text(f"notice.answer.{problem or 'not_found'}"))
        return
    await message.answer(
        render("notices/reason_recorded.j2", notice=listed.notice, duty=listed.duty)
    )
    if data.get("card_chat") is not None and data.get("card_message") is not None:
        await bot.edit_message_text(
            _card(listed, _is_group(message)),
            chat_id=int(data["card_chat"]),
            message_id=int(data["card_message"]),
        )


async def reason_cancel(message: Message, state: FSMContext) -> None:
    """/cancel while a reason is asked for."""
    await state.clear()
    await message.answer(render("notices/reason_cancelled.j2"))


# --- /holidays ----------------------------------------------------------------------------------


async def _office_chat(message: Message, services: Services) -> bool:
    if message.chat.type == "private":
        return True
    async with services.db.read() as session:
        binding = await binding_of(session, message.chat.id)
    if binding is not None and binding.kind == "office":
        return True
    await message.answer(render("notices/holidays_wrong_chat.j2"))
    return False


async def holidays_start(message: Message, services: Services, state: FSMContext) -> None:
    """/holidays: where the calendar stands, and a request for the file."""
    if not await _office_chat(message, services):
        return
    settings = services.settings
    async with services.db.read() as session:
        status = await calendar_status(
            session,
            local_date(services.clock, settings.timezone),
            settings.holiday_warning_days,
        )
    await state.set_state(HolidayDialog.waiting_file)
    await message.answer(render("notices/holidays_status.j2", status=status, asking=True))


async def holidays_with_caption(
    message: Message, bot: Bot, services: Services, identity: Identity, state: FSMContext
) -> None:
    """A file sent with the caption /holidays."""
    if await _office_chat(message, services):
        await state.clear()
        await _load(message, bot, services, identity)


async def holidays_file(
    message: Message, bot: Bot, services: Services, identity: Identity, state: FSMContext
) -> None:
    """The file /holidays asked for."""
    await state.clear()
    await _load(message, bot, services, identity)


async def holidays_not_a_file(message: Message) -> None:
    """Anything but a document while the file is awaited."""
    await message.answer(render("notices/holidays_not_a_file.j2"))


async def holidays_cancel(message: Message, state: FSMContext) -> None:
    """/cancel while the file is awaited."""
    await state.clear()
    await message.answer(render("notices/holidays_cancelled.j2"))


def _aligned(rows: Iterator[tuple[int, list[str]]]) -> Iterator[Sequence[str]]:
    """Cells with blank rows filled in, so parse_holiday_rows counts rows as the sheet shows."""
    count = 0
    for number, cells in rows:
        while count < number - 1:
            count += 1
            yield []
        count += 1
        yield cells


async def _load(message: Message, bot: Bot, services: Services, identity: Identity) -> None:
    document: Document | None = message.document
    assert document is not None
    settings = services.settings
    limit_mb = min(settings.telegram_file_max_mb, settings.import_max_mb)
    if document.file_size is not None and document.file_size > limit_mb * 1024 * 1024:
        await message.answer(
            render("notices/holidays_problem.j2", key="telegram_too_big", params={"mb": limit_mb})
        )
        return
    name = Path(document.file_name or "holidays.xlsx").name
    with tempfile.TemporaryDirectory(prefix="dsr-holidays-") as folder:
        path = Path(folder) / name
        await bot.download(document, destination=path)
        try:
            source = open_rows(path, settings.import_max_bytes)
            rows = list(_aligned(source.rows))
        except FileProblem as problem:
            await message.answer(
                render("notices/holidays_problem.j2", key=problem.key, params=problem.params)
            )
            return
    async with services.db.session() as session:
        report = await load_holidays(
            session, rows, actor=f"tg:{identity.tg_user_id}", now=services.clock.now()
        )
    await message.answer(render("notices/holidays_report.j2", report=report))


def create_router() -> Router:
    router = Router(name="notices")
    router.message.register(notices_list, Command("notices"), flags={"role": "known"})
    office = {"role": "office"}
    router.callback_query.register(show, NoticeCb.filter(F.action == "show"), flags=office)
    router.callback_query.register(
        choose, NoticeCb.filter(F.action.in_({"hold", "exempt", "back"})), flags=office
    )
    router.callback_query.register(pick, NoticeCb.filter(F.action == "pick"), flags=office)
    router.callback_query.register(ask_reason, NoticeCb.filter(F.action == "other"), flags=office)
    router.message.register(reason_cancel, Command("cancel"), StateFilter(ReasonDialog.typing))
    router.message.register(
        reason_typed,
        StateFilter(ReasonDialog.typing),
        F.text,
        ~F.text.startswith("/"),
        flags=office,
    )

    router.message.register(holidays_with_caption, Command("holidays"), F.document, flags=office)
    router.message.register(holidays_start, Command("holidays"), flags=office)
    router.message.register(
        holidays_cancel, Command("cancel"), StateFilter(HolidayDialog.waiting_file)
    )
    router.message.register(
        holidays_file, StateFilter(HolidayDialog.waiting_file), F.document, flags=office
    )
    router.message.register(
        holidays_not_a_file, StateFilter(HolidayDialog.waiting_file), ~F.text.startswith("/")
    )
    return router
