"""What one inspection is about, as the people of issue #4 see it: the target, the check items,
the group, and who must be told about it (the inspectors' and departments' private chats).

Read-only helpers shared by assignments, results, review and follow-up; no Telegram here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import to_local
from bot.workdays import Calendar
from storage.models import (
    LIVE_SEATS,
    Assignment,
    CheckItem,
    Department,
    Draw,
    Inspection,
    InspectionItem,
    InspectionStatus,
    Inspector,
    Person,
    Role,
    RoleGrant,
    Target,
    Task,
)

DEFAULT_TIMEZONE = "Asia/Shanghai"  # bot.config.Settings.timezone's default

# Inspections nobody works on any more.
CLOSED_INSPECTIONS = (InspectionStatus.CANCELLED, InspectionStatus.SHORTFALL)


def due_after(
    calendar: Calendar, start: date, kind: str, overrides: dict[str, int], default: int
) -> date:
    """A deadline of a kind bot.duties has no default for (a task may still override it)."""
    return calendar.working_days_add(start, overrides.get(kind, default))


def local_today(now: datetime, tz: str = DEFAULT_TIMEZONE) -> date:
    return to_local(now, tz).date()


@dataclass(frozen=True)
class TargetView:
    name: str
    key: str
    uscc: str | None
    address: str
    region: str
    credit_class: str
    abnormal: bool
    serious_illegal: bool
    complaints: int
    subject_type: str
    scope: str


@dataclass(frozen=True)
class ItemView:
    inspection_item_id: int
    code: str
    name: str
    content: str
    basis: str
    department_code: str
    department_name: str


@dataclass(frozen=True)
class MemberView:
    assignment_id: int
    inspector_id: int
    name: str
    phone: str
    department_code: str
    department_name: str
    unit: str
    status: str


@dataclass
class Dossier:
    inspection_id: int
    draw_id: int
    status: str
    window_start: date
    window_end: date
    method: str
    lead_department: str
    lead_department_name: str
    merged: bool
    target: TargetView
    items: list[ItemView]
    members: list[MemberView]
    task_names: list[str]
    task_deadlines: dict[str, int] = field(default_factory=dict)

    def member(self, assignment_id: int) -> MemberView | None:
        return next((m for m in self.members if m.assignment_id == assignment_id), None)

    def others(self, assignment_id: int) -> list[MemberView]:
        return [m for m in self.members if m.assignment_id != assignment_id]

    def seat_of(self, inspector_ids: Iterable[int]) -> MemberView | None:
        ids = set(inspector_ids)
        return next((m for m in self.members if m.inspector_id in ids), None)


async def department_names(session: AsyncSession, codes: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    rows = await session.exec(select(Department).where(col(Department.code).in_(wanted)))
    return {d.code: d.name for d in rows}


async def load_dossier(session: AsyncSession, inspection_id: int) -> Dossier | None:
    """Everything a message about this inspection shows; active members only (not recused)."""
    inspection = await session.get(Inspection, inspection_id)
    if inspection is None or inspection.id is None:
        return None
    target = await session.get(Target, inspection.target_id)
    assert target is not None
    pairs = list(
        await session.exec(
            select(InspectionItem, CheckItem)
            .outerjoin(CheckItem, col(CheckItem.code) == col(InspectionItem.item_code))
            .where(
                InspectionItem.inspection_id == inspection.id,
                col(InspectionItem.voided_at).is_(None),
            )
            .order_by(col(InspectionItem.id))
        )
    )
    task_ids = sorted({ii.task_id for ii, _ in pairs})
    tasks = list(await session.exec(select(Task).where(col(Task.id).in_(task_ids))))
    draw = await session.get(Draw, inspection.draw_id)
    draw_task = await session.get(Task, draw.task_id) if draw is not None else None
    members = list(
        await session.exec(
            select(Assignment, Inspector)
            .join(Inspector, col(Inspector.id) == col(Assignment.inspector_id))
            .where(
                Assignment.inspection_id == inspection.id,
                col(Assignment.status).in_(LIVE_SEATS),
            )
            .order_by(col(Assignment.pick_index), col(Assignment.id))
        )
    )
    names = await department_names(
        session,
        [inspection.lead_department]
        + [c.department_code for _, c in pairs if c is not None]
        + [i.department_code for _, i in members],
    )
    items = []
    for ii, item in pairs:
        assert ii.id is not None
        dept = item.department_code if item else ""
        items.append(
            ItemView(
                inspection_item_id=ii.id,
                code=ii.item_code,
                name=item.name if item else ii.item_code,
                content=item.content if item else "",
                basis=item.basis if item else "",
                department_code=dept,
                department_name=names.get(dept, dept),
            )
        )
    views = []
    for assignment, inspector in members:
        assert assignment.id is not None and inspector.id is not None
        views.append(
            MemberView(
                assignment_id=assignment.id,
                inspector_id=inspector.id,
                name=inspector.name,
                phone=inspector.phone,
                department_code=inspector.department_code,
                department_name=names.get(inspector.department_code, inspector.department_code),
                unit=inspector.unit,
                status=assignment.status,
            )
        )
    return Dossier(
        inspection_id=inspection.id,
        draw_id=inspection.draw_id,
        status=inspection.status,
        window_start=inspection.window_start,
        window_end=inspection.window_end,
        method=inspection.method,
        lead_department=inspection.lead_department,
        lead_department_name=names.get(inspection.lead_department, inspection.lead_department),
        merged=inspection.merged,
        target=TargetView(
            name=target.name,
            key=target.key,
            uscc=target.uscc,
            address=target.address,
            region=target.region,
            credit_class=target.credit_class,
            abnormal=target.abnormal,
            serious_illegal=target.serious_illegal,
            complaints=target.complaints,
            subject_type=target.subject_type,
            scope=target.scope,
        ),
        items=items,
        members=views,
        task_names=[t.name for t in tasks],
        task_deadlines=dict(draw_task.deadlines) if draw_task is not None else {},
    )


# --- who to tell ----------------------------------------------------------------------------------


async def inspector_chat(session: AsyncSession, inspector_id: int) -> int | None:
    """The private chat of the person bound to this inspector entry, if anyone is bound."""
    row = (
        await session.exec(
            select(Person.tg_user_id)
            .join(RoleGrant, col(RoleGrant.person_id) == col(Person.id))
            .where(
                RoleGrant.role == Role.INSPECTOR,
                RoleGrant.inspector_id == inspector_id,
                col(RoleGrant.active).is_(True),
            )
            .order_by(col(RoleGrant.id).desc())
        )
    ).first()
    return row


async def liaison_chats(session: AsyncSession, department_code: str) -> list[int]:
    """The department's liaisons; a station or section without one falls back to its parent's."""
    code: str | None = department_code
    seen: set[str] = set()
    while code and code not in seen:
        seen.add(code)
        chats = list(
            await session.exec(
                select(Person.tg_user_id)
                .join(RoleGrant, col(RoleGrant.person_id) == col(Person.id))
                .where(
                    RoleGrant.role == Role.LIAISON,
                    RoleGrant.department_code == code,
                    col(RoleGrant.active).is_(True),
                )
                .order_by(col(Person.tg_user_id))
            )
        )
        if chats:
            return sorted(set(chats))
        department = (await session.exec(select(Department).where(Department.code == code))).first()
        code = department.parent_code if department else None
    return []


async def office_chats(session: AsyncSession, office_admins: Sequence[int] = ()) -> list[int]:
    rows = await session.exec(
        select(Person.tg_user_id)
        .join(RoleGrant, col(RoleGrant.person_id) == col(Person.id))
        .where(RoleGrant.role == Role.OFFICE, col(RoleGrant.active).is_(True))
    )
    return sorted(set(rows) | set(office_admins))


async def department_contacts(
    session: AsyncSession, department_code: str, office_admins: Sequence[int] = ()
) -> list[int]:
    """Liaisons of the department, or the office when the department has none."""
    return await liaison_chats(session, department_code) or await office_chats(
        session, office_admins
    )


async def liaison_departments_of(session: AsyncSession, department_code: str) -> list[str]:
    """The department and its parents: a liaison of any of them speaks for it."""
    codes: list[str] = []
    code: str | None = department_code
    while code and code not in codes:
        codes.append(code)
        department = (await session.exec(select(Department).where(Department.code == code))).first()
        code = department.parent_code if department else None
    return codes
