"""Assignments (检查任务) reach inspectors; they confirm them or ask for recusal (申请回避).

After a draw every inspector gets one private message per inspection. An inspector who is not
bound to a Telegram account yet cannot be messaged: their department's liaison is told who
must open their invite link, the assignment stays undelivered (`delivered_at` is empty), and
`deliver_waiting` delivers it the moment that person binds (handlers/start.py calls it).
A bound person who never opened the bot, or blocked it, gets a 403: the outbox row carries
`notify_department`, and the sender tells the liaison and requeues the row when they start
the bot (bot/sender.py, issue #5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.dossier import (
    CLOSED_INSPECTIONS,
    DEFAULT_TIMEZONE,
    Dossier,
    department_contacts,
    inspector_chat,
    inspector_chats,
    liaison_departments_of,
    load_dossier,
    load_dossiers,
    local_today,
    office_chats,
)
from bot.duties import (
    DutySpec,
    complete_duty,
    deadline_after,
    load_calendar,
    open_duties,
)
from bot.outbox import Envelope, Keyboard, enqueue, enqueue_many
from bot.people import Identity
from bot.render import render, text
from bot.telegram import AssignmentCb, RecusalCb, ResultCb
from storage.audit import record
from storage.models import (
    LIVE_SEATS,
    Assignment,
    AssignmentStatus,
    AuditLog,
    Duty,
    Inspection,
    InspectionItem,
    InspectionStatus,
    Inspector,
    Person,
    RecusalRequest,
    RecusalStatus,
    Result,
    Role,
    RoleGrant,
)

AUDIT: Table = AuditLog.__table__  # type: ignore[attr-defined]
UPDATE_CHUNK = 500
"""Assignment ids per UPDATE … WHERE id IN (…)."""

log = logging.getLogger(__name__)

# Common recusal reasons offered as buttons (003 §七); anything else is typed.
RECUSAL_REASONS = (1, 2, 3)


def recusal_reason_text(code: int) -> str:
    return text(f"assignment.recusal_reason.{code}")


# --- what the inspector sees ----------------------------------------------------------------------


@lru_cache(maxsize=16)
def _label(key: str) -> str:
    """A button label: the same few for thousands of assignment messages of a draw."""
    return text(key)


def assignment_buttons(assignment: Assignment, inspection_id: int) -> Keyboard:
    """确认接收 / 申请回避 / 详情 while pending; 录入结果 / 详情 once confirmed."""
    assert assignment.id is not None
    detail = (
        _label("button.assignment.detail"),
        AssignmentCb(action="detail", assignment_id=assignment.id).pack(),
    )
    if assignment.status == AssignmentStatus.PENDING:
        return [
            [
                (
                    _label("button.assignment.confirm"),
                    AssignmentCb(action="confirm", assignment_id=assignment.id).pack(),
                ),
                (
                    _label("button.assignment.recuse"),
                    AssignmentCb(action="recuse", assignment_id=assignment.id).pack(),
                ),
            ],
            [detail],
        ]
    if assignment.status == AssignmentStatus.CONFIRMED:
        return [
            [
                (
                    _label("button.result.enter"),
                    ResultCb(action="open", inspection_id=inspection_id).pack(),
                ),
                detail,
            ]
        ]
    return [[detail]]


@dataclass
class Card:
    """An assignment as one message: its text and buttons."""

    text: str
    buttons: Keyboard
    assignment: Assignment
    dossier: Dossier


TELEGRAM_TEXT_LIMIT = 4096


def render_card(
    dossier: Dossier,
    assignment: Assignment,
    *,
    confirm_deadline: date | None,
    detail: bool = False,
    headline: str = "",
) -> str:
    """The assignment message; long check-item texts are cut to fit Telegram's 4096 characters
    (详情 shows them in full, in as many parts as needed)."""
    for limit in (160, 60, 0):
        body = render(
            "assignments/card.j2",
            d=dossier,
            me=dossier.member(assignment.id or 0),
            assignment=assignment,
            confirm_deadline=confirm_deadline,
            detail=detail,
            limit=limit,
            headline=headline,
        )
        if len(body) <= TELEGRAM_TEXT_LIMIT:
            return body
    return body[: TELEGRAM_TEXT_LIMIT - 1] + "…"


def render_details(dossier: Dossier) -> list[str]:
    """详情: every item's content and basis in full, split into messages Telegram accepts."""
    parts: list[str] = []
    current = render("assignments/detail_head.j2", d=dossier)
    for n, item in enumerate(dossier.items, 1):
        block = render("assignments/detail_item.j2", n=n, item=item)
        if len(block) > TELEGRAM_TEXT_LIMIT - 100:
            block = block[: TELEGRAM_TEXT_LIMIT - 100] + "…"
        if len(current) + len(block) + 2 > TELEGRAM_TEXT_LIMIT:
            parts.append(current)
            current = block
        else:
            current = f"{current}\n\n{block}"
    parts.append(current)
    return parts


async def _confirm_deadline(session: AsyncSession, assignment_id: int) -> date | None:
    duty = (
        await session.exec(
            select(Duty).where(
                Duty.kind == "confirm", Duty.subject == f"assignment:{assignment_id}"
            )
        )
    ).first()
    return duty.deadline if duty else None


# --- delivery -------------------------------------------------------------------------------------


async def _deliver(
    session: AsyncSession,
    assignment: Assignment,
    dossier: Dossier,
    *,
    now: datetime,
    tz: str,
    headline: str = "",
) -> bool:
    """Queue the assignment message to its inspector; False when nobody is bound to them yet."""
    assert assignment.id is not None
    unbound = await _deliver_many(
        session, [assignment], {dossier.inspection_id: dossier}, now=now, tz=tz, headline=headline
    )
    return not unbound


async def _deliver_many(
    session: AsyncSession,
    assignments: Sequence[Assignment],
    dossiers: dict[int, Dossier],
    *,
    now: datetime,
    tz: str,
    headline: str = "",
) -> list[Assignment]:
    """Queue each assignment's message to its inspector, with its confirm duty and audit row,
    in a few statements for the lot (a draw delivers thousands); returns those whose inspector
    nobody is bound to yet (they stay undelivered)."""
    chats = await inspector_chats(session, [a.inspector_id for a in assignments])
    calendar = await load_calendar(session)
    today = local_today(now, tz)
    duties: list[DutySpec] = []
    messages: list[Envelope] = []
    audits: list[dict[str, Any]] = []
    delivered: list[Assignment] = []
    unbound: list[Assignment] = []
    for assignment in assignments:
        assert assignment.id is not None
        dossier = dossiers[assignment.inspection_id]
        chat = chats.get(assignment.inspector_id)
        if chat is None:
            unbound.append(assignment)
            continue
        member = dossier.member(assignment.id)
        assert member is not None
        deadline = deadline_after(calendar, today, "confirm", dossier.task_deadlines)
        duties.append(
            DutySpec(
                kind="confirm",
                subject=f"assignment:{assignment.id}",
                deadline=deadline,
                responsible_role="inspector",
                department_code=member.department_code,
                inspection_id=dossier.inspection_id,
                inspector_id=assignment.inspector_id,
            )
        )
        messages.append(
            Envelope(
                key=f"assignment:deliver:{assignment.id}:{chat}",
                chat_id=chat,
                text=render_card(dossier, assignment, confirm_deadline=deadline, headline=headline),
                buttons=assignment_buttons(assignment, dossier.inspection_id),
                notify_department=member.department_code,
            )
        )
        audits.append(
            {
                "at": now,
                "actor": "bot",
                "action": "assignment.deliver",
                "entity": "assignment",
                "entity_id": str(assignment.id),
                "detail": {"inspection_id": dossier.inspection_id, "chat": chat},
            }
        )
        delivered.append(assignment)
    if not delivered:
        return unbound
    await open_duties(session, duties, now=now)
    await enqueue_many(session, messages, now=now)
    ids = [a.id for a in delivered]
    for start in range(0, len(ids), UPDATE_CHUNK):
        await session.exec(
            update(Assignment)
            .where(col(Assignment.id).in_(ids[start : start + UPDATE_CHUNK]))
            .values(delivered_at=now)
            .execution_options(synchronize_session=False)
        )
    for assignment in delivered:  # the loaded objects agree with the rows, and stay clean
        set_committed_value(assignment, "delivered_at", now)
    await session.exec(insert(AUDIT), params=audits)  # storage.audit.record's row, in bulk
    return unbound


async def _tell_unreachable(
    session: AsyncSession,
    inspector: Inspector,
    dossiers: list[Dossier],
    *,
    key: str,
    now: datetime,
    office_admins: Sequence[int],
    contacts: dict[str, list[int]] | None = None,
) -> None:
    """The liaison learns who must open their invite link before assignments can reach them.
    `contacts` remembers each department's contacts across the calls of one announcement."""
    known = {} if contacts is None else contacts
    code = inspector.department_code
    if code not in known:
        known[code] = await department_contacts(session, code, office_admins)
    for chat in known[code]:
        await enqueue(
            session,
            key=f"{key}:{chat}",
            chat_id=chat,
            text=render("assignments/unreachable.j2", inspector=inspector, dossiers=dossiers),
            now=now,
        )
    await record(
        session,
        actor="bot",
        action="assignment.unreachable",
        entity="inspector",
        entity_id=str(inspector.id),
        at=now,
        detail={"inspections": [d.inspection_id for d in dossiers]},
    )


async def _draw_assignments(session: AsyncSession, draw_id: int) -> list[Assignment]:
    """Undelivered, live seats of every inspection this draw created or merged items into."""
    merged_into = select(InspectionItem.inspection_id).where(InspectionItem.draw_id == draw_id)
    inspections = select(Inspection.id).where(
        (col(Inspection.draw_id) == draw_id) | col(Inspection.id).in_(merged_into),
        col(Inspection.status).not_in(CLOSED_INSPECTIONS),
    )
    return list(
        await session.exec(
            select(Assignment)
            .where(
                col(Assignment.inspection_id).in_(inspections),
                col(Assignment.delivered_at).is_(None),
                Assignment.status == AssignmentStatus.PENDING,
            )
            .order_by(col(Assignment.inspection_id), col(Assignment.pick_index))
        )
    )


async def announce_assignments(
    session: AsyncSession,
    *,
    draw_id: int,
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
    office_admins: Sequence[int] = (),
) -> None:
    """One private message per assignment of an executed draw (idempotent: a delivered
    assignment is never queued twice); liaisons hear about inspectors nobody can reach yet."""
    seats = await _draw_assignments(session, draw_id)
    dossiers = await load_dossiers(session, [a.inspection_id for a in seats])
    unreachable: dict[int, list[Dossier]] = {}
    for assignment in await _deliver_many(session, seats, dossiers, now=now, tz=tz):
        unreachable.setdefault(assignment.inspector_id, []).append(
            dossiers[assignment.inspection_id]
        )
    contacts: dict[str, list[int]] = {}
    people = {
        i.id: i
        for i in await session.exec(select(Inspector).where(col(Inspector.id).in_(unreachable)))
    }
    for inspector_id, waiting in unreachable.items():
        inspector = people[inspector_id]
        await _tell_unreachable(
            session,
            inspector,
            waiting,
            key=f"assignment:unbound:{draw_id}:{inspector_id}",
            now=now,
            office_admins=office_admins,
            contacts=contacts,
        )


async def deliver_waiting(
    session: AsyncSession, *, tg_user_id: int, now: datetime, tz: str = DEFAULT_TIMEZONE
) -> int:
    """Someone just bound (or came back): deliver the assignments that waited for them."""
    inspector_ids = list(
        await session.exec(
            select(RoleGrant.inspector_id)
            .join(Person, col(Person.id) == col(RoleGrant.person_id))
            .where(
                Person.tg_user_id == tg_user_id,
                RoleGrant.role == Role.INSPECTOR,
                col(RoleGrant.active).is_(True),
                col(RoleGrant.inspector_id).is_not(None),
            )
        )
    )
    if not inspector_ids:
        return 0
    live = select(Inspection.id).where(col(Inspection.status).not_in(CLOSED_INSPECTIONS))
    waiting = list(
        await session.exec(
            select(Assignment)
            .where(
                col(Assignment.inspector_id).in_(inspector_ids),
                col(Assignment.delivered_at).is_(None),
                Assignment.status == AssignmentStatus.PENDING,
                col(Assignment.inspection_id).in_(live),
            )
            .order_by(col(Assignment.id))
        )
    )
    dossiers = await load_dossiers(session, [a.inspection_id for a in waiting])
    unbound = await _deliver_many(session, waiting, dossiers, now=now, tz=tz)
    return len(waiting) - len(unbound)


async def deliver_replacement(
    session: AsyncSession,
    assignment: Assignment,
    *,
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
    office_admins: Sequence[int] = (),
) -> bool:
    """A seat filled by a replacement draw reaches its new inspector (or their liaison)."""
    dossier = await load_dossier(session, assignment.inspection_id)
    assert dossier is not None and assignment.id is not None
    headline = text("assignment.replacement_headline")
    if await _deliver(session, assignment, dossier, now=now, tz=tz, headline=headline):
        return True
    inspector = await session.get(Inspector, assignment.inspector_id)
    assert inspector is not None
    await _tell_unreachable(
        session,
        inspector,
        [dossier],
        key=f"assignment:unbound:seat{assignment.id}:{inspector.id}",
        now=now,
        office_admins=office_admins,
    )
    return False


# --- acting on an assignment ----------------------------------------------------------------------


class Act(StrEnum):
    DONE = "done"  # the change was made now
    ALREADY = "already"  # a double tap or a repeated update: nothing more to do
    REFUSED = "refused"  # not the caller's to act on
    STALE = "stale"  # the assignment moved on (recused, inspection cancelled, result entered)


@dataclass
class Outcome:
    act: Act
    card: Card | None = None
    reason: str = ""  # a text key under assignment.refusal for REFUSED / STALE


async def _own_assignment(
    session: AsyncSession, assignment_id: int, identity: Identity
) -> tuple[Assignment | None, Inspection | None]:
    assignment = await session.get(Assignment, assignment_id)
    if assignment is None or assignment.inspector_id not in identity.inspector_ids:
        return None, None
    inspection = await session.get(Inspection, assignment.inspection_id)
    return assignment, inspection


async def load_card(session: AsyncSession, assignment: Assignment, *, detail: bool = False) -> Card:
    assert assignment.id is not None
    dossier = await load_dossier(session, assignment.inspection_id)
    assert dossier is not None
    deadline = await _confirm_deadline(session, assignment.id)
    body = render_card(dossier, assignment, confirm_deadline=deadline, detail=detail)
    return Card(body, assignment_buttons(assignment, dossier.inspection_id), assignment, dossier)


async def show_assignment(
    session: AsyncSession, *, assignment_id: int, identity: Identity
) -> Outcome:
    """The card again (详情 or 返回): only for the inspector of the seat."""
    assignment, inspection = await _own_assignment(session, assignment_id, identity)
    if assignment is None or inspection is None:
        return Outcome(Act.REFUSED, reason="not_yours")
    return Outcome(Act.DONE, await load_card(session, assignment))


async def details(session: AsyncSession, *, assignment_id: int, identity: Identity) -> list[str]:
    """详情: the full texts of the check items; empty when the caller may not see them."""
    assignment, inspection = await _own_assignment(session, assignment_id, identity)
    if assignment is None or inspection is None:
        return []
    dossier = await load_dossier(session, assignment.inspection_id)
    assert dossier is not None
    return render_details(dossier)


async def confirm_assignment(
    session: AsyncSession,
    *,
    assignment_id: int,
    identity: Identity,
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
) -> Outcome:
    """确认接收: once, by the seat's inspector, while the inspection is live."""
    assignment, inspection = await _own_assignment(session, assignment_id, identity)
    if assignment is None or inspection is None:
        return Outcome(Act.REFUSED, reason="not_yours")
    if inspection.status in CLOSED_INSPECTIONS or assignment.status not in LIVE_SEATS:
        return Outcome(Act.STALE, reason="closed")
    if assignment.status == AssignmentStatus.CONFIRMED:
        return Outcome(Act.ALREADY, await load_card(session, assignment))
    if assignment.status != AssignmentStatus.PENDING:
        return Outcome(Act.STALE, await load_card(session, assignment), reason="recusal_pending")
    claimed = await session.exec(
        update(Assignment)
        .where(
            col(Assignment.id) == assignment_id, col(Assignment.status) == AssignmentStatus.PENDING
        )
        .values(status=AssignmentStatus.CONFIRMED, confirmed_at=now)
    )
    if not claimed.rowcount:
        await session.refresh(assignment)
        return Outcome(Act.ALREADY, await load_card(session, assignment))
    await session.refresh(assignment)
    await complete_duty(
        session,
        kind="confirm",
        subject=f"assignment:{assignment_id}",
        now=now,
        today=local_today(now, tz),
    )
    await _maybe_all_confirmed(session, inspection, now=now)
    await record(
        session,
        actor=f"tg:{identity.tg_user_id}",
        action="assignment.confirm",
        entity="assignment",
        entity_id=str(assignment_id),
        at=now,
        detail={"inspection_id": inspection.id},
    )
    return Outcome(Act.DONE, await load_card(session, assignment))


async def _maybe_all_confirmed(
    session: AsyncSession, inspection: Inspection, *, now: datetime
) -> None:
    seats = list(
        await session.exec(
            select(Assignment.status).where(
                Assignment.inspection_id == inspection.id,
                col(Assignment.status).in_(LIVE_SEATS),
            )
        )
    )
    if (
        seats
        and all(s == AssignmentStatus.CONFIRMED for s in seats)
        and inspection.status == InspectionStatus.ASSIGNED
    ):
        inspection.status = InspectionStatus.CONFIRMED
        inspection.updated_at = now
        session.add(inspection)


async def _awaits_confirmation(session: AsyncSession, inspection_id: int, *, now: datetime) -> None:
    """A replacement joined a group that had all confirmed: it waits for their confirmation
    again (the new member's), as after the draw."""
    inspection = await session.get(Inspection, inspection_id)
    if inspection is None or inspection.status != InspectionStatus.CONFIRMED:
        return
    inspection.status = InspectionStatus.ASSIGNED
    inspection.updated_at = now
    session.add(inspection)
    await record(
        session,
        actor="bot",
        action="inspection.reopen_confirmation",
        entity="inspection",
        entity_id=str(inspection_id),
        at=now,
        detail={"reason": "replacement"},
    )


async def _has_result(session: AsyncSession, inspection_id: int) -> bool:
    return (
        await session.exec(select(Result.id).where(Result.inspection_id == inspection_id))
    ).first() is not None


async def can_request_recusal(
    session: AsyncSession, *, assignment_id: int, identity: Identity
) -> Outcome:
    """Before asking for a reason: is a recusal still possible for this seat?"""
    assignment, inspection = await _own_assignment(session, assignment_id, identity)
    if assignment is None or inspection is None:
        return Outcome(Act.REFUSED, reason="not_yours")
    if inspection.status in CLOSED_INSPECTIONS or assignment.status not in LIVE_SEATS:
        return Outcome(Act.STALE, reason="closed")
    if assignment.status == AssignmentStatus.RECUSAL_REQUESTED:
        return Outcome(Act.ALREADY, await load_card(session, assignment))
    if await _has_result(session, inspection.id or 0):
        return Outcome(Act.STALE, await load_card(session, assignment), reason="result_started")
    return Outcome(Act.DONE, await load_card(session, assignment))


async def request_recusal(
    session: AsyncSession,
    *,
    assignment_id: int,
    identity: Identity,
    reason_code: int,
    reason_text: str,
    now: datetime,
    office_admins: Sequence[int] = (),
) -> Outcome:
    """申请回避: the seat waits for the liaison's (or the office's) decision."""
    check = await can_request_recusal(session, assignment_id=assignment_id, identity=identity)
    if check.act is not Act.DONE:
        return check
    assert check.card is not None
    assignment = check.card.assignment
    previous = assignment.status
    claimed = await session.exec(
        update(Assignment)
        .where(col(Assignment.id) == assignment_id, col(Assignment.status) == previous)
        .values(status=AssignmentStatus.RECUSAL_REQUESTED)
    )
    if not claimed.rowcount:
        await session.refresh(assignment)
        return Outcome(Act.ALREADY, await load_card(session, assignment))
    await session.refresh(assignment)
    inspector = await session.get(Inspector, assignment.inspector_id)
    assert inspector is not None
    reason = reason_text.strip() if reason_code == 0 else recusal_reason_text(reason_code)
    request = RecusalRequest(
        assignment_id=assignment_id,
        inspection_id=assignment.inspection_id,
        inspector_id=assignment.inspector_id,
        department_code=inspector.department_code,
        reason_code=str(reason_code) if reason_code else "other",
        reason=reason,
        requested_by=identity.tg_user_id,
        requested_at=now,
    )
    session.add(request)
    await session.flush()
    assert request.id is not None
    dossier = check.card.dossier
    for chat in await department_contacts(session, inspector.department_code, office_admins):
        await enqueue(
            session,
            key=f"recusal:request:{request.id}:{chat}",
            chat_id=chat,
            text=render(
                "assignments/recusal_request.j2", d=dossier, inspector=inspector, request=request
            ),
            buttons=recusal_buttons(request.id),
            now=now,
        )
    await record(
        session,
        actor=f"tg:{identity.tg_user_id}",
        action="assignment.recusal_request",
        entity="assignment",
        entity_id=str(assignment_id),
        at=now,
        detail={"request_id": request.id, "reason": reason, "previous": previous},
    )
    return Outcome(Act.DONE, await load_card(session, assignment))


def recusal_buttons(request_id: int) -> Keyboard:
    return [
        [
            (
                text("button.recusal.approve"),
                RecusalCb(action="approve", request_id=request_id).pack(),
            ),
            (
                text("button.recusal.reject"),
                RecusalCb(action="reject", request_id=request_id).pack(),
            ),
        ]
    ]


# --- deciding a recusal ---------------------------------------------------------------------------


@dataclass
class Decision:
    act: Act
    request: RecusalRequest | None = None
    text: str = ""  # the decision message, for the decider's own copy
    reason: str = ""


async def may_decide(session: AsyncSession, request: RecusalRequest, identity: Identity) -> bool:
    """The liaison of the inspector's department (or a parent department), or the office."""
    if identity.is_office:
        return True
    departments = await liaison_departments_of(session, request.department_code)
    return any(code in identity.liaison_departments for code in departments)


async def show_recusal(session: AsyncSession, *, request_id: int, identity: Identity) -> Decision:
    request = await session.get(RecusalRequest, request_id)
    if request is None or not await may_decide(session, request, identity):
        return Decision(Act.REFUSED, reason="not_yours")
    return Decision(
        Act.DONE if request.status == RecusalStatus.PENDING else Act.ALREADY,
        request,
        await _request_text(session, request),
    )


async def _request_text(session: AsyncSession, request: RecusalRequest) -> str:
    dossier = await load_dossier(session, request.inspection_id)
    inspector = await session.get(Inspector, request.inspector_id)
    replacement = (
        await session.get(Assignment, request.replacement_id) if request.replacement_id else None
    )
    replacement_inspector = (
        await session.get(Inspector, replacement.inspector_id) if replacement else None
    )
    return render(
        "assignments/recusal_request.j2",
        d=dossier,
        inspector=inspector,
        request=request,
        replacement=replacement_inspector,
    )


async def decide_recusal(
    session: AsyncSession,
    *,
    request_id: int,
    identity: Identity,
    approve: bool,
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
    office_admins: Sequence[int] = (),
) -> Decision:
    """同意 draws a replacement (bot.draws.replace_member) and tells everyone affected;
    不同意 gives the seat back to the inspector. Exactly once, whoever taps first."""
    request = await session.get(RecusalRequest, request_id)
    if request is None or not await may_decide(session, request, identity):
        return Decision(Act.REFUSED, reason="not_yours")
    if request.status != RecusalStatus.PENDING:
        return Decision(Act.ALREADY, request, await _request_text(session, request))
    assignment = await session.get(Assignment, request.assignment_id)
    inspection = await session.get(Inspection, request.inspection_id)
    assert assignment is not None and inspection is not None and assignment.id is not None
    if (
        inspection.status in CLOSED_INSPECTIONS
        or assignment.status != AssignmentStatus.RECUSAL_REQUESTED
    ):
        # The draw was voided, or the seat moved in a merge, while the request waited.
        return Decision(Act.STALE, request, await _request_text(session, request), "closed")
    actor = f"tg:{identity.tg_user_id}"
    claimed = await session.exec(
        update(RecusalRequest)
        .where(
            col(RecusalRequest.id) == request_id,
            col(RecusalRequest.status) == RecusalStatus.PENDING,
        )
        .values(
            status=RecusalStatus.APPROVED if approve else RecusalStatus.REJECTED,
            decided_by=actor,
            decided_at=now,
        )
    )
    await session.refresh(request)
    if not claimed.rowcount:
        return Decision(Act.ALREADY, request, await _request_text(session, request))
    if approve:
        await _approve(
            session, request, assignment, now=now, tz=tz, actor=actor, office_admins=office_admins
        )
    else:
        assignment.status = (
            AssignmentStatus.CONFIRMED if assignment.confirmed_at else AssignmentStatus.PENDING
        )
        session.add(assignment)
        await session.flush()
        chat = await inspector_chat(session, assignment.inspector_id)
        if chat is not None:
            card = await load_card(session, assignment)
            await enqueue(
                session,
                key=f"recusal:rejected:{request.id}:{chat}",
                chat_id=chat,
                text=render("assignments/recusal_rejected.j2", request=request)
                + "\n\n"
                + card.text,
                buttons=card.buttons,
                now=now,
            )
    await record(
        session,
        actor=actor,
        action="assignment.recusal_approve" if approve else "assignment.recusal_reject",
        entity="assignment",
        entity_id=str(assignment.id),
        at=now,
        detail={"request_id": request.id, "replacement_id": request.replacement_id},
    )
    return Decision(Act.DONE, request, await _request_text(session, request))


async def _approve(
    session: AsyncSession,
    request: RecusalRequest,
    assignment: Assignment,
    *,
    now: datetime,
    tz: str,
    actor: str,
    office_admins: Sequence[int],
) -> None:
    from bot.draws import replace_member

    assert assignment.id is not None and request.id is not None
    # The verifiable replacement (next partial Fisher–Yates pick satisfying the constraints),
    # appended to the draw record; it marks this seat recused and creates the new one.
    outcome = await replace_member(session, assignment_id=assignment.id, now=now, actor=actor)
    await session.flush()
    replacement = (
        await session.get(Assignment, outcome.new_assignment_id)
        if outcome.new_assignment_id
        else None
    )
    request.replacement_id = replacement.id if replacement else None
    session.add(request)
    await complete_duty(
        session,
        kind="confirm",
        subject=f"assignment:{assignment.id}",
        now=now,
        today=local_today(now, tz),
    )
    dossier = await load_dossier(session, assignment.inspection_id)
    assert dossier is not None
    old = await session.get(Inspector, assignment.inspector_id)
    new = await session.get(Inspector, replacement.inspector_id) if replacement else None
    # The one who asked.
    chat = await inspector_chat(session, assignment.inspector_id)
    if chat is not None:
        await enqueue(
            session,
            key=f"recusal:approved:{request.id}:{chat}",
            chat_id=chat,
            text=render("assignments/recusal_approved.j2", d=dossier, request=request, new=new),
            now=now,
        )
    # The rest of the group: who left, who joined (and how to reach them).
    for member in dossier.members:
        if replacement is not None and member.assignment_id == replacement.id:
            continue
        member_chat = await inspector_chat(session, member.inspector_id)
        if member_chat is None:
            continue
        await enqueue(
            session,
            key=f"recusal:group:{request.id}:{member_chat}",
            chat_id=member_chat,
            text=render(
                "assignments/group_changed.j2",
                d=dossier,
                old=old,
                new=new,
                newcomer=dossier.member(replacement.id or 0) if replacement else None,
            ),
            now=now,
        )
    if replacement is not None:
        await _awaits_confirmation(session, assignment.inspection_id, now=now)
        await deliver_replacement(session, replacement, now=now, tz=tz, office_admins=office_admins)
    else:
        # No one satisfies the constraints: the office decides (a shortfall in the draw record).
        for office in await office_chats(session, office_admins):
            await enqueue(
                session,
                key=f"recusal:no_replacement:{request.id}:{office}",
                chat_id=office,
                text=render("assignments/no_replacement.j2", d=dossier, old=old),
                now=now,
            )


async def pending_recusals(
    session: AsyncSession, identity: Identity
) -> list[tuple[RecusalRequest, Inspector]]:
    """Requests waiting for this liaison (their departments, and sub-units) or the office."""
    rows = list(
        await session.exec(
            select(RecusalRequest, Inspector)
            .join(Inspector, col(Inspector.id) == col(RecusalRequest.inspector_id))
            .where(RecusalRequest.status == RecusalStatus.PENDING)
            .order_by(col(RecusalRequest.id))
        )
    )
    return [(r, i) for r, i in rows if await may_decide(session, r, identity)]
