"""Wiring: the bot, the dispatcher and the services they share. Tests and the CLI use the
same factories."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import SimpleEventIsolation
from aiogram.fsm.storage.redis import RedisStorage
from aiogram.types import BotCommand, BotCommandScopeAllGroupChats, BotCommandScopeAllPrivateChats

from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.render import text
from storage.db import Database
from storage.fsm import DatabaseStorage

log = logging.getLogger(__name__)

PRIVATE_COMMANDS = (
    "start",
    "help",
    "me",
    "tasks",
    "review",
    "notices",
    "import",
    "invite",
    "template",
    "holidays",
    # issue 3
    "task",
    "draw",
    "void",
    "verify",
    "merge",
    "record",
)
GROUP_COMMANDS = (
    "help",
    "me",
    "bind",
    "notices",
    "import",
    "invite",
    # issue 3
    "tasks",
    "draw",
    "void",
    "verify",
    "merge",
    "record",
)


@dataclass
class Services:
    """What handlers get injected: settings, the database, the clock."""

    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)


def create_bot(settings: Settings) -> Bot:
    token = settings.bot_token.get_secret_value() if settings.bot_token else ""
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base))
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def create_storage(services: Services) -> BaseStorage:
    if services.settings.redis_url:
        return RedisStorage.from_url(services.settings.redis_url)
    return DatabaseStorage(services.db, services.clock)


def create_dispatcher(services: Services, storage: BaseStorage | None = None) -> Dispatcher:
    from handlers import setup_routers
    from handlers.middlewares import IdentityMiddleware

    storage = storage or create_storage(services)
    # One update at a time per chat and person (a double tap is two updates): Redis locks
    # across processes; otherwise a lock per process, and the database storage upserts.
    isolation = (
        storage.create_isolation() if isinstance(storage, RedisStorage) else SimpleEventIsolation()
    )
    dispatcher = Dispatcher(storage=storage, events_isolation=isolation, services=services)
    identity = IdentityMiddleware(services)
    dispatcher.update.outer_middleware(identity)
    dispatcher.message.middleware(identity.guard)
    dispatcher.callback_query.middleware(identity.guard)
    dispatcher.include_router(setup_routers())
    return dispatcher


async def register_commands(bot: Bot) -> None:
    """The command menu, per chat type, in Chinese."""
    private = [
        BotCommand(command=c, description=text(f"commands.private.{c}")) for c in PRIVATE_COMMANDS
    ]
    group = [BotCommand(command=c, description=text(f"commands.group.{c}")) for c in GROUP_COMMANDS]
    await bot.set_my_commands(private, scope=BotCommandScopeAllPrivateChats())
    await bot.set_my_commands(group, scope=BotCommandScopeAllGroupChats())
