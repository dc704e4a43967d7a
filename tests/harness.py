"""End-to-end harness: the real dispatcher and bot, talking HTTP to the local Bot API fake.

Tests act as people (`send`, `upload`, `press`) and read what the bot showed them, like
aiogram_dialog's tests: "the message says X and has a button Y".
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update

from bot.app import Services, create_bot, create_dispatcher
from bot.clock import FrozenClock
from bot.config import Settings
from bot.fakeapi import FakeTelegram, RateLimits, StoredMessage, run_fake_server
from bot.sender import Sender
from bot.telegram import AiogramTransport
from storage.db import Database

OFFICE = 1000  # in OFFICE_ADMINS of the test settings


@dataclass
class Harness:
    fake: FakeTelegram
    bot: Bot
    dispatcher: Dispatcher
    services: Services
    sender: Sender
    seen: dict[int, int] = field(default_factory=dict)

    async def deliver(self) -> int:
        """Let the outbox sender deliver everything due (what the running bot does each second)."""
        return await self.sender.drain()

    async def feed(self, update: dict[str, Any]) -> None:
        await self.dispatcher.feed_update(
            self.bot, Update.model_validate(update, context={"bot": self.bot})
        )

    def person(self, user_id: int, name: str, *, started: bool = True) -> int:
        self.fake.register_user(user_id, name, started=started)
        return user_id

    def group(self, chat_id: int, title: str, *members: int) -> int:
        self.fake.register_group(chat_id, title, members=members)
        return chat_id

    async def send(
        self, user_id: int, text: str, chat_id: int | None = None
    ) -> list[StoredMessage]:
        """A person types (in their private chat by default); returns the bot's new messages."""
        chat = user_id if chat_id is None else chat_id
        self.mark(chat)
        await self.feed(self.fake.user_message(user_id, chat, text))
        return self.new(chat)

    async def upload(
        self,
        user_id: int,
        data: bytes,
        file_name: str,
        *,
        caption: str | None = None,
        chat_id: int | None = None,
    ) -> list[StoredMessage]:
        chat = user_id if chat_id is None else chat_id
        self.mark(chat)
        await self.feed(self.fake.user_document(user_id, chat, data, file_name, caption=caption))
        return self.new(chat)

    async def press(self, user_id: int, message: StoredMessage, label: str) -> list[StoredMessage]:
        self.mark(message.chat_id)
        await self.feed(self.fake.press_button(user_id, message, message.callback_data(label)))
        return self.new(message.chat_id)

    def mark(self, chat_id: int) -> None:
        self.seen[chat_id] = (
            len(self.fake.sent_by_bot(chat_id)) if chat_id in self.fake.chats else 0
        )

    def new(self, chat_id: int) -> list[StoredMessage]:
        """Messages the bot sent to this chat since the last mark (edits show their final text)."""
        return self.fake.sent_by_bot(chat_id)[self.seen.get(chat_id, 0) :]


def unique(messages: list[StoredMessage]) -> StoredMessage:
    """Exactly one reply, or the test fails showing what there was."""
    assert len(messages) == 1, [m.text for m in messages]
    return messages[0]


def text_of(message: StoredMessage) -> str:
    """What the person reads: the text, or a document's caption."""
    return message.text or message.caption or ""


def unique_text(messages: list[StoredMessage]) -> str:
    return text_of(unique(messages))


MARKUP_SHOWN = re.compile(r"</?(?:b|i|u|s|code|pre|a)\b[^>]*>|&(?:lt|gt|amp|quot);")
"""HTML a person would read as literal characters: what double escaping leaves behind."""


def markup_shown(fake: FakeTelegram) -> list[str]:
    """Every text or caption the bot ever showed (edits included) that reads as raw HTML."""
    shown: list[str] = []
    for chat in list(fake.chats.values()):
        for message in chat.messages.values():
            if not message.from_bot:
                continue
            versions = [*message.history, {"text": message.text, "caption": message.caption}]
            for version in versions:
                for key in ("text", "caption"):
                    value = version.get(key)
                    if isinstance(value, str) and MARKUP_SHOWN.search(value):
                        shown.append(value)
    return shown


@asynccontextmanager
async def running(db: Database, settings: Settings, clock: FrozenClock) -> AsyncIterator[Harness]:
    fake = FakeTelegram(
        token=settings.bot_token.get_secret_value() if settings.bot_token else "",
        bot_username="dsr_test_bot",
        limits=RateLimits.disabled(),
    )
    async with run_fake_server(fake) as base_url:
        settings.telegram_api_base = base_url
        services = Services(settings=settings, db=db, clock=clock)
        bot = create_bot(settings)
        dispatcher = create_dispatcher(services)
        try:
            sender = Sender(db, AiogramTransport(bot), clock, office_admins=settings.office_admins)
            yield Harness(fake, bot, dispatcher, services, sender)
        finally:
            await dispatcher.storage.close()
            await bot.session.close()
