"""In-memory world of the fake Bot API, shared by the HTTP layer and in-process test helpers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from bot.fakeapi.limits import TELEGRAM_LIMITS, RateLimiter, RateLimits

JSON = dict[str, Any]
UpdateDict = dict[str, Any]
MessageRef = Any
"""StoredMessage, API message dict, (chat_id, message_id) tuple or aiogram Message."""

DEFAULT_TOKEN = "123456789:AAFakeTokenForOfflineTestsAndDemos_0000"
GROUP_ANONYMOUS_BOT: JSON = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024
MESSAGE_EDIT_WINDOW = 48 * 3600


class ApiError(Exception):
    """Carries a Bot API failure so every layer can answer with Telegram's exact error shape."""

    def __init__(self, error_code: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def to_json(self) -> JSON:
        """Matches the body Telegram sends so aiogram maps it to the right exception."""
        body: JSON = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(message: str, parameters: JSON | None = None) -> ApiError:
    """Most failures are 400s; keeps call sites short."""
    return ApiError(400, f"Bad Request: {message}", parameters)


def forbidden(message: str) -> ApiError:
    """403s are how Telegram reports blocked users and lost membership."""
    return ApiError(403, f"Forbidden: {message}")


class FakeTelegramError(ValueError):
    """Flags a misconfigured test scenario, which must fail loudly, not look like an API error."""


def utf16_len(text: str) -> int:
    """Telegram measures entity offsets in UTF-16 code units, not code points."""
    return len(text.encode("utf-16-le")) // 2


def strip_none(value: Any) -> Any:
    """Telegram never echoes null fields, so stored markup must not contain them either."""
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value


_AUTO_ENTITY = re.compile(
    r"(?P<bot_command>(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?)"
    r"|(?P<url>\bhttps?://[^\s<>\"']+)"
    r"|(?P<mention>(?<![\w@])@[A-Za-z0-9_]{5,32}\b)"
    r"|(?P<hashtag>(?<![\w#])#\w*[^\W\d]\w*)"
)


def detect_entities(text: str) -> list[JSON]:
    """Reproduces the server-side entity detection Telegram applies to users' messages."""
    entities: list[JSON] = []
    for match in _AUTO_ENTITY.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        start, end = match.span()
        entities.append(
            {
                "offset": utf16_len(text[:start]),
                "length": utf16_len(text[start:end]),
                "type": kind,
            }
        )
    return entities


def image_size(data: bytes) -> tuple[int, int] | None:
    """Reads dimensions from common image headers, None when the bytes are not an image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data) or (1, 1)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return 1, 1
    if data[:2] == b"BM" and len(data) >= 26:
        return int.from_bytes(data[18:22], "little"), abs(
            int.from_bytes(data[22:26], "little", signed=True)
        )
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walks JPEG segments to the frame header, the only place dimensions live."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None


@dataclass
class FakeUser:
    """A Telegram account that may talk to the bot; `started`/`blocked` drive the 403 rules."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False
    started: bool = False
    blocked: bool = False

    def to_api(self) -> JSON:
        """Telegram's User object, omitting absent optional fields as Telegram does."""
        data: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code:
            data["language_code"] = self.language_code
        return data

    @property
    def full_name(self) -> str:
        """Display name the demo front end shows."""
        return " ".join(p for p in (self.first_name, self.last_name) if p)


@dataclass
class StoredFile:
    """Uploaded bytes plus the metadata Telegram reports for them."""

    file_id: str
    file_unique_id: str
    kind: Literal["document", "photo"]
    data: bytes
    file_path: str
    file_name: str | None = None
    mime_type: str | None = None
    width: int = 0
    height: int = 0

    @property
    def file_size(self) -> int:
        """Derived so it can never disagree with the stored bytes."""
        return len(self.data)

    def document_api(self) -> JSON:
        """Telegram's Document object."""
        data: JSON = {"file_id": self.file_id, "file_unique_id": self.file_unique_id}
        if self.file_name:
            data["file_name"] = self.file_name
        if self.mime_type:
            data["mime_type"] = self.mime_type
        data["file_size"] = self.file_size
        return data

    def photo_api(self) -> list[JSON]:
        """Telegram's PhotoSize array; one size is enough for `message.photo[-1]` code paths."""
        return [
            {
                "file_id": self.file_id,
                "file_unique_id": self.file_unique_id,
                "file_size": self.file_size,
                "width": self.width,
                "height": self.height,
            }
        ]

    def file_api(self) -> JSON:
        """Telegram's File object as returned by getFile."""
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.file_size,
            "file_path": self.file_path,
        }


@dataclass
class StoredMessage:
    """One message as Telegram holds it: current content after edits, plus fake-only bookkeeping."""

    message_id: int
    chat: JSON
    date: int
    sender: JSON | None
    from_bot: bool
    text: str | None = None
    entities: list[JSON] = field(default_factory=list)
    caption: str | None = None
    caption_entities: list[JSON] = field(default_factory=list)
    document: JSON | None = None
    photo: list[JSON] | None = None
    reply_markup: JSON | None = None
    reply_to: JSON | None = None
    sender_chat: JSON | None = None
    service: JSON | None = None
    edit_date: int | None = None
    deleted: bool = False
    seq: int = 0
    history: list[JSON] = field(default_factory=list)

    @property
    def chat_id(self) -> int:
        """Shortcut used all over tests."""
        return int(self.chat["id"])

    @property
    def is_service(self) -> bool:
        """Service messages (pins, migrations, joins) are not 'sent' content."""
        return self.service is not None

    @property
    def inline_keyboard(self) -> list[list[JSON]]:
        """Rows of inline buttons, empty when the message has none."""
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            rows: list[list[JSON]] = self.reply_markup["inline_keyboard"]
            return rows
        return []

    def button_texts(self) -> list[str]:
        """Flattened button labels, handy for asserting what the user sees."""
        return [str(b.get("text", "")) for row in self.inline_keyboard for b in row]

    def callback_data(self, button_text: str) -> str:
        """Finds what pressing a labelled button would send, so tests need not hardcode payloads."""
        for row in self.inline_keyboard:
            for button in row:
                if button.get("text") == button_text and "callback_data" in button:
                    return str(button["callback_data"])
        raise FakeTelegramError(
            f"no callback button {button_text!r} in message {self.message_id}: "
            f"{self.button_texts()}"
        )

    def to_api(self, *, with_reply: bool = True) -> JSON:
        """Telegram's Message object as the bot would receive it."""
        data: JSON = {"message_id": self.message_id}
        if self.sender is not None:
            data["from"] = self.sender
        if self.sender_chat is not None:
            data["sender_chat"] = self.sender_chat
        data["chat"] = self.chat
        data["date"] = self.date
        if self.edit_date is not None:
            data["edit_date"] = self.edit_date
        if with_reply and self.reply_to is not None:
            data["reply_to_message"] = self.reply_to
        if self.text is not None:
            data["text"] = self.text
            if self.entities:
                data["entities"] = self.entities
        if self.document is not None:
            data["document"] = self.document
        if self.photo is not None:
            data["photo"] = self.photo
        if self.caption is not None:
            data["caption"] = self.caption
            if self.caption_entities:
                data["caption_entities"] = self.caption_entities
        if self.service:
            data.update(self.service)
        if self.inline_keyboard:
            data["reply_markup"] = {"inline_keyboard": self.inline_keyboard}
        return data

    def to_json(self) -> JSON:
        """Front-end view: the API object plus state Telegram itself does not expose."""
        return {
            "message": self.to_api(),
            "message_id": self.message_id,
            "chat_id": self.chat_id,
            "from_bot": self.from_bot,
            "deleted": self.deleted,
            "edited": self.edit_date is not None,
            "service": self.is_service,
            "reply_markup": self.reply_markup,
            "seq": self.seq,
        }


@dataclass
class FakeChat:
    """A private chat or group; membership and bot status decide who may post."""

    id: int
    type: Literal["private", "group", "supergroup"]
    title: str | None = None
    username: str | None = None
    members: list[int] = field(default_factory=list)
    bot_member: bool = True
    bot_admin: bool = False
    bot_kicked: bool = False
    is_forum: bool = False
    migrated_to: int | None = None
    migrated_from: int | None = None
    pinned_message_id: int | None = None
    last_action: str | None = None
    # When the action was sent (rate clock) and the change counter then: a client shows
    # "typing…" for five seconds or until the bot's next message, as Telegram's apps do.
    last_action_at: float | None = None
    last_action_seq: int = 0
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1

    @property
    def is_group(self) -> bool:
        """Groups have stricter flood limits and different membership rules than private chats."""
        return self.type != "private"


@dataclass
class CallRecord:
    """One Bot API request as the fake saw it, for asserting what the bot did."""

    method: str
    params: JSON
    ok: bool
    status: int
    result: Any = None
    description: str | None = None
    at: float = 0.0


@dataclass
class CallbackQueryRecord:
    """A pressed button awaiting answerCallbackQuery, so tests can check the answer."""

    id: str
    user_id: int
    chat_id: int
    message_id: int
    data: str
    answered: bool = False
    answer: JSON | None = None


class FakeTelegram:
    """Everything the fake Telegram knows, plus the user-side actions tests and the demo drive."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "fake_dsr_bot",
        bot_first_name: str = "Fake Bot",
        limits: RateLimits | None = TELEGRAM_LIMITS,
        clock: Callable[[], float] = time.time,
        rate_clock: Callable[[], float] = time.monotonic,
        first_update_id: int = 1,
        keep_calls: bool = True,
    ) -> None:
        left, sep, right = token.partition(":")
        if not (sep and left.isdigit() and right):
            raise FakeTelegramError(f"malformed bot token {token!r}")
        self.token = token
        self.bot_id = int(left)
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.clock = clock
        self.rate_clock = rate_clock
        self.keep_calls = keep_calls
        self.limits = limits
        self.limiter = RateLimiter(limits)
        self.users: dict[int, FakeUser] = {}
        self.chats: dict[int, FakeChat] = {}
        self.files: dict[str, StoredFile] = {}
        self.files_by_path: dict[str, StoredFile] = {}
        self.calls: list[CallRecord] = []
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self.callbacks: dict[str, CallbackQueryRecord] = {}
        self.bot_settings: JSON = {}
        self.throttled_429 = 0
        self.next_update_id = first_update_id
        self.seq = 0
        self._updates: list[UpdateDict] = []
        self._waiters: set[asyncio.Future[None]] = set()
        self._epoch = 0
        self._poll_seq = 0
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ basics

    @property
    def bot_user(self) -> JSON:
        """The bot's own User object, used as `from` of everything it sends."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def now(self) -> int:
        """Unix time from the injectable clock, so dates follow a test's fake time."""
        return int(self.clock())

    def _notify(self) -> None:
        """Wakes long polls and front-end waiters after any state change."""
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                with contextlib.suppress(RuntimeError):
                    fut.set_result(None)

    async def wait_changed(self, seconds: float) -> bool:
        """Parks a coroutine until the next change; True if something changed in time."""
        if seconds <= 0:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            done, _ = await asyncio.wait({fut}, timeout=seconds)
            return bool(done)
        finally:
            self._waiters.discard(fut)
            if not fut.done():
                fut.cancel()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 5.0) -> bool:
        """Lets tests and the front end block on 'bot has replied' without sleeping blindly."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        epoch = self._epoch
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0 or self._epoch != epoch:
                return False
            await self.wait_changed(remaining)
        return True

    def notify_changed(self) -> None:
        """Wakes long polls when something outside the fake changed (the demo's clock)."""
        self._notify()

    def current_action(self, chat: FakeChat, *, lasts: float = 5.0) -> str | None:
        """The chat action a client would show now: fresh, and not ended by a bot message."""
        if chat.last_action is None or chat.last_action_at is None:
            return None
        if self.rate_clock() - chat.last_action_at > lasts:
            return None
        for msg in reversed(chat.messages.values()):
            if msg.from_bot and msg.seq > chat.last_action_seq:
                return None
            if msg.seq <= chat.last_action_seq:
                break
        return chat.last_action

    def release_waiters(self) -> None:
        """Ends pending long polls immediately so a server shutdown does not hang on them."""
        self._epoch += 1
        self._notify()

    def _touch(self, message: StoredMessage) -> None:
        """Bumps the change cursor the front end polls with."""
        self.seq += 1
        message.seq = self.seq
        self._notify()

    # ------------------------------------------------------------------ updates queue

    def enqueue_update(self, body: Mapping[str, Any]) -> UpdateDict:
        """Assigns the next update_id and queues the update for getUpdates."""
        update: UpdateDict = {"update_id": self.next_update_id, **body}
        self.next_update_id += 1
        self._updates.append(update)
        self._notify()
        return update

    def pending_updates(self) -> list[UpdateDict]:
        """Updates not yet confirmed by the bot."""
        return list(self._updates)

    def confirm_updates(self, offset: int) -> None:
        """Applies getUpdates' offset semantics, including negative offsets."""
        if offset < 0:
            self._updates = self._updates[offset:]
        elif offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

    def drop_pending_updates(self) -> None:
        """Backs deleteWebhook(drop_pending_updates=True)."""
        self._updates.clear()

    async def get_updates(
        self, offset: int | None, limit: int, poll_seconds: float
    ) -> list[UpdateDict]:
        """Long-polls like Telegram, including 409 for a superseded concurrent poll."""
        if offset is not None:
            self.confirm_updates(offset)
        self._poll_seq += 1
        my_poll = self._poll_seq
        self._notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + poll_seconds
        epoch = self._epoch
        while True:
            if self._epoch != epoch:
                return []
            if self._updates or poll_seconds <= 0:
                return self._updates[:limit]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self.wait_changed(remaining)
            if self._poll_seq != my_poll and self._epoch == epoch:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )

    # ------------------------------------------------------------------ registration

    def register_user(
        self,
        user_id: int,
        first_name: str,
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        started: bool = True,
        is_bot: bool = False,
    ) -> FakeUser:
        """Creates a user and their private chat; `started=False` models 'never pressed Start'."""
        if user_id <= 0:
            raise FakeTelegramError("user ids are positive")
        if user_id == self.bot_id:
            raise FakeTelegramError("user id collides with the bot id")
        user = FakeUser(
            id=user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            is_bot=is_bot,
            started=started,
        )
        self.users[user_id] = user
        if user_id not in self.chats:
            self.chats[user_id] = FakeChat(id=user_id, type="private", members=[user_id])
        return user

    def register_group(
        self,
        chat_id: int,
        title: str,
        type: Literal["group", "supergroup"] = "group",
        *,
        members: Iterable[int] = (),
        username: str | None = None,
        bot_member: bool = True,
        bot_admin: bool = False,
        is_forum: bool = False,
    ) -> FakeChat:
        """Creates a group the bot belongs to; pins and deleting others' messages need bot_admin."""
        if chat_id >= 0:
            raise FakeTelegramError("group chat ids are negative")
        if type not in ("group", "supergroup"):
            raise FakeTelegramError(f"unsupported group type {type!r}")
        if chat_id in self.chats:
            raise FakeTelegramError(f"chat {chat_id} already exists")
        chat = FakeChat(
            id=chat_id,
            type=type,
            title=title,
            username=username,
            bot_member=bot_member,
            bot_admin=bot_admin,
            is_forum=is_forum,
        )
        self.chats[chat_id] = chat
        for user_id in members:
            self.add_member(chat_id, user_id)
        return chat

    def add_member(
        self, chat_id: int, user_id: int, *, announce: bool = False
    ) -> UpdateDict | None:
        """Puts a user in a group; `announce` also emits the new_chat_members service message."""
        chat = self._group(chat_id)
        user = self.user(user_id)
        if user_id not in chat.members:
            chat.members.append(user_id)
        if not announce:
            return None
        msg = self._new_message(
            chat,
            sender=user.to_api(),
            from_bot=False,
            service={"new_chat_participant": user.to_api(), "new_chat_members": [user.to_api()]},
        )
        return self._deliver_message(chat, msg)

    def remove_member(
        self, chat_id: int, user_id: int, *, announce: bool = False
    ) -> UpdateDict | None:
        """Takes a user out of a group; `announce` emits the left_chat_member service message."""
        chat = self._group(chat_id)
        user = self.user(user_id)
        if user_id in chat.members:
            chat.members.remove(user_id)
        if not announce:
            return None
        msg = self._new_message(
            chat,
            sender=user.to_api(),
            from_bot=False,
            service={"left_chat_participant": user.to_api(), "left_chat_member": user.to_api()},
        )
        return self._deliver_message(chat, msg)

    def set_bot_admin(self, chat_id: int, admin: bool = True) -> None:
        """Toggles the rights that pinning and deleting others' messages require."""
        self._group(chat_id).bot_admin = admin

    def block_bot(self, user_id: int) -> UpdateDict:
        """User blocks the bot; Telegram tells the bot via my_chat_member (status kicked)."""
        user = self.user(user_id)
        user.blocked = True
        return self.bot_membership_changed(
            self.chats[user_id],
            user.to_api(),
            {"status": "member", "user": self.bot_user},
            {"status": "kicked", "user": self.bot_user, "until_date": 0},
        )

    def unblock_bot(self, user_id: int) -> UpdateDict:
        """User restarts the bot after blocking it; reported as my_chat_member (status member)."""
        user = self.user(user_id)
        user.blocked = False
        user.started = True
        return self.bot_membership_changed(
            self.chats[user_id],
            user.to_api(),
            {"status": "kicked", "user": self.bot_user, "until_date": 0},
            {"status": "member", "user": self.bot_user},
        )

    def kick_bot(self, chat_id: int, *, by_user_id: int) -> UpdateDict:
        """A member removes the bot from a group: sends to it answer 403 from now on."""
        chat = self._group(chat_id)
        chat.bot_member = False
        chat.bot_admin = False
        chat.bot_kicked = True
        return self.bot_membership_changed(
            chat,
            self.user(by_user_id).to_api(),
            {"status": "member", "user": self.bot_user},
            {"status": "kicked", "user": self.bot_user, "until_date": 0},
        )

    def add_bot(self, chat_id: int, *, by_user_id: int) -> UpdateDict:
        """A member adds the bot (back) to a group, as an ordinary member."""
        chat = self._group(chat_id)
        old = "kicked" if chat.bot_kicked else "left"
        chat.bot_member = True
        chat.bot_kicked = False
        before: JSON = {"status": old, "user": self.bot_user}
        if old == "kicked":
            before["until_date"] = 0
        return self.bot_membership_changed(
            chat,
            self.user(by_user_id).to_api(),
            before,
            {"status": "member", "user": self.bot_user},
        )

    def bot_membership_changed(
        self, chat: FakeChat, actor: JSON, old: JSON, new: JSON
    ) -> UpdateDict:
        """Builds the update Telegram sends whenever the bot's own membership changes."""
        return self.enqueue_update(
            {
                "my_chat_member": {
                    "chat": self.chat_api(chat),
                    "from": actor,
                    "date": self.now(),
                    "old_chat_member": old,
                    "new_chat_member": new,
                }
            }
        )

    def migrate_group_to_supergroup(
        self, old_id: int, new_id: int, *, by_user_id: int | None = None
    ) -> tuple[UpdateDict, UpdateDict]:
        """Upgrades a group the way Telegram does: two service messages, old id then answers 400."""
        old = self._group(old_id)
        if not old.bot_member:
            raise FakeTelegramError(f"bot is not a member of chat {old_id}")
        if old.type != "group":
            raise FakeTelegramError(f"chat {old_id} is not a basic group")
        if new_id in self.chats or new_id >= 0:
            raise FakeTelegramError(f"invalid or taken supergroup id {new_id}")
        if by_user_id is None:
            by_user_id = old.members[0] if old.members else None
        actor = self.user(by_user_id).to_api() if by_user_id is not None else GROUP_ANONYMOUS_BOT
        new = FakeChat(
            id=new_id,
            type="supergroup",
            title=old.title,
            members=list(old.members),
            bot_member=old.bot_member,
            bot_admin=old.bot_admin,
            migrated_from=old_id,
        )
        self.chats[new_id] = new
        to_msg = self._new_message(
            old, sender=actor, from_bot=False, service={"migrate_to_chat_id": new_id}
        )
        old.migrated_to = new_id
        from_msg = self._new_message(
            new,
            sender=GROUP_ANONYMOUS_BOT,
            sender_chat=self.chat_api(new),
            from_bot=False,
            service={"migrate_from_chat_id": old_id},
        )
        return (
            self.enqueue_update(self._message_update(to_msg)),
            self.enqueue_update(self._message_update(from_msg)),
        )

    # ------------------------------------------------------------------ lookups

    def user(self, user_id: int) -> FakeUser:
        """Registered user or a loud test-setup error."""
        try:
            return self.users[user_id]
        except KeyError:
            raise FakeTelegramError(f"user {user_id} is not registered") from None

    def chat(self, chat_id: int) -> FakeChat:
        """Known chat or a loud test-setup error."""
        try:
            return self.chats[chat_id]
        except KeyError:
            raise FakeTelegramError(f"chat {chat_id} is not registered") from None

    def _group(self, chat_id: int) -> FakeChat:
        """Group-only helpers must not silently accept private chats."""
        chat = self.chat(chat_id)
        if not chat.is_group:
            raise FakeTelegramError(f"chat {chat_id} is not a group")
        return chat

    def chats_of(self, user_id: int) -> list[FakeChat]:
        """Chats a user can see: the private chat with the bot and groups they belong to."""
        return [
            c
            for c in self.chats.values()
            if (c.id == user_id) or (c.is_group and user_id in c.members and c.migrated_to is None)
        ]

    def chat_api(self, chat: FakeChat) -> JSON:
        """Telegram's Chat object as embedded in messages."""
        data: JSON = {"id": chat.id}
        if chat.type == "private":
            user = self.users.get(chat.id)
            if user is not None:
                data["first_name"] = user.first_name
                if user.last_name:
                    data["last_name"] = user.last_name
                if user.username:
                    data["username"] = user.username
        else:
            data["title"] = chat.title or ""
            if chat.username:
                data["username"] = chat.username
        data["type"] = chat.type
        if chat.is_forum:
            data["is_forum"] = True
        return data

    def messages(self, chat_id: int, *, include_deleted: bool = True) -> list[StoredMessage]:
        """Everything posted in a chat in order, bot and users alike, content as of now."""
        items = list(self.chat(chat_id).messages.values())
        return [m for m in items if include_deleted or not m.deleted]

    def sent_by_bot(self, chat_id: int, *, include_deleted: bool = True) -> list[StoredMessage]:
        """The bot's non-service messages in a chat, the usual thing tests assert on."""
        return [
            m
            for m in self.messages(chat_id, include_deleted=include_deleted)
            if m.from_bot and not m.is_service
        ]

    def last_bot_message(self, chat_id: int) -> StoredMessage:
        """Latest live bot message, failing loudly when the bot has said nothing."""
        sent = self.sent_by_bot(chat_id, include_deleted=False)
        if not sent:
            raise FakeTelegramError(f"bot has no live messages in chat {chat_id}")
        return sent[-1]

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        """Direct access for assertions about a specific message."""
        try:
            return self.chat(chat_id).messages[message_id]
        except KeyError:
            raise FakeTelegramError(f"no message {message_id} in chat {chat_id}") from None

    def calls_to(self, method: str) -> list[CallRecord]:
        """Calls of one Bot API method (case-insensitive), in order."""
        wanted = method.lower()
        return [c for c in self.calls if c.method.lower() == wanted]

    def callback_answer(self, query_id: str) -> JSON | None:
        """What the bot answered to a button press, None while unanswered."""
        record = self.callbacks.get(query_id)
        return record.answer if record else None

    def my_commands(
        self, scope: Mapping[str, Any] | None = None, language_code: str = ""
    ) -> list[JSON]:
        """Commands stored by setMyCommands for a scope (default scope when omitted)."""
        return list(self.commands.get(scope_key(scope, language_code), []))

    def menu_commands(self, chat_id: int, user_id: int) -> list[JSON]:
        """The command menu a user sees in a chat: the narrowest scope with commands wins,
        in Telegram's order (https://core.telegram.org/bots/api#determining-list-of-commands)."""
        chat = self.chat(chat_id)
        user = self.users.get(user_id)
        # Lists are kept per two-letter language code; users carry IETF tags (zh-hans).
        language = (user.language_code or "")[:2].lower() if user else ""
        languages = [language, ""] if language else [""]
        if chat.type == "private":
            scopes: list[JSON] = [
                {"type": "chat", "chat_id": chat_id},
                {"type": "all_private_chats"},
                {"type": "default"},
            ]
        else:
            # The fake keeps no per-user admin rights, so the administrator scopes never apply.
            scopes = [
                {"type": "chat_member", "chat_id": chat_id, "user_id": user_id},
                {"type": "chat", "chat_id": chat_id},
                {"type": "all_group_chats"},
                {"type": "default"},
            ]
        for scope in scopes:
            for language in languages:
                found = self.commands.get(scope_key(scope, language))
                if found:
                    return list(found)
        return []

    def file_bytes(self, file_id: str) -> bytes:
        """Content of an uploaded file, for checking what the bot sent."""
        try:
            return self.files[file_id].data
        except KeyError:
            raise FakeTelegramError(f"unknown file_id {file_id!r}") from None

    async def wait_for_bot_messages(
        self, chat_id: int, count: int = 1, within: float = 5.0
    ) -> list[StoredMessage]:
        """Waits until the bot has sent at least `count` messages to a chat (for polling tests)."""
        ok = await self.wait_until(lambda: len(self.sent_by_bot(chat_id)) >= count, within)
        sent = self.sent_by_bot(chat_id)
        if not ok:
            raise TimeoutError(f"bot sent {len(sent)}/{count} messages to {chat_id} in {within}s")
        return sent

    # ------------------------------------------------------------------ files

    def store_file(
        self,
        data: bytes,
        kind: Literal["document", "photo"],
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
    ) -> StoredFile:
        """Registers bytes under fresh Telegram-like ids and a downloadable file_path."""
        n = next(self._ids)
        if kind == "photo":
            size = image_size(data) or (320, 320)
            prefix, path = "AgACAgIAAxkBAAI", f"photos/file_{n}.jpg"
        else:
            size = (0, 0)
            suffix = PurePosixPath(file_name).suffix if file_name else ""
            prefix, path = "BQACAgIAAxkBAAI", f"documents/file_{n}{suffix}"
            if mime_type is None and file_name:
                mime_type = mimetypes.guess_type(file_name)[0]
        stored = StoredFile(
            file_id=f"{prefix}{n:05d}{secrets.token_urlsafe(18)}",
            file_unique_id=f"AQAD{n:05d}{secrets.token_urlsafe(6)}",
            kind=kind,
            data=bytes(data),
            file_path=path,
            file_name=file_name,
            mime_type=mime_type,
            width=size[0],
            height=size[1],
        )
        self.files[stored.file_id] = stored
        self.files_by_path[stored.file_path] = stored
        return stored

    # ------------------------------------------------------------------ messages

    def _new_message(
        self,
        chat: FakeChat,
        *,
        sender: JSON | None,
        from_bot: bool,
        reply_to: StoredMessage | None = None,
        sender_chat: JSON | None = None,
        **content: Any,
    ) -> StoredMessage:
        """Allocates the chat's next message_id and stores the message."""
        msg = StoredMessage(
            message_id=chat.next_message_id,
            chat=self.chat_api(chat),
            date=self.now(),
            sender=sender,
            from_bot=from_bot,
            reply_to=reply_to.to_api(with_reply=False) if reply_to else None,
            sender_chat=sender_chat,
            **content,
        )
        chat.next_message_id += 1
        chat.messages[msg.message_id] = msg
        self._touch(msg)
        return msg

    def _message_update(self, msg: StoredMessage) -> UpdateDict:
        """Body of a `message` update (update_id is added on enqueue)."""
        return {"message": msg.to_api()}

    def _deliver_message(self, chat: FakeChat, msg: StoredMessage) -> UpdateDict:
        """Queues a user's message for the bot, which only sees chats it belongs to."""
        if not chat.bot_member:
            raise FakeTelegramError(f"bot is not a member of chat {chat.id}")
        return self.enqueue_update(self._message_update(msg))

    def _user_chat(self, user_id: int, chat_id: int) -> tuple[FakeUser, FakeChat]:
        """Validates that a user could really post in the chat, opening private chats on the way."""
        user = self.user(user_id)
        chat = self.chat(chat_id)
        if chat.migrated_to is not None:
            raise FakeTelegramError(f"chat {chat_id} was migrated to {chat.migrated_to}")
        if chat.type == "private":
            if chat_id != user_id:
                raise FakeTelegramError(f"user {user_id} cannot post in private chat {chat_id}")
            if user.blocked:
                self.unblock_bot(user_id)
            user.started = True
        else:
            if user_id not in chat.members:
                raise FakeTelegramError(f"user {user_id} is not a member of chat {chat_id}")
            if not chat.bot_member:
                raise FakeTelegramError(f"bot is not a member of chat {chat_id}")
        return user, chat

    def _reply_target(self, chat: FakeChat, message_id: int | None) -> StoredMessage | None:
        """Replies must point at a live message, as in the real client."""
        if message_id is None:
            return None
        target = chat.messages.get(message_id)
        if target is None or target.deleted:
            raise FakeTelegramError(f"no message {message_id} to reply to in chat {chat.id}")
        return target

    def user_message(
        self,
        user_id: int,
        chat_id: int,
        text: str,
        *,
        reply_to_message_id: int | None = None,
    ) -> UpdateDict:
        """User types a message; bot_command/url/mention entities are detected as Telegram does."""
        if not text.strip():
            raise FakeTelegramError("Telegram clients cannot send empty messages")
        user, chat = self._user_chat(user_id, chat_id)
        msg = self._new_message(
            chat,
            sender=user.to_api(),
            from_bot=False,
            reply_to=self._reply_target(chat, reply_to_message_id),
            text=text,
            entities=detect_entities(text),
        )
        return self._deliver_message(chat, msg)

    def user_document(
        self,
        user_id: int,
        chat_id: int,
        data: bytes,
        file_name: str,
        *,
        mime_type: str | None = None,
        caption: str | None = None,
        reply_to_message_id: int | None = None,
    ) -> UpdateDict:
        """User sends a file; the bytes become downloadable through getFile."""
        user, chat = self._user_chat(user_id, chat_id)
        if not data:
            raise FakeTelegramError("Telegram clients cannot send empty files")
        stored = self.store_file(data, "document", file_name=file_name, mime_type=mime_type)
        msg = self._new_message(
            chat,
            sender=user.to_api(),
            from_bot=False,
            reply_to=self._reply_target(chat, reply_to_message_id),
            document=stored.document_api(),
            caption=caption,
            caption_entities=detect_entities(caption) if caption else [],
        )
        return self._deliver_message(chat, msg)

    def user_photo(
        self,
        user_id: int,
        chat_id: int,
        data: bytes,
        *,
        caption: str | None = None,
        reply_to_message_id: int | None = None,
    ) -> UpdateDict:
        """User sends a compressed photo; non-image bytes are tolerated to keep tests light."""
        user, chat = self._user_chat(user_id, chat_id)
        if not data:
            raise FakeTelegramError("Telegram clients cannot send empty photos")
        stored = self.store_file(data, "photo")
        msg = self._new_message(
            chat,
            sender=user.to_api(),
            from_bot=False,
            reply_to=self._reply_target(chat, reply_to_message_id),
            photo=stored.photo_api(),
            caption=caption,
            caption_entities=detect_entities(caption) if caption else [],
        )
        return self._deliver_message(chat, msg)

    def press_button(
        self,
        user_id: int,
        message: MessageRef,
        callback_data: str,
        *,
        check_keyboard: bool = True,
    ) -> UpdateDict:
        """User taps an inline button; only buttons actually on the message can be pressed."""
        chat_id, message_id = message_ref(message)
        _, chat = self._user_chat(user_id, chat_id)
        stored = chat.messages.get(message_id)
        if stored is None or stored.deleted:
            raise FakeTelegramError(f"message {message_id} in chat {chat_id} does not exist")
        if check_keyboard:
            datas = [b.get("callback_data") for row in stored.inline_keyboard for b in row]
            if callback_data not in datas:
                raise FakeTelegramError(
                    f"message {message_id} has no button with callback_data {callback_data!r}; "
                    f"available: {datas}"
                )
        query_id = str(4_000_000_000_000_000_000 + next(self._ids))
        self.callbacks[query_id] = CallbackQueryRecord(
            id=query_id,
            user_id=user_id,
            chat_id=chat_id,
            message_id=message_id,
            data=callback_data,
        )
        return self.enqueue_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": self.user(user_id).to_api(),
                    "message": stored.to_api(),
                    "chat_instance": str(abs(hash((self.bot_id, chat_id)))),
                    "data": callback_data,
                }
            }
        )

    # ------------------------------------------------------------------ bot-side primitives

    def resolve_chat(self, ref: int | str) -> FakeChat:
        """Maps a chat_id parameter (number or @username) to a chat, 400 if unknown."""
        if isinstance(ref, int):
            chat = self.chats.get(ref)
        else:
            name = ref.removeprefix("@").lower()
            chat = next(
                (
                    c
                    for c in self.chats.values()
                    if c.is_group and (c.username or "").lower() == name
                ),
                None,
            )
        if chat is None:
            raise bad_request("chat not found")
        return chat

    def check_migrated(self, chat: FakeChat) -> None:
        """Old group ids answer 400 with migrate_to_chat_id, which aiogram raises specially."""
        if chat.migrated_to is not None:
            raise bad_request(
                "group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": chat.migrated_to},
            )

    def check_can_write(self, chat: FakeChat) -> None:
        """Applies Telegram's 403 rules for private chats and lost group membership."""
        self.check_migrated(chat)
        if chat.type == "private":
            user = self.users.get(chat.id)
            if user is None:
                raise bad_request("chat not found")
            if user.blocked:
                raise forbidden("bot was blocked by the user")
            if not user.started:
                raise forbidden("bot can't initiate conversation with a user")
            return
        if chat.bot_kicked:
            raise forbidden(f"bot was kicked from the {chat.type} chat")
        if not chat.bot_member:
            raise forbidden(f"bot is not a member of the {chat.type} chat")

    def check_can_read(self, chat: FakeChat) -> None:
        """getChat-style access: a never-started private chat is invisible to the bot."""
        self.check_migrated(chat)
        if chat.type == "private":
            user = self.users.get(chat.id)
            if user is None or not (user.started or user.blocked):
                raise bad_request("chat not found")
            return
        self.check_can_write(chat)

    def admit_send(self, chat: FakeChat) -> None:
        """Flood control for outgoing messages; counts every 429 it serves."""
        retry_after = self.limiter.admit(chat.id, chat.is_group, self.rate_clock())
        if retry_after is not None:
            self.throttled_429 += 1
            raise ApiError(
                429,
                f"Too Many Requests: retry after {retry_after}",
                {"retry_after": retry_after},
            )

    def bot_message(
        self, chat: FakeChat, *, reply_to: StoredMessage | None = None, **content: Any
    ) -> StoredMessage:
        """Stores something the bot sent; the bot gets no update for its own messages."""
        return self._new_message(
            chat, sender=self.bot_user, from_bot=True, reply_to=reply_to, **content
        )

    def edit_message(self, msg: StoredMessage, **changes: Any) -> StoredMessage:
        """Applies an edit while keeping the previous version for assertions."""
        msg.history.append(
            {
                "text": msg.text,
                "entities": msg.entities,
                "caption": msg.caption,
                "caption_entities": msg.caption_entities,
                "reply_markup": msg.reply_markup,
                "edit_date": msg.edit_date,
            }
        )
        for name, value in changes.items():
            setattr(msg, name, value)
        msg.edit_date = self.now()
        self._touch(msg)
        return msg

    def delete_message(self, msg: StoredMessage) -> None:
        """Marks rather than removes, so tests can still see what was deleted."""
        msg.deleted = True
        chat = self.chats.get(msg.chat_id)
        if chat is not None and chat.pinned_message_id == msg.message_id:
            chat.pinned_message_id = None
        self._touch(msg)

    def answer_callback(self, query_id: str, answer: JSON) -> None:
        """Each query can be answered once; later or unknown ids get Telegram's 400."""
        record = self.callbacks.get(query_id)
        if record is None or record.answered:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        record.answered = True
        record.answer = answer
        self._notify()

    def log_call(self, record: CallRecord) -> None:
        """Single entry point so benchmarks can switch the (memory-hungry) log off."""
        if self.keep_calls:
            self.calls.append(record)


def scope_key(scope: Mapping[str, Any] | None, language_code: str = "") -> tuple[str, str]:
    """Canonical key for per-scope command lists, independent of JSON key order."""
    scope = dict(scope or {"type": "default"})
    parts = [f"{k}={scope[k]}" for k in sorted(scope)]
    return ";".join(parts), language_code or ""


def message_ref(message: MessageRef) -> tuple[int, int]:
    """Accepts the message shapes tests naturally have at hand."""
    if isinstance(message, StoredMessage):
        return message.chat_id, message.message_id
    if isinstance(message, tuple) and len(message) == 2:
        return int(message[0]), int(message[1])
    if isinstance(message, Mapping):
        return int(message["chat"]["id"]), int(message["message_id"])
    chat = getattr(message, "chat", None)
    message_id = getattr(message, "message_id", None)
    if chat is not None and message_id is not None:
        return int(chat.id), int(message_id)
    raise FakeTelegramError(f"cannot identify a message from {message!r}")
