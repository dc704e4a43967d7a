"""The offline Bot API fake must behave like Telegram for a real aiogram client, or tests lie."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)

from bot.fakeapi import FakeTelegram, FakeTelegramError, RateLimits, parse_html, run_fake_server

USER = 1001
OTHER = 1002
GROUP = -4001


class ManualClock:
    """Deterministic time so flood-limit windows can be crossed without sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def png(width: int = 2, height: int = 3) -> bytes:
    """A genuinely valid PNG, so photo validation is exercised with real bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    """One button per row, as most of the bot's keyboards are laid out."""
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d)] for t, d in pairs]
    )


@pytest.fixture
def fake() -> FakeTelegram:
    world = FakeTelegram(limits=RateLimits.disabled())
    world.register_user(USER, "Alice", username="alice")
    world.register_user(OTHER, "Bob", started=False)
    world.register_group(GROUP, "Inspectors", members=[USER, OTHER])
    return world


@pytest.fixture
async def base_url(fake: FakeTelegram) -> AsyncIterator[str]:
    async with run_fake_server(fake) as url:
        yield url


@pytest.fixture
async def bot(fake: FakeTelegram, base_url: str) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(base_url))
    client = Bot(fake.token, session=session)
    try:
        yield client
    finally:
        await session.close()


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=base_url) as session:
        yield session


async def test_get_me(bot: Bot, fake: FakeTelegram) -> None:
    me = await bot.get_me()
    assert me.id == fake.bot_id
    assert me.is_bot
    assert me.username == fake.bot_username
    assert [c.method for c in fake.calls] == ["getMe"]


async def test_send_message_with_keyboard_then_edit(bot: Bot, fake: FakeTelegram) -> None:
    sent = await bot.send_message(
        USER, "<b>Task</b> 任务 🔍 ready", parse_mode="HTML", reply_markup=keyboard(("OK", "ok:1"))
    )
    assert sent.text == "Task 任务 🔍 ready"
    assert sent.entities is not None
    assert (sent.entities[0].type, sent.entities[0].offset, sent.entities[0].length) == (
        "bold",
        0,
        4,
    )
    assert sent.reply_markup is not None
    assert sent.reply_markup.inline_keyboard[0][0].callback_data == "ok:1"

    edited = await bot.edit_message_text(
        "Done", chat_id=USER, message_id=sent.message_id, reply_markup=keyboard(("Undo", "u"))
    )
    assert isinstance(edited, Message)
    assert edited.text == "Done"
    assert edited.edit_date is not None

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "Done", chat_id=USER, message_id=sent.message_id, reply_markup=keyboard(("Undo", "u"))
        )
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(
            chat_id=USER, message_id=sent.message_id, reply_markup=keyboard(("Undo", "u"))
        )

    stored = fake.last_bot_message(USER)
    assert stored.message_id == sent.message_id
    assert stored.text == "Done"
    assert stored.button_texts() == ["Undo"]
    assert stored.history[0]["text"] == "Task 任务 🔍 ready"

    # Telegram drops the keyboard when an edit omits reply_markup.
    await bot.edit_message_text("Final", chat_id=USER, message_id=sent.message_id)
    assert fake.last_bot_message(USER).inline_keyboard == []

    await bot.delete_message(USER, sent.message_id)
    assert fake.messages(USER)[-1].deleted
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER, message_id=sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(USER, sent.message_id)


async def test_invalid_html_and_lengths_are_rejected(bot: Bot) -> None:
    cases = {
        "<b>unclosed": 'Can\'t find end tag corresponding to start tag "b"',
        "1 < 2": 'Unsupported start tag "" at byte offset 2',
        "line<br>break": 'Unsupported start tag "br"',
        "<b>x</i>": 'expected "</b>", found "</i>"',
        "x</b>": "Unexpected end tag",
    }
    for text, detail in cases.items():
        with pytest.raises(TelegramBadRequest, match="can't parse entities") as info:
            await bot.send_message(USER, text, parse_mode="HTML")
        assert detail in info.value.message
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(USER, "   ")
    with pytest.raises(TelegramBadRequest, match="unsupported parse_mode"):
        await bot.send_message(USER, "x", parse_mode="BBCode")
    ok = await bot.send_message(USER, "1 &lt; 2 &amp; <i>ok</i>", parse_mode="HTML")
    assert ok.text == "1 < 2 & ok"
    with pytest.raises(TelegramBadRequest, match=r"Character '\.' is reserved"):
        await bot.send_message(USER, "Done.", parse_mode="MarkdownV2")
    md = await bot.send_message(USER, r"*Done*\.", parse_mode="MarkdownV2")
    assert md.text == "Done."
    assert md.entities is not None and md.entities[0].type == "bold"


def test_parse_html_entities_use_utf16_offsets() -> None:
    text, entities = parse_html(
        '😀 <a href="https://x.y/?a=1&amp;b=2">link</a> '
        '<pre><code class="language-python">x = 1</code></pre>'
    )
    assert text == "😀 link x = 1"
    assert entities == [
        {"type": "text_link", "offset": 3, "length": 4, "url": "https://x.y/?a=1&b=2"},
        {"type": "pre", "offset": 8, "length": 5, "language": "python"},
    ]


async def test_private_chat_rules_surface_as_aiogram_errors(bot: Bot, fake: FakeTelegram) -> None:
    with pytest.raises(TelegramForbiddenError, match="bot can't initiate conversation"):
        await bot.send_message(OTHER, "hello")
    fake.block_bot(USER)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(USER, "hello")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(424242, "hello")

    # Writing to the bot again (pressing Restart) unblocks and reports my_chat_member.
    fake.user_message(USER, USER, "hi")
    kinds = [next(k for k in u if k != "update_id") for u in fake.pending_updates()]
    assert kinds == ["my_chat_member", "my_chat_member", "message"]
    for upd in fake.pending_updates():
        Update.model_validate(upd, context={"bot": bot})
    assert (await bot.send_message(USER, "welcome back")).text == "welcome back"


async def test_flood_limits_answer_429() -> None:
    clock = ManualClock()
    fake = FakeTelegram(clock=clock, rate_clock=clock)
    fake.register_user(USER, "Alice")
    fake.register_group(GROUP, "Inspectors", members=[USER])
    async with run_fake_server(fake) as url:
        session = AiohttpSession(api=TelegramAPIServer.from_base(url))
        bot = Bot(fake.token, session=session)
        try:
            first = await bot.send_message(USER, "one")
            with pytest.raises(TelegramRetryAfter) as info:
                await bot.send_message(USER, "two")
            assert info.value.retry_after == 1
            assert fake.throttled_429 == 1
            assert fake.limiter.refused == {"chat": 1}
            # Edits and callback answers are not flood-counted.
            await bot.edit_message_text("one!", chat_id=USER, message_id=first.message_id)
            clock.now += 1.0  # exactly one window later the first send no longer counts
            await bot.send_message(USER, "two")

            for _ in range(20):
                clock.now += 1.0
                await bot.send_message(GROUP, "group spam")
            clock.now += 1.0
            with pytest.raises(TelegramRetryAfter) as info:
                await bot.send_message(GROUP, "one too many")
            assert info.value.retry_after == 40
            assert fake.throttled_429 == 2
            assert fake.limiter.refused == {"chat": 1, "group": 1}
            assert fake.calls[-1].status == 429
        finally:
            await session.close()


async def test_global_limit_across_chats() -> None:
    clock = ManualClock()
    fake = FakeTelegram(
        limits=RateLimits(global_per_second=3, group_per_minute=None, chat_per_second=None),
        rate_clock=clock,
    )
    for uid in range(1, 5):
        fake.register_user(uid, f"U{uid}")
    async with run_fake_server(fake) as url:
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
        try:
            for uid in range(1, 4):
                await bot.send_message(uid, "hi")
            with pytest.raises(TelegramRetryAfter):
                await bot.send_message(4, "hi")
            assert fake.limiter.refused == {"overall": 1}
        finally:
            await bot.session.close()


async def test_document_upload_get_file_download_roundtrip(bot: Bot, fake: FakeTelegram) -> None:
    payload = "检查表 checklist\n".encode() * 100
    sent = await bot.send_document(
        GROUP, BufferedInputFile(payload, filename="名单.xlsx"), caption="<i>list</i>"
    )
    assert sent.document is not None
    assert sent.document.file_name == "名单.xlsx"
    assert sent.document.file_size == len(payload)
    assert sent.caption == "<i>list</i>"
    info = await bot.get_file(sent.document.file_id)
    assert info.file_path is not None
    downloaded = await bot.download_file(info.file_path)
    assert downloaded is not None
    assert downloaded.read() == payload

    logged = fake.calls_to("sendDocument")[0].params
    assert logged["document"] == {"filename": "名单.xlsx", "size": len(payload)}
    assert set(logged) == {"chat_id", "document", "caption"}

    again = await bot.send_document(USER, sent.document.file_id)
    assert again.document is not None
    assert again.document.file_unique_id == sent.document.file_unique_id

    photo = await bot.send_photo(USER, BufferedInputFile(png(4, 5), filename="p.png"))
    assert photo.photo is not None
    assert (photo.photo[-1].width, photo.photo[-1].height) == (4, 5)
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(USER, BufferedInputFile(b"not an image", filename="p.png"))
    with pytest.raises(TelegramBadRequest, match="can't use file of type Photo as Document"):
        await bot.send_document(USER, photo.photo[-1].file_id)
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_document(USER, "no-such-file-id")

    upd = fake.user_document(USER, USER, b"%PDF-1.4 report", "report.pdf", caption="my report")
    doc = Update.model_validate(upd, context={"bot": bot}).message
    assert doc is not None and doc.document is not None
    assert doc.document.mime_type == "application/pdf"
    file = await bot.get_file(doc.document.file_id)
    assert file.file_path is not None
    stream = await bot.download_file(file.file_path)
    assert stream is not None and stream.read() == b"%PDF-1.4 report"


async def test_get_updates_long_polls_and_confirms_by_offset(bot: Bot, fake: FakeTelegram) -> None:
    fake.user_message(USER, USER, "/start payload")
    fake.user_message(USER, GROUP, "/report@fake_dsr_bot now")
    updates = await bot.get_updates()
    assert [u.update_id for u in updates] == [1, 2]
    first = updates[0].message
    assert first is not None and first.text == "/start payload"
    assert first.entities is not None
    assert (first.entities[0].type, first.entities[0].length) == ("bot_command", 6)
    second = updates[1].message
    assert second is not None and second.entities is not None
    assert second.entities[0].length == len("/report@fake_dsr_bot")

    assert len(await bot.get_updates(offset=2)) == 1
    assert fake.next_update_id == 3
    assert [u.update_id for u in await bot.get_updates(offset=3)] == []

    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(offset=3, timeout=5))
    await asyncio.sleep(0.2)
    fake.user_message(USER, USER, "late")
    woke = await poll
    assert [u.update_id for u in woke] == [3]
    assert loop.time() - started < 2

    started = loop.time()
    assert await bot.get_updates(offset=4, timeout=1) == []
    assert loop.time() - started >= 0.9


async def test_concurrent_get_updates_conflict(bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(bot.get_updates(timeout=1))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await first
    assert await second == []


async def test_migration_produces_both_service_messages(bot: Bot, fake: FakeTelegram) -> None:
    new_id = -1009876543210
    to_upd, from_upd = fake.migrate_group_to_supergroup(GROUP, new_id)
    updates = await bot.get_updates()
    assert [u.update_id for u in updates] == [to_upd["update_id"], from_upd["update_id"]]
    old_msg, new_msg = updates[0].message, updates[1].message
    assert old_msg is not None and new_msg is not None
    assert old_msg.chat.id == GROUP and old_msg.migrate_to_chat_id == new_id
    assert new_msg.chat.id == new_id and new_msg.chat.type == "supergroup"
    assert new_msg.migrate_from_chat_id == GROUP

    with pytest.raises(TelegramMigrateToChat) as info:
        await bot.send_message(GROUP, "hello")
    assert info.value.migrate_to_chat_id == new_id
    assert (await bot.send_message(new_id, "hello")).chat.id == new_id
    with pytest.raises(FakeTelegramError):
        fake.user_message(USER, GROUP, "old group is gone")


async def test_feed_update_through_dispatcher(bot: Bot, fake: FakeTelegram) -> None:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer("Pick one", reply_markup=keyboard(("Yes", "pick:yes")))

    @router.callback_query(F.data.startswith("pick:"))
    async def picked(query: CallbackQuery) -> None:
        await query.answer("Saved", show_alert=True)
        assert isinstance(query.message, Message)
        await query.message.edit_text("You picked yes")

    dp = Dispatcher()
    dp.include_router(router)

    upd = fake.user_message(USER, USER, "/start")
    await dp.feed_update(bot, Update.model_validate(upd, context={"bot": bot}))
    prompt = fake.last_bot_message(USER)
    assert prompt.text == "Pick one"

    press = fake.press_button(USER, prompt, prompt.callback_data("Yes"))
    await dp.feed_update(bot, Update.model_validate(press, context={"bot": bot}))
    query_id = press["callback_query"]["id"]
    assert fake.callback_answer(query_id) == {"text": "Saved", "show_alert": True}
    assert fake.message(USER, prompt.message_id).text == "You picked yes"
    with pytest.raises(FakeTelegramError, match="no button"):
        fake.press_button(USER, prompt, "pick:yes")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query_id)


async def test_polling_end_to_end(bot: Bot, fake: FakeTelegram) -> None:
    router = Router()

    @router.message(F.text)
    async def echo(message: Message) -> None:
        await message.answer(f"echo: {message.text}")

    dp = Dispatcher()
    dp.include_router(router)
    polling = asyncio.create_task(
        dp.start_polling(bot, polling_timeout=1, handle_signals=False, close_bot_session=False)
    )
    try:
        fake.user_message(USER, USER, "ping")
        sent = await fake.wait_for_bot_messages(USER, 1, within=5)
        assert sent[0].text == "echo: ping"
    finally:
        await dp.stop_polling()
        await polling


async def test_commands_per_scope(bot: Bot, fake: FakeTelegram) -> None:
    await bot.set_my_commands([BotCommand(command="start", description="Start")])
    await bot.set_my_commands(
        [BotCommand(command="report", description="Report")],
        scope=BotCommandScopeChat(chat_id=GROUP),
    )
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    scoped = await bot.get_my_commands(scope=BotCommandScopeChat(chat_id=GROUP))
    assert [c.command for c in scoped] == ["report"]
    assert fake.my_commands() == [{"command": "start", "description": "Start"}]
    assert fake.my_commands({"type": "chat", "chat_id": GROUP})[0]["command"] == "report"
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])


async def test_group_admin_rules_pin_chat_and_leave(bot: Bot, fake: FakeTelegram) -> None:
    msg = await bot.send_message(GROUP, "Agenda")
    with pytest.raises(TelegramBadRequest, match="not enough rights"):
        await bot.pin_chat_message(GROUP, msg.message_id)
    user_upd = fake.user_message(USER, GROUP, "hello")
    with pytest.raises(TelegramBadRequest, match="message can't be deleted"):
        await bot.delete_message(GROUP, user_upd["message"]["message_id"])

    fake.set_bot_admin(GROUP)
    assert await bot.pin_chat_message(GROUP, msg.message_id)
    chat = await bot.get_chat(GROUP)
    assert chat.pinned_message is not None and chat.pinned_message.text == "Agenda"
    pin_notice = fake.messages(GROUP)[-1]
    assert pin_notice.is_service and pin_notice.service is not None
    assert pin_notice.service["pinned_message"]["message_id"] == msg.message_id
    member = await bot.get_chat_member(GROUP, fake.bot_id)
    assert member.status == "administrator"

    assert await bot.send_chat_action(GROUP, "typing")
    assert fake.chat(GROUP).last_action == "typing"
    with pytest.raises(TelegramBadRequest, match="wrong parameter action"):
        await bot.send_chat_action(GROUP, "dancing")

    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.get_chat(OTHER)
    assert (await bot.get_chat(USER)).first_name == "Alice"

    fake.register_user(1003, "Carol")
    joined = fake.add_member(GROUP, 1003, announce=True)
    left_user = fake.remove_member(GROUP, OTHER, announce=True)
    assert joined is not None and left_user is not None
    joined_msg = Update.model_validate(joined, context={"bot": bot}).message
    assert joined_msg is not None and joined_msg.new_chat_members is not None
    left_msg = Update.model_validate(left_user, context={"bot": bot}).message
    assert left_msg is not None and left_msg.left_chat_member is not None

    assert await bot.leave_chat(GROUP)
    with pytest.raises(TelegramForbiddenError, match="bot is not a member of the group chat"):
        await bot.send_message(GROUP, "still here?")
    left = fake.pending_updates()[-1]
    parsed = Update.model_validate(left, context={"bot": bot}).my_chat_member
    assert parsed is not None and parsed.new_chat_member.status == "left"


async def test_raw_http_encodings_and_errors(
    http: aiohttp.ClientSession, fake: FakeTelegram
) -> None:
    async with http.post(
        f"/bot{fake.token}/sendMessage",
        json={
            "chat_id": USER,
            "text": "json body",
            "reply_markup": {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]},
        },
    ) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["ok"] is True
    assert body["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "a"

    async with http.post(
        f"/bot{fake.token}/sendmessage", data={"chat_id": str(USER), "text": "form body"}
    ) as resp:
        assert (await resp.json())["result"]["text"] == "form body"

    async with http.get(f"/bot{fake.token}/getMe") as resp:
        assert (await resp.json())["result"]["id"] == fake.bot_id

    async with http.post(f"/bot{fake.token}/fooBar") as resp:
        assert resp.status == 404
        assert await resp.json() == {
            "ok": False,
            "error_code": 404,
            "description": "Not Found: method not found",
        }
    async with http.post("/bot1:wrong/getMe") as resp:
        assert resp.status == 401
        assert (await resp.json())["description"] == "Unauthorized"

    async with http.post(
        f"/bot{fake.token}/sendMessage",
        json={
            "chat_id": USER,
            "text": "x",
            "reply_markup": {"inline_keyboard": [[{"text": "A", "callback_data": "a" * 65}]]},
        },
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["description"] == "Bad Request: BUTTON_DATA_INVALID"
    assert [c.method for c in fake.calls] == [
        "sendMessage",
        "sendMessage",
        "getMe",
        "fooBar",
        "getMe",
        "sendMessage",
    ]
    assert fake.calls[1].params == {"chat_id": USER, "text": "form body"}


async def test_wrong_token_and_unknown_method_via_aiogram(fake: FakeTelegram) -> None:
    async with run_fake_server(fake) as url:
        session = AiohttpSession(api=TelegramAPIServer.from_base(url))
        try:
            with pytest.raises(TelegramUnauthorizedError):
                await Bot("42:nope", session=session).get_me()
            with pytest.raises(TelegramNotFound):
                await Bot(fake.token, session=session).close()
        finally:
            await session.close()


async def test_control_routes_drive_a_conversation(
    http: aiohttp.ClientSession, bot: Bot, fake: FakeTelegram
) -> None:
    async with http.get("/_fake/chats", params={"user_id": USER}) as resp:
        chats = (await resp.json())["result"]
    assert {c["id"] for c in chats} == {USER, GROUP}

    async with http.post("/_fake/send", json={"user_id": USER, "text": "/start"}) as resp:
        update: dict[str, Any] = (await resp.json())["result"]
    assert update["message"]["entities"][0]["type"] == "bot_command"

    waiter = asyncio.create_task(
        http.get("/_fake/messages", params={"chat_id": USER, "after": fake.seq, "timeout": 5})
    )
    await asyncio.sleep(0.1)
    sent = await bot.send_message(USER, "Choose", reply_markup=keyboard(("Go", "go")))
    async with await waiter as resp:
        result = (await resp.json())["result"]
    assert [m["message"]["text"] for m in result["messages"]] == ["Choose"]
    assert result["messages"][0]["from_bot"] is True

    async with http.post(
        "/_fake/press",
        json={
            "user_id": USER,
            "chat_id": USER,
            "message_id": sent.message_id,
            "callback_data": "go",
        },
    ) as resp:
        press = (await resp.json())["result"]
    query_id = press["callback_query"]["id"]
    await bot.answer_callback_query(query_id, text="Going")
    async with http.get("/_fake/callback", params={"id": query_id}) as resp:
        assert (await resp.json())["result"]["answer"]["text"] == "Going"

    form = aiohttp.FormData()
    form.add_field("user_id", str(USER))
    form.add_field("chat_id", str(GROUP))
    form.add_field("kind", "photo")
    form.add_field("file", png(), filename="shot.png", content_type="image/png")
    async with http.post("/_fake/upload", data=form) as resp:
        uploaded = (await resp.json())["result"]
    file_id = uploaded["message"]["photo"][-1]["file_id"]
    async with http.get("/_fake/file", params={"file_id": file_id}) as resp:
        assert await resp.read() == png()

    async with http.post("/_fake/press", json={"user_id": USER, "message_id": 999}) as resp:
        assert resp.status == 400

    for upd in fake.pending_updates():
        Update.model_validate(upd, context={"bot": bot})


async def test_removing_and_adding_the_bot_back_to_a_group(bot: Bot, fake: FakeTelegram) -> None:
    fake.pending_updates()  # whatever the fixture queued
    removed = fake.kick_bot(GROUP, by_user_id=USER)
    with pytest.raises(TelegramForbiddenError, match="bot was kicked from the group chat"):
        await bot.send_message(GROUP, "hello")
    added = fake.add_bot(GROUP, by_user_id=USER)
    assert (await bot.send_message(GROUP, "back")).text == "back"
    changes = [
        Update.model_validate(u, context={"bot": bot}).my_chat_member for u in (removed, added)
    ]
    assert [(c.old_chat_member.status, c.new_chat_member.status) for c in changes if c] == [
        ("member", "kicked"),
        ("kicked", "member"),
    ]
