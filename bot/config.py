"""Settings from the environment and `.env` (pydantic-settings)."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TELEGRAM_API = "https://api.telegram.org"


class Settings(BaseSettings):
    """Everything configurable; built once by the entry point, never at import time."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    bot_token: SecretStr | None = None
    database_url: str = "sqlite+aiosqlite:///./data/dsr.sqlite3"
    telegram_api_base: str = TELEGRAM_API
    redis_url: str | None = None
    office_admins: Annotated[list[int], NoDecode] = Field(default_factory=list)
    timezone: str = "Asia/Shanghai"
    invite_ttl_days: int = 14
    import_max_mb: int = 50
    import_error_limit: int = 10_000
    telegram_file_max_mb: int = 20
    # Evidence photos and documents of a result (issue 4); Telegram bots download at most 20 MB.
    evidence_max_mb: int = 20
    bot_username: str | None = None
    # 三单 (issue 5): quiet hours in TIMEZONE (reminders and orders wait for their end), the
    # reminder lead in working days, and how long before the calendar data runs out the office
    # is told to load the next year. (The new deadline a supervision order sets is a task's
    # deadline setting, like the others: bot.duties.DEFAULT_WORKING_DAYS.)
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    reminder_days: int = 3
    reminder_days_short: int = 1  # for duties of `short_duty_days` working days or less
    short_duty_days: int = 2
    holiday_warning_days: int = 60
    # Telegram's flood limits (https://core.telegram.org/bots/faq#broadcasting-to-users); the
    # sender's limiter and the Bot-API fake's limits are both built from these.
    rate_global_per_s: int = 30
    rate_group_per_min: int = 20
    rate_chat_per_s: int = 1
    sender_idle_s: float = 1.0
    sweep_every_s: float = 60.0

    @field_validator("office_admins", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        # "123, 456" or "123 456" in the environment; a list when built in code.
        if isinstance(value, str):
            return [int(part) for part in value.replace(",", " ").split()]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # People paste plain URLs; the app needs the async drivers.
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        return value

    @property
    def import_max_bytes(self) -> int:
        return self.import_max_mb * 1024 * 1024

    def sqlite_path(self) -> Path | None:
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            rest = self.database_url.removeprefix(prefix)
            return None if rest in ("", ":memory:") else Path(rest)
        return None
