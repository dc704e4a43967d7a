"""Sliding-window flood limits of the fake Bot API, mirroring Telegram's documented quotas."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-instance quotas so tests can tighten, relax or switch off each Telegram limit."""

    global_per_second: int | None = 30
    group_per_minute: int | None = 20
    chat_per_second: int | None = 1

    @classmethod
    def disabled(cls) -> RateLimits:
        """Lets functional tests send bursts without tripping 429s."""
        return cls(global_per_second=None, group_per_minute=None, chat_per_second=None)


TELEGRAM_LIMITS = RateLimits()


class SlidingWindow:
    """Counts events per key over a trailing window, as Telegram's flood control does."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.window = window
        self._events: dict[Hashable, deque[float]] = {}

    def _prune(self, key: Hashable, now: float) -> deque[float]:
        """Drops expired stamps so memory stays bounded by the limit."""
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def retry_after(self, key: Hashable, now: float) -> float | None:
        """Seconds until one more event fits, or None when it fits now."""
        events = self._prune(key, now)
        if len(events) < self.limit:
            return None
        return events[len(events) - self.limit] + self.window - now

    def record(self, key: Hashable, now: float) -> None:
        """Separate from the check so several windows can be consulted atomically."""
        self._prune(key, now).append(now)


class RateLimiter:
    """Combines Telegram's overall, per-group and per-chat windows into one admission check."""

    def __init__(self, limits: RateLimits | None) -> None:
        limits = limits or RateLimits.disabled()
        self.limits = limits
        self._global = (
            SlidingWindow(limits.global_per_second, 1.0)
            if limits.global_per_second is not None
            else None
        )
        self._group = (
            SlidingWindow(limits.group_per_minute, 60.0)
            if limits.group_per_minute is not None
            else None
        )
        self._chat = (
            SlidingWindow(limits.chat_per_second, 1.0)
            if limits.chat_per_second is not None
            else None
        )
        self.refused: Counter[str] = Counter()
        """429s by the quota that was full ("overall", "group", "chat"): Telegram does not
        say which, but a benchmark wants to know."""

    def admit(self, chat_id: int, is_group: bool, now: float) -> int | None:
        """Records the send and returns None, or returns Telegram's whole-second retry_after."""
        checks: list[tuple[str, SlidingWindow, Hashable]] = []
        if self._global is not None:
            checks.append(("overall", self._global, "*"))
        if self._group is not None and is_group:
            checks.append(("group", self._group, chat_id))
        if self._chat is not None:
            checks.append(("chat", self._chat, chat_id))
        waits = {
            quota: wait
            for quota, window, key in checks
            if (wait := window.retry_after(key, now)) is not None
        }
        if waits:
            self.refused.update(waits.keys())
            return max(1, math.ceil(max(waits.values())))
        for _, window, key in checks:
            window.record(key, now)
        return None
