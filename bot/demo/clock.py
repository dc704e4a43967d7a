"""The demo's clock: real time plus an offset that only moves forward, so the office can jump a
working day ahead and watch deadlines fall due (the 三单 ladder in minutes)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.workdays import Calendar

OFFICE_OPENS = time(9, 0)
OFFICE_CLOSES = time(17, 30)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DemoClock:
    """`bot.clock.Clock` for the bot, the sender and the sweeper; `timestamp` for the fake."""

    def __init__(
        self,
        offset: timedelta = timedelta(0),
        *,
        base: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.offset = offset
        self._base = base

    def now(self) -> datetime:
        return self._base() + self.offset

    def timestamp(self) -> float:
        """Unix time as the fake Telegram stamps messages with it."""
        return self.now().timestamp()

    def travel_to(self, moment: datetime) -> None:
        """Jump to `moment` (aware); time keeps running from there."""
        if moment.utcoffset() is None:
            raise ValueError("DemoClock needs an aware datetime")
        self.offset = moment - self._base()


def next_working_morning(calendar: Calendar, now: datetime, tz: str) -> datetime:
    """09:00 local on the first working day after `now`'s local date, as aware UTC."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    day = calendar.working_days_add(today, 1)
    return datetime.combine(day, OFFICE_OPENS, tzinfo=zone).astimezone(UTC)


def office_hours_start(calendar: Calendar, now: datetime, tz: str) -> datetime:
    """Where a fresh demo starts: `now` during office hours of a working day, else the next
    working morning (a trainer should not open the demo on a Sunday night)."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    if calendar.is_working_day(local.date()) and OFFICE_OPENS <= local.time() < OFFICE_CLOSES:
        return now
    if calendar.is_working_day(local.date()) and local.time() < OFFICE_OPENS:
        return datetime.combine(local.date(), OFFICE_OPENS, tzinfo=zone).astimezone(UTC)
    return next_working_morning(calendar, now, tz)
