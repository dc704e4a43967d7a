"""The sweeper: turns deadlines into 三单 (DOMAIN §8), every minute, from the database alone.

APScheduler only wakes it (bot/scheduler.py); what is due lives in ``Duty.next_check_on``, so a
sweep after any downtime catches up on everything due, exactly once. Each duty climbs a ladder,
one rung per visit, and every visit moves ``next_check_on`` past today:

=====  ==========================  ===================================================
stage  next check                  what the visit does
=====  ==========================  ===================================================
0      the day it was opened       plan: the reminder date, N working days before the
                                   deadline (N = 3, or 1 for duties of 2 days or less)
0      the reminder date           懒政提醒单 → stage 1
1      first working day after     怠政督办单 with a new deadline (5 working days, or the
       the deadline                ``supervision`` days the duty's task sets) → 2
2      first working day after     失职问责单 for the office to decide → 3
       the supervision deadline
3      never                       (the office decides; a late completion closes it)
=====  ==========================  ===================================================

A visit after the deadline skips the reminder (too late to remind); a duty's deadline day is
still a day to do it (``complete_duty`` calls it late only after that day).

Quiet hours (21:00–08:00 in ``TIMEZONE`` by default): the sweep does nothing, so reminders wait
and an order falling due overnight goes out at 08:00 — and a duty done before 08:00 gets no
notice at all, which queuing with a ``not_before`` would not give.

Two sweepers at once (two bot processes, or a sweep that outlives its minute): each batch
starts by writing the ``sweeper.last_run`` row. That write takes SQLite's single writer lock
before the batch reads anything, and on PostgreSQL it row-locks, so the second sweeper waits
and then reads what the first committed. Due duties are read ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so a duty being completed right now is left for the next minute instead of getting
a notice the completion would not see.

Copies are digests (a product decision; docs/notices.md). The responsible person gets each
notice as its own message: it is addressed to them, with its own number and deadline. The
copies to a liaison, a department group and the office are one digest per recipient per batch
(``BATCH`` due duties, so an ordinary sweep is one batch), listing that batch's notices, split
into several messages under Telegram's 4096 characters. Why: Telegram delivers about 30
messages a second, so the 25,000 messages a morning with 10,000 due duties used to make took
14 minutes to go out, and a liaison with 300 reminders in one morning wants one list, not 300
pings. A digest is queued in the transaction that records its notices and keyed by the notice
ids it covers, so it is exactly once like everything else here: a second sweeper works on other
duties (other notices, other keys), and a batch that fails rolls its digests back with it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

import sqlmodel
from sqlalchemy import bindparam, select, tuple_, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock, to_local
from bot.config import Settings
from bot.duties import DEFAULT_WORKING_DAYS, day_text, load_calendar
from bot.notices import (
    ACCOUNTABILITY,
    DUTY,
    DUTY_COLUMNS,
    IDS,
    REMINDER,
    SUPERVISION,
    DutyRow,
    Issue,
    duty_row,
    issue,
    load_people,
)
from bot.outbox import enqueue
from bot.render import render
from bot.workdays import Calendar
from storage.db import Database, fetch_rows, upsert_insert
from storage.models import AppSetting, Draw, DutyStatus, Inspection, Task

log = logging.getLogger(__name__)

BATCH = 20_000
"""Due duties per transaction. An ordinary morning (10,000 due among a million open duties) is
one batch, so each recipient gets one digest; a catch-up after a long downtime takes several."""
NEVER = date(9999, 12, 31)
LOCK_NAME = "sweeper.last_run"
WARNING_STEPS = (30, 7, 0)
"""Besides ``holiday_warning_days`` (60) before the calendar data ends, the office is warned
again 30 and 7 days before, and once more when it has ended."""

_APP_SETTING = AppSetting.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Rules:
    reminder_days: int = 3
    reminder_days_short: int = 1
    short_duty_days: int = 2
    supervision_days: int = DEFAULT_WORKING_DAYS["supervision"]
    timezone: str = "Asia/Shanghai"

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            reminder_days=settings.reminder_days,
            reminder_days_short=settings.reminder_days_short,
            short_duty_days=settings.short_duty_days,
            timezone=settings.timezone,
        )


@dataclass(frozen=True, slots=True)
class Step:
    """What one visit does: the notice to issue (if any) and the duty's new state."""

    notice: str | None
    stage: int
    next_check_on: date
    supervision_deadline: date | None


def reminder_date(duty: DutyRow, calendar: Calendar, rules: Rules) -> date:
    opened = to_local(duty.created_at, rules.timezone).date()
    length = calendar.working_days_between(opened, duty.deadline)
    lead = rules.reminder_days_short if length <= rules.short_duty_days else rules.reminder_days
    return calendar.working_days_add(duty.deadline, -lead)


def plan(
    duty: DutyRow,
    today: date,
    calendar: Calendar,
    rules: Rules,
    supervision_days: int | None = None,
) -> Step:
    """The visit of ``duty`` on ``today``; pure. ``next_check_on`` is always after ``today``.
    ``supervision_days``: the working days of a 怠政督办单's new deadline that the duty's task
    sets (``Task.deadlines["supervision"]``), if it sets one; else ``rules.supervision_days``."""

    def supervise() -> Step:
        days = rules.supervision_days if supervision_days is None else supervision_days
        new_deadline = calendar.working_days_add(today, days)
        return Step(SUPERVISION, 2, calendar.working_days_add(new_deadline, 1), new_deadline)

    after_deadline = calendar.working_days_add(duty.deadline, 1)
    if duty.stage == 0:
        if today > duty.deadline:
            return supervise()
        remind_on = reminder_date(duty, calendar, rules)
        if today >= remind_on:
            return Step(REMINDER, 1, after_deadline, None)
        return Step(None, 0, remind_on, None)
    if duty.stage == 1:
        if today > duty.deadline:
            return supervise()
        return Step(None, 1, after_deadline, None)
    if duty.stage == 2:
        limit = duty.supervision_deadline or duty.deadline
        if today > limit:
            return Step(ACCOUNTABILITY, 3, NEVER, limit)
        return Step(None, 2, calendar.working_days_add(limit, 1), limit)
    return Step(None, duty.stage, NEVER, duty.supervision_deadline)


def planner(
    today: date,
    calendar: Calendar,
    rules: Rules,
    supervision_days: dict[int, int] | None = None,
) -> Callable[[DutyRow], Step]:
    """``plan`` for one batch, remembered per (stage, deadline, supervision deadline, opening
    day, supervision days): a batch's thousands of duties share a few dozen deadlines, and each
    plan costs several working-day computations. ``supervision_days``: per inspection, the
    supervision days its task sets (``task_supervision_days``)."""
    memo: dict[tuple[int, date, date | None, date | None, int | None], Step] = {}
    overrides = supervision_days or {}

    def plan_of(duty: DutyRow) -> Step:
        opened = to_local(duty.created_at, rules.timezone).date() if duty.stage == 0 else None
        days = overrides.get(duty.inspection_id) if duty.inspection_id is not None else None
        key = (duty.stage, duty.deadline, duty.supervision_deadline, opened, days)
        step = memo.get(key)
        if step is None:
            step = memo[key] = plan(duty, today, calendar, rules, days)
        return step

    return plan_of


def in_quiet_hours(moment: time, start: time, end: time) -> bool:
    """``start`` included, ``end`` excluded; the window may wrap midnight (21:00–08:00)."""
    if start == end:
        return False
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


@dataclass
class SweepReport:
    due: int = 0
    """Duties visited (their next check date had come)."""
    planned: int = 0
    """Visits that only set the next check date."""
    reminders: int = 0
    supervisions: int = 0
    accountabilities: int = 0
    messages: int = 0
    """Messages offered to the outbox (a key already queued is skipped there)."""
    digests: int = 0
    """Digest messages among them (bot.notices: copies, one digest per recipient per batch)."""
    batches: int = 0
    quiet: bool = False
    calendar_warning: bool = False
    """A warning to load next year's holidays was queued by this sweep."""


async def sweep(
    db: Database, clock: Clock, settings: Settings, *, batch: int = BATCH
) -> SweepReport:
    """Issue every notice due now; safe to run at any time, any number of times, in parallel."""
    now = clock.now()
    local = to_local(now, settings.timezone)
    report = SweepReport()
    if in_quiet_hours(local.time(), settings.quiet_start, settings.quiet_end):
        report.quiet = True
        return report
    today = local.date()
    rules = Rules.from_settings(settings)
    after: tuple[date, int] | None = None
    while True:
        with gc_paused():
            async with db.session() as session:
                after = await _sweep_batch(
                    session, now, today, rules, settings, report, batch, after
                )
        if after is None:
            break
    async with db.session() as session:
        report.calendar_warning = await _warn_calendar(session, now, today, settings)
    if report.due:
        log.info(
            "sweep: %d due, %d reminders, %d supervision orders, %d accountability notices",
            report.due,
            report.reminders,
            report.supervisions,
            report.accountabilities,
        )
    return report


class _Pause:
    depth = 0
    restore = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector while a batch runs. A batch makes ~100,000
    objects that all live until it ends (rows, views, messages); the collector, triggered by
    allocations, walked them again and again, a third of the batch's CPU time, to free nothing:
    they go by reference counting when the batch ends. Nests (sweeps in parallel in one
    process): the collector resumes when the last one ends, if it was running before."""
    if _Pause.depth == 0:
        _Pause.restore = gc.isenabled()
        gc.disable()
    _Pause.depth += 1
    try:
        yield
    finally:
        _Pause.depth -= 1
        if _Pause.depth == 0 and _Pause.restore:
            gc.enable()


async def _take_turn(session: AsyncSession, now: datetime) -> None:
    """The first write of a batch: serialises sweepers (see the module docstring)."""
    insert = upsert_insert(session.get_bind().dialect.name)
    await session.exec(
        insert(_APP_SETTING)
        .values(name=LOCK_NAME, value=now.isoformat())
        .on_conflict_do_update(index_elements=["name"], set_={"value": now.isoformat()})
    )


async def _sweep_batch(
    session: AsyncSession,
    now: datetime,
    today: date,
    rules: Rules,
    settings: Settings,
    report: SweepReport,
    batch: int,
    after: tuple[date, int] | None,
) -> tuple[date, int] | None:
    """One transaction: up to ``batch`` due duties after the key ``after`` (next check date,
    id); returns the key to continue from, or None when nothing is left. Continuing from the
    key rather than from the start keeps PostgreSQL from walking again over the index entries
    this sweep has just made dead."""
    await _take_turn(session, now)
    query: Any = (  # eleven Core columns: more than sqlmodel's exec overloads spell out
        select(*DUTY_COLUMNS, DUTY.c.next_check_on)
        .where(DUTY.c.status == DutyStatus.OPEN, DUTY.c.next_check_on <= today)
        .order_by(DUTY.c.next_check_on, DUTY.c.id)
        .limit(batch)
    )
    if after is not None:
        query = query.where(tuple_(DUTY.c.next_check_on, DUTY.c.id) > tuple_(*after))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = await fetch_rows(session, query, typed=True)  # 10,000 rows: the driver's fetch
    if not rows:
        return None
    last = (rows[-1][-1], rows[-1][0])
    duties = [duty_row(row[:-1]) for row in rows]
    del rows
    calendar = await load_calendar(session)
    overdue = (d.inspection_id for d in duties if d.stage < 2 and d.deadline < today)
    plan_of = planner(today, calendar, rules, await task_supervision_days(session, overdue))
    steps = [(duty, plan_of(duty)) for duty in duties]
    issued = await issue(
        session,
        [
            Issue(duty, step.notice, step.supervision_deadline)
            for duty, step in steps
            if step.notice is not None
        ],
        now=now,
        today=today,
        calendar=calendar,
        office_admins=settings.office_admins,
        meanwhile=lambda: _move_on(session, steps),  # while the messages are rendered
    )
    report.batches += 1
    report.due += len(duties)
    report.planned += sum(1 for _, step in steps if step.notice is None)
    report.reminders += issued.reminders
    report.supervisions += issued.supervisions
    report.accountabilities += issued.accountabilities
    report.messages += issued.messages
    report.digests += issued.digests
    return last if len(duties) == batch else None


async def task_supervision_days(
    session: AsyncSession, inspection_ids: Iterable[int | None]
) -> dict[int, int]:
    """Per inspection, the working days its task gives a 怠政督办单's new deadline
    (``Task.deadlines["supervision"]``: the task dialog's 高级设置, task files), for those whose
    task sets one. An inspection's task is its draw's. Read once per batch, for the inspections
    of the duties that may get an order now: two queries, each task's settings decoded once."""
    ids = sorted({i for i in inspection_ids if i is not None})
    task_of: dict[int, int] = {}
    query = (
        sqlmodel.select(Inspection.id, Draw.task_id)
        .join(Draw, col(Draw.id) == col(Inspection.draw_id))
        .where(col(Inspection.id).in_(IDS))
    )
    for start in range(0, len(ids), UPDATE_CHUNK):
        chunk = ids[start : start + UPDATE_CHUNK]
        rows = await session.exec(query, params={IDS.key: chunk})
        task_of.update((i, task_id) for i, task_id in rows if i is not None)
    if not task_of:
        return {}
    tasks = await session.exec(
        sqlmodel.select(Task.id, Task.deadlines).where(
            col(Task.id).in_(sorted(set(task_of.values())))
        )
    )
    days = {
        task_id: deadlines["supervision"]
        for task_id, deadlines in tasks
        if isinstance(deadlines, dict) and isinstance(deadlines.get("supervision"), int)
    }
    return {i: days[t] for i, t in task_of.items() if t in days}


UPDATE_CHUNK = 5000
"""Duty ids per UPDATE: under SQLite's and asyncpg's limits on bind parameters."""
SHARED_STATE = 20
"""Duties sharing a new state that get one ``UPDATE … WHERE id IN (…)``; fewer go by
executemany."""


async def _move_on(session: AsyncSession, steps: list[tuple[DutyRow, Step]]) -> None:
    """Write each duty's new stage and next check. A batch's duties share a few dozen new
    states (deadlines are dates): one UPDATE … WHERE id IN (…) per state shared by many, so
    the database does the rows in one statement rather than one execution per duty; the odd
    ones out go in one executemany."""
    by_state: dict[tuple[int, date, date | None], list[int]] = {}
    for duty, step in steps:
        state = (step.stage, step.next_check_on, step.supervision_deadline)
        by_state.setdefault(state, []).append(duty.id)
    rest: list[dict[str, Any]] = []
    for (stage, next_check_on, limit), ids in by_state.items():
        if len(ids) < SHARED_STATE:
            rest.extend(
                {"b_id": i, "b_stage": stage, "b_next": next_check_on, "b_limit": limit}
                for i in ids
            )
            continue
        for start in range(0, len(ids), UPDATE_CHUNK):
            chunk = ids[start : start + UPDATE_CHUNK]
            new = {IDS.key: chunk, "b_stage": stage, "b_next": next_check_on, "b_limit": limit}
            await session.exec(_MOVE_SHARED, params=new)
    if rest:
        await session.exec(_MOVE_ONE, params=rest)


_NEW_STATE: dict[str, Any] = {
    "stage": bindparam("b_stage"),
    "next_check_on": bindparam("b_next"),
    "supervision_deadline": bindparam("b_limit"),
}
_MOVE_SHARED = update(DUTY).where(DUTY.c.id.in_(IDS)).values(_NEW_STATE)  # IDS: one list
_MOVE_ONE = update(DUTY).where(DUTY.c.id == bindparam("b_id")).values(_NEW_STATE)


def warning_step(days_left: int, first: int) -> int | None:
    """The warning a calendar ending in ``days_left`` days calls for (its key), if any."""
    steps = sorted({first, *(s for s in WARNING_STEPS if s < first)})
    due = [step for step in steps if days_left <= step]
    return due[0] if due else None


async def _warn_calendar(
    session: AsyncSession, now: datetime, today: date, settings: Settings
) -> bool:
    """Tell the office to load next year's State Council dates before deadlines run past the
    known data: once per step (60, 30, 7 days before, and after it ended) and recipient."""
    calendar = await load_calendar(session)
    known_until = calendar.known_until()
    days_left = (known_until - today).days
    step = warning_step(days_left, settings.holiday_warning_days)
    if step is None:
        return False
    people = await load_people(session, settings.office_admins)
    year = known_until.year + 1
    body = render(
        "notices/calendar_warning.j2",
        year=year,
        known_until=day_text(known_until),
        days_left=max(days_left, 0),
    )
    group = bool(people.office_groups)
    chats = people.office_groups or people.office
    queued = False
    for chat in chats:
        queued |= await enqueue(
            session,
            key=f"holiday:warning:{year}:{step}:{chat}",
            chat_id=chat,
            text=body,
            now=now,
            is_group=group,
        )
    return queued
