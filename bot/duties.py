"""Duties with deadlines in working days (DOMAIN §8): opened by the events that create them,
completed by the events that fulfil them. The sweeper (bot/sweeper.py) escalates what is late.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.workdays import Calendar
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


async def load_calendar(session: AsyncSession) -> Calendar:
    """The official calendar plus whatever the office loaded (`dsr calendar load`)."""
    rows = await session.exec(select(Holiday))
    return Calendar({row.day: row.working for row in rows})


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
    """Idempotent on (kind, subject): reopening an open duty returns it unchanged."""
    existing = (
        await session.exec(select(Duty).where(Duty.kind == kind, Duty.subject == subject))
    ).first()
    if existing is not None and existing.status == DutyStatus.OPEN:
        return existing
    duty = existing or Duty(
        kind=kind,
        subject=subject,
        responsible_role=responsible_role,
        department_code=department_code,
        deadline=deadline,
        next_check_on=deadline,
        created_at=now,
    )
    duty.status = DutyStatus.OPEN
    duty.deadline = deadline
    duty.next_check_on = deadline  # the sweeper moves it earlier for reminders when it plans
    duty.stage = 0
    duty.supervision_deadline = None
    duty.done_at = None
    duty.inspection_id = inspection_id
    duty.inspector_id = inspector_id
    duty.responsible_role = responsible_role
    duty.department_code = department_code
    session.add(duty)
    await session.flush()
    return duty


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
    """The inspection went away (its draw was voided): nothing is owed any more."""
    await session.exec(
        update(Duty)
        .where(col(Duty.inspection_id) == inspection_id, col(Duty.status) == DutyStatus.OPEN)
        .values(status=DutyStatus.CANCELLED, done_at=now)
    )
