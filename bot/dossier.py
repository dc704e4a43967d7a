"""What one inspection is about, as the people of issue #4 see it: the target, the check items,
the group, and who must be told about it (the inspectors' and departments' private chats).

Read-only helpers shared by assignments, results, review and follow-up; no Telegram here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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


async def _load_chunk(session: AsyncSession, ids: list[int]) -> dict[int, Dossier]:
    inspections = list(await session.exec(select(Inspection).where(col(Inspection.id).in_(ids))))
    if not inspections:
        return {}
    target_ids = {i.target_id for i in inspections}
    targets = {
        t.id: t for t in await session.exec(select(Target).where(col(Target.id).in_(target_ids)))
    }
    pairs: dict[int, list[tuple[InspectionItem, CheckItem | None]]] = {}
    for ii, check in await session.exec(
        select(InspectionItem, CheckItem)
        .outerjoin(CheckItem, col(CheckItem.code) == col(InspectionItem.item_code))
        .where(col(InspectionItem.inspection_id).in_(ids), col(InspectionItem.voided_at).is_(None))
        .order_by(col(InspectionItem.id))
    ):
        pairs.setdefault(ii.inspection_id, []).append((ii, check))
    draw_tasks = dict(
        (
            await session.exec(
                select(Draw.id, Draw.task_id).where(
                    col(Draw.id).in_({i.draw_id for i in inspections})
                )
            )
        ).all()
    )
    task_ids = {ii.task_id for rows in pairs.values() for ii, _ in rows} | set(draw_tasks.values())
    tasks = {t.id: t for t in await session.exec(select(Task).where(col(Task.id).in_(task_ids)))}
    members: dict[int, list[tuple[Assignment, Inspector]]] = {}
    for assignment, inspector in await session.exec(
        select(Assignment, Inspector)
        .join(Inspector, col(Inspector.id) == col(Assignment.inspector_id))
        .where(col(Assignment.inspection_id).in_(ids), col(Assignment.status).in_(LIVE_SEATS))
        .order_by(col(Assignment.pick_index), col(Assignment.id))
    ):
        members.setdefault(assignment.inspection_id, []).append((assignment, inspector))
    names = await department_names(
        session,
        [i.lead_department for i in inspections]
        + [c.department_code for rows in pairs.values() for _, c in rows if c is not None]
        + [i.department_code for rows in members.values() for _, i in rows],
    )
    out: dict[int, Dossier] = {}
    for inspection in inspections:
        assert inspection.id is not None
        target = targets[inspection.target_id]
        items = []
        for ii, item in pairs.get(inspection.id, []):
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
        for assignment, inspector in members.get(inspection.id, []):
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
        task_names = [
            tasks[t].name for t in sorted({ii.task_id for ii, _ in pairs.get(inspection.id, [])})
        ]
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
            items=items,
            members=views,
            task_names=task_names,
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
