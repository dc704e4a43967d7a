"""The demo scenario: the product's whole flow, acted out by the county's people.

Written once against `Driver`, so the same steps run headless (`dsr demo --headless-check`,
`HeadlessDriver`: the fake's Python API) and in a real browser (tests/e2e_browser: the page,
clicked as people click). Each step acts as someone and checks what that person then sees; the
run stops at the first step that does not show what a user should see.
"""

from __future__ import annotations

import re
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.demo.county import People, Persona
from bot.demo.runtime import Demo
from bot.fakeapi import FakeTelegramError, StoredMessage
from bot.render import text


class StepFailed(AssertionError):
    """A step did not produce what its user should see."""


@dataclass(frozen=True)
class Seen:
    """A bot message as its reader sees it."""

    chat_id: int
    message_id: int
    text: str
    buttons: tuple[str, ...]
    has_photo: bool = False
    has_document: bool = False


def seen(message: StoredMessage) -> Seen:
    return Seen(
        chat_id=message.chat_id,
        message_id=message.message_id,
        text=message.text or message.caption or "",
        buttons=tuple(message.button_texts()),
        has_photo=message.photo is not None,
        has_document=message.document is not None,
    )


Needle = str | re.Pattern[str]


def matches(message: StoredMessage, needles: Sequence[Needle]) -> bool:
    body = message.text or message.caption or ""
    labels = " ".join(message.button_texts())
    for needle in needles:
        where = f"{body}\n{labels}"
        if isinstance(needle, re.Pattern):
            if not needle.search(where):
                return False
        elif needle not in where:
            return False
    return True


class Driver(Protocol):
    """How the scenario acts and looks: as a person, in one chat at a time."""

    demo: Demo

    async def act_as(self, persona: Persona) -> None:
        """Become this person (the page's persona switcher)."""
        ...

    async def open_chat(self, chat_id: int) -> None:
        """Open a chat of the current person (their private chat has their own id)."""
        ...

    def mark(self) -> int:
        """A point in time: `expect(..., since=mark)` only accepts what changed after it."""
        ...

    async def send_text(self, text: str) -> None: ...

    async def send_photo(self, data: bytes, file_name: str, caption: str | None = None) -> None: ...

    async def send_document(
        self, data: bytes, file_name: str, caption: str | None = None
    ) -> None: ...

    async def press(self, message: Seen, label: str) -> str | None:
        """Tap an inline button; returns the toast/alert text of the answer, if any."""
        ...

    async def expect(
        self, *needles: Needle, since: int | None = None, within: float = 15.0
    ) -> Seen:
        """The newest bot message in the open chat, new or edited since `since` (default: the
        last action), whose text and buttons contain every needle; fails after `within` s."""
        ...

    async def menu(self) -> list[str]:
        """The commands the open chat's menu offers."""
        ...

    async def advance(self) -> None:
        """The page's 下一个工作日 button."""
        ...

    async def snapshot(self, name: str) -> None:
        """A screenshot, where there is a screen."""
        ...


class HeadlessDriver:
    """Drives the fake directly; the real bot answers over HTTP, as in the browser."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.fake = demo.fake
        self.persona: Persona | None = None
        self.chat_id: int | None = None
        self._mark = 0

    def _who(self) -> tuple[int, int]:
        if self.persona is None or self.chat_id is None:
            raise StepFailed("no person or chat chosen")
        return self.persona.tg_user_id, self.chat_id

    async def act_as(self, persona: Persona) -> None:
        self.persona = persona
        self.chat_id = persona.tg_user_id

    async def open_chat(self, chat_id: int) -> None:
        if self.persona is None:
            raise StepFailed("no person chosen")
        visible = {c.id for c in self.fake.chats_of(self.persona.tg_user_id)}
        if chat_id not in visible:
            raise StepFailed(f"{self.persona.name} cannot see chat {chat_id}")
        self.chat_id = chat_id

    def mark(self) -> int:
        return self.fake.seq

    async def send_text(self, text: str) -> None:
        user, chat = self._who()
        self._mark = self.fake.seq
        self.fake.user_message(user, chat, text)

    async def send_photo(self, data: bytes, file_name: str, caption: str | None = None) -> None:
        user, chat = self._who()
        self._mark = self.fake.seq
        self.fake.user_photo(user, chat, data, caption=caption)

    async def send_document(self, data: bytes, file_name: str, caption: str | None = None) -> None:
        user, chat = self._who()
        self._mark = self.fake.seq
        self.fake.user_document(user, chat, data, file_name, caption=caption)

    async def press(self, message: Seen, label: str) -> str | None:
        user, _ = self._who()
        stored = self.fake.message(message.chat_id, message.message_id)
        try:
            data = stored.callback_data(label)
        except FakeTelegramError as error:
            raise StepFailed(str(error)) from None
        self._mark = self.fake.seq
        update = self.fake.press_button(user, stored, data)
        query_id = str(update["callback_query"]["id"])
        record = self.fake.callbacks[query_id]
        await self.fake.wait_until(lambda: record.answered, 10.0)
        answer = record.answer or {}
        return str(answer["text"]) if answer.get("text") else None

    async def expect(
        self, *needles: Needle, since: int | None = None, within: float = 15.0
    ) -> Seen:
        _, chat = self._who()
        after = self._mark if since is None else since
        found = await find_bot_message(self.demo, chat, needles, after, within)
        return seen(found)

    async def menu(self) -> list[str]:
        user, chat = self._who()
        return [str(c["command"]) for c in self.fake.menu_commands(chat, user)]

    async def advance(self) -> None:
        self._mark = self.fake.seq
        await self.demo.advance()

    async def snapshot(self, name: str) -> None:
        return None


async def find_bot_message(
    demo: Demo, chat_id: int, needles: Sequence[Needle], after: int, within: float
) -> StoredMessage:
    """Wait for a live bot message in `chat_id` changed after `after` and matching `needles`."""
    fake = demo.fake

    def find() -> StoredMessage | None:
        for message in reversed(fake.messages(chat_id)):
            if (
                message.from_bot
                and not message.deleted
                and message.seq > after
                and matches(message, needles)
            ):
                return message
        return None

    deadline = time.monotonic() + within
    while (found := find()) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            recent = [
                (m.text or m.caption or "")[:160]
                for m in fake.messages(chat_id)
                if m.from_bot and m.seq > after
            ]
            wanted = " + ".join(n.pattern if isinstance(n, re.Pattern) else n for n in needles)
            raise StepFailed(f"“{wanted}” not shown in chat {chat_id}; the bot said: {recent}")
        # The outbox is drained every second; deliver now so a check never waits for it.
        await demo.deliver()
        await fake.wait_until(lambda: find() is not None, min(remaining, 0.5))
    return found


# --- the scenario ----------------------------------------------------------------------------


@dataclass
class Context:
    driver: Driver
    demo: Demo
    people: People
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def office(self) -> Persona:
        return self.people.first("office")

    def liaison(self, department: str = "SJJ") -> Persona:
        return self.people.first("liaison", department)

    def inspector(self, department: str = "SJJ") -> Persona:
        return self.people.first("inspector", department)


Step = tuple[str, Callable[[Context], Awaitable[None]]]


async def step_commands(ctx: Context) -> None:
    d = ctx.driver
    await d.act_as(ctx.office)
    await d.open_chat(ctx.office.tg_user_id)
    private = await d.menu()
    await d.open_chat(ctx.people.group_of(None).chat_id)
    group = await d.menu()
    for command in ("start", "help", "me", "import", "invite"):
        if command not in private:
            raise StepFailed(f"/{command} missing from the private menu: {private}")
    for command in ("help", "me", "bind"):
        if command not in group:
            raise StepFailed(f"/{command} missing from the group menu: {group}")


async def step_office_start(ctx: Context) -> None:
    d = ctx.driver
    await d.act_as(ctx.office)
    await d.open_chat(ctx.office.tg_user_id)
    await d.send_text("/start")
    await d.expect(ctx.office.name, "欢迎回来")
    await d.snapshot("01-office-start")


async def step_office_help(ctx: Context) -> None:
    d = ctx.driver
    await d.send_text("/help")
    await d.expect("/import", "/invite", "协调办")


async def step_office_group(ctx: Context) -> None:
    d = ctx.driver
    await d.open_chat(ctx.people.group_of(None).chat_id)
    await d.send_text("/me")
    await d.expect("协调办工作群")


async def step_liaison_group(ctx: Context) -> None:
    d = ctx.driver
    liaison = ctx.liaison()
    await d.act_as(liaison)
    await d.open_chat(ctx.people.group_of("SJJ").chat_id)
    await d.send_text("/me")
    await d.expect(liaison.name, "信息联络员", liaison.department_name)


async def step_inspector_me(ctx: Context) -> None:
    d = ctx.driver
    inspector = ctx.inspector()
    await d.act_as(inspector)
    await d.open_chat(inspector.tg_user_id)
    await d.send_text("/me")
    await d.expect(inspector.name, "执法检查人员")


async def step_advance(ctx: Context) -> None:
    d = ctx.driver
    before = ctx.demo.clock.now()
    await d.advance()
    after = ctx.demo.clock.now()
    local = after.astimezone(ZoneInfo(ctx.demo.timezone))
    if not (after > before and local.hour == 9 and local.minute == 0):
        raise StepFailed(f"the clock went from {before} to {after}, not to a 09:00")
    if not ctx.demo.calendar_cache.is_working_day(local.date()):
        raise StepFailed(f"{local.date()} is not a working day")
    ctx.notes["advanced_to"] = local


STEPS: tuple[Step, ...] = (
    ("commands", step_commands),
    ("office_start", step_office_start),
    ("office_help", step_office_help),
    ("office_group", step_office_group),
    ("liaison_group", step_liaison_group),
    ("inspector_me", step_inspector_me),
    ("advance", step_advance),
)


@dataclass(frozen=True)
class StepResult:
    index: int
    key: str
    title: str
    seconds: float
    error: str | None = None


@dataclass
class Report:
    passed: list[StepResult] = field(default_factory=list)
    failed: StepResult | None = None
    started_at: datetime | None = None


async def run_scenario(
    driver: Driver,
    *,
    echo: Callable[[str], object] = print,
    steps: Sequence[Step] = STEPS,
) -> Report:
    """Run the steps in order; stop at the first failure (later steps build on earlier ones)."""
    demo = driver.demo
    ctx = Context(driver=driver, demo=demo, people=demo.people)
    report = Report(started_at=demo.clock.now())
    for index, (key, run) in enumerate(steps, start=1):
        title = text(f"demo.step.{key}")
        started = time.perf_counter()
        try:
            await run(ctx)
        except (StepFailed, AssertionError, TimeoutError, FakeTelegramError, LookupError) as error:
            reason = str(error) or type(error).__name__
            report.failed = StepResult(index, key, title, time.perf_counter() - started, reason)
            echo(text("demo.cli.check_failed", index=index, step=title, reason=reason))
            return report
        result = StepResult(index, key, title, time.perf_counter() - started)
        report.passed.append(result)
        echo(text("demo.cli.check_ok", index=index, step=title))
    return report


# --- a photo for the result dialog ----------------------------------------------------------


def sample_photo(width: int = 320, height: int = 240) -> bytes:
    """A small PNG (a shop front in flat colours), made without an imaging library."""

    def pixel(x: int, y: int) -> bytes:
        if y < height * 0.18:
            return b"\xd2\x3c\x32"  # the red signboard
        if y > height * 0.85:
            return b"\x9e\x9e\x9e"  # the pavement
        if width * 0.4 < x < width * 0.6 and y > height * 0.4:
            return b"\x5d\x40\x37"  # the door
        if (x // 40 + y // 40) % 2 == 0 and y < height * 0.6:
            return b"\xbb\xde\xfb"  # windows
        return b"\xf5\xf0\xe1"  # the wall

    raw = b"".join(b"\x00" + b"".join(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
