"""Who is calling, and may they do this? (no business logic here)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.flags import get_flag
from aiogram.types import CallbackQuery, Message, TelegramObject, User

from bot.app import Services
from bot.people import Identity, load_identity
from bot.render import render
from storage.models import Role

log = logging.getLogger(__name__)
Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class IdentityMiddleware(BaseMiddleware):
    """Outer: loads the caller's roles once per update. Inner (`guard`): enforces a handler's
    `role` flag with a short refusal."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is not None:
            async with self.services.db.read() as session:
                data["identity"] = await load_identity(
                    session, user.id, self.services.settings.office_admins
                )
        else:
            data["identity"] = Identity(tg_user_id=0)
        return await handler(event, data)

    async def guard(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        needed: str | None = get_flag(data, "role")
        identity: Identity = data["identity"]
        if needed is None or _allowed(identity, needed):
            return await handler(event, data)
        log.info(
            "refused %s to user %s (needs %s)",
            get_flag(data, "action") or "action",
            identity.tg_user_id,
            needed,
        )
        refusal = render("common/refused.j2", needed=needed, known=identity.known)
        if isinstance(event, Message):
            await event.answer(refusal)
        elif isinstance(event, CallbackQuery):
            await event.answer(refusal, show_alert=True)
        return None


def _allowed(identity: Identity, needed: str) -> bool:
    if needed == "known":
        return identity.known
    return identity.has(Role(needed))
