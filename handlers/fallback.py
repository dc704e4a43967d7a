"""What nobody else handled: strangers get directions, unknown commands a hint."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message

from bot.people import Identity
from bot.render import render


async def unknown_command(message: Message, identity: Identity) -> None:
    """A command we do not have."""
    await message.answer(render("common/unknown_command.j2", known=identity.known))


async def anything_else(message: Message, identity: Identity) -> None:
    """Free text outside a dialog."""
    template = "common/no_dialog.j2" if identity.known else "start/stranger.j2"
    await message.answer(render(template))


def create_router() -> Router:
    router = Router(name="fallback")
    router.message.filter(F.chat.type == "private")
    router.message.register(unknown_command, F.text.startswith("/"))
    router.message.register(anything_else)
    return router
