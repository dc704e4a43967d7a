"""/tasks and /review in a private chat: what waits for the caller, with its deadline.

Inspectors see their open inspections (status, deadline, what to do next); liaisons what
waits for their department (recusal requests, reviews, transfers); the office all of that for
every department, and the task list (bot.tasks, issue #3).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.assignments import Act, can_request_recusal, pending_recusals
from bot.dossier import (
    CLOSED_INSPECTIONS,
    DEFAULT_TIMEZONE,
    department_names,
    liaison_departments_of,
    local_today,
)
from bot.followups import pending_transfers
from bot.people import Identity
from bot.results import waiting_reviews
from storage.models import (
    LIVE_SEATS,
    Assignment,
    AssignmentStatus,
    CoSignature,
    CoSignStatus,
    Department,
    Duty,
    DutyStatus,
    FollowUp,
    FollowUpStatus,
    Inspection,
    InspectionStatus,
    Inspector,
    Result,
    ResultStatus,
    Target,
)

LIST_LIMIT = 20  # rows per list in one message (Telegram's 4096 characters)


class Next:
    """What the inspector should do next on an inspection (a button, or nothing)."""

    CONFIRM = "confirm"  # pending: 确认接收 / 申请回避 on the card
    ENTER = "enter"  # confirmed, no result yet
    RESUME = "resume"  # their draft
    COSIGN = "cosign"  # their co-signature is asked for
    FOLLOWUP = "followup"  # their follow-ups are open
    WAIT = "wait"  # nothing for them now


@dataclass(frozen=True)
class Row:
    inspection_id: int
    assignment_id: int
    target_name: str
    status: str  # worklist.status.<key>
    deadline: date | None
    next: str
    cosign_id: int = 0
    other: str = ""  # who holds the draft, when someone else does
    returned: bool = False
    recusable: bool = False  # confirmed, yet 申请回避 is still possible (nothing submitted)


@dataclass(frozen=True)
class Waiting:
    kind: str  # recusal | review | transfer
    ref: int  # request / result / transfer id
    version: int
    title: str
    department: str
    since: date | None = None


@dataclass
class Worklist:
    rows: list[Row] = field(default_factory=list)
    more: int = 0
    waiting: list[Waiting] = field(default_factory=list)
    department_rows: list[tuple[str, str, str, date | None]] = field(default_factory=list)
    tasks: list[object] = field(default_factory=list)
    tasks_available: bool = False


async def _duty_deadline(session: AsyncSession, kind: str, subject: str) -> date | None:
    duty = (
        await session.exec(
            select(Duty).where(
                Duty.kind == kind, Duty.subject == subject, Duty.status == DutyStatus.OPEN
            )
        )
    ).first()
    return duty.deadline if duty else None


async def inspector_rows(session: AsyncSession, identity: Identity) -> list[Row]:
    if not identity.inspector_ids:
        return []
    seats = list(
        await session.exec(
            select(Assignment, Inspection, Target)
            .join(Inspection, col(Inspection.id) == col(Assignment.inspection_id))
            .join(Target, col(Target.id) == col(Inspection.target_id))
            .where(
                col(Assignment.inspector_id).in_(identity.inspector_ids),
                col(Assignment.status).in_(LIVE_SEATS),
                col(Inspection.status).not_in((*CLOSED_INSPECTIONS, InspectionStatus.PUBLISHED)),
            )
            .order_by(col(Inspection.window_end), col(Inspection.id))
        )
    )
    rows: list[Row] = []
    for seat, inspection, target in seats:
        assert seat.id is not None and inspection.id is not None
        result = (
            await session.exec(select(Result).where(Result.inspection_id == inspection.id))
        ).first()
        row = await _row(session, seat, inspection, target, result)
        if row is None:
            continue
        if seat.status == AssignmentStatus.CONFIRMED and (
            result is None or result.status == ResultStatus.DRAFT
        ):
            # A conflict may come to light after 确认接收 (on arriving at the shop, say);
            # bot.assignments decides whether a recusal is still possible.
            check = await can_request_recusal(session, assignment_id=seat.id, identity=identity)
            row = replace(row, recusable=check.act is Act.DONE)
        rows.append(row)
    return rows


async def _row(
    session: AsyncSession,
    seat: Assignment,
    inspection: Inspection,
    target: Target,
    result: Result | None,
) -> Row | None:
    assert seat.id is not None and inspection.id is not None
    base = Row(inspection.id, seat.id, target.name, status="", deadline=None, next=Next.WAIT)
    if seat.status == AssignmentStatus.PENDING:
        deadline = await _duty_deadline(session, "confirm", f"assignment:{seat.id}")
        return replace(base, status="pending", deadline=deadline, next=Next.CONFIRM)
    if seat.status == AssignmentStatus.RECUSAL_REQUESTED:
        return replace(base, status="recusal", deadline=None, next=Next.WAIT)
    if result is None:
        return replace(base, status="to_enter", deadline=inspection.window_end, next=Next.ENTER)
    if result.status == ResultStatus.DRAFT:
        inspect = await _duty_deadline(session, "inspect", f"inspection:{inspection.id}")
        deadline = inspect or inspection.window_end
        if result.entered_by == seat.inspector_id:
            return replace(
                base,
                status="returned" if result.returned_reason else "draft",
                deadline=deadline,
                next=Next.RESUME,
                returned=bool(result.returned_reason),
            )
        enterer = await session.get(Inspector, result.entered_by)
        return replace(
            base,
            status="draft_other",
            deadline=deadline,
            next=Next.WAIT,
            other=enterer.name if enterer else "",
        )
    if result.status == ResultStatus.SUBMITTED:
        mine = (
            await session.exec(
                select(CoSignature).where(
                    CoSignature.result_id == result.id,
                    CoSignature.version == result.version,
                    CoSignature.assignment_id == seat.id,
                    CoSignature.status == CoSignStatus.PENDING,
                )
            )
        ).first()
        if mine is not None:
            assert mine.id is not None
            deadline = await _duty_deadline(session, "cosign", f"assignment:{seat.id}")
            return replace(
                base, status="cosign", deadline=deadline, next=Next.COSIGN, cosign_id=mine.id
            )
        return replace(base, status="cosign_others", deadline=None, next=Next.WAIT)
    if result.status == ResultStatus.COSIGNED:
        deadline = await _duty_deadline(session, "review", f"inspection:{inspection.id}")
        return replace(base, status="review", deadline=deadline, next=Next.WAIT)
    followups = list(
        await session.exec(
            select(FollowUp).where(
                FollowUp.inspection_id == inspection.id,
                FollowUp.inspector_id == seat.inspector_id,
                FollowUp.status == FollowUpStatus.OPEN,
            )
        )
    )
    if followups:
        deadlines = [
            d
            for f in followups
            for d in [
                await _duty_deadline(session, "followup", f"followup:{f.id}"),
                await _duty_deadline(session, "followup_entry", f"followup:{f.id}"),
            ]
            if d is not None
        ]
        return replace(
            base,
            status="followup",
            deadline=min(deadlines) if deadlines else None,
            next=Next.FOLLOWUP,
        )
    return None  # approved, nothing left for this inspector


async def waiting_items(
    session: AsyncSession, identity: Identity, *, tz: str = DEFAULT_TIMEZONE
) -> list[Waiting]:
    """What waits for a liaison's (or the office's) decision, since the local day it came."""
    out: list[Waiting] = []
    for request, inspector in await pending_recusals(session, identity):
        assert request.id is not None
        out.append(
            Waiting(
                "recusal",
                request.id,
                0,
                await _target_name(session, request.inspection_id) + f"（{inspector.name}）",
                request.department_code,
                local_today(request.requested_at, tz),
            )
        )
    for result, dossier in await waiting_reviews(session, identity):
        assert result.id is not None
        out.append(
            Waiting(
                "review",
                result.id,
                result.version,
                dossier.target.name,
                dossier.lead_department,
                local_today(result.cosigned_at, tz) if result.cosigned_at else None,
            )
        )
    for transfer in await pending_transfers(session, identity):
        assert transfer.id is not None
        out.append(
            Waiting(
                "transfer",
                transfer.id,
                0,
                await _target_name(session, transfer.inspection_id),
                transfer.to_department,
                local_today(transfer.created_at, tz),
            )
        )
    names = await department_names(session, [w.department for w in out])
    return [
        Waiting(w.kind, w.ref, w.version, w.title, names.get(w.department, w.department), w.since)
        for w in out
    ]


async def _target_name(session: AsyncSession, inspection_id: int) -> str:
    row = (
        await session.exec(
            select(Target.name)
            .join(Inspection, col(Inspection.target_id) == col(Target.id))
            .where(Inspection.id == inspection_id)
        )
    ).first()
    return row or ""


async def department_overview(
    session: AsyncSession, identity: Identity
) -> list[tuple[str, str, str, date | None]]:
    """A liaison's department at work: (target, inspectors, status, window end) of open
    inspections with a member from their department."""
    if not identity.liaison_departments:
        return []
    departments = set(identity.liaison_departments)
    # Sub-units (stations, sections) belong to the department.
    for department in await session.exec(select(Department)):
        chain = await liaison_departments_of(session, department.code)
        if any(code in identity.liaison_departments for code in chain):
            departments.add(department.code)
    rows = list(
        await session.exec(
            select(Inspection, Target, Inspector)
            .join(Assignment, col(Assignment.inspection_id) == col(Inspection.id))
            .join(Inspector, col(Inspector.id) == col(Assignment.inspector_id))
            .join(Target, col(Target.id) == col(Inspection.target_id))
            .where(
                col(Inspector.department_code).in_(sorted(departments)),
                col(Assignment.status).in_(LIVE_SEATS),
                col(Inspection.status).not_in(
                    (*CLOSED_INSPECTIONS, InspectionStatus.PUBLISHED, InspectionStatus.APPROVED)
                ),
            )
            .order_by(col(Inspection.window_end), col(Inspection.id), col(Assignment.pick_index))
        )
    )
    grouped: dict[int, tuple[Inspection, Target, list[str]]] = {}
    for inspection, target, inspector in rows:
        assert inspection.id is not None
        grouped.setdefault(inspection.id, (inspection, target, []))[2].append(inspector.name)
    return [
        (target.name, "、".join(names), inspection.status, inspection.window_end)
        for inspection, target, names in grouped.values()
    ]


async def _office_tasks(session: AsyncSession) -> list[object]:
    from bot.tasks import list_tasks

    return list(await list_tasks(session))


async def worklist(
    session: AsyncSession, identity: Identity, *, today: date, tz: str = DEFAULT_TIMEZONE
) -> Worklist:
    rows = await inspector_rows(session, identity)
    work = Worklist(rows=rows[:LIST_LIMIT], more=max(0, len(rows) - LIST_LIMIT))
    if identity.liaison_departments or identity.is_office:
        work.waiting = await waiting_items(session, identity, tz=tz)
    if identity.liaison_departments:
        work.department_rows = (await department_overview(session, identity))[:LIST_LIMIT]
    if identity.is_office:
        work.tasks = await _office_tasks(session)
        work.tasks_available = True
    return work
