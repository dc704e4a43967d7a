"""Duties with deadlines in working days (DOMAIN §8): opened by the events that create them,
completed by the events that fulfil them. The sweeper (bot/sweeper.py) escalates what is late.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache

from sqlalchemy import Table, insert
from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.render import text
from bot.workdays import Calendar, RowError, package_years, parse_holiday_rows
from storage.audit import record
from storage.models import Duty, DutyStatus, Holiday, Notice

# Default deadlines in working days after the triggering event (issue #5); a task may override.
DEFAULT_WORKING_DAYS = {
    "confirm": 2,  # each inspector confirms an assignment
    "cosign": 2,  # the other inspectors co-sign a submitted result
    "review": 3,  # the lead liaison reviews a co-signed result
    "publish": 20,  # office/department publishes, after the inspection result date
    "followup_entry": 20,  # follow-up result entered after completion
    "supervision": 5,  # the new deadline a 怠政督办单 sets
}


@lru_cache(maxsize=4096)
def day_text(day: date) -> str:
    """2026年3月4日（周三）: every deadline as people read it."""
    weekday = text("notice.weekdays")[day.weekday()]
    return text("notice.day", year=day.year, month=day.month, day=day.day, weekday=weekday)


def deadline_text(calendar: Calendar, today: date, day: date) -> str:
    """A deadline as people read it, for any feature that shows one: with the note that it is
    estimated when it relies on a year whose holidays are not loaded yet (DOMAIN §7)."""
    estimated = calendar.estimated_between(today, day)
    return day_text(day) + (text("notice.estimated") if estimated else "")


async def load_calendar(session: AsyncSession) -> Calendar:
    """The official calendar plus whatever the office loaded (`dsr calendar load`)."""
    rows = await session.exec(select(col(Holiday.day), col(Holiday.working)))
    return _calendar(tuple(sorted((day, bool(working)) for day, working in rows)))


@lru_cache(maxsize=4)
def _calendar(overrides: tuple[tuple[date, bool], ...]) -> Calendar:
    # Building a Calendar takes milliseconds; the loaded dates change once a year.
    return Calendar(dict(overrides))


def deadline_after(
    calendar: Calendar, start: date, kind: str, overrides: dict[str, int] | None = None
) -> date:
    days = (overrides or {}).get(kind, DEFAULT_WORKING_DAYS[kind])
    return calendar.working_days_add(start, days)


async def open_duty(
    session: AsyncSession,
    *,
    kind: str,
    subject: str,
    deadline: date,
    responsible_role: str,
    department_code: str,
    now: datetime,
    inspection_id: int | None = None,
    inspector_id: int | None = None,
) -> Duty:
    """Idempotent on (kind, subject): reopening an open duty returns it unchanged.

    Opening again a duty that was finished (a returned result is submitted again) starts a new
    round in a new row: the finished one keeps its notices under the subject ``"<subject>#<id>"``.
    """
    existing = (
        await session.exec(select(Duty).where(Duty.kind == kind, Duty.subject == subject))
    ).first()
    if existing is not None and existing.status == DutyStatus.OPEN:
        return existing
    if existing is not None:
        existing.subject = f"{subject}#{existing.id}"
        session.add(existing)
        await session.flush()
    duty = Duty(
        kind=kind,
        subject=subject,
        responsible_role=responsible_role,
        department_code=department_code,
        inspection_id=inspection_id,
        inspector_id=inspector_id,
        deadline=deadline,
        # Due at once, in any timezone: the sweeper plans the reminder date with the configured
        # lead (bot.sweeper) and moves this forward.
        next_check_on=now.date() - timedelta(days=1),
        created_at=now,
    )
    session.add(duty)
    await session.flush()
    return duty


@dataclass(frozen=True, slots=True)
class DutySpec:
    """The arguments of `open_duty` but the session and now, for `open_duties`."""

    kind: str
    subject: str
    deadline: date
    responsible_role: str
    department_code: str
    inspection_id: int | None = None
    inspector_id: int | None = None


DUTY: Table = Duty.__table__  # type: ignore[attr-defined]
LOOKUP_CHUNK = 500
"""Subjects per IN (…) list when looking for duties already there."""


async def open_duties(session: AsyncSession, specs: Sequence[DutySpec], *, now: datetime) -> int:
    """`open_duty` for many duties (a draw opens thousands): the same rules, in a few
    statements per 500 instead of two per duty. Returns how many were opened now."""
    wanted: dict[tuple[str, str], DutySpec] = {}
    for spec in specs:
        wanted.setdefault((spec.kind, spec.subject), spec)
    by_kind: dict[str, list[str]] = {}
    for kind, subject in wanted:
        by_kind.setdefault(kind, []).append(subject)
    for kind, subjects in by_kind.items():
        for start in range(0, len(subjects), LOOKUP_CHUNK):
            chunk = subjects[start : start + LOOKUP_CHUNK]
            existing = await session.exec(
                select(Duty).where(Duty.kind == kind, col(Duty.subject).in_(chunk))
            )
            for duty in existing:
                if duty.status == DutyStatus.OPEN:
                    del wanted[(kind, duty.subject)]  # already open: unchanged
                else:  # finished: a new round in a new row (see open_duty)
                    duty.subject = f"{duty.subject}#{duty.id}"
                    session.add(duty)
    await session.flush()
    rows = [
        {
            "kind": spec.kind,
            "subject": spec.subject,
            "responsible_role": spec.responsible_role,
            "department_code": spec.department_code,
            "inspection_id": spec.inspection_id,
            "inspector_id": spec.inspector_id,
            "deadline": spec.deadline,
            "status": DutyStatus.OPEN.value,
            "stage": 0,
            "next_check_on": now.date() - timedelta(days=1),  # due at once, as in open_duty
            "created_at": now,
        }
        for spec in wanted.values()
    ]
    if rows:
        await session.exec(insert(DUTY), params=rows)
    return len(rows)


async def complete_duty(
    session: AsyncSession, *, kind: str, subject: str, now: datetime, today: date
) -> Duty | None:
    """Mark done (or done late, after its deadline) and close its open notices."""
    duty = (
        await session.exec(
            select(Duty).where(
                Duty.kind == kind, Duty.subject == subject, Duty.status == DutyStatus.OPEN
            )
        )
    ).first()
    if duty is None:
        return None
    late = today > duty.deadline
    duty.status = DutyStatus.DONE_LATE if late else DutyStatus.DONE
    duty.done_at = now
    session.add(duty)
    await session.exec(
        update(Notice)
        .where(col(Notice.duty_id) == duty.id, col(Notice.status) == "open")
        .values(status="closed", closed_at=now, closed_late=late)
    )
    return duty


async def cancel_duties(session: AsyncSession, *, inspection_id: int, now: datetime) -> None:
    """The inspection went away (its draw was voided): nothing is owed any more, and the open
    notices of its duties are withdrawn."""
    open_duties = select(Duty.id).where(
        col(Duty.inspection_id) == inspection_id, col(Duty.status) == DutyStatus.OPEN
    )
    await session.exec(
        update(Notice)
        .where(col(Notice.duty_id).in_(open_duties), col(Notice.status) == "open")
        .values(status="cancelled", closed_at=now)
    )
    await session.exec(
        update(Duty)
        .where(col(Duty.inspection_id) == inspection_id, col(Duty.status) == DutyStatus.OPEN)
        .values(status=DutyStatus.CANCELLED, done_at=now)
    )


# --- the office's calendar file (dsr calendar load, /holidays) --------------------------------


THIN_YEAR_REST_DAYS = 10
"""State Council notices since 2015 give 16 to 19 weekday rest days a year (元旦 to 国庆)."""


@dataclass
class HolidayLoad:
    """What loading a State Council holiday file did (nothing at all when there are errors)."""

    errors: list[RowError] = field(default_factory=list)
    years: list[int] = field(default_factory=list)
    rest_days: int = 0
    work_days: int = 0
    replaced: int = 0
    known_until: date | None = None
    package_last_year: int = 0
    thin_years: list[int] = field(default_factory=list)
    """Loaded years with fewer than ``THIN_YEAR_REST_DAYS`` rest days: maybe an incomplete file
    (a year with any loaded date counts as fully known)."""

    @property
    def applied(self) -> bool:
        return not self.errors and bool(self.years)

    @property
    def thin_limit(self) -> int:
        return THIN_YEAR_REST_DAYS

    @property
    def known_until_text(self) -> str:
        return day_text(self.known_until) if self.known_until else ""


@dataclass(frozen=True)
class CalendarStatus:
    known_until: date
    package_years: tuple[int, int]
    loaded_years: list[int]
    needs_warning: bool
    next_year: int

    @property
    def known_until_text(self) -> str:
        return day_text(self.known_until)


async def load_holidays(
    session: AsyncSession, rows: Iterable[Sequence[str]], *, actor: str, now: datetime
) -> HolidayLoad:
    """Load a 日期/类型 table. All or nothing: one bad row and nothing changes, because a year with
    any loaded date counts as fully known. A year in the file replaces what was loaded for it
    before, so a corrected file fixes a mistake."""
    overrides, errors = parse_holiday_rows(rows)
    report = HolidayLoad(errors=errors, package_last_year=package_years()[1])
    if errors or not overrides:
        return report
    years = sorted({day.year for day in overrides})
    previous = await session.exec(
        select(Holiday).where(
            col(Holiday.day) >= date(years[0], 1, 1), col(Holiday.day) <= date(years[-1], 12, 31)
        )
    )
    stale = [row.id for row in previous if row.day.year in years]
    for start in range(0, len(stale), 500):
        await session.exec(delete(Holiday).where(col(Holiday.id).in_(stale[start : start + 500])))
    for day, working in sorted(overrides.items()):
        session.add(Holiday(day=day, working=working, loaded_by=actor, loaded_at=now))
    await session.flush()
    report.years = years
    report.rest_days = sum(1 for working in overrides.values() if not working)
    report.work_days = len(overrides) - report.rest_days
    report.replaced = len(stale)
    report.thin_years = [
        year
        for year in years
        if sum(1 for day, working in overrides.items() if day.year == year and not working)
        < THIN_YEAR_REST_DAYS
    ]
    report.known_until = (await load_calendar(session)).known_until()
    await record(
        session,
        actor=actor,
        action="calendar.load",
        entity="holiday",
        at=now,
        detail={
            "years": years,
            "rest": report.rest_days,
            "work": report.work_days,
            "replaced": report.replaced,
        },
    )
    return report


async def calendar_status(session: AsyncSession, today: date, warning_days: int) -> CalendarStatus:
    calendar = await load_calendar(session)
    loaded = await session.exec(select(col(Holiday.day)))
    return CalendarStatus(
        known_until=calendar.known_until(),
        package_years=package_years(),
        loaded_years=sorted({day.year for day in loaded}),
        needs_warning=calendar.needs_warning(today, warning_days),
        next_year=calendar.known_until().year + 1,
    )
