"""The delivery engine: drains the outbox within Telegram's flood limits and records the result.

Rows are claimed (``claimed_by``/``claimed_until``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a
single write statement on SQLite), sent concurrently — one lane per chat, so each chat gets its
messages in the order they were queued — through a ``Transport`` (bot/telegram.py implements it
with aiogram; this module knows nothing of aiogram), and marked sent with Telegram's message id.

Delivery is **at least once**: a message is never dropped silently, and the one duplicate we
accept is a crash (or lost database) after Telegram accepted a message but before its row was
marked sent; the row's claim then expires and it is sent again. The other choice, marking rows
"sending" before the call and never retrying them, would lose an assignment or a 三单 notice
instead, which is worse than seeing it twice. docs/delivery.md has the whole story.

What the sender does with each answer:
- 429 (``Throttled``): wait ``retry_after`` for that chat, then try again; every chat waits when
  the chat's own quota was idle (so the overall quota ran out). 429s are counted
  in ``throttled`` and cost no attempt until ``FREE_THROTTLES`` of them.
- network errors and 5xx (``RetryLater``): exponential backoff with jitter, persisted in
  ``next_attempt_at`` so it survives a restart; gives up after ``MAX_ATTEMPTS`` and tells the
  office (``notify_gave_up``), once per batch of results.
- 403 (``Forbidden``): the person blocked the bot or never opened it. The row is failed, and
  the liaisons of ``notify_department`` get one private notice per episode;
  ``requeue_forbidden`` sends everything again once the person opens the bot.
- 400 and the like (``Rejected``): the message itself is wrong; failed at once.
- group upgraded to a supergroup (``Moved``): the chat's pending rows follow the new id.

Edits (``bot.outbox.enqueue_edit``) travel like sends, in their chat's order, and name the
earlier row whose message they change. When an edit's turn comes, ``_edit_target`` looks up
that row's message id; an edit of a message that was given up (or never queued) is done with
nothing to do (``skipped``), and so is one Telegram answers "message is not modified" or
"message to edit not found" (``NothingToEdit``). Every other answer is handled as for a send.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Table, and_, bindparam, func, or_, update
from sqlalchemy import select as core_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock
from bot.outbox import enqueue
from bot.render import has_text, render, text
from storage.db import Database
from storage.models import ChatBinding, OutboxMessage, OutboxStatus, Person, Role, RoleGrant

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]

CLAIM_SECONDS = 120
"""How long a claim keeps other senders off a row; live claims are extended every 30 s."""
SEND_GUARD = timedelta(seconds=75)
"""A row is only sent while its claim outlives the longest request (aiogram's 60 s timeout)."""
MAX_ATTEMPTS = 20
"""Network errors before giving up: with the backoff below, about an hour of outage."""
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
FREE_THROTTLES = 10
"""429s on one row that do not count as attempts; after that each one does."""
FLUSH_EVERY = 0.1
"""Seconds between writes of results: widens the sent-but-not-recorded window by as much."""
MAX_INLINE_WAIT = 10.0
"""A longer retry_after releases the chat's rows to the database instead of holding them."""
DELIVERY = "delivery"
"""The feature of the delivery engine's own messages (their idempotency keys' prefix)."""
EDIT_WAIT = 1.0
"""Seconds an edit waits before looking again for its unsent target (another chat's row)."""
FORBIDDEN = "forbidden"
"""Prefix of ``last_error`` for rows that failed with 403 (see ``requeue_forbidden``)."""


# ---------------------------------------------------------------------------- transport


class DeliveryError(Exception):
    """What a transport raises instead of returning a message id."""


class Forbidden(DeliveryError):
    """The recipient blocked the bot, never opened it, or removed it from the group (403)."""


class Rejected(DeliveryError):
    """Telegram refused this message for good (400: bad markup, chat not found, too long)."""


class Throttled(DeliveryError):
    """Flood control (429): come back after `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class RetryLater(DeliveryError):
    """A network problem or a Telegram server error: try again with backoff."""


class NothingToEdit(DeliveryError):
    """The edit has nothing to do: the message already reads so, or it is gone."""


class Moved(DeliveryError):
    """The group became a supergroup with a new id."""

    def __init__(self, chat_id: int) -> None:
        super().__init__(chat_id)
        self.chat_id = chat_id


@dataclass(frozen=True)
class Outgoing:
    chat_id: int
    method: str
    text: str
    reply_markup: dict[str, Any] | None
    document_name: str | None
    document: bytes | None
    message_id: int | None = None
    """For an edit: the message to edit (resolved by the sender when the edit's turn comes)."""


class Transport(Protocol):
    async def deliver(self, message: Outgoing) -> int:
        """Send (or edit); return Telegram's message id, or raise a ``DeliveryError``."""
        ...


# ---------------------------------------------------------------------------- flood limits


SLACK = 0.001
"""Seconds added to every window: float rounding must never put two requests exactly one
window apart on the server's side of the comparison."""
PACE = 0.9
"""A paced window spaces requests ``PACE * window / limit`` apart: a little faster than the
quota, so the window's own rule, not the pacing, sets the rate."""
PRESUME_AFTER = 5.0
"""Seconds (at least one window) after which an unanswered request is taken as answered."""


class ServerWindow:
    """At most ``limit`` requests in any ``window`` seconds, as the server counts them.

    Telegram (and our fake, bot/fakeapi/limits.py) counts a sliding window of the moments it
    *received* requests. We cannot see that moment, but it lies between our sending a request
    and its answer coming back. So a request may go once ``window`` has passed since the answer
    to every request ``limit`` or more sends back: then no ``limit + 1`` requests can fall into
    one window however the network and the server's event loop delay them, and there is no
    margin to guess. The cost is about one round trip per window, not a fixed share of the
    rate. (A leaky bucket, aiolimiter, tried first, counts when we send: it needs a margin for
    delays it cannot see, and a stalled event loop still bunched requests past it.)

    A request still unanswered ``PRESUME_AFTER`` seconds (or one window, if longer) after it
    went is taken as answered then: waiting for aiogram's 60 s timeout would stall every chat
    behind one lost request. (One second was too short: on a loaded machine the fake's event
    loop held requests longer, and counted them after we had presumed them answered.)
    """

    def __init__(self, limit: int, window: float, *, paced: bool = False) -> None:
        self.limit = limit
        self.window = window
        self.paced = paced
        """Also spread requests evenly (``PACE * window / limit`` apart, a burst of 1 % at most): a
        burst of a whole window's quota at once piles up at the server, its answers come back
        late, and the window then waits for them."""
        self._next_slot = float("-inf")
        self._recent: deque[tuple[float, asyncio.Future[float]]] = deque()
        """(sent at, answered at) of the last ``limit - 1`` or more requests, oldest first."""
        self._floor = float("-inf")
        """The latest answer among older requests."""
        self.presumed = 0
        """Requests taken as answered without an answer."""

    def _settle(self, now: float) -> float:
        """Fold answered requests ``limit`` back into the floor; returns how long to wait for
        the unanswered one that holds the next request back (0: none does)."""
        while len(self._recent) >= self.limit:
            sent, answer = self._recent[0]
            if answer.done():
                self._floor = max(self._floor, answer.result())
            elif now - sent >= max(self.window, PRESUME_AFTER):
                log.warning("no answer %.1f s after a send; presuming it counted", now - sent)
                self.presumed += 1
                self._floor = max(self._floor, now)
            else:
                return sent + max(self.window, PRESUME_AFTER) - now
            self._recent.popleft()
        return 0.0

    def wait_time(self, now: float) -> float:
        """Seconds until a request may go."""
        return self._settle(now) or max(
            0.0, max(self._floor + self.window + SLACK, self._next_slot) - now
        )

    async def room(self) -> None:
        """Wait until a request may go (then ``take`` it without awaiting in between)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            unanswered = self._settle(now)
            if unanswered:
                # `wait`, not `await`: cancelling us must not cancel the answer.
                await asyncio.wait([self._recent[0][1]], timeout=unanswered)
                continue
            wait = max(self._floor + self.window + SLACK, self._next_slot) - now
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def take(self) -> asyncio.Future[float]:
        """Count a request; set the future's result to the time its answer came back."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.paced:
            spacing = self.window / self.limit * PACE
            burst = max(1, self.limit // 100)
            self._next_slot = max(self._next_slot, now - (burst - 1) * spacing) + spacing
        answer: asyncio.Future[float] = loop.create_future()
        self._recent.append((now, answer))
        return answer

    def idle(self, now: float) -> bool:
        """Nothing counted within the last window (the server's count is zero)."""
        latest = self._floor
        for _, answer in self._recent:
            if not answer.done():
                return False
            latest = max(latest, answer.result())
        return latest + self.window + SLACK <= now


def _answered(answer: asyncio.Future[float], at: float) -> None:
    if not answer.done():
        answer.set_result(at)


class DeliveryLimiter:
    """Telegram's three quotas: overall per second, per group per minute, per chat per second,
    each a ``ServerWindow``. A lane (one chat) waits for its chat's and group's windows, then
    queues for the overall one behind a gate task that hands the overall window's room to the
    waiting lanes in turn; when the send returns, ``sent`` records the answer in all three."""

    MIN_SLOWDOWN = 0.7

    def __init__(
        self,
        *,
        global_per_s: int | None,
        group_per_min: int | None,
        chat_per_s: int | None,
    ) -> None:
        self.global_per_s = global_per_s
        self.group_per_min = group_per_min
        self.chat_per_s = chat_per_s
        self.slowdown = 1.0
        """Fraction of the overall quota in use: lowered by each 429 on the overall quota."""
        self._slowed_at = 0.0
        self._global = ServerWindow(global_per_s, 1.0, paced=True) if global_per_s else None
        self._chats: dict[int, ServerWindow] = {}
        self._groups: dict[int, ServerWindow] = {}
        self._in_flight: dict[int, list[asyncio.Future[float]]] = {}
        self._paused: dict[int, float] = {}
        self._all_paused_until = 0.0
        self._waiting: deque[asyncio.Future[asyncio.Future[float]]] = deque()
        self._gate: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryLimiter:
        return cls(
            global_per_s=settings.rate_global_per_s,
            group_per_min=settings.rate_group_per_min,
            chat_per_s=settings.rate_chat_per_s,
        )

    @classmethod
    def unlimited(cls) -> DeliveryLimiter:
        return cls(global_per_s=None, group_per_min=None, chat_per_s=None)

    def _chat(self, chat_id: int) -> ServerWindow | None:
        if not self.chat_per_s:
            return None
        window = self._chats.get(chat_id)
        if window is None:
            if len(self._chats) > 4096:
                self._forget_idle()
            window = self._chats[chat_id] = ServerWindow(self.chat_per_s, 1.0)
        return window

    def _group(self, chat_id: int) -> ServerWindow | None:
        if not self.group_per_min:
            return None
        window = self._groups.get(chat_id)
        if window is None:
            window = self._groups[chat_id] = ServerWindow(self.group_per_min, 60.0)
        return window

    def _forget_idle(self) -> None:
        """Windows with nothing in them hold no information; keeps memory bounded."""
        now = asyncio.get_running_loop().time()
        for chats in (self._chats, self._groups):
            for chat_id in [c for c, window in chats.items() if window.idle(now)]:
                del chats[chat_id]

    def throttled(self, chat_id: int, seconds: float, *, chat_was_idle: bool) -> bool:
        """Telegram answered 429 for this chat: it waits `seconds`. When the chat's own quota
        was idle, the overall one ran out (another process sends with our token, or Telegram
        counts less than documented), and every chat pauses: sending on into a full window
        only earns more 429s. Returns True when every chat was paused."""
        now = asyncio.get_running_loop().time()
        until = now + seconds
        self._paused[chat_id] = max(self._paused.get(chat_id, 0.0), until)
        if not chat_was_idle:
            return False
        self._all_paused_until = max(self._all_paused_until, until)
        self._set_slowdown(max(self.MIN_SLOWDOWN, self.slowdown * 0.95), now)
        return True

    def _set_slowdown(self, slowdown: float, now: float) -> None:
        self.slowdown = slowdown
        self._slowed_at = now
        if self._global is not None and self.global_per_s:
            # Lowering the limit only makes the window stricter for requests already counted.
            self._global.limit = max(1, int(self.global_per_s * slowdown))

    def _recover(self, now: float) -> None:
        """Ten quiet seconds after a slowdown: 2 % faster, back up to the full rate."""
        if self.slowdown < 1.0 and now - self._slowed_at > 10.0:
            self._set_slowdown(min(1.0, self.slowdown * 1.02), now)

    def _pause_left(self, chat_id: int, now: float) -> float:
        left = max(self._paused.get(chat_id, 0.0), self._all_paused_until) - now
        if left <= 0:
            self._paused.pop(chat_id, None)
        return left

    async def turn(self, chat_id: int, is_group: bool) -> bool:
        """Wait until this chat may send and count the send in every quota; call `sent` when
        the send returns. True when the chat's own quotas were idle: a 429 then means the
        overall quota ran out. One send per chat at a time (the chat's lane)."""
        loop = asyncio.get_running_loop()
        self._recover(loop.time())
        chat = self._chat(chat_id)
        group = self._group(chat_id) if is_group else None
        own = [window for window in (chat, group) if window is not None]
        while True:
            # The chat's earlier sends have all been answered (`sent`): these only sleep.
            for window in own:
                await window.room()
            pause = self._pause_left(chat_id, loop.time())
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            counted = [await self._overall_room()] if self._global is not None else []
            if self._pause_left(chat_id, loop.time()) <= 0:
                break
            for answer in counted:  # paused meanwhile: that room goes unused
                _answered(answer, loop.time())
        idle = all(window.idle(loop.time()) for window in own)
        self._in_flight[chat_id] = counted + [window.take() for window in own]
        return idle

    async def _overall_room(self) -> asyncio.Future[float]:
        """Queue for the overall window behind one gate task, which counts the request and
        hands over its answer future. Hundreds of lanes waiting on the window themselves would
        each cost an event-loop iteration per hand-over."""
        token: asyncio.Future[asyncio.Future[float]] = asyncio.get_running_loop().create_future()
        self._waiting.append(token)
        if self._gate is None or self._gate.done():
            self._gate = asyncio.create_task(self._hand_out())
        try:
            return await token
        except asyncio.CancelledError:
            if token.done() and not token.cancelled():  # counted, never sent
                _answered(token.result(), asyncio.get_running_loop().time())
            raise

    async def _hand_out(self) -> None:
        assert self._global is not None
        while self._waiting:
            await self._global.room()
            while self._waiting:
                token = self._waiting.popleft()
                if not token.done():  # its lane may have been cancelled meanwhile
                    token.set_result(self._global.take())
                    break

    async def close(self) -> None:
        if self._gate is not None:
            self._gate.cancel()
            await asyncio.gather(self._gate, return_exceptions=True)
            self._gate = None

    def sent(self, chat_id: int) -> None:
        """The send to this chat returned, whatever the answer: the server counted it by now."""
        now = asyncio.get_running_loop().time()
        for answer in self._in_flight.pop(chat_id, []):
            _answered(answer, now)


# ---------------------------------------------------------------------------- the engine


@dataclass
class _Row:
    """A claimed outbox row, as the lane holding it sees it."""

    id: int
    key: str
    chat_id: int
    is_group: bool
    notify_department: str | None
    attempts: int
    throttled: int
    outgoing: Outgoing
    claim_until: datetime
    edits: str | None = None
    """An edit's target: the key of the row whose message it edits."""


@dataclass(frozen=True)
class _Done:
    """A result waiting to be written: sent (with message id) or failed (with error)."""

    row: _Row
    at: datetime
    message_id: int | None = None
    error: str | None = None
    gave_up: bool = False
    """Failed after ``MAX_ATTEMPTS`` tries that may succeed another time (network, 429s)."""
    skipped: bool = False
    """An edit with nothing to do; ``error`` says why."""


@dataclass
class _Lane:
    chat_id: int
    queue: deque[_Row] = field(default_factory=deque)
    sending: bool = False
    task: asyncio.Task[None] | None = None


@dataclass
class SenderStats:
    sent: int = 0
    throttled: int = 0
    retried: int = 0
    failed: int = 0
    forbidden: int = 0
    skipped: int = 0


class Sender:
    """Delivers outbox rows: `drain()` until nothing is due (tests), `run()` forever (the bot)."""

    def __init__(
        self,
        db: Database,
        transport: Transport,
        clock: Clock,
        batch: int = 200,
        *,
        limiter: DeliveryLimiter | None = None,
        per_chat: int = 10,
        name: str | None = None,
        jitter: Callable[[], float] = random.random,
        office_admins: Sequence[int] = (),
    ) -> None:
        self.db = db
        self.office_admins = tuple(office_admins)
        """OFFICE_ADMINS: told, with the office's members, when no office group is bound."""
        self.transport = transport
        self.clock = clock
        self.limiter = limiter or DeliveryLimiter.unlimited()
        # Keep a few seconds of sending claimed: enough lanes that the overall quota, not one
        # chat's, is the bottleneck, and few enough that claims stay short.
        self.in_flight = max(batch, 4 * (self.limiter.global_per_s or 0))
        # Claim in steps of about a second of sending, so the first messages leave at once.
        self.claim_step = max(batch, self.limiter.global_per_s or 0)
        self.per_chat = per_chat
        self.name = name or f"sender-{secrets.token_hex(4)}"
        self.stats = SenderStats()
        self._jitter = jitter
        self._held: dict[int, _Row] = {}
        self._lanes: dict[int, _Lane] = {}
        self._results: list[_Done] = []
        self._unrecorded: dict[str, int | None] = {}
        """Results not yet recorded, by key (the message id; None when it failed): an edit may
        name one of these rows."""
        self._has_results = asyncio.Event()
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()  # claims and releases: keeps each chat's rows in order
        self._flush_lock = asyncio.Lock()
        self._stopping = False

    # -- entry points ----------------------------------------------------------------------

    async def drain(self) -> int:
        """Send everything due now (retries scheduled for later stay queued); returns how many
        messages were sent."""
        return await self._pump(stop=None, wake=None, idle=1.0)

    async def run(
        self, stop: asyncio.Event, *, wake: asyncio.Event | None = None, idle: float = 1.0
    ) -> None:
        """Deliver until `stop` is set; look for due rows every `idle` seconds or on `wake`."""
        await self._pump(stop=stop, wake=wake, idle=idle)

    async def _pump(
        self, *, stop: asyncio.Event | None, wake: asyncio.Event | None, idle: float
    ) -> int:
        sent_before = self.stats.sent
        self._stopping = False
        background = [
            asyncio.create_task(self._flush_loop()),
            asyncio.create_task(self._keep_claims()),
        ]
        try:
            while stop is None or not stop.is_set():
                self._changed.clear()
                claimed = await self._fill()
                busy = bool(self._held or self._lanes or self._results)
                # A flush during `_fill` may have queued a notice that claim did not see yet.
                if stop is None and not busy and not claimed and not self._changed.is_set():
                    break
                if claimed:
                    continue  # until in_flight rows are held or nothing more is due
                waits: list[asyncio.Event] = [self._changed]
                if stop is not None:
                    waits += [stop] + ([wake] if wake is not None else [])
                await _first_of(waits, within=idle if stop is not None or busy else None)
                if wake is not None:
                    wake.clear()
        finally:
            await self._shutdown(background)
        return self.stats.sent - sent_before

    async def _shutdown(self, background: Sequence[asyncio.Task[None]]) -> None:
        """Let sends in progress finish, give back what was not sent, record everything."""
        self._stopping = True
        lanes = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for lane in self._lanes.values():
            if lane.task is not None and not lane.sending:
                lane.task.cancel()
        if lanes:
            await asyncio.wait(lanes, timeout=90)
        for task in lanes:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._flush()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.limiter.close()
        unflushed = {done.row.id for done in self._results}
        left = [row for row in self._held.values() if row.id not in unflushed]
        if left:
            with contextlib.suppress(Exception):
                async with self._lock, self.db.session() as session:
                    await self._release(session, left)
        self._held.clear()
        self._lanes.clear()

    # -- claiming ---------------------------------------------------------------------------

    async def _fill(self) -> int:
        """Claim due rows while there is room; returns how many were claimed."""
        room = self.in_flight - len(self._held)
        if room < max(1, self.in_flight // 2):
            return 0
        async with self._lock:
            rows = await self._claim(min(room, self.claim_step))
            for row in rows:
                if row.id in self._held:  # our own claim had expired and we took it again
                    self._held[row.id].claim_until = row.claim_until
                    continue
                self._held[row.id] = row
                lane = self._lanes.get(row.chat_id)
                if lane is None:
                    lane = self._lanes[row.chat_id] = _Lane(row.chat_id)
                    lane.task = asyncio.create_task(self._run_lane(lane))
                lane.queue.append(row)
        return len(rows)

    async def _claim(self, limit: int) -> list[_Row]:
        """Claim up to `limit` due rows, at most `per_chat` per chat, each chat from its oldest
        pending row on: a chat whose earlier row waits (backoff) or belongs to another sender
        gets nothing, so its messages keep their order."""
        now = self.clock.now()
        until = now + timedelta(seconds=CLAIM_SECONDS)
        t = OUTBOX
        pending = t.c.status == OutboxStatus.PENDING

        # Chats that must wait: their first pending row is in backoff or another sender's.
        earlier = t.alias("earlier")
        blockers = (
            core_select(earlier.c.chat_id, func.min(earlier.c.id).label("first"))
            .where(
                earlier.c.status == OutboxStatus.PENDING,
                or_(
                    earlier.c.next_attempt_at > now,
                    and_(earlier.c.claimed_until >= now, earlier.c.claimed_by != self.name),
                ),
            )
            .group_by(earlier.c.chat_id)
            .subquery()
        )
        source = t.alias("source")
        # The oldest claimable rows (a few times what we want, so that the per-chat cap below
        # still leaves enough).
        candidates = (
            core_select(source.c.id, source.c.chat_id)
            .select_from(source.outerjoin(blockers, blockers.c.chat_id == source.c.chat_id))
            .where(
                source.c.status == OutboxStatus.PENDING,
                source.c.next_attempt_at <= now,
                or_(source.c.claimed_until.is_(None), source.c.claimed_until < now),
                or_(blockers.c.first.is_(None), blockers.c.first > source.c.id),
            )
            .order_by(source.c.id)
            .limit(limit * 4)
            .subquery()
        )
        ranked = core_select(
            candidates.c.id,
            func.row_number()
            .over(partition_by=candidates.c.chat_id, order_by=candidates.c.id)
            .label("place"),
        ).subquery()
        chosen = (
            core_select(ranked.c.id)
            .where(ranked.c.place <= self.per_chat)
            .order_by(ranked.c.id)
            .limit(limit)
            .subquery()
        )
        # Joins on the primary key from the few chosen ids, never a semi-join over the table:
        # right after a burst of inserts PostgreSQL's statistics say "1 row", and a semi-join
        # planned on that took seconds for 10,000 pending rows.
        pick_from = t.alias("pick")
        pick = core_select(pick_from.c.id).join_from(
            chosen, pick_from, pick_from.c.id == chosen.c.id
        )
        # The conditions again: PostgreSQL re-checks them on the row version it locks.
        pick = pick.where(
            pick_from.c.status == OutboxStatus.PENDING,
            pick_from.c.next_attempt_at <= now,
            or_(pick_from.c.claimed_until.is_(None), pick_from.c.claimed_until < now),
        )
        # A materialized CTE: as a plain subquery PostgreSQL may run it once per row it
        # updates, and each run would skip the rows just claimed and lock more.
        picked = pick.cte("picked")
        if self.db.dialect == "postgresql":
            picked = (
                pick.with_for_update(of=pick_from, skip_locked=True)
                .cte("picked")
                .prefix_with("MATERIALIZED")
            )
        claim = (
            update(t)
            .where(t.c.id == picked.c.id)  # `pick` checked (and on PostgreSQL locked) them
            .values(claimed_by=self.name, claimed_until=until)
            .returning(
                t.c.id,
                t.c.idem_key,
                t.c.chat_id,
                t.c.is_group,
                t.c.method,
                t.c.text,
                t.c.reply_markup,
                t.c.document_name,
                t.c.document,
                t.c.notify_department,
                t.c.attempts,
                t.c.throttled,
                t.c.edits_key,
            )
        )
        async with self.db.session() as session:
            connection = await session.connection()
            claimed = [
                _Row(
                    id=r.id,
                    key=r.idem_key,
                    chat_id=r.chat_id,
                    is_group=r.is_group,
                    notify_department=r.notify_department,
                    attempts=r.attempts,
                    throttled=r.throttled,
                    outgoing=Outgoing(
                        r.chat_id, r.method, r.text, r.reply_markup, r.document_name, r.document
                    ),
                    claim_until=until,
                    edits=r.edits_key,
                )
                for r in (await connection.execute(claim)).all()
            ]
            if not claimed:
                return []
            # Another sender may be claiming a chat's earlier rows right now (their locks made
            # us skip them, and we cannot see their uncommitted claim): any earlier pending row
            # that is not ours means this chat must wait.
            chats = {row.chat_id for row in claimed}
            others = await connection.execute(
                core_select(t.c.chat_id, func.min(t.c.id))
                .where(
                    t.c.chat_id.in_(chats),
                    pending,
                    or_(t.c.claimed_by.is_(None), t.c.claimed_by != self.name),
                )
                .group_by(t.c.chat_id)
            )
            first_other = {chat_id: first for chat_id, first in others.all()}
            wait = [row for row in claimed if row.id > first_other.get(row.chat_id, row.id)]
            if wait:
                await self._release(session, wait)
                waiting = {row.id for row in wait}
                claimed = [row for row in claimed if row.id not in waiting]
        claimed.sort(key=lambda row: row.id)
        return claimed

    async def _release(self, session: AsyncSession, rows: Iterable[_Row]) -> None:
        ids = [row.id for row in rows]
        connection = await session.connection()
        for chunk in _chunks(ids, 500):
            await connection.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id.in_(chunk), OUTBOX.c.claimed_by == self.name)
                .values(claimed_by=None, claimed_until=None)
            )

    async def _keep_claims(self) -> None:
        """Extend the claims of rows we still hold; a row whose claim lapsed is given up."""
        while True:
            await asyncio.sleep(CLAIM_SECONDS / 4)
            try:
                await self._extend_claims()
            except Exception:
                log.exception("could not extend outbox claims")

    async def _extend_claims(self) -> None:
        now = self.clock.now()
        until = now + timedelta(seconds=CLAIM_SECONDS)
        ids = list(self._held)
        kept: set[int] = set()
        async with self.db.session() as session:
            connection = await session.connection()
            for chunk in _chunks(ids, 500):
                result = await connection.execute(
                    update(OUTBOX)
                    .where(
                        OUTBOX.c.id.in_(chunk),
                        OUTBOX.c.claimed_by == self.name,
                        OUTBOX.c.claimed_until >= now,
                    )
                    .values(claimed_until=until)
                    .returning(OUTBOX.c.id)
                )
                kept.update(result.scalars().all())
        for row_id in ids:
            row = self._held.get(row_id)
            if row is not None and row_id in kept:
                row.claim_until = until

    # -- one chat ---------------------------------------------------------------------------

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            while lane.queue and not self._stopping:
                await self._send_head(lane)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox lane for chat %s failed", lane.chat_id)
        finally:
            # No await before removing the lane: `_fill` must never append to a finished lane.
            if self._lanes.get(lane.chat_id) is lane:
                del self._lanes[lane.chat_id]
            self._changed.set()
            # On shutdown `_shutdown` gives back whatever is still held.
            if lane.queue and not self._stopping:
                left = list(lane.queue)
                lane.queue.clear()
                for row in left:
                    self._held.pop(row.id, None)
                with contextlib.suppress(Exception):
                    async with self._lock, self.db.session() as session:
                        await self._release(session, left)

    async def _send_head(self, lane: _Lane) -> None:
        row = lane.queue[0]
        if row.claim_until - self.clock.now() < SEND_GUARD:
            # Our claim lapsed (the database was unreachable for minutes): another sender may
            # own these rows now. Sending would risk a duplicate; let the owner deliver them.
            log.warning("claim on outbox row %s lapsed; leaving chat %s", row.id, lane.chat_id)
            for held in lane.queue:
                self._held.pop(held.id, None)
            lane.queue.clear()
            return
        outgoing = row.outgoing
        if row.edits is not None:
            unsent, target = await self._edit_target(row.edits)
            if unsent:
                await self._reschedule(lane, row, EDIT_WAIT, error=f"waiting for {row.edits}")
                return
            if target is None:
                self._skip(lane, f"nothing to edit: {row.edits} was not delivered")
                return
            outgoing = dataclasses.replace(outgoing, message_id=target)
        own_idle = await self.limiter.turn(lane.chat_id, row.is_group)
        lane.sending = True
        try:
            try:
                message_id = await self.transport.deliver(outgoing)
            finally:
                self.limiter.sent(lane.chat_id)
        except Throttled as error:
            # Not an attempt: Telegram said when to come back (see `_throttled` for the cap).
            await self._throttled(lane, row, error.seconds, chat_was_idle=own_idle)
        except Forbidden as error:
            row.attempts += 1
            self.stats.forbidden += len(lane.queue)
            # Everything else queued for this chat would be refused the same way.
            while lane.queue:
                self._finish(lane.queue.popleft(), error=f"{FORBIDDEN}: {error}")
        except Rejected as error:
            row.attempts += 1
            self.stats.failed += 1
            self._finish(lane.queue.popleft(), error=f"rejected: {error}")
        except NothingToEdit as error:
            row.attempts += 1
            self._skip(lane, f"not edited: {error}")
        except Moved as error:
            await self._moved(lane, error.chat_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not isinstance(error, RetryLater):
                log.exception("unexpected error sending outbox row %s", row.id)
            await self._retry(lane, row, error)
        else:
            row.attempts += 1
            self.stats.sent += 1
            self._finish(lane.queue.popleft(), message_id=message_id)
        finally:
            lane.sending = False

    async def _edit_target(self, key: str) -> tuple[bool, int | None]:
        """(whether the row ``key`` is still unsent, its message id): None when it will never
        have one (given up, or never queued). In its chat's order that row comes first, so it
        is normally delivered by now (perhaps by this sender, not yet recorded)."""
        if key in self._unrecorded:
            return False, self._unrecorded[key]
        async with self.db.read() as session:
            connection = await session.connection()
            found = (
                await connection.execute(
                    core_select(OUTBOX.c.status, OUTBOX.c.tg_message_id).where(
                        OUTBOX.c.idem_key == key
                    )
                )
            ).first()
        if found is None:
            return False, None
        status, message_id = found
        return status == OutboxStatus.PENDING, message_id if status == OutboxStatus.SENT else None

    def _skip(self, lane: _Lane, reason: str) -> None:
        log.info("outbox row %s: %s", lane.queue[0].id, reason)
        self.stats.skipped += 1
        self._finish(lane.queue.popleft(), error=reason, skipped=True)

    async def _throttled(
        self, lane: _Lane, row: _Row, seconds: float, *, chat_was_idle: bool
    ) -> None:
        self.stats.throttled += 1
        row.throttled += 1
        if row.throttled > FREE_THROTTLES:
            row.attempts += 1
            if row.attempts >= MAX_ATTEMPTS:
                self.stats.failed += 1
                self._finish(
                    lane.queue.popleft(), error=f"throttled {row.throttled} times", gave_up=True
                )
                return
        log.warning("429 for chat %s: retry after %s s", lane.chat_id, seconds)
        if self.limiter.throttled(lane.chat_id, seconds, chat_was_idle=chat_was_idle):
            log.warning("429s across chats: every chat waits %s s", seconds)
        if seconds > MAX_INLINE_WAIT:
            await self._reschedule(lane, row, seconds, error=f"429: retry after {seconds}")
        # otherwise the row stays first in its lane, which waits out the pause

    async def _retry(self, lane: _Lane, row: _Row, error: Exception) -> None:
        self.stats.retried += 1
        row.attempts += 1
        reason = f"{type(error).__name__}: {error}"
        if row.attempts >= MAX_ATTEMPTS:
            self.stats.failed += 1
            self._finish(lane.queue.popleft(), error=reason, gave_up=True)
            return
        delay = self.backoff(row.attempts)
        log.warning("outbox row %s: %s; retry in %.0f s", row.id, reason, delay)
        await self._reschedule(lane, row, delay, error=reason)

    def backoff(self, attempts: int) -> float:
        """Exponential with "equal jitter": half fixed, half random, so retries spread out."""
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempts - 1))
        return ceiling / 2 + ceiling / 2 * self._jitter()

    async def _reschedule(self, lane: _Lane, row: _Row, delay: float, *, error: str) -> None:
        """Put the chat's first row back for later and give back the rest, which must wait for
        it (our own backoff is why tenacity does not fit: the retry lives in the database, where
        it survives a restart and frees the lane meanwhile)."""
        rest = [queued for queued in lane.queue if queued is not row]
        lane.queue.clear()
        async with self._lock:
            async with self.db.session() as session:
                connection = await session.connection()
                await connection.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.id == row.id)
                    .values(
                        next_attempt_at=self.clock.now() + timedelta(seconds=delay),
                        attempts=row.attempts,
                        throttled=row.throttled,
                        last_error=error,
                        claimed_by=None,
                        claimed_until=None,
                    )
                )
                await self._release(session, rest)
            for released in [row, *rest]:
                self._held.pop(released.id, None)

    async def _moved(self, lane: _Lane, new_chat_id: int) -> None:
        rows = list(lane.queue)
        lane.queue.clear()
        log.info("chat %s moved to %s; its pending messages follow", lane.chat_id, new_chat_id)
        async with self._lock:
            async with self.db.session() as session:
                await self._release(session, rows)
                connection = await session.connection()
                await connection.execute(
                    update(OUTBOX)
                    .where(
                        OUTBOX.c.chat_id == lane.chat_id,
                        OUTBOX.c.status == OutboxStatus.PENDING,
                    )
                    .values(chat_id=new_chat_id)
                )
            for row in rows:
                self._held.pop(row.id, None)

    # -- recording --------------------------------------------------------------------------

    def _finish(
        self,
        row: _Row,
        *,
        message_id: int | None = None,
        error: str | None = None,
        gave_up: bool = False,
        skipped: bool = False,
    ) -> None:
        self._unrecorded[row.key] = message_id
        self._results.append(_Done(row, self.clock.now(), message_id, error, gave_up, skipped))
        self._has_results.set()

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            await self._has_results.wait()
            # At most one transaction per FLUSH_EVERY: results batch up while we wait, instead of
            # one transaction per message competing with claims for the database.
            await asyncio.sleep(max(0.0, last + FLUSH_EVERY - loop.time()))
            last = loop.time()
            try:
                await self._flush(everything=False)
            except Exception:
                log.exception("could not record outbox results; retrying")
                await asyncio.sleep(1)

    async def _flush(self, *, everything: bool = True) -> None:
        """Write results in batches: dozens of rows per transaction instead of one each. The
        flush loop writes one batch per `FLUSH_EVERY`; shutdown writes until none are left."""
        async with self._flush_lock:
            while self._results:
                batch, self._results = self._results, []
                self._has_results.clear()
                try:
                    await self._record(batch)
                except BaseException:
                    self._results[:0] = batch
                    self._has_results.set()
                    raise
                for done in batch:
                    self._held.pop(done.row.id, None)
                    self._unrecorded.pop(done.row.key, None)
                self._changed.set()
                if not everything:
                    break

    async def _record(self, batch: list[_Done]) -> None:
        sent = [
            {
                "rid": done.row.id,
                "mid": done.message_id,
                "at": done.at,
                "attempts": done.row.attempts,
                "throttled": done.row.throttled,
            }
            for done in batch
            if done.message_id is not None
        ]
        failed = [done for done in batch if done.message_id is None and not done.skipped]
        skipped = [done for done in batch if done.skipped]
        async with self.db.session() as session:
            connection = await session.connection()
            if sent:
                await connection.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.id == bindparam("rid"))
                    .values(
                        status=OutboxStatus.SENT,
                        tg_message_id=bindparam("mid"),
                        sent_at=bindparam("at", type_=OUTBOX.c.sent_at.type),
                        attempts=bindparam("attempts"),
                        throttled=bindparam("throttled"),
                        last_error=None,
                        claimed_until=None,
                    ),
                    sent,
                )
            for done in (*failed, *skipped):
                # A skipped edit is done with (at its time); a failed message is not.
                settled = {"sent_at": done.at} if done.skipped else {}
                await connection.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.id == done.row.id)
                    .values(
                        status=OutboxStatus.SKIPPED if done.skipped else OutboxStatus.FAILED,
                        attempts=done.row.attempts,
                        throttled=done.row.throttled,
                        last_error=done.error,
                        claimed_until=None,
                        **settled,
                    )
                )
            unreachable: dict[int, set[str]] = {}
            for done in failed:
                if (done.error or "").startswith(FORBIDDEN) and done.row.notify_department:
                    departments = unreachable.setdefault(done.row.chat_id, set())
                    departments.add(done.row.notify_department)
            for chat_id, departments in unreachable.items():
                await notify_unreachable(
                    session, chat_id=chat_id, departments=sorted(departments), now=batch[0].at
                )
            # Not about our own notices, or an office unreachable for an hour would be told so
            # every hour, about the previous notice.
            gave_up = [
                done.row
                for done in failed
                if done.gave_up and not done.row.key.startswith(f"{DELIVERY}:")
            ]
            if gave_up:
                await notify_gave_up(
                    session, gave_up, now=batch[0].at, office_admins=self.office_admins
                )


async def _first_of(events: list[asyncio.Event], within: float | None) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------- 403 follow-up


def _forbidden_rows(chat_id: int) -> Any:
    return and_(
        OUTBOX.c.chat_id == chat_id,
        OUTBOX.c.status == OutboxStatus.FAILED,
        OUTBOX.c.last_error.like(f"{FORBIDDEN}%"),
    )


async def notify_unreachable(
    session: AsyncSession, *, chat_id: int, departments: list[str], now: datetime
) -> int:
    """Tell the departments' liaisons, privately, that this chat cannot be reached.

    One notice per liaison per episode: the episode is the oldest of the chat's rows still
    failed with 403, so more refused messages add nothing, and after `requeue_forbidden` a new
    refusal starts a new episode. Returns how many notices were queued.
    """
    connection = await session.connection()
    episode, count = (
        await connection.execute(
            core_select(func.min(OUTBOX.c.id), func.count()).where(_forbidden_rows(chat_id))
        )
    ).one()
    if episode is None:
        return 0
    liaisons = (
        await session.exec(
            select(Person.tg_user_id)
            .join(RoleGrant, col(RoleGrant.person_id) == col(Person.id))
            .where(
                RoleGrant.role == Role.LIAISON,
                col(RoleGrant.active).is_(True),
                col(RoleGrant.department_code).in_(departments),
                Person.tg_user_id != chat_id,
            )
            .distinct()
        )
    ).all()
    if not liaisons:
        log.warning("chat %s is unreachable ; no liaison in %s to tell", chat_id, departments)
        return 0
    person = (await session.exec(select(Person).where(Person.tg_user_id == chat_id))).first()
    group = (await session.exec(select(ChatBinding).where(ChatBinding.chat_id == chat_id))).first()
    if group is not None:
        who = group.title or text("delivery.unknown_group", chat_id=chat_id)
    elif person is not None:
        who = person.display_name or text("delivery.unknown_person", chat_id=chat_id)
    else:
        who = text("delivery.unknown_person", chat_id=chat_id)
    message = render("delivery/unreachable.j2", who=who, is_group=group is not None, count=count)
    queued = 0
    for liaison in liaisons:
        queued += await enqueue(
            session,
            key=f"{DELIVERY}:unreachable:{chat_id}:{episode}:{liaison}",
            chat_id=liaison,
            text=message,
            now=now,
        )
    return queued


async def requeue_forbidden(session: AsyncSession, chat_id: int, now: datetime) -> int:
    """The person opened the bot again: send what was refused with 403. Returns how many."""
    connection = await session.connection()
    result = await connection.execute(
        update(OUTBOX)
        .where(_forbidden_rows(chat_id))
        .values(
            status=OutboxStatus.PENDING,
            next_attempt_at=now,
            attempts=0,
            last_error=None,
            claimed_by=None,
            claimed_until=None,
        )
    )
    return int(result.rowcount or 0)


# ---------------------------------------------------------------------------- giving up


async def _who(session: AsyncSession, chat_ids: Iterable[int]) -> dict[int, str]:
    """How the office knows each chat: the group's title or the person's name."""
    ids = sorted(set(chat_ids))
    names = {chat_id: text("delivery.unknown_person", chat_id=chat_id) for chat_id in ids}
    people = await session.exec(
        select(Person.tg_user_id, Person.display_name).where(col(Person.tg_user_id).in_(ids))
    )
    names.update({chat_id: name for chat_id, name in people if name})
    groups = await session.exec(
        select(ChatBinding.chat_id, ChatBinding.title).where(col(ChatBinding.chat_id).in_(ids))
    )
    for chat_id, title in groups:
        names[chat_id] = title or text("delivery.unknown_group", chat_id=chat_id)
    return names


async def _office_chats(
    session: AsyncSession, office_admins: Sequence[int]
) -> tuple[list[int], bool]:
    """The office group(s) if bound, else privately the office members and OFFICE_ADMINS (as
    everywhere else in the bot); and whether groups."""
    groups = (
        await session.exec(
            select(ChatBinding.chat_id).where(
                ChatBinding.kind == "office", col(ChatBinding.active).is_(True)
            )
        )
    ).all()
    if groups:
        return list(groups), True
    members = await session.exec(
        select(Person.tg_user_id)
        .join(RoleGrant, col(RoleGrant.person_id) == col(Person.id))
        .where(RoleGrant.role == Role.OFFICE, col(RoleGrant.active).is_(True))
        .distinct()
    )
    return sorted({*members.all(), *office_admins}), False


def _feature(key: str) -> str:
    """What a message was, from its idempotency key ``<feature>:<event>:…``, in words."""
    label = f"delivery.kind.{key.split(':', 1)[0]}"
    return text(label if has_text(label) else "delivery.kind.other")


async def notify_gave_up(
    session: AsyncSession,
    rows: Sequence[_Row],
    *,
    now: datetime,
    office_admins: Sequence[int] = (),
) -> int:
    """Tell the office that these messages were given up after ``MAX_ATTEMPTS`` tries: one
    notice per batch of results (not one per message), saying for each chat who it is, how
    many messages and of what kind. Never the messages themselves (a group may read this).
    Returns how many notices were queued."""
    chats, is_group = await _office_chats(session, office_admins)
    if not chats:
        log.warning("gave up on %d outbox messages; no office to tell", len(rows))
        return 0
    who = await _who(session, (row.chat_id for row in rows))
    by_chat: dict[int, list[_Row]] = {}
    for row in sorted(rows, key=lambda row: row.id):
        by_chat.setdefault(row.chat_id, []).append(row)
    lost = [
        {
            "who": who[chat_id],
            "is_group": chat_rows[0].is_group,
            "count": len(chat_rows),
            "kinds": list(dict.fromkeys(_feature(row.key) for row in chat_rows)),
        }
        for chat_id, chat_rows in by_chat.items()
    ]
    message = render("delivery/gave_up.j2", chats=lost, total=len(rows), attempts=MAX_ATTEMPTS)
    ids = [row.id for row in rows]
    queued = 0
    for chat in chats:
        queued += await enqueue(
            session,
            key=f"{DELIVERY}:gave_up:{min(ids)}-{max(ids)}:{chat}",
            chat_id=chat,
            text=message,
            now=now,
            is_group=is_group,
        )
    return queued
