"""/draw, 执行抽取/放弃, /void, /verify, /merge, and the liaison's department-list button."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.app import Services
from bot.chats import binding_of
from bot.draws import (
    DrawProblem,
    abandon_draw,
    commit_draw,
    commitment_buttons,
    draw_state,
    execute_draw,
    merge_draw,
    send_department_list,
    verify_draw,
    void_draw,
)
from bot.people import Identity
from bot.render import render, text
from bot.tasks import TaskProblem, parse_mode
from bot.telegram import DrawCb

log = logging.getLogger(__name__)


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
    try:
        async with services.db.session() as session:
            commitment = await commit_draw(
                session,
                task_id=task_id,
                actor=f"tg:{identity.tg_user_id}",
                now=services.clock.now(),
                mode=mode,
                # Typed in the office group, this reply is the announcement itself.
                post_to_office=place == "private",
            )
    except DrawProblem as problem:
        await message.answer(problem.message())
        return
    note = None
    if place == "private":
        note = text("draw.note.posted" if commitment.office_chats else "draw.note.no_office_group")
    await message.answer(
        render("draws/commitment.j2", c=commitment, note=note),
        reply_markup=_markup(commitment_buttons(commitment.draw_id)),
    )


def _markup(rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=label, callback_data=data) for label, data in row]
            for row in rows
        ]
    )


async def _edit(callback: CallbackQuery, body: str) -> None:
    if isinstance(callback.message, Message):
        try:
            await callback.message.edit_text(body, reply_markup=None)
        except TelegramBadRequest as error:
            if "not modified" not in error.message:
                raise


async def run_or_drop(
    callback: CallbackQuery, callback_data: DrawCb, services: Services, identity: Identity
) -> None:
    """执行抽取 (step 2: reveal the seed, draw, announce) or 放弃 a committed draw."""
    actor = f"tg:{identity.tg_user_id}"
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


async def void(
    message: Message, command: CommandObject, services: Services, identity: Identity
) -> None:
    """/void DRAW_ID 原因: the draw and its record stay visible; its inspections end."""
    draw_id, reason = _number(command.args)
    if draw_id is None:
        await message.answer(render("draws/usage.j2", cmd="void"))
        return
    if await _office_place(message, services) is None:
        return
    try:
        async with services.db.session() as session:
            voided = await void_draw(
                session,
                draw_id=draw_id,
                reason=reason,
                actor=f"tg:{identity.tg_user_id}",
                now=services.clock.now(),
            )
    except DrawProblem as problem:
        await message.answer(problem.message())
        return
    await message.answer(render("draws/voided_reply.j2", v=voided))


async def verify(message: Message, command: CommandObject, services: Services) -> None:
    """/verify DRAW_ID: re-run the stored record; 一致, or what differs."""
    draw_id, _rest = _number(command.args)
    if draw_id is None:
        await message.answer(render("draws/usage.j2", cmd="verify"))
        return
    try:
        async with services.db.read() as session:
            result = await verify_draw(session, draw_id=draw_id)
    except DrawProblem as problem:
        await message.answer(problem.message())
        return
    await message.answer(
        render("draws/verify.j2", v=result, private=message.chat.type == "private")
    )


async def merge(
    message: Message, command: CommandObject, services: Services, identity: Identity
) -> None:
    """/merge DRAW_ID: join this draw's inspections with other tasks' overlapping ones."""
    draw_id, _rest = _number(command.args)
    if draw_id is None:
        await message.answer(render("draws/usage.j2", cmd="merge"))
        return
    if await _office_place(message, services) is None:
        return
    try:
        async with services.db.session() as session:
            report = await merge_draw(
                session,
                draw_id=draw_id,
                actor=f"tg:{identity.tg_user_id}",
                now=services.clock.now(),
                tz=services.settings.timezone,
                office_admins=services.settings.office_admins,
            )
    except DrawProblem as problem:
        await message.answer(problem.message())
        return
    await message.answer(
        render("draws/merge_report.j2", r=report, private=message.chat.type == "private")
    )


def create_router() -> Router:
    router = Router(name="draws")
    router.message.register(draw, Command("draw"), flags={"role": "office"})
    router.message.register(void, Command("void"), flags={"role": "office"})
    router.message.register(verify, Command("verify"), flags={"role": "known"})
    router.message.register(merge, Command("merge"), flags={"role": "office"})
    router.callback_query.register(
        run_or_drop, DrawCb.filter(F.act.in_({"run", "drop"})), flags={"role": "office"}
    )
    router.callback_query.register(
        department_list, DrawCb.filter(F.act == "list"), flags={"role": "liaison"}
    )
    return router
