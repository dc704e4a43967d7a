"""The demo's web page and its few routes, on the same aiohttp app as the fake Bot API.

The page (static/) is plain HTML/JS/CSS: it acts as people through the fake's control routes
(`/_fake/send`, `/_fake/press`, `/_fake/upload`, `/_fake/callback`, `/_fake/file`,
`/_fake/commands`) and reads what they see through `/_demo/sync`, a long poll over the fake's
change counter. Its own words come from `templates/texts/demo.yaml` (`demo.page.*`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import yaml
from aiohttp import web

from bot.demo.county import BOT_NAME, BOT_USERNAME
from bot.fakeapi import FakeTelegram
from bot.fakeapi.server import create_app
from bot.fakeapi.state import FakeChat
from bot.render import TEMPLATES, text

if TYPE_CHECKING:
    from bot.demo.runtime import Demo

STATIC = Path(__file__).resolve().parent / "static"
DEMO_KEY: web.AppKey[Demo] = web.AppKey("demo")
SYNC_TIMEOUT_MAX = 25


@cache
def page_texts() -> dict[str, str]:
    """`demo.page.*` flattened (`persona.office` etc.); `{n}` placeholders are the page's."""
    raw = yaml.safe_load((TEMPLATES / "texts" / "demo.yaml").read_text(encoding="utf-8"))
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            out[prefix] = text(f"demo.page.{prefix}")

    walk("", raw["demo"]["page"])
    return out


def clock_json(demo: Demo) -> dict[str, Any]:
    now = demo.clock.now()
    local = now.astimezone(ZoneInfo(demo.timezone))
    calendar_working = demo.calendar_cache.is_working_day(local.date())
    return {
        "iso": local.isoformat(timespec="minutes"),
        "date": local.date().isoformat(),
        "time": local.strftime("%H:%M"),
        "weekday": local.isoweekday(),
        "working": calendar_working,
        "offset_days": round(demo.clock.offset.total_seconds() / 86400, 2),
        "speed": demo.speed,
        "version": demo.clock_version,
    }


def _chat_summary(fake: FakeTelegram, chat: FakeChat, viewer: int) -> dict[str, Any]:
    title = chat.title or ""
    if chat.type == "private":
        title = fake.bot_first_name if viewer == chat.id else fake.user(chat.id).full_name
    pinned = None
    if chat.pinned_message_id is not None:
        message = chat.messages.get(chat.pinned_message_id)
        if message is not None and not message.deleted:
            pinned = {
                "message_id": message.message_id,
                "text": (message.text or message.caption or "")[:200],
            }
    return {
        "id": chat.id,
        "type": chat.type,
        "title": title,
        "members": len(chat.members),
        "pinned": pinned,
        "action": fake.current_action(chat),
    }


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def config(request: web.Request) -> web.Response:
    """Everything the page needs once: its words, the bot, the personas, the clock."""
    demo = request.app[DEMO_KEY]
    return web.json_response(
        {
            "texts": page_texts(),
            "bot": {"id": demo.fake.bot_id, "name": BOT_NAME, "username": BOT_USERNAME},
            "personas": [p.to_json() for p in demo.people.personas],
            "groups": [
                {"id": g.chat_id, "title": g.title, "kind": g.kind, "department": g.department_code}
                for g in demo.people.groups
            ],
            "clock": clock_json(demo),
        }
    )


async def sync(request: web.Request) -> web.Response:
    """The persona's chats and every message of them changed after `after` (a fake `seq`);
    waits up to `timeout` s for a change, or for the clock to move past `clock`."""
    demo = request.app[DEMO_KEY]
    fake = demo.fake
    try:
        user_id = int(request.query["user_id"])
        after = int(request.query.get("after", "0"))
        seen_clock = int(request.query.get("clock", "-1"))
        timeout = min(max(int(request.query.get("timeout", "0")), 0), SYNC_TIMEOUT_MAX)
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text="user_id, after, clock, timeout") from None
    if user_id not in fake.users:
        raise web.HTTPNotFound(text="unknown user")

    def changed() -> bool:
        return fake.seq > after or demo.clock_version != seen_clock

    if timeout and not changed():
        await fake.wait_until(changed, timeout)
    chats = fake.chats_of(user_id)
    messages = [
        m.to_json()
        for chat in chats
        for m in chat.messages.values()
        if m.seq > after and not (m.is_service and m.service and "migrate_to_chat_id" in m.service)
    ]
    messages.sort(key=lambda m: int(m["seq"]))
    return web.json_response(
        {
            "seq": fake.seq,
            "clock": clock_json(demo),
            "chats": [_chat_summary(fake, c, user_id) for c in chats],
            "messages": messages,
        }
    )


async def advance(request: web.Request) -> web.Response:
    """The page's 下一个工作日 button."""
    demo = request.app[DEMO_KEY]
    result = await demo.advance()
    swept = result.swept
    return web.json_response(
        {
            "clock": clock_json(demo),
            "delivered": result.delivered,
            "reminders": swept.reminders,
            "supervisions": swept.supervisions,
            "accountabilities": swept.accountabilities,
        }
    )


async def speed(request: web.Request) -> web.Response:
    demo = request.app[DEMO_KEY]
    try:
        body = await request.json()
        per_minute = float(body["speed"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="speed") from None
    demo.set_speed(per_minute)
    return web.json_response({"clock": clock_json(demo)})


def create_web_app(demo: Demo) -> web.Application:
    """The fake's app (Bot API for the bot, control routes for the page) plus the page."""
    app = create_app(demo.fake)
    app[DEMO_KEY] = demo
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, append_version=True)
    app.router.add_get("/_demo/config", config)
    app.router.add_get("/_demo/sync", sync)
    app.router.add_post("/_demo/advance", advance)
    app.router.add_post("/_demo/speed", speed)
    return app
