"""/draw, 执行抽取/放弃, /void, /verify, /merge, and the liaison's department-list button."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.filters import Command, CommandObject
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    Message,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.app import Services
from bot.chats import binding_of
from bot.draws import (
    DrawProblem,
    abandon_draw,
    commit_draw,
    commitment_buttons,
    commitment_shown,
    draw_state,
    execute_draw,
    merge_draw,
    record_json,
    send_department_list,
    verify_draw,
    void_draw,
)
from bot.people import Identity
from bot.render import render, text
from bot.tasks import TaskProblem, parse_mode
from bot.telegram import DrawCb
from handlers.results import edit_in_place, markup

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _office_place(message: Message, services: Services) -> str | None:
    """'private' or 'office' when the office may run draws here; otherwise says why."""
    if message.chat.type == "private":
        return "private"
    async with services.db.read() as session:
        binding = await binding_of(session, message.chat.id)
    if binding is not None and binding.kind == "office":
        return "office"
    await message.answer(text("draw.problem.wrong_chat"))
    return None


def _number(args: str | None) -> tuple[int | None, str]:
    """The leading number of a command's arguments, and the rest."""
    parts = (args or "").strip().split(maxsplit=1)
    if not parts or not parts[0].lstrip("#").isascii() or not parts[0].lstrip("#").isdigit():
        return None, ""
    return int(parts[0].lstrip("#")), parts[1] if len(parts) > 1 else ""


async def draw(
    message: Message, command: CommandObject, services: Services, identity: Identity
) -> None:
    """/draw TASK_ID [选派方式]: step 1, the commitment (buttons 执行抽取 / 放弃)."""
    task_id, rest = _number(command.args)
    if task_id is None:
        await message.answer(render("draws/usage.j2", cmd="draw"))
        return
    try:
        mode = parse_mode(rest).value if rest.strip() else None
    except TaskProblem as problem:
        await message.answer(render("draws/usage.j2", cmd="draw", problem=problem.message()))
        return
    place = await _office_place(message, services)
    if place is None:
        return
    commitment = await _attempt(
        message,
        services.db.session(),
        lambda session: commit_draw(
            session,
            task_id=task_id,
            actor=f"tg:{identity.tg_user_id}",
            now=services.clock.now(),
            mode=mode,
            # Typed in the office group, this reply is the announcement itself.
            post_to_office=place == "private",
            reply_chat=message.chat.id,
        ),
    )
    if commitment is None or commitment.reply is None:
        return
    shown = await message.answer(
        commitment.reply, reply_markup=markup(commitment_buttons(commitment.draw_id))
    )
    # The outbox can now retire this copy's buttons with the others'.
    async with services.db.session() as session:
        await commitment_shown(
            session,
            draw_id=commitment.draw_id,
            chat_id=message.chat.id,
            message_id=shown.message_id,
            now=services.clock.now(),
        )


async def _edit(callback: CallbackQuery, body: str) -> None:
    if isinstance(callback.message, Message):
        await edit_in_place(callback.message, body)


async def run_or_drop(
    callback: CallbackQuery, callback_data: DrawCb, services: Services, identity: Identity
) -> None:
    """执行抽取 (step 2: reveal the seed, draw, announce) or 放弃 a committed draw."""
    actor = f"tg:{identity.tg_user_id}"
    shown_in = callback.message.chat.id if isinstance(callback.message, Message) else None
    in_office = False
    async with services.db.read() as session:
        if isinstance(callback.message, Message) and callback.message.chat.type != "private":
            binding = await binding_of(session, callback.message.chat.id)
            in_office = binding is not None and binding.kind == "office"
        state = await draw_state(session, draw_id=callback_data.draw_id)
    if state is not None:
        await callback.answer(state.message(), show_alert=True)
        return
    if callback_data.act == "drop":
        try:
            async with services.db.session() as session:
                dropped = await abandon_draw(
                    session,
                    draw_id=callback_data.draw_id,
                    actor=actor,
                    now=services.clock.now(),
                    announce=not in_office,
                    shown_in=shown_in,
                )
        except DrawProblem as problem:
            await callback.answer(problem.message(), show_alert=True)
            return
        await _edit(callback, render("draws/abandoned.j2", a=dropped))
        await callback.answer()
        return
    # A big draw takes seconds (and its announcements more): answer the press at once.
    await callback.answer(text("draw.answer.executing"))
    try:
        async with services.db.session() as session:
            execution = await execute_draw(
                session,
                draw_id=callback_data.draw_id,
                actor=actor,
                now=services.clock.now(),
                detail_chat=identity.tg_user_id,
                tz=services.settings.timezone,
                office_admins=services.settings.office_admins,
                shown_in=shown_in,
            )
    except DrawProblem as problem:  # the other button, or another office member, was faster
        if isinstance(callback.message, Message):
            await callback.message.answer(problem.message())
        return
    template = "draws/drifted.j2" if execution.drifted else "draws/executed_short.j2"
    await _edit(callback, render(template, e=execution))


async def department_list(
    callback: CallbackQuery, callback_data: DrawCb, services: Services, identity: Identity
) -> None:
    """The department group's button: the department's list, privately, to its liaison."""
    try:
        async with services.db.session() as session:
            sent = await send_department_list(
                session,
                draw_id=callback_data.draw_id,
                department_index=callback_data.n,
                tg_user_id=identity.tg_user_id,
                liaison_departments=identity.liaison_departments,
                now=services.clock.now(),
            )
    except DrawProblem as problem:
        await callback.answer(problem.message(), show_alert=True)
        return
    key = "draw.answer.list_queued" if sent.queued else "draw.answer.list_again"
    await callback.answer(text(key), show_alert=True)


async def _draw_id(
    message: Message,
    command: CommandObject,
    services: Services,
    cmd: str,
    *,
    office: bool,
    usage: str = "draws/usage.j2",
) -> tuple[int, str] | None:
    """`/cmd DRAW_ID …`: the id and the rest, or None after the usage (or, for the office's
    commands, why not in this chat) was said."""
    draw_id, rest = _number(command.args)
    if draw_id is None:
        await message.answer(render(usage, cmd=cmd))
        return None
    if office and await _office_place(message, services) is None:
        return None
    return draw_id, rest


async def _attempt(
    message: Message,
    unit: AbstractAsyncContextManager[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
) -> T | None:
    """Run one service in `unit` (db.session() or db.read()); a DrawProblem is the answer."""
    try:
        async with unit as session:
            return await work(session)
    except DrawProblem as problem:
        await message.answer(problem.message())
        return None


async def void(
    message: Message, command: CommandObject, services: Services, identity: Identity
) -> None:
    """/void DRAW_ID 原因: the draw and its record stay visible; its inspections end."""
    args = await _draw_id(message, command, services, "void", office=True)
    if args is None:
        return
    draw_id, reason = args
    voided = await _attempt(
        message,
        services.db.session(),
        lambda session: void_draw(
            session,
            draw_id=draw_id,
            reason=reason,
            actor=f"tg:{identity.tg_user_id}",
            now=services.clock.now(),
        ),
    )
    if voided is not None:
        await message.answer(render("draws/voided_reply.j2", v=voided))


async def verify(message: Message, command: CommandObject, services: Services) -> None:
    """/verify DRAW_ID: re-run the stored record; 一致, or what differs."""
    args = await _draw_id(message, command, services, "verify", office=False)
    if args is None:
        return
    draw_id = args[0]
    result = await _attempt(
        message, services.db.read(), lambda session: verify_draw(session, draw_id=draw_id)
    )
    if result is not None:
        await message.answer(
            render("draws/verify.j2", v=result, private=message.chat.type == "private")
        )


async def merge(
    message: Message, command: CommandObject, services: Services, identity: Identity
) -> None:
    """/merge DRAW_ID: join this draw's inspections with other tasks' overlapping ones."""
    args = await _draw_id(message, command, services, "merge", office=True)
    if args is None:
        return
    draw_id = args[0]
    report = await _attempt(
        message,
        services.db.session(),
        lambda session: merge_draw(
            session,
            draw_id=draw_id,
            actor=f"tg:{identity.tg_user_id}",
            now=services.clock.now(),
            tz=services.settings.timezone,
            office_admins=services.settings.office_admins,
        ),
    )
    if report is not None:
        await message.answer(
            render("draws/merge_report.j2", r=report, private=message.chat.type == "private")
        )


async def record(
    message: Message, command: CommandObject, services: Services, identity: Identity, bot: Bot
) -> None:
    """/record DRAW_ID: the draw's full record as a JSON file (what `dsr draw record` writes),
    to verify with `dsr verify` or docs/draw.md's checker. It names every candidate, so asked
    in the office group it goes to the asker privately."""
    args = await _draw_id(
        message, command, services, "record", office=True, usage="draws/record_usage.j2"
    )
    if args is None:
        return
    draw_id = args[0]
    content = await _attempt(
        message, services.db.read(), lambda session: record_json(session, draw_id=draw_id)
    )
    if content is None:
        return
    document = BufferedInputFile(
        content.encode("utf-8"), filename=text("draw_record.file", draw_id=draw_id)
    )
    caption = render("draws/record_caption.j2", draw_id=draw_id)
    if message.chat.type == "private":
        await message.answer_document(document, caption=caption)
        return
    try:
        await bot.send_document(identity.tg_user_id, document, caption=caption)
        sent = True
    except (TelegramForbiddenError, TelegramBadRequest):  # never started the bot, or blocked it
        sent = False
    await message.answer(render("draws/record_sent.j2", draw_id=draw_id, sent=sent))


def create_router() -> Router:
    router = Router(name="draws")
    router.message.register(draw, Command("draw"), flags={"role": "office"})
    router.message.register(void, Command("void"), flags={"role": "office"})
    router.message.register(verify, Command("verify"), flags={"role": "known"})
    router.message.register(merge, Command("merge"), flags={"role": "office"})
    router.message.register(record, Command("record"), flags={"role": "office"})
    router.callback_query.register(
        run_or_drop, DrawCb.filter(F.act.in_({"run", "drop"})), flags={"role": "office"}
    )
    router.callback_query.register(
        department_list, DrawCb.filter(F.act == "list"), flags={"role": "liaison"}
    )
    return router
