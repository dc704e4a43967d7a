"""后续处置: what happens after a problem was found (DOMAIN §6).

An approved result opens one follow-up per problem item, owned by the inspector who entered
it. Rectification (责令改正) is due by its deadline; every follow-up's outcome must be entered
within 20 working days (followup_entry). A transfer (移送、抄告) goes to the receiving
department's liaison, whose acknowledgement closes the follow-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.dossier import (
    DEFAULT_TIMEZONE,
    Dossier,
    department_contacts,
    department_names,
    due_after,
    inspector_chat,
    liaison_departments_of,
    load_dossier,
    local_today,
)
from bot.duties import complete_duty, deadline_after, load_calendar, open_duty
from bot.outbox import Keyboard, enqueue
from bot.people import Identity
from bot.render import render, text
from bot.results import open_inspector_duty
from bot.telegram import FollowUpCb, TransferCb
from storage.audit import record
from storage.models import (
    FollowUp,
    FollowUpEntry,
    FollowUpStatus,
    Inspector,
    Result,
    ResultItem,
    Transfer,
    TransferStatus,
)

TRANSFER_ACK_WORKING_DAYS = 3  # the receiving liaison acknowledges within this (task may override)
ENTRY_MIN, ENTRY_MAX = 2, 2000


@dataclass(frozen=True)
class FollowUpView:
    id: int
    position: int
    item_name: str
    category: int | None
    findings: str | None
    action: str
    rectify_deadline: date | None
    transfer_department: str | None
    transfer_department_name: str | None
    transfer_status: str | None
    status: str
    completed_on: date | None
    entries: list[FollowUpEntry]


async def open_followups(
    session: AsyncSession,
    *,
    result: Result,
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
    office_admins: Sequence[int] = (),
) -> list[FollowUp]:
    """One follow-up per item with an action, its duties, and the transfers' notices."""
    assert result.id is not None and result.inspection_date is not None
    dossier = await load_dossier(session, result.inspection_id)
    enterer = await session.get(Inspector, result.entered_by)
    assert dossier is not None and enterer is not None
    calendar = await load_calendar(session)
    today = local_today(now, tz)
    items = list(
        await session.exec(
            select(ResultItem)
            .where(
                ResultItem.result_id == result.id,
                col(ResultItem.action).is_not(None),
                col(ResultItem.position) >= 0,
            )
            .order_by(col(ResultItem.position))
        )
    )
    created: list[FollowUp] = []
    for item in items:
        assert item.id is not None and item.action is not None
        existing = (
            await session.exec(select(FollowUp).where(FollowUp.result_item_id == item.id))
        ).first()
        if existing is not None:
            continue
        followup = FollowUp(
            inspection_id=result.inspection_id,
            result_id=result.id,
            result_item_id=item.id,
            inspector_id=result.entered_by,
            department_code=enterer.department_code,
            action=item.action,
            rectify_deadline=item.rectify_deadline,
            transfer_department=item.transfer_department,
            created_at=now,
        )
        session.add(followup)
        await session.flush()
        assert followup.id is not None
        created.append(followup)
        subject = f"followup:{followup.id}"
        await record(
            session,
            actor="bot",
            action="followup.open",
            entity="followup",
            entity_id=str(followup.id),
            at=now,
            detail={"action": item.action, "item": item.position},
        )
        if item.action == "transfer" and item.transfer_department:
            await _send_transfer(
                session, followup, dossier, item, now=now, today=today, office_admins=office_admins
            )
            continue
        duties: list[tuple[str, date]] = []
        entry_from = today
        if item.action == "rectify" and item.rectify_deadline is not None:
            duties.append(("followup", item.rectify_deadline))
            entry_from = item.rectify_deadline
        # The outcome is entered within 20 working days of completion (004 §八).
        entry_due = deadline_after(calendar, entry_from, "followup_entry", dossier.task_deadlines)
        duties.append(("followup_entry", entry_due))
        for kind, deadline in duties:
            await open_inspector_duty(
                session,
                kind=kind,
                subject=subject,
                deadline=deadline,
                inspection_id=result.inspection_id,
                inspector_id=result.entered_by,
                now=now,
            )
    if created:
        chat = await inspector_chat(session, result.entered_by)
        if chat is not None:
            await enqueue(
                session,
                key=f"followup:opened:{result.id}:{chat}",
                chat_id=chat,
                text=render(
                    "followups/opened.j2",
                    d=dossier,
                    followups=await followup_views(session, result.inspection_id, created),
                ),
                buttons=[
                    [
                        (
                            text("button.followup.open"),
                            FollowUpCb(action="list", ref=result.inspection_id).pack(),
                        )
                    ]
                ],
                now=now,
            )
    return created


async def _send_transfer(
    session: AsyncSession,
    followup: FollowUp,
    dossier: Dossier,
    item: ResultItem,
    *,
    now: datetime,
    today: date,
    office_admins: Sequence[int],
) -> None:
    assert followup.id is not None and item.transfer_department is not None
    transfer = Transfer(
        followup_id=followup.id,
        inspection_id=followup.inspection_id,
        from_department=dossier.lead_department,
        to_department=item.transfer_department,
        created_at=now,
    )
    session.add(transfer)
    await session.flush()
    assert transfer.id is not None
    calendar = await load_calendar(session)
    await open_duty(
        session,
        kind="transfer_ack",
        subject=f"transfer:{transfer.id}",
        deadline=due_after(
            calendar, today, "transfer_ack", dossier.task_deadlines, TRANSFER_ACK_WORKING_DAYS
        ),
        responsible_role="liaison",
        department_code=item.transfer_department,
        inspection_id=followup.inspection_id,
        now=now,
    )
    body = await transfer_text(session, transfer)
    for chat in await department_contacts(session, item.transfer_department, office_admins):
        await enqueue(
            session,
            key=f"transfer:notify:{transfer.id}:{chat}",
            chat_id=chat,
            text=body,
            buttons=[
                [
                    (
                        text("button.transfer.ack"),
                        TransferCb(action="ack", transfer_id=transfer.id).pack(),
                    )
                ]
            ],
            now=now,
        )
    await record(
        session,
        actor="bot",
        action="transfer.notify",
        entity="transfer",
        entity_id=str(transfer.id),
        at=now,
        detail={"followup_id": followup.id, "to": item.transfer_department},
    )


async def transfer_text(session: AsyncSession, transfer: Transfer) -> str:
    followup = await session.get(FollowUp, transfer.followup_id)
    assert followup is not None
    item = await session.get(ResultItem, followup.result_item_id)
    dossier = await load_dossier(session, transfer.inspection_id)
    inspector = await session.get(Inspector, followup.inspector_id)
    assert item is not None and dossier is not None and inspector is not None
    names = await department_names(session, [transfer.from_department, transfer.to_department])
    return render(
        "followups/transfer.j2",
        d=dossier,
        transfer=transfer,
        item=item,
        item_name=dossier.items[item.position].name,
        inspector=inspector,
        names=names,
    )


async def followup_views(
    session: AsyncSession, inspection_id: int, rows: Sequence[FollowUp] | None = None
) -> list[FollowUpView]:
    dossier = await load_dossier(session, inspection_id)
    assert dossier is not None
    if rows is None:
        rows = list(
            await session.exec(
                select(FollowUp)
                .where(FollowUp.inspection_id == inspection_id)
                .order_by(col(FollowUp.id))
            )
        )
    names = await department_names(
        session, [f.transfer_department for f in rows if f.transfer_department]
    )
    views = []
    for f in rows:
        assert f.id is not None
        item = await session.get(ResultItem, f.result_item_id)
        assert item is not None
        transfer = (
            await session.exec(select(Transfer).where(Transfer.followup_id == f.id))
        ).first()
        entries = list(
            await session.exec(
                select(FollowUpEntry)
                .where(FollowUpEntry.followup_id == f.id)
                .order_by(col(FollowUpEntry.id))
            )
        )
        views.append(
            FollowUpView(
                id=f.id,
                position=item.position,
                item_name=dossier.items[item.position].name,
                category=item.category,
                findings=item.findings,
                action=f.action,
                rectify_deadline=f.rectify_deadline,
                transfer_department=f.transfer_department,
                transfer_department_name=names.get(
                    f.transfer_department or "", f.transfer_department
                ),
                transfer_status=transfer.status if transfer else None,
                status=f.status,
                completed_on=f.completed_on,
                entries=entries,
            )
        )
    return views


@dataclass
class Board:
    """An inspection's follow-ups as the responsible inspector sees them."""

    dossier: Dossier
    followups: list[FollowUpView]


async def board(session: AsyncSession, *, inspection_id: int, identity: Identity) -> Board | None:
    """None when the caller is not responsible for any follow-up of this inspection."""
    rows = list(
        await session.exec(
            select(FollowUp)
            .where(
                FollowUp.inspection_id == inspection_id,
                col(FollowUp.inspector_id).in_(identity.inspector_ids or [0]),
            )
            .order_by(col(FollowUp.id))
        )
    )
    if not rows:
        return None
    dossier = await load_dossier(session, inspection_id)
    assert dossier is not None
    return Board(dossier, await followup_views(session, inspection_id, rows))


@dataclass
class EntryOutcome:
    ok: bool
    hint: str = ""  # followup.hint.<key>
    followup: FollowUp | None = None


async def check_entry(
    session: AsyncSession, *, followup_id: int, identity: Identity, kind: str
) -> EntryOutcome:
    """May the caller record this kind of entry on this follow-up now?"""
    followup = await session.get(FollowUp, followup_id)
    if followup is None or followup.inspector_id not in identity.inspector_ids:
        return EntryOutcome(False, "not_yours")
    if followup.status != FollowUpStatus.OPEN:
        return EntryOutcome(False, "closed", followup)
    if kind == "completion" and followup.action == "transfer":
        return EntryOutcome(False, "transfer_closes_on_ack", followup)
    return EntryOutcome(True, followup=followup)


def check_entry_text(raw: str) -> str:
    value = raw.strip()
    if len(value) < ENTRY_MIN:
        return "text_short"
    if len(value) > ENTRY_MAX:
        return "text_long"
    return ""


async def record_entry(
    session: AsyncSession,
    *,
    followup_id: int,
    identity: Identity,
    kind: str,
    body: str,
    on_date: date,
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
) -> EntryOutcome:
    """进展 (progress) or 完成 (completion: closes the follow-up and its duties)."""
    check = await check_entry(session, followup_id=followup_id, identity=identity, kind=kind)
    if not check.ok or check.followup is None:
        return check
    followup = check.followup
    today = local_today(now, tz)
    if check_entry_text(body):
        return EntryOutcome(False, check_entry_text(body), followup)
    if on_date > today:
        return EntryOutcome(False, "date_future", followup)
    result = await session.get(Result, followup.result_id)
    assert result is not None
    if result.inspection_date is not None and on_date < result.inspection_date:
        return EntryOutcome(False, "date_before_inspection", followup)
    if kind == "completion":
        claimed = await session.exec(
            update(FollowUp)
            .where(col(FollowUp.id) == followup_id, col(FollowUp.status) == FollowUpStatus.OPEN)
            .values(status=FollowUpStatus.DONE, completed_on=on_date, completed_at=now)
        )
        await session.refresh(followup)
        if not claimed.rowcount:
            return EntryOutcome(False, "closed", followup)
        for duty in ("followup", "followup_entry"):
            await complete_duty(
                session, kind=duty, subject=f"followup:{followup_id}", now=now, today=today
            )
    session.add(
        FollowUpEntry(
            followup_id=followup_id,
            kind=kind,
            text=body.strip(),
            on_date=on_date,
            entered_by=f"tg:{identity.tg_user_id}",
            created_at=now,
        )
    )
    await record(
        session,
        actor=f"tg:{identity.tg_user_id}",
        action=f"followup.{kind}",
        entity="followup",
        entity_id=str(followup_id),
        at=now,
        detail={"on": on_date.isoformat()},
    )
    return EntryOutcome(True, followup=followup)


# --- transfers ------------------------------------------------------------------------------------


async def may_acknowledge(session: AsyncSession, transfer: Transfer, identity: Identity) -> bool:
    """The receiving department's liaison (or its parent's), or the office."""
    if identity.is_office:
        return True
    receiving = await liaison_departments_of(session, transfer.to_department)
    return any(code in identity.liaison_departments for code in receiving)


@dataclass
class AckOutcome:
    act: str  # done | already | refused
    text: str = ""


async def show_transfer(
    session: AsyncSession, *, transfer_id: int, identity: Identity
) -> AckOutcome:
    transfer = await session.get(Transfer, transfer_id)
    if transfer is None or not await may_acknowledge(session, transfer, identity):
        return AckOutcome("refused")
    act = "done" if transfer.status == TransferStatus.SENT else "already"
    return AckOutcome(act, await transfer_text(session, transfer))


async def acknowledge_transfer(
    session: AsyncSession,
    *,
    transfer_id: int,
    identity: Identity,
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
) -> AckOutcome:
    """确认接收 of a transfer: closes its follow-up; the responsible inspector is told."""
    transfer = await session.get(Transfer, transfer_id)
    if transfer is None or not await may_acknowledge(session, transfer, identity):
        return AckOutcome("refused")
    actor = f"tg:{identity.tg_user_id}"
    claimed = await session.exec(
        update(Transfer)
        .where(col(Transfer.id) == transfer_id, col(Transfer.status) == TransferStatus.SENT)
        .values(status=TransferStatus.ACKNOWLEDGED, acknowledged_by=actor, acknowledged_at=now)
    )
    await session.refresh(transfer)
    if not claimed.rowcount:
        return AckOutcome("already", await transfer_text(session, transfer))
    today = local_today(now, tz)
    followup = await session.get(FollowUp, transfer.followup_id)
    assert followup is not None
    followup.status = FollowUpStatus.DONE
    followup.completed_on = today
    followup.completed_at = now
    session.add(followup)
    session.add(
        FollowUpEntry(
            followup_id=followup.id or 0,
            kind="acknowledged",
            text=text("followup.acknowledged_entry", name=identity.display_name or actor),
            on_date=today,
            entered_by=actor,
            created_at=now,
        )
    )
    await complete_duty(
        session, kind="transfer_ack", subject=f"transfer:{transfer_id}", now=now, today=today
    )
    await record(
        session,
        actor=actor,
        action="transfer.acknowledge",
        entity="transfer",
        entity_id=str(transfer_id),
        at=now,
        detail={"followup_id": followup.id},
    )
    body = await transfer_text(session, transfer)
    chat = await inspector_chat(session, followup.inspector_id)
    if chat is not None:
        names = await department_names(session, [transfer.to_department])
        await enqueue(
            session,
            key=f"transfer:acknowledged:{transfer_id}:{chat}",
            chat_id=chat,
            text=render(
                "followups/acknowledged.j2",
                d=await load_dossier(session, transfer.inspection_id),
                department=names.get(transfer.to_department, transfer.to_department),
                who=identity.display_name,
            ),
            now=now,
        )
    return AckOutcome("done", body)


async def pending_transfers(session: AsyncSession, identity: Identity) -> list[Transfer]:
    rows = list(
        await session.exec(
            select(Transfer)
            .where(Transfer.status == TransferStatus.SENT)
            .order_by(col(Transfer.id))
        )
    )
    return [t for t in rows if await may_acknowledge(session, t, identity)]


def followup_buttons(views: Sequence[FollowUpView]) -> Keyboard:
    rows: Keyboard = []
    for v in views:
        if v.status != FollowUpStatus.OPEN:
            continue
        row = [
            (
                text("button.followup.progress", n=v.position + 1),
                FollowUpCb(action="progress", ref=v.id).pack(),
            )
        ]
        if v.action != "transfer":
            row.append(
                (
                    text("button.followup.complete", n=v.position + 1),
                    FollowUpCb(action="complete", ref=v.id).pack(),
                )
            )
        rows.append(row)
    return rows
