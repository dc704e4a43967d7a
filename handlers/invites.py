"""/invite: the office gets one-time invite links, as a message and an .xlsx."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aiogram import Bot, Router
from aiogram.exceptions import TelegramForbiddenError
from aiogram.filters import Command, CommandObject
from aiogram.types import FSInputFile, Message

from bot.app import Services
from bot.invites import InviteRequest, parse_invite_args, write_invites
from bot.people import Identity, InviteProblem, issue_invites
from bot.render import render


async def invite(
    message: Message, command: CommandObject, bot: Bot, identity: Identity, services: Services
) -> None:
    """/invite [代码] | /invite liaison 代码 [姓名] | /invite office [姓名]"""
    request: InviteRequest | None = parse_invite_args(command.args or "")
    if request is None:
        await message.answer(render("invites/usage.j2"))
        return
    try:
        async with services.db.session() as session:
            issued = await issue_invites(
                session,
                role=request.role,
                actor=f"tg:{identity.tg_user_id}",
                now=services.clock.now(),
                ttl_days=services.settings.invite_ttl_days,
                department_code=request.department_code,
                name=request.name,
            )
    except InviteProblem as problem:
        await message.answer(render("invites/problem.j2", key=problem.key, **problem.params))
        return
    me = await bot.me()
    username = me.username or ""
    summary = render(
        "invites/issued.j2",
        issued=issued,
        username=username,
        request=request,
        tz=services.settings.timezone,
    )
    with tempfile.TemporaryDirectory(prefix="dsr-invite-") as folder:
        path = write_invites(
            issued,
            username,
            Path(folder) / render("invites/file_name.j2"),
            services.settings.timezone,
        )
        document = FSInputFile(path, filename=path.name)
        # Codes are secrets: they go to the office member privately, never to a group.
        try:
            await bot.send_message(identity.tg_user_id, summary)
            if issued:
                await bot.send_document(identity.tg_user_id, document)
        except TelegramForbiddenError:
            await message.answer(render("invites/open_private.j2"))
            return
    if message.chat.type != "private":
        await message.answer(render("invites/sent_privately.j2", count=len(issued)))


def create_router() -> Router:
    router = Router(name="invites")
    router.message.register(invite, Command("invite"), flags={"role": "office"})
    return router
