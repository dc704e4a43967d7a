"""The demo scenario clicked through in Debian's Chromium, as people would use the page.

The same steps as `dsr demo --headless-check` (bot/demo/scenario.py), but every action is a
click or a keystroke on the page and every check waits until the page shows the message.
Screenshots go to artifacts/e2e_browser/. Skipped, saying why, when Chromium is missing
(`.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import FilePayload, Locator, Page, async_playwright, expect

from bot.demo.county import Persona
from bot.demo.runtime import Demo, DemoOptions, run_demo
from bot.demo.scenario import Needle, Seen, StepFailed, find_bot_message, run_scenario, seen
from storage.db import Database

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", "artifacts")) / "e2e_browser"
# No network, no first-run work: the machine is offline and Playwright must not download.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; skipped (saying why) when absent, except where CI requires it."""
    if not CHROMIUM.exists():
        reason = f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)"
        if os.environ.get("DSR_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


class BrowserDriver:
    """`bot.demo.scenario.Driver` through the page: clicks, keystrokes, and what is on screen."""

    def __init__(self, demo: Demo, page: Page, shots: Path) -> None:
        self.demo = demo
        self.page = page
        self.shots = shots
        self.persona: Persona | None = None
        self.chat_id: int | None = None
        self._mark = 0

    def mark(self) -> int:
        return self.demo.fake.seq

    async def act_as(self, persona: Persona) -> None:
        page = self.page
        if self.persona != persona:
            await page.click("#persona-button")
            await page.fill("#persona-search", persona.name)
            await page.click(f'.persona-item[data-persona="{persona.tg_user_id}"]')
            await expect(page.locator("#persona-name")).to_have_text(persona.name)
        self.persona = persona
        await self.open_chat(persona.tg_user_id)

    async def open_chat(self, chat_id: int) -> None:
        await self.page.click(f'.chat-item[data-chat="{chat_id}"]')
        await expect(self.page.locator("body")).to_have_attribute("data-chat", str(chat_id))
        self.chat_id = chat_id

    def _chat(self) -> int:
        if self.chat_id is None:
            raise StepFailed("no chat open")
        return self.chat_id

    async def send_text(self, text: str) -> None:
        self._mark = self.mark()
        await self.page.fill("#input", text)
        await self.page.press("#input", "Enter")
        await expect(self.page.locator(".msg.out").last).to_contain_text(text.split("\n")[0])

    async def _upload(
        self, selector: str, data: bytes, name: str, mime: str, caption: str | None
    ) -> None:
        self._mark = self.mark()
        if caption:
            await self.page.fill("#input", caption)
        await self.page.click("#attach")
        await expect(self.page.locator("#attach-menu")).to_be_visible()
        payload = FilePayload(name=name, mimeType=mime, buffer=data)
        await self.page.set_input_files(selector, files=[payload])

    async def send_photo(self, data: bytes, file_name: str, caption: str | None = None) -> None:
        await self._upload("#file-photo", data, file_name, "image/png", caption)
        await expect(self.page.locator(".msg.out .photo img").last).to_be_visible()

    async def send_document(self, data: bytes, file_name: str, caption: str | None = None) -> None:
        await self._upload("#file-doc", data, file_name, "application/octet-stream", caption)
        await expect(self.page.locator(".msg.out .doc-name").last).to_have_text(file_name)

    async def press(self, message: Seen, label: str) -> str | None:
        self._mark = self.mark()
        bubble = self._bubble(message)
        button = bubble.locator(".kb-row button").get_by_text(label, exact=True)
        before = set(self.demo.fake.callbacks)
        await button.click()
        fake = self.demo.fake

        def answered() -> bool:
            return any(r.answered for q, r in fake.callbacks.items() if q not in before)

        if not await fake.wait_until(answered, 10.0):
            raise StepFailed(f"the bot did not answer the press on “{label}”")
        record = next(r for q, r in fake.callbacks.items() if q not in before)
        answer = (record.answer or {}).get("text")
        if answer:
            shown = "#alert-text" if (record.answer or {}).get("show_alert") else "#toast"
            await expect(self.page.locator(shown)).to_contain_text(str(answer))
            if shown == "#alert-text":
                await self.page.click("#alert-ok")
        return str(answer) if answer else None

    def _bubble(self, message: Seen) -> Locator:
        chat, mid = message.chat_id, message.message_id
        return self.page.locator(f'.msg[data-chat="{chat}"][data-mid="{mid}"]')

    async def expect(
        self, *needles: Needle, since: int | None = None, within: float = 15.0
    ) -> Seen:
        after = self._mark if since is None else since
        found = seen(await find_bot_message(self.demo, self._chat(), needles, after, within))
        bubble = self._bubble(found)
        await expect(bubble).to_be_visible(timeout=within * 1000)
        for needle in needles:
            await expect(bubble).to_contain_text(needle)
        return found

    async def menu(self) -> list[str]:
        page = self.page
        await page.click("#menu-button")
        items = page.locator("#command-menu .cmd-item")
        await expect(items.first).to_be_visible()
        commands = [str(await item.get_attribute("data-cmd")) for item in await items.all()]
        await page.click("#menu-button")
        return commands

    async def advance(self) -> None:
        self._mark = self.mark()
        before = await self.page.locator("#clock").inner_text()
        await self.page.click("#advance")
        await expect(self.page.locator("#clock")).not_to_have_text(before)
        await expect(self.page.locator("#advance")).to_be_enabled()

    async def snapshot(self, name: str) -> None:
        # The state, without the toast of an earlier press (it fades after three seconds).
        await self.page.evaluate("document.getElementById('toast').hidden = true")
        await self.page.screenshot(path=str(self.shots / f"{name}.png"))


@pytest.fixture
async def demo(db: Database) -> AsyncIterator[Demo]:
    redis = os.environ.get("REDIS_URL")
    if redis:
        from redis.asyncio import Redis

        client = Redis.from_url(redis)
        await client.flushdb()
        await client.aclose()
    options = DemoOptions(
        database_url=db.url,
        redis_url=redis,
        port=0,
        schema="ready",
        start=datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")),
    )
    async with run_demo(options) as running:
        yield running


async def test_scenario_in_chromium(chromium: Path, demo: Demo) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    lines: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800}, locale="zh-CN")
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(demo.base_url)
            await expect(page.locator("#persona-name")).not_to_be_empty()
            driver = BrowserDriver(demo, page, ARTIFACTS)
            try:
                report = await run_scenario(driver, echo=lines.append)
            finally:
                await page.screenshot(path=str(ARTIFACTS / "last.png"))
            assert report.failed is None, "\n".join(lines)
            assert not errors, errors
        finally:
            await browser.close()
