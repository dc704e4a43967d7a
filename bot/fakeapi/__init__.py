"""Offline Bot-API-compatible Telegram fake so tests, benchmarks and the demo need no network."""

from bot.fakeapi.limits import TELEGRAM_LIMITS, RateLimits
from bot.fakeapi.server import create_app, format_text, parse_html, run_fake_server
from bot.fakeapi.state import (
    DEFAULT_TOKEN,
    ApiError,
    CallbackQueryRecord,
    CallRecord,
    FakeChat,
    FakeTelegram,
    FakeTelegramError,
    FakeUser,
    StoredFile,
    StoredMessage,
    UpdateDict,
)

__all__ = [
    "DEFAULT_TOKEN",
    "TELEGRAM_LIMITS",
    "ApiError",
    "CallRecord",
    "CallbackQueryRecord",
    "FakeChat",
    "FakeTelegram",
    "FakeTelegramError",
    "FakeUser",
    "RateLimits",
    "StoredFile",
    "StoredMessage",
    "UpdateDict",
    "create_app",
    "format_text",
    "parse_html",
    "run_fake_server",
]
