"""What the demo page needs from the Bot API fake: the command menu a user sees in a chat
(Telegram's scope order) and the "typing…" a client shows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    BotCommandScopeChatMember,
)

from bot.fakeapi import FakeTelegram, RateLimits, run_fake_server

USER, OTHER, GROUP = 501, 502, -100500


class Ticks:
    """A hand-moved rate clock: the typing indicator's five seconds without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def fake(ticks: Ticks) -> FakeTelegram:
    world = FakeTelegram(limits=RateLimits.disabled(), rate_clock=ticks)
    world.register_user(USER, "张三", language_code="zh-hans")
    world.register_user(OTHER, "李四")
    world.register_group(GROUP, "工作群", members=[USER, OTHER])
    return world


@pytest.fixture
async def served(fake: FakeTelegram) -> AsyncIterator[tuple[Bot, aiohttp.ClientSession]]:
    async with run_fake_server(fake) as url:
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
        async with aiohttp.ClientSession(url) as http:
            try:
                yield bot, http
            finally:
                await bot.session.close()


def commands(*names: str) -> list[BotCommand]:
    return [BotCommand(command=n, description=f"{n} 的说明") for n in names]


async def test_menu_follows_telegrams_scope_order(
    fake: FakeTelegram, served: tuple[Bot, aiohttp.ClientSession]
) -> None:
    bot, http = served
    assert fake.menu_commands(USER, USER) == []
    await bot.set_my_commands(commands("start", "help"))
    assert [c["command"] for c in fake.menu_commands(GROUP, USER)] == ["start", "help"]
    await bot.set_my_commands(commands("start", "task"), scope=BotCommandScopeAllPrivateChats())
    await bot.set_my_commands(commands("bind"), scope=BotCommandScopeAllGroupChats())
    await bot.set_my_commands(commands("draw"), scope=BotCommandScopeChat(chat_id=GROUP))
    await bot.set_my_commands(
        commands("void"), scope=BotCommandScopeChatMember(chat_id=GROUP, user_id=USER)
    )
    await bot.set_my_commands(
        commands("me"), scope=BotCommandScopeAllPrivateChats(), language_code="zh"
    )

    def menu(chat: int, user: int) -> list[str]:
        return [c["command"] for c in fake.menu_commands(chat, user)]

    assert menu(USER, USER) == ["me"]  # a zh-hans user gets the zh list
    assert menu(OTHER, OTHER) == ["start", "task"]  # no language: the list for everyone
    assert menu(GROUP, USER) == ["void"]  # chat_member beats chat
    assert menu(GROUP, OTHER) == ["draw"]  # chat beats all_group_chats
    await bot.delete_my_commands(scope=BotCommandScopeChat(chat_id=GROUP))
    assert menu(GROUP, OTHER) == ["bind"]

    async with http.get(f"/_fake/commands?user_id={USER}") as response:
        body = await response.json()
    assert [c["command"] for c in body["result"]] == ["me"]
    async with http.get(f"/_fake/commands?user_id={OTHER}&chat_id={GROUP}") as response:
        assert [c["command"] for c in (await response.json())["result"]] == ["bind"]


async def test_typing_lasts_five_seconds_or_until_the_bot_speaks(
    fake: FakeTelegram, ticks: Ticks, served: tuple[Bot, aiohttp.ClientSession]
) -> None:
    bot, http = served
    chat = fake.chat(USER)
    assert fake.current_action(chat) is None
    await bot.send_chat_action(USER, "typing")
    assert fake.current_action(chat) == "typing"
    async with http.get(f"/_fake/chats?user_id={USER}") as response:
        listed = {c["id"]: c for c in (await response.json())["result"]}
    assert listed[USER]["action"] == "typing" and listed[GROUP]["action"] is None
    ticks.now += 5.5
    assert fake.current_action(chat) is None
    assert chat.last_action == "typing"  # what was sent last is still recorded

    await bot.send_chat_action(USER, "upload_document")
    fake.user_message(USER, USER, "你好")  # the user's own message does not end it
    assert fake.current_action(chat) == "upload_document"
    await bot.send_message(USER, "收到")
    assert fake.current_action(chat) is None


async def test_notify_changed_wakes_waiters(fake: FakeTelegram) -> None:
    waiter = asyncio.create_task(fake.wait_changed(5.0))
    await asyncio.sleep(0)
    fake.notify_changed()
    assert await waiter is True
