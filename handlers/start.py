"""Binding by invite link, /help and /me."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import Message

from bot.app import Services
from bot.assignments import deliver_waiting
from bot.chats import binding_of
from bot.people import Identity, Redeem, load_identity, redeem_invite
from bot.render import render
from bot.sender import requeue_forbidden


async def start_with_code(message: Message, command: CommandObject, services: Services) -> None:
    """Redeem an invite: bind this Telegram account to a directory entry."""
    assert message.from_user is not None
    user = message.from_user
    code = (command.args or "").strip()
    async with services.db.session() as session:
        # Opening the bot is what messages refused with 403 were waiting for: send them again.
        await requeue_forbidden(session, user.id, services.clock.now())
        result = await redeem_invite(
            session,
            code=code,
            tg_user_id=user.id,
            display_name=user.full_name,
            username=user.username,
            now=services.clock.now(),
        )
        # Assignments that waited for this inspector to open the bot go out now (issue #4).
        await deliver_waiting(
            session, tg_user_id=user.id, now=services.clock.now(), tz=services.settings.timezone
        )
    if result.status is Redeem.BOUND:
        async with services.db.read() as session:
            identity = await load_identity(session, user.id, services.settings.office_admins)
        await message.answer(render("start/bound.j2", grant=result.grant, identity=identity))
    else:
        await message.answer(render("start/code_problem.j2", status=result.status.value))


async def start_plain(message: Message, identity: Identity, services: Services) -> None:
    """Greet a known person; tell a stranger how to get an invitation."""
    async with services.db.session() as session:
        await requeue_forbidden(session, message.chat.id, services.clock.now())
    if identity.known:
        await message.answer(render("start/welcome_back.j2", identity=identity))
    else:
        await message.answer(render("start/stranger.j2"))


async def help_(message: Message, identity: Identity) -> None:
    """The caller's commands, by role and chat type."""
    private = message.chat.type == "private"
    await message.answer(
        render("common/help.j2", roles=[r.value for r in identity.roles], private=private)
    )


async def me(message: Message, identity: Identity, services: Services) -> None:
    """Who the bot thinks you are (and, in a group, what the group is bound to)."""
    binding = None
    if message.chat.type != "private":
        async with services.db.read() as session:
            binding = await binding_of(session, message.chat.id)
    await message.answer(render("common/me.j2", identity=identity, binding=binding))


def create_router() -> Router:
    router = Router(name="start")
    router.message.register(start_with_code, CommandStart(deep_link=True), F.chat.type == "private")
    router.message.register(start_plain, CommandStart(), F.chat.type == "private")
    router.message.register(help_, Command("help"))
    router.message.register(me, Command("me"))
    return router
