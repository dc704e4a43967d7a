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
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlmodel import col, select

from bot.demo.county import People, Persona, new_businesses_csv
from bot.demo.runtime import Demo
from bot.fakeapi import FakeTelegramError, StoredMessage
from bot.render import text
from storage.models import Assignment, Draw, Inspection, Target


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
        await self.demo.settled()
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
    await demo.settled(within)  # the handler that edited the message has also saved its state
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

# What the office types in the /task dialog: the restaurants (limited companies) of one town,
# two items of the market bureau, 5 % flat: a handful of inspections, so the story stays short.
TASK_FILTERS = "区域=石桥乡；行业=餐饮业；主体类型=有限责任公司"
TASK_ITEMS = ("SJJ-05", "SJJ-06")
FINDING = "后厨生熟食品混放，留样记录不全"


@dataclass
class Context:
    driver: Driver
    demo: Demo
    people: People
    task_id: int = 0
    inspection_id: int = 0
    target_name: str = ""
    team: tuple[Persona, Persona] | None = None  # the inspection the story follows
    idle: Persona | None = None  # an inspector of another inspection, who never confirms
    cards: dict[int, Seen] = field(default_factory=dict)

    @property
    def office(self) -> Persona:
        return self.people.first("office")

    @property
    def liaison(self) -> Persona:
        return self.people.first("liaison", "SJJ")

    @property
    def pair(self) -> tuple[Persona, Persona]:
        if self.team is None:
            raise StepFailed("no inspection drawn yet")
        return self.team

    def local_today(self) -> date:
        return self.demo.clock.now().astimezone(ZoneInfo(self.demo.timezone)).date()


Step = tuple[str, Callable[[Context], Awaitable[None]]]


def button(message: Seen, prefix: str) -> str:
    """The label of the button that starts with `prefix` (labels carry names and counts)."""
    for label in message.buttons:
        if label.startswith(prefix):
            return label
    raise StepFailed(f"no button “{prefix}…” in {list(message.buttons)}")


async def step_commands(ctx: Context) -> None:
    d = ctx.driver
    await d.act_as(ctx.office)
    private = await d.menu()
    await d.open_chat(ctx.people.group_of(None).chat_id)
    group = await d.menu()
    for command in ("start", "help", "task", "draw", "tasks", "notices"):
        if command not in private:
            raise StepFailed(f"/{command} missing from the private menu: {private}")
    for command in ("help", "me", "bind", "draw"):
        if command not in group:
            raise StepFailed(f"/{command} missing from the group menu: {group}")


async def step_office_start(ctx: Context) -> None:
    d = ctx.driver
    await d.act_as(ctx.office)
    await d.send_text("/start")
    await d.expect(ctx.office.name, "欢迎回来")
    await d.send_text("/help")
    await d.expect("协调办", "/import", "/invite")


async def step_office_group(ctx: Context) -> None:
    d = ctx.driver
    await d.open_chat(ctx.people.group_of(None).chat_id)
    await d.send_text("/me")
    await d.expect("协调办工作群")


async def step_office_import(ctx: Context) -> None:
    """The office sends a file: newly registered businesses join the 检查对象名录库."""
    d = ctx.driver
    await d.open_chat(ctx.office.tg_user_id)
    await d.send_text("/import")
    await d.expect("请发送要导入的")
    await d.send_document(new_businesses_csv(3), "新登记企业.csv")
    await d.expect("导入完成", "检查对象名录库", "新增：3")


async def step_create_task(ctx: Context) -> None:
    """/task, answered with buttons and typed words, as the office would."""
    d = ctx.driver
    today = ctx.local_today()
    await d.act_as(ctx.office)
    await d.send_text("/task")
    await d.expect("新建抽查任务", "请输入任务名称")
    await d.send_text(f"{today.year}年第一批餐饮服务单位“双随机”抽查")
    ask = await d.expect("请选择年度")
    ask = await press_and_expect(d, ask, str(today.year), "参与部门")
    ask = await press_and_expect(d, ask, ctx.people.first("liaison", "SJJ").department_name, "✅")
    ask = await press_and_expect(d, ask, button(ask, "完成（已选 1"), "抽查事项")
    for code in TASK_ITEMS:
        ask = await press_and_expect(d, ask, button(ask, code), f"✅ {code}")
    ask = await press_and_expect(d, ask, button(ask, "完成（已选 2"), "检查对象范围")
    await d.send_text(TASK_FILTERS)
    ask = await d.expect("抽查比例方式")
    ask = await press_and_expect(d, ask, "统一比例", "统一比例")
    await d.send_text("5%")
    await d.expect("检查期限")
    end = today + timedelta(days=29)
    await d.send_text(f"{today.isoformat()} 至 {end.isoformat()}")
    ask = await d.expect("选派方式")
    ask = await press_and_expect(d, ask, "全局内随机", "检查组")
    ask = await press_and_expect(d, ask, "2 人", "检查方式")
    ask = await press_and_expect(d, ask, "现场", "合并为一次联合检查")
    ask = await press_and_expect(d, ask, "允许合并联合检查", "请确认抽查任务")
    await d.snapshot("02-task-summary")
    done = await press_and_expect(d, ask, button(ask, "✔️ 创建任务"), "已创建")
    found = re.search(r"抽查任务 #(\d+)", done.text)
    if found is None:
        raise StepFailed(f"no task number in “{done.text}”")
    ctx.task_id = int(found.group(1))


async def press_and_expect(driver: Driver, message: Seen, label: str, *needles: Needle) -> Seen:
    """Press a button; the bot answers by editing that message or sending a new one."""
    await driver.press(message, label)
    return await driver.expect(*needles)


async def step_draw_commit(ctx: Context) -> None:
    d = ctx.driver
    await d.send_text(f"/draw {ctx.task_id}")
    commitment = await d.expect("抽取承诺", "承诺值", "执行抽取")
    ctx.cards[0] = commitment
    await d.open_chat(ctx.people.group_of(None).chat_id)
    await d.expect("抽取承诺", "承诺值", since=0)


async def step_draw_execute(ctx: Context) -> None:
    d = ctx.driver
    await d.open_chat(ctx.office.tg_user_id)
    group_mark = d.mark()
    await d.press(ctx.cards[0], "执行抽取")
    await d.open_chat(ctx.people.group_of(None).chat_id)
    await d.expect("抽取结果", "种子（现公布）", since=group_mark)
    await d.snapshot("03-draw-announced")
    await discover_team(ctx)
    # The department group hears counts only: target names never go to a group.
    await d.act_as(ctx.liaison)
    await d.open_chat(ctx.people.group_of("SJJ").chat_id)
    announced = await d.expect("抽取结果", "检查对象", since=group_mark)
    if ctx.target_name in announced.text:
        raise StepFailed("a target's name was posted to the department group")


async def discover_team(ctx: Context) -> None:
    """Who was drawn for the first inspection (the office reads it in the records)."""
    async with ctx.demo.db.read() as session:
        draw = (
            await session.exec(
                select(Draw).where(Draw.task_id == ctx.task_id).order_by(col(Draw.id).desc())
            )
        ).first()
        if draw is None:
            raise StepFailed(f"task {ctx.task_id} has no draw")
        inspections = list(
            await session.exec(
                select(Inspection)
                .where(Inspection.draw_id == draw.id)
                .order_by(col(Inspection.batch_order), col(Inspection.id))
            )
        )
        if len(inspections) < 2:
            raise StepFailed(f"the draw made {len(inspections)} inspection(s), not several")
        seats: dict[int, list[int]] = {}
        for seat in await session.exec(
            select(Assignment)
            .where(col(Assignment.inspection_id).in_([i.id for i in inspections]))
            .order_by(col(Assignment.id))
        ):
            seats.setdefault(seat.inspection_id, []).append(seat.inspector_id)
        first = inspections[0]
        target = await session.get(Target, first.target_id)
    assert first.id is not None and target is not None
    team = [ctx.people.inspector(i) for i in seats[first.id]]
    ctx.inspection_id, ctx.target_name = first.id, target.name
    ctx.team = (team[0], team[1])
    other = next(i for i in inspections[1:] if i.id in seats)
    ctx.idle = ctx.people.inspector(seats[other.id or 0][0])


async def step_assignments(ctx: Context) -> None:
    d = ctx.driver
    for inspector in ctx.pair:
        await d.act_as(inspector)
        card = await d.expect("检查任务", ctx.target_name, "✅ 确认接收", since=0)
        ctx.cards[inspector.tg_user_id] = card
    await d.snapshot("04-assignment")


async def step_confirm(ctx: Context) -> None:
    d = ctx.driver
    for inspector in ctx.pair:
        await d.act_as(inspector)
        answer = await d.press(ctx.cards[inspector.tg_user_id], "✅ 确认接收")
        card = await d.expect("您已确认接收", "录入结果")
        ctx.cards[inspector.tg_user_id] = card
        if answer is None:
            raise StepFailed("the bot did not acknowledge the confirmation")


async def step_result(ctx: Context) -> None:
    """The first inspector enters the result: a problem on item 1, with a photo."""
    d = ctx.driver
    a = ctx.pair[0]
    await d.act_as(a)
    ask = await press_and_expect(d, ctx.cards[a.tg_user_id], "📝 录入结果", "检查日期")
    ask = await press_and_expect(d, ask, "今天", "检查方式")
    ask = await press_and_expect(d, ask, "现场", "第 1/2 项")
    ask = await press_and_expect(d, ask, button(ask, "8 "), "发现的问题")
    await d.send_text(FINDING)
    ask = await d.expect("后续处置方式")
    ask = await press_and_expect(d, ask, "责令改正", "整改期限")
    ask = await press_and_expect(d, ask, "15 天", "证据")
    await d.send_photo(sample_photo(), "现场照片.png")
    ask = await d.expect("证据已保存", "已附证据：1 个")
    await d.snapshot("05-evidence")
    ask = await press_and_expect(d, ask, "下一项 ➡️", "第 2/2 项")
    ask = await press_and_expect(d, ask, "1 未发现问题", "完成，去核对")
    ask = await press_and_expect(d, ask, "完成，去核对 ➡️", "请核对后提交", FINDING, "证据：1 个")
    await press_and_expect(d, ask, "✅ 提交", "检查结果已提交")


async def step_cosign(ctx: Context) -> None:
    d = ctx.driver
    a, b = ctx.pair
    await d.act_as(b)
    check = await d.expect("请核对检查结果", FINDING, "证据：1 个", "✅ 确认无误", since=0)
    await press_and_expect(d, check, "✅ 确认无误", "您已确认无误")
    await d.act_as(a)
    await d.expect("检查组全部确认无误", since=0)


async def step_review(ctx: Context) -> None:
    d = ctx.driver
    await d.act_as(ctx.liaison)
    review = await d.expect("请复核检查结果", ctx.target_name, "✅ 通过", since=0)
    await d.snapshot("06-review")
    await press_and_expect(d, review, "✅ 通过", "已复核通过")
    await d.act_as(ctx.pair[0])
    await d.expect("检查结果复核通过", since=0)
    await d.expect("后续处置", "责令改正", since=0)


async def advance_until(
    ctx: Context, chat_id: int, needles: Sequence[Needle], *, days: int
) -> Seen:
    """Next working day, again and again, until the open chat shows the message."""
    d = ctx.driver
    await d.open_chat(chat_id)
    since = d.mark()
    for _ in range(days):
        await d.advance()
        try:
            await find_bot_message(ctx.demo, chat_id, needles, since, 2.0)
        except StepFailed:
            continue
        return await d.expect(*needles, since=since)
    wanted = " + ".join(n.pattern if isinstance(n, re.Pattern) else n for n in needles)
    raise StepFailed(f"“{wanted}” not shown in {days} working days")


async def step_reminder(ctx: Context) -> None:
    """An inspector who never confirms gets a 懒政提醒单 before the deadline; the liaison too."""
    d = ctx.driver
    idle = ctx.idle
    if idle is None:
        raise StepFailed("no other inspection drawn")
    await d.act_as(idle)
    liaison_mark = d.mark()
    await advance_until(ctx, idle.tg_user_id, ("懒政提醒单", idle.name), days=3)
    await d.snapshot("07-reminder")
    await d.act_as(ctx.liaison)
    await d.expect("懒政提醒单", idle.name, since=liaison_mark)


async def step_supervision(ctx: Context) -> None:
    """Past the deadline: a numbered 怠政督办单 in the department group, copied to the office."""
    d = ctx.driver
    await d.act_as(ctx.liaison)
    office_mark = d.mark()
    group = ctx.people.group_of("SJJ").chat_id
    order = await advance_until(ctx, group, ("怠政督办单", re.compile(r"督〔\d{4}〕\d+号")), days=4)
    if ctx.target_name in order.text:
        raise StepFailed("a target's name was posted to the department group")
    await d.act_as(ctx.office)
    await d.open_chat(ctx.people.group_of(None).chat_id)
    await d.expect("怠政督办单", since=office_mark)


async def step_accountability(ctx: Context) -> None:
    """The supervision deadline passes: a 失职问责单 for the office, who decides 免责."""
    d = ctx.driver
    await d.act_as(ctx.office)
    office_group = ctx.people.group_of(None).chat_id
    card = await advance_until(ctx, office_group, ("失职问责单", "✅ 免责"), days=8)
    await d.snapshot("08-accountability")
    reasons = await press_and_expect(d, card, "✅ 免责", "其他理由")
    await press_and_expect(d, reasons, reasons.buttons[0], "决定：免责")


STEPS: tuple[Step, ...] = (
    ("commands", step_commands),
    ("office_start", step_office_start),
    ("office_group", step_office_group),
    ("office_import", step_office_import),
    ("create_task", step_create_task),
    ("draw_commit", step_draw_commit),
    ("draw_execute", step_draw_execute),
    ("assignments", step_assignments),
    ("confirm", step_confirm),
    ("result", step_result),
    ("cosign", step_cosign),
    ("review", step_review),
    ("reminder", step_reminder),
    ("supervision", step_supervision),
    ("accountability", step_accountability),
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
