"""`dsr demo`: the sample county, the demo clock, the page's routes and the headless scenario,
against the real bot talking HTTP to the fake (SQLite, or PostgreSQL + Redis in CI)."""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlmodel import col, func, select

from bot import uscc
from bot.demo.clock import DemoClock, next_working_morning, office_hours_start
from bot.demo.county import (
    DEPARTMENTS,
    SEED,
    SPEC,
    TARGET_COUNT,
    load_people,
    target_rows,
)
from bot.demo.runtime import Demo, DemoOptions, run_demo
from bot.demo.scenario import STEPS, HeadlessDriver, run_scenario, sample_photo
from bot.fakeapi.state import image_size
from bot.workdays import Calendar
from storage.db import Database
from storage.models import (
    ChatBinding,
    CheckItem,
    Department,
    ImportRun,
    Inspector,
    Person,
    RoleGrant,
    Target,
)

TZ = ZoneInfo("Asia/Shanghai")
MONDAY_0900 = datetime(2026, 3, 2, 9, 0, tzinfo=TZ)


async def _flush_redis() -> str | None:
    url = os.environ.get("REDIS_URL")
    if url:
        from redis.asyncio import Redis

        redis = Redis.from_url(url)
        await redis.flushdb()
        await redis.aclose()
    return url


@pytest.fixture
async def demo(db: Database) -> AsyncIterator[Demo]:
    """The whole demo on the test database (schema from the models), a random port."""
    async with run_demo(await _options(db)) as running:
        yield running


@pytest.fixture
async def small_demo(db: Database) -> AsyncIterator[Demo]:
    """The same with 2,000 targets, where the number does not matter."""
    async with run_demo(await _options(db, targets=2000)) as running:
        yield running


async def _options(db: Database, targets: int = TARGET_COUNT) -> DemoOptions:
    return DemoOptions(
        database_url=db.url,
        redis_url=await _flush_redis(),
        port=0,
        schema="ready",
        start=MONDAY_0900,
        keep_calls=True,
        targets=targets,
    )


# --- the county -------------------------------------------------------------------------------


def test_targets_are_reproducible_valid_and_stratified() -> None:
    rows = target_rows(random.Random(SEED), 2000)
    assert rows == target_rows(random.Random(SEED), 2000)
    assert rows != target_rows(random.Random(SEED + 1), 2000)
    codes = [row[1] for row in rows]
    assert len(set(codes)) == len(codes) and all(uscc.is_valid(c) for c in codes)
    assert len({row[0] for row in rows}) == len(rows)  # names are unique too
    credit = Counter(row[9] for row in rows)
    assert credit == {"A": 1200, "B": 500, "C": 200, "D": 100}
    # The USCC's second character follows the subject type (GB 32100: 1 企业, 2 个体, 3 合作社).
    kinds = {row[3]: row[1][1] for row in rows}
    assert kinds["个体工商户"] == "2" and kinds["农民专业合作社"] == "3"
    assert kinds["有限责任公司"] == "1"
    assert {row[6] for row in rows} == {t.name for t in SPEC.towns}


async def test_county_is_generated_through_the_importers(demo: Demo) -> None:
    generated = demo.generated
    assert generated is not None
    assert generated.counts == {
        "departments": 8,
        "stations": 6,
        "items": 40,
        "targets": 20_000,
        "inspectors": 120,
    }
    assert generated.total_seconds < 60
    async with demo.db.read() as session:
        targets = (await session.exec(select(func.count()).select_from(Target))).one()
        by_class = select(Target.credit_class, func.count()).group_by(col(Target.credit_class))
        credit = dict((await session.exec(by_class)).all())
        abnormal = (
            await session.exec(select(func.count()).where(col(Target.abnormal).is_(True)))
        ).one()
        serious = (
            await session.exec(select(func.count()).where(col(Target.serious_illegal).is_(True)))
        ).one()
        complained = (
            await session.exec(select(func.count()).where(col(Target.complaints) >= 3))
        ).one()
        items = list(await session.exec(select(CheckItem).where(col(CheckItem.active).is_(True))))
        runs = {r.id: r.kind for r in await session.exec(select(ImportRun))}
        departments = list(await session.exec(select(Department)))
        inspectors = list(await session.exec(select(Inspector)))
        grants = Counter(g.role for g in await session.exec(select(RoleGrant)))
        bindings = list(await session.exec(select(ChatBinding)))
        persons = (await session.exec(select(func.count()).select_from(Person))).one()
    assert targets == 20_000
    assert credit == {"A": 12_000, "B": 5_000, "C": 2_000, "D": 1_000}
    assert 0 < serious < abnormal < 400 and 0 < complained < 600

    county = {d.code for d in DEPARTMENTS}
    assert len(items) == 40 and {i.department_code for i in items} == county
    assert all(re.fullmatch(rf"{i.department_code}-\d\d", i.code) for i in items)
    assert all(runs[i.import_id] == "published_items" for i in items)  # the real Hainan lists
    assert all(i.ratio and i.frequency and i.content for i in items)
    joint = [i for i in items if i.joint]
    assert len(joint) == 4 and all(set(i.cooperating_codes) <= county for i in joint)
    assert any(i.cooperating_codes for i in joint)
    active = {d.code for d in departments if d.active}
    assert active == county | {t.station_code for t in SPEC.towns}
    assert all(not d.active for d in departments if d.provisional)

    assert len(inspectors) == 120 and all(i.expertise for i in inspectors)
    stations = Counter(i.unit for i in inspectors if i.department_code == "SJJ")
    assert all(stations[t.station_name] == SPEC.station_staff for t in SPEC.towns)
    conflicted = [i for i in inspectors if i.conflicts]
    assert 3 <= len(conflicted) <= 40
    keys = {c for i in conflicted for c in i.conflicts.split(";")}
    async with demo.db.read() as session:
        known = (
            await session.exec(select(func.count()).where(col(Target.key).in_(sorted(keys))))
        ).one()
    assert known == len(keys)  # 回避 names real targets of the county
    assert grants == {"office": 1, "liaison": 8, "inspector": 120} and persons == 129
    assert Counter(b.kind for b in bindings) == {"office": 1, "department": 8}


async def test_people_and_groups_are_registered_in_the_fake(small_demo: Demo) -> None:
    demo = small_demo
    people = await load_people(demo.db)
    assert [p.role for p in people.personas[:2]] == ["office", "liaison"]
    assert len(people.personas) == 129 and len(people.groups) == 9
    office_group = people.group_of(None)
    assert len(office_group.members) == 9  # the office and every liaison
    sjj = people.group_of("SJJ")
    assert len(sjj.members) == 61  # the liaison and the bureau's 60 inspectors
    for persona in people.personas:
        user = demo.fake.users[persona.tg_user_id]
        assert user.started and user.first_name == persona.name
        assert re.fullmatch(r"[\u4e00-\u9fff]{2,3}", persona.name)
    for group in people.groups:
        chat = demo.fake.chats[group.chat_id]
        assert chat.bot_admin and chat.type == "supergroup"


# --- the clock ----------------------------------------------------------------------------------


def test_demo_clock_keeps_running_from_where_it_jumped() -> None:
    real = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)
    clock = DemoClock(base=lambda: real)
    clock.travel_to(datetime(2026, 3, 9, 1, 0, tzinfo=UTC))
    assert clock.now() == datetime(2026, 3, 9, 1, 0, tzinfo=UTC)
    real += timedelta(minutes=5)
    assert clock.now() == datetime(2026, 3, 9, 1, 5, tzinfo=UTC)
    assert clock.timestamp() == clock.now().timestamp()
    with pytest.raises(ValueError):
        clock.travel_to(datetime(2026, 3, 9, 1, 0))


def test_next_working_morning_skips_weekends_and_holidays() -> None:
    calendar = Calendar()
    tz = "Asia/Shanghai"

    def morning(local: datetime) -> datetime:
        return next_working_morning(calendar, local.astimezone(UTC), tz).astimezone(TZ)

    # Friday afternoon -> Monday 09:00; Monday 08:00 -> Tuesday (the *next* working day).
    assert morning(datetime(2026, 3, 6, 16, 0, tzinfo=TZ)) == datetime(2026, 3, 9, 9, 0, tzinfo=TZ)
    assert morning(datetime(2026, 3, 9, 8, 0, tzinfo=TZ)) == datetime(2026, 3, 10, 9, 0, tzinfo=TZ)
    # National Day 2025: 1–8 October off, Saturday 11 October a make-up working day.
    assert morning(datetime(2025, 9, 30, 10, 0, tzinfo=TZ)).date() == date(2025, 10, 9)
    assert morning(datetime(2025, 10, 10, 10, 0, tzinfo=TZ)).date() == date(2025, 10, 11)

    def start(local: datetime) -> datetime:
        return office_hours_start(calendar, local.astimezone(UTC), tz).astimezone(TZ)

    during = datetime(2026, 3, 4, 14, 30, tzinfo=TZ)
    assert start(during) == during
    assert start(datetime(2026, 3, 4, 7, 0, tzinfo=TZ)) == datetime(2026, 3, 4, 9, 0, tzinfo=TZ)
    assert start(datetime(2026, 3, 7, 12, 0, tzinfo=TZ)) == datetime(2026, 3, 9, 9, 0, tzinfo=TZ)


# --- the page and its routes --------------------------------------------------------------------


async def test_page_assets_and_config_are_served_offline(small_demo: Demo) -> None:
    demo = small_demo
    async with aiohttp.ClientSession(demo.base_url) as http:
        async with http.get("/") as response:
            page = await response.text()
        assert response.status == 200 and "/static/app.js" in page
        for asset in ("app.js", "style.css"):
            async with http.get(f"/static/{asset}") as response:
                body = await response.text()
            assert response.status == 200
            assert not re.search(r"(src|href)=\"https?://", body)  # nothing from outside
        async with http.get("/_demo/config") as response:
            config = await response.json()
    assert config["texts"]["advance"] == "下一个工作日"
    assert config["texts"]["role.inspector"] == "执法检查人员"
    assert config["bot"]["username"] == demo.fake.bot_username
    assert len(config["personas"]) == 129 and config["personas"][0]["role"] == "office"
    assert config["clock"]["date"] == "2026-03-02" and config["clock"]["working"] is True


async def test_page_talks_to_the_real_bot_and_moves_the_clock(small_demo: Demo) -> None:
    demo = small_demo
    office = demo.people.first("office").tg_user_id
    async with aiohttp.ClientSession(demo.base_url) as http:
        async with http.get(f"/_demo/sync?user_id={office}&after=0&timeout=0") as response:
            first = await response.json()
        titles = {c["title"] for c in first["chats"]}
        assert titles == {demo.fake.bot_first_name, SPEC.office_group}
        async with http.get(f"/_fake/commands?user_id={office}") as response:
            commands = [c["command"] for c in (await response.json())["result"]]
        assert {"start", "help", "import", "invite"} <= set(commands)

        async with http.post("/_fake/send", json={"user_id": office, "text": "/help"}) as response:
            assert (await response.json())["ok"]
        seq = first["seq"]
        reply = None
        for _ in range(20):  # long polls until the bot's answer arrives
            url = f"/_demo/sync?user_id={office}&after={seq}&clock={first['clock']['version']}"
            async with http.get(url + "&timeout=5") as response:
                data = await response.json()
            seq = data["seq"]
            bot = [m for m in data["messages"] if m["from_bot"]]
            if bot:
                reply = bot[-1]
                break
        assert reply is not None and "/import" in reply["message"]["text"]
        assert any(e["type"] == "bold" for e in reply["message"].get("entities", []))

        photo = aiohttp.FormData()
        photo.add_field("user_id", str(office))
        photo.add_field("kind", "photo")
        photo.add_field("file", sample_photo(), filename="现场.png", content_type="image/png")
        async with http.post("/_fake/upload", data=photo) as response:
            sent = (await response.json())["result"]["message"]["photo"][-1]
        async with http.get(f"/_fake/file?file_id={sent['file_id']}") as response:
            assert image_size(await response.read()) == (320, 240)

        async with http.post("/_demo/advance") as response:
            moved = await response.json()
        assert moved["clock"]["date"] == "2026-03-03" and moved["clock"]["time"] == "09:00"
        assert moved["clock"]["version"] > first["clock"]["version"]
        async with http.post("/_demo/speed", json={"speed": 2}) as response:
            assert (await response.json())["clock"]["speed"] == 2
        async with http.post("/_demo/speed", json={"speed": "fast"}) as response:
            assert response.status == 400
    demo.set_speed(0)


async def test_speed_advances_the_clock_by_itself(small_demo: Demo) -> None:
    demo = small_demo
    start = demo.clock_version
    demo.set_speed(1200)  # a working day every 50 ms
    moved = await demo.fake.wait_until(lambda: demo.clock_version >= start + 3, 10.0)
    demo.set_speed(0)
    assert moved
    local = demo.clock.now().astimezone(TZ)
    assert local.date() >= date(2026, 3, 4) and (local.hour, local.minute) == (9, 0)
    version = demo.clock_version
    assert not await demo.fake.wait_until(lambda: demo.clock_version > version, 0.3)


async def test_the_demo_time_survives_a_restart(db: Database) -> None:
    options = await _options(db, targets=500)
    async with run_demo(options) as first:
        assert first.generated is not None
        await first.advance()
        await first.advance()
        moved = first.clock.now()
    async with run_demo(options) as second:
        assert second.generated is None  # the county is kept
        assert abs(second.clock.now() - moved) < timedelta(minutes=1)
        assert second.clock.now().astimezone(TZ).date() == date(2026, 3, 4)


# --- the scenario -------------------------------------------------------------------------------


async def test_headless_scenario_passes(demo: Demo) -> None:
    lines: list[str] = []
    report = await run_scenario(HeadlessDriver(demo), echo=lines.append)
    assert report.failed is None, lines
    assert [r.key for r in report.passed] == [key for key, _ in STEPS]
    assert all("✓" in line for line in lines)
