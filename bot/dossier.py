"""What one inspection is about, as the people of issue #4 see it: the target, the check items,
the group, and who must be told about it (the inspectors' and departments' private chats).

Read-only helpers shared by assignments, results, review and follow-up; no Telegram here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select as sa_select
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
    return (await load_dossiers(session, [inspection_id])).get(inspection_id)


CHUNK = 500
"""Ids per IN (…) list: far below SQLite's and asyncpg's limits on bound parameters."""


def chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    """Distinct ids, sorted, in lists of at most CHUNK."""
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), CHUNK):
        yield wanted[start : start + CHUNK]


async def load_dossiers(session: AsyncSession, inspection_ids: Iterable[int]) -> dict[int, Dossier]:
    """`load_dossier` for many inspections in a few queries per 500 (a draw announces
    thousands at once); unknown ids are left out."""
    out: dict[int, Dossier] = {}
    for chunk in chunks(inspection_ids):
        out.update(await _load_chunk(session, chunk))
    return out


async def _rows(session: AsyncSession, statement: Any) -> list[Any]:
    """Rows of plain columns, read by name."""
    return list((await session.exec(statement)).all())


async def _load_chunk(session: AsyncSession, ids: list[int]) -> dict[int, Dossier]:
    # Plain rows of the columns shown, not ORM objects: a draw loads tens of thousands.
    inspections = await _rows(
        session,
        sa_select(
            col(Inspection.id),
            col(Inspection.draw_id),
            col(Inspection.target_id),
            col(Inspection.status),
            col(Inspection.window_start),
            col(Inspection.window_end),
            col(Inspection.method),
            col(Inspection.lead_department),
            col(Inspection.merged),
        ).where(col(Inspection.id).in_(ids)),
    )
    if not inspections:
        return {}
    targets = {
        t.id: t
        for t in await _rows(
            session,
            sa_select(
                col(Target.id),
                col(Target.name),
                col(Target.key),
                col(Target.uscc),
                col(Target.address),
                col(Target.region),
                col(Target.credit_class),
                col(Target.abnormal),
                col(Target.serious_illegal),
                col(Target.complaints),
                col(Target.subject_type),
                col(Target.scope),
            ).where(col(Target.id).in_({i.target_id for i in inspections})),
        )
    }
    items: dict[int, list[Any]] = {}
    for row in await _rows(
        session,
        sa_select(
            col(InspectionItem.id),
            col(InspectionItem.inspection_id),
            col(InspectionItem.task_id),
            col(InspectionItem.item_code),
            col(CheckItem.name),
            col(CheckItem.content),
            col(CheckItem.basis),
            col(CheckItem.department_code),
        )
        .outerjoin(CheckItem, col(CheckItem.code) == col(InspectionItem.item_code))
        .where(col(InspectionItem.inspection_id).in_(ids), col(InspectionItem.voided_at).is_(None))
        .order_by(col(InspectionItem.id)),
    ):
        items.setdefault(row.inspection_id, []).append(row)
    draw_tasks = dict(
        (
            await session.exec(
                select(Draw.id, Draw.task_id).where(
                    col(Draw.id).in_({i.draw_id for i in inspections})
                )
            )
        ).all()
    )
    task_ids = {r.task_id for rows in items.values() for r in rows} | set(draw_tasks.values())
    tasks = {t.id: t for t in await session.exec(select(Task).where(col(Task.id).in_(task_ids)))}
    members: dict[int, list[Any]] = {}
    for row in await _rows(
        session,
        sa_select(
            col(Assignment.id),
            col(Assignment.inspection_id),
            col(Assignment.status),
            col(Assignment.inspector_id),
            col(Inspector.name),
            col(Inspector.phone),
            col(Inspector.department_code),
            col(Inspector.unit),
        )
        .join(Inspector, col(Inspector.id) == col(Assignment.inspector_id))
        .where(col(Assignment.inspection_id).in_(ids), col(Assignment.status).in_(LIVE_SEATS))
        .order_by(col(Assignment.pick_index), col(Assignment.id)),
    ):
        members.setdefault(row.inspection_id, []).append(row)
    names = await department_names(
        session,
        [i.lead_department for i in inspections]
        + [r.department_code for rows in items.values() for r in rows if r.department_code]
        + [r.department_code for rows in members.values() for r in rows],
    )
    out: dict[int, Dossier] = {}
    for inspection in inspections:
        target = targets[inspection.target_id]
        mine = items.get(inspection.id, [])
        draw_task = tasks.get(draw_tasks.get(inspection.draw_id, -1))
        out[inspection.id] = Dossier(
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
            items=[
                ItemView(
                    inspection_item_id=r.id,
                    code=r.item_code,
                    # An item missing from the catalogue still shows its code.
                    name=r.item_code if r.name is None else r.name,
                    content=r.content or "",
                    basis=r.basis or "",
                    department_code=r.department_code or "",
                    department_name=names.get(r.department_code or "", r.department_code or ""),
                )
                for r in mine
            ],
            members=[
                MemberView(
                    assignment_id=r.id,
                    inspector_id=r.inspector_id,
                    name=r.name,
                    phone=r.phone,
                    department_code=r.department_code,
                    department_name=names.get(r.department_code, r.department_code),
                    unit=r.unit,
                    status=r.status,
                )
                for r in members.get(inspection.id, [])
            ],
            task_names=[tasks[t].name for t in sorted({r.task_id for r in mine})],
            task_deadlines=dict(draw_task.deadlines) if draw_task is not None else {},
        )
    return out


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


async def inspector_chats(session: AsyncSession, inspector_ids: Iterable[int]) -> dict[int, int]:
    """`inspector_chat` for many inspectors at once; those nobody is bound to are left out."""
    out: dict[int, int] = {}
    for chunk in chunks(inspector_ids):
        rows = await session.exec(
            select(RoleGrant.inspector_id, Person.tg_user_id)
            .join(Person, col(Person.id) == col(RoleGrant.person_id))
            .where(
                RoleGrant.role == Role.INSPECTOR,
                col(RoleGrant.inspector_id).in_(chunk),
                col(RoleGrant.active).is_(True),
            )
            .order_by(col(RoleGrant.id))
        )
        for inspector_id, chat in rows:  # the latest grant wins, as in inspector_chat
            if inspector_id is not None:
                out[inspector_id] = chat
    return out


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
