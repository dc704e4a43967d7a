"""Binding group chats to the office or a department; following supergroup migrations; the
bot being added back to a group."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import JOIN_TRANSITION, ChatMemberUpdatedFilter, Command, CommandObject
from aiogram.types import ChatMemberUpdated, Message

from bot.app import Services
from bot.chats import BindProblem, bind_group, migrate_group
from bot.people import Identity
from bot.render import render
from bot.sender import requeue_forbidden

log = logging.getLogger(__name__)


async def bind(
    message: Message, command: CommandObject, identity: Identity, services: Services
) -> None:
    """/bind office | /bind department <代码>"""
    parts = (command.args or "").split()
    kind = {
        "office": "office",
        "协调办": "office",
        "department": "department",
        "部门": "department",
    }.get(parts[0].lower() if parts else "", "")
    code = parts[1] if len(parts) > 1 else None
    try:
        async with services.db.session() as session:
            binding = await bind_group(
                session,
                chat_id=message.chat.id,
                title=message.chat.title or "",
                kind=kind or "?",
                department_code=code,
                actor_tg=identity.tg_user_id,
                now=services.clock.now(),
            )
    except BindProblem as problem:
        await message.answer(render("groups/bind_problem.j2", key=problem.key, **problem.params))
        return
    await message.answer(render("groups/bound.j2", binding=binding))


async def migrated(message: Message, services: Services) -> None:
    """The group became a supergroup: move its binding to the new chat id."""
    assert message.migrate_to_chat_id is not None
    async with services.db.session() as session:
        moved = await migrate_group(
            session,
            old_chat_id=message.chat.id,
            new_chat_id=message.migrate_to_chat_id,
            now=services.clock.now(),
        )
    log.info(
        "group %s migrated to %s (bound: %s)", message.chat.id, message.migrate_to_chat_id, moved
    )


async def migrated_from(message: Message, services: Services) -> None:
    """The same migration seen from the new supergroup (may arrive first)."""
    assert message.migrate_from_chat_id is not None
    async with services.db.session() as session:
        await migrate_group(
            session,
            old_chat_id=message.migrate_from_chat_id,
            new_chat_id=message.chat.id,
            now=services.clock.now(),
        )


async def bot_added(event: ChatMemberUpdated, services: Services) -> None:
    """The bot was added (back) to a group: send again what the group refused with 403."""
    async with services.db.session() as session:
        requeued = await requeue_forbidden(session, event.chat.id, services.clock.now())
    log.info("bot added to group %s; %d refused messages queued again", event.chat.id, requeued)


def create_router() -> Router:
    router = Router(name="groups")
    router.message.filter(F.chat.type.in_({"group", "supergroup"}))
    router.message.register(bind, Command("bind"), flags={"role": "office"})
    router.message.register(migrated, F.migrate_to_chat_id)
    router.message.register(migrated_from, F.migrate_from_chat_id)
    router.my_chat_member.filter(F.chat.type.in_({"group", "supergroup"}))
    router.my_chat_member.register(bot_added, ChatMemberUpdatedFilter(JOIN_TRANSITION))
    return router
