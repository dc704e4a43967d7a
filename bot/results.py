"""Result entry (检查结果录入), co-signature (确认无误) and review (复核) of one inspection.

The draft is the database: one `Result` row in status draft with one `ResultItem` per check
item, written at every answer, so it survives restarts whatever the dialog state store does.
The dialog's steps are *derived* from the draft (`steps_of`): date, method, then per item the
category, findings and follow-up action when the category needs them, the action's detail
(rectification deadline, receiving department) and evidence, then the summary. The caller
only remembers which step it is on; everything else is re-read and re-checked here.

"谁检查、谁录入、谁负责": the inspector who opens the dialog first enters the result; the other
members of the group co-sign it; the lead department's liaison reviews it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.dossier import (
    CLOSED_INSPECTIONS,
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
from bot.telegram import CoSignCb, ResultCb, ReviewCb
from storage.audit import record
from storage.db import upsert_insert
from storage.models import (
    LIVE_SEATS,
    Assignment,
    AssignmentStatus,
    CoSignature,
    CoSignStatus,
    Department,
    Duty,
    DutyStatus,
    Evidence,
    Inspection,
    InspectionStatus,
    Inspector,
    Result,
    ResultItem,
    ResultStatus,
    Review,
)

# --- the rules of DOMAIN §6 -----------------------------------------------------------------------

CATEGORIES = tuple(range(1, 11))  # official texts: templates/texts/dialogs.yaml result.category.N
# 2–5 and 7–9 are problems: they need findings and a follow-up action.
PROBLEM_CATEGORIES = frozenset({2, 3, 4, 5, 7, 8, 9})
# 10 其他情况 says nothing by itself: it needs a description (no follow-up action).
DESCRIBED_CATEGORIES = PROBLEM_CATEGORIES | {10}
METHODS = ("现场", "书面", "网络", "委托专业机构")
ACTIONS = ("rectify", "case", "transfer", "judicial", "abnormal")
RECTIFY_QUICK_DAYS = (7, 15, 30)
FINDINGS_MIN, FINDINGS_MAX = 2, 2000
DEPARTMENTS_PER_PAGE = 8
RESUBMIT_WORKING_DAYS = 2  # a returned result is due again this long after the return


# --- steps ----------------------------------------------------------------------------------------


class Kind(StrEnum):
    DATE = "date"
    METHOD = "meth"
    CATEGORY = "cat"
    FINDINGS = "find"
    ACTION = "act"
    DEADLINE = "due"
    DEPARTMENT = "dept"
    EVIDENCE = "evid"
    SUMMARY = "sum"


@dataclass(frozen=True)
class Step:
    kind: Kind
    item: int = -1  # position of the check item, for per-item steps

    @property
    def key(self) -> str:
        return self.kind.value if self.item < 0 else f"{self.kind.value}-{self.item}"

    @classmethod
    def parse(cls, key: str) -> Step | None:
        head, _, tail = key.partition("-")
        try:
            kind = Kind(head)
        except ValueError:
            return None
        if not tail:
            return cls(kind)
        return cls(kind, int(tail)) if tail.isdigit() else None


def steps_of(items: Sequence[ResultItem]) -> list[Step]:
    """The dialog as the current answers shape it."""
    steps = [Step(Kind.DATE), Step(Kind.METHOD)]
    for item in sorted(items, key=lambda i: i.position):
        n = item.position
        steps.append(Step(Kind.CATEGORY, n))
        if item.category in DESCRIBED_CATEGORIES:
            steps.append(Step(Kind.FINDINGS, n))
        if item.category in PROBLEM_CATEGORIES:
            steps.append(Step(Kind.ACTION, n))
            if item.action == "rectify":
                steps.append(Step(Kind.DEADLINE, n))
            elif item.action == "transfer":
                steps.append(Step(Kind.DEPARTMENT, n))
        steps.append(Step(Kind.EVIDENCE, n))
    steps.append(Step(Kind.SUMMARY))
    return steps


def answered(step: Step, result: Result, items: dict[int, ResultItem]) -> bool:
    """Whether the draft holds an answer for this step (evidence is optional)."""
    item = items.get(step.item)
    match step.kind:
        case Kind.DATE:
            return result.inspection_date is not None
        case Kind.METHOD:
            return result.method is not None
        case Kind.CATEGORY:
            return item is not None and item.category is not None
        case Kind.FINDINGS:
            return item is not None and bool(item.findings)
        case Kind.ACTION:
            return item is not None and item.action is not None
        case Kind.DEADLINE:
            return item is not None and item.rectify_deadline is not None
        case Kind.DEPARTMENT:
            return item is not None and item.transfer_department is not None
        case _:
            return True


# --- plain views for templates --------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceView:
    id: int
    kind: str  # photo | document
    file_name: str | None


@dataclass(frozen=True)
class ItemAnswer:
    position: int
    name: str
    content: str
    category: int | None
    findings: str | None
    action: str | None
    rectify_deadline: date | None
    transfer_department: str | None
    transfer_department_name: str | None
    files: tuple[EvidenceView, ...] = ()  # evidence in force (withdrawn files are left out)

    @property
    def evidence(self) -> int:
        return len(self.files)

    @property
    def problem(self) -> bool:
        return self.category in PROBLEM_CATEGORIES

    @property
    def described(self) -> bool:
        return self.category in DESCRIBED_CATEGORIES


@dataclass(frozen=True)
class DraftView:
    inspection_id: int
    result_id: int
    status: str
    version: int
    entered_by: str
    inspection_date: date | None
    method: str | None
    returned_reason: str | None
    items: list[ItemAnswer]

    @property
    def evidence(self) -> int:
        return sum(i.evidence for i in self.items)


class Screen(StrEnum):
    STEP = "step"  # show `step`
    REFUSED = "refused"  # not the caller's; `reason` says why
    SUBMITTED = "submitted"  # the dialog is over: sent for co-signature
    LEFT = "left"  # the caller left (取消): the draft is kept


@dataclass
class View:
    """What the dialog shows next."""

    screen: Screen
    step: Step | None = None
    dossier: Dossier | None = None
    draft: DraftView | None = None
    hint: str = ""  # result.hint.<key>: why the last input was not taken
    reason: str = ""  # result.refusal.<key>
    notice: str = ""  # result.notice.<key>: a short confirmation (evidence saved, ...)
    page: int = 0
    departments: list[tuple[int, str]] = field(default_factory=list)  # (id, name) of a page
    pages: int = 1
    today: date | None = None
    editing: bool = False

    @property
    def item(self) -> ItemAnswer | None:
        if self.step is None or self.draft is None or self.step.item < 0:
            return None
        return next((i for i in self.draft.items if i.position == self.step.item), None)


def refused(reason: str, dossier: Dossier | None = None) -> View:
    return View(Screen.REFUSED, reason=reason, dossier=dossier)


@dataclass(frozen=True)
class Turn:
    """Who acts on which inspection's result dialog, and when; `editing` when an answer is being
    changed from the summary (the dialog returns there once that item is done)."""

    inspection_id: int
    identity: Identity
    now: datetime
    tz: str = DEFAULT_TIMEZONE
    editing: bool = False

    @property
    def today(self) -> date:
        return local_today(self.now, self.tz)


# --- loading and authorisation --------------------------------------------------------------------


@dataclass
class Draft:
    result: Result
    items: dict[int, ResultItem]  # by position
    dossier: Dossier
    seat: Assignment

    @property
    def steps(self) -> list[Step]:
        return steps_of(list(self.items.values()))


async def _seat(session: AsyncSession, inspection_id: int, identity: Identity) -> Assignment | None:
    if not identity.inspector_ids:
        return None
    return (
        await session.exec(
            select(Assignment).where(
                Assignment.inspection_id == inspection_id,
                col(Assignment.inspector_id).in_(identity.inspector_ids),
                col(Assignment.status).in_(LIVE_SEATS),
            )
        )
    ).first()


async def _result_items(session: AsyncSession, result_id: int) -> dict[int, ResultItem]:
    """The answers by the position of their check item; items no longer part of the
    inspection (their draw was voided) have a negative position and are left out."""
    rows = await session.exec(select(ResultItem).where(ResultItem.result_id == result_id))
    return {row.position: row for row in rows if row.position >= 0}


async def _sync_items(
    session: AsyncSession, result_id: int, dossier: Dossier, *, now: datetime
) -> dict[int, ResultItem]:
    """One answer row per current check item, in the dossier's order. A draft outlives
    changes of the inspection's items (a merge adds some, a voided draw withdraws some)."""
    rows = list(await session.exec(select(ResultItem).where(ResultItem.result_id == result_id)))
    by_item = {row.inspection_item_id: row for row in rows}
    live = {item.inspection_item_id: n for n, item in enumerate(dossier.items)}
    for row in rows:
        wanted = live.get(row.inspection_item_id, -1 - (row.id or 0))
        if row.position != wanted:
            row.position = wanted
            session.add(row)
    for inspection_item_id, position in live.items():
        if inspection_item_id not in by_item:
            await _insert_ignore(
                session,
                ResultItem.__table__,  # type: ignore[attr-defined]
                {
                    "result_id": result_id,
                    "inspection_item_id": inspection_item_id,
                    "position": position,
                    "updated_at": now,
                },
            )
    await session.flush()
    return await _result_items(session, result_id)


async def _insert_ignore(session: AsyncSession, table: object, values: dict[str, object]) -> int:
    insert = upsert_insert(session.get_bind().dialect.name)
    statement = insert(table).values(**values).on_conflict_do_nothing()
    outcome = await session.exec(statement)
    return int(outcome.rowcount or 0)


async def _draft_for(session: AsyncSession, turn: Turn, *, create: bool) -> Draft | View:
    """The caller's draft of this inspection, created on first use; or why they cannot have it."""
    inspection_id, identity, now = turn.inspection_id, turn.identity, turn.now
    seat = await _seat(session, inspection_id, identity)
    if seat is None:
        return refused("not_yours")
    inspection = await session.get(Inspection, inspection_id)
    assert inspection is not None
    if inspection.status in CLOSED_INSPECTIONS:
        return refused("closed")
    if seat.status != AssignmentStatus.CONFIRMED:
        return refused("confirm_first")
    result = (
        await session.exec(select(Result).where(Result.inspection_id == inspection_id))
    ).first()
    if result is None:
        if not create:
            return refused("no_draft")
        # A double tap (or two members at once) must not make two results: the unique
        # inspection_id decides who got there first.
        await _insert_ignore(
            session,
            Result.__table__,  # type: ignore[attr-defined]
            {
                "inspection_id": inspection_id,
                "status": ResultStatus.DRAFT,
                "version": 0,
                "entered_by": seat.inspector_id,
                "method": None,
                "created_at": now,
                "updated_at": now,
            },
        )
        result = (
            await session.exec(select(Result).where(Result.inspection_id == inspection_id))
        ).one()
        if result.entered_by == seat.inspector_id:
            await record(
                session,
                actor=f"tg:{identity.tg_user_id}",
                action="result.start",
                entity="result",
                entity_id=str(result.id),
                at=now,
                detail={"inspection_id": inspection_id},
            )
    assert result.id is not None
    dossier = await load_dossier(session, inspection_id)
    assert dossier is not None
    if result.entered_by != seat.inspector_id:
        return refused("someone_else", dossier)
    if result.status != ResultStatus.DRAFT:
        return refused("submitted", dossier)
    items = await _sync_items(session, result.id, dossier, now=now)
    return Draft(result, items, dossier, seat)


async def draft_view(session: AsyncSession, result: Result, dossier: Dossier) -> DraftView:
    assert result.id is not None
    items = await _result_items(session, result.id)
    files: dict[int, list[EvidenceView]] = {}
    for evidence in await session.exec(
        select(Evidence)
        .where(Evidence.result_id == result.id, col(Evidence.withdrawn_at).is_(None))
        .order_by(col(Evidence.id))
    ):
        assert evidence.id is not None
        files.setdefault(evidence.result_item_id, []).append(
            EvidenceView(evidence.id, evidence.kind, evidence.file_name)
        )
    codes = [i.transfer_department for i in items.values() if i.transfer_department]
    names = await department_names(session, codes)
    enterer = await session.get(Inspector, result.entered_by)
    answers = []
    for position, item in enumerate(dossier.items):
        row = items.get(position)
        answers.append(
            ItemAnswer(
                position=position,
                name=item.name,
                content=item.content,
                category=row.category if row else None,
                findings=row.findings if row else None,
                action=row.action if row else None,
                rectify_deadline=row.rectify_deadline if row else None,
                transfer_department=row.transfer_department if row else None,
                transfer_department_name=(
                    names.get(row.transfer_department, row.transfer_department)
                    if row and row.transfer_department
                    else None
                ),
                files=tuple(files.get(row.id or 0, ())) if row else (),
            )
        )
    return DraftView(
        inspection_id=result.inspection_id,
        result_id=result.id,
        status=result.status,
        version=result.version,
        entered_by=enterer.name if enterer else "",
        inspection_date=result.inspection_date,
        method=result.method,
        returned_reason=result.returned_reason,
        items=answers,
    )


async def _view(
    session: AsyncSession,
    draft: Draft,
    step: Step,
    *,
    today: date,
    hint: str = "",
    notice: str = "",
    page: int = 0,
    editing: bool = False,
) -> View:
    view = View(
        Screen.STEP,
        step=step,
        dossier=draft.dossier,
        draft=await draft_view(session, draft.result, draft.dossier),
        hint=hint,
        notice=notice,
        today=today,
        editing=editing,
    )
    if step.kind is Kind.DEPARTMENT:
        everyone = await _departments(session)
        view.pages = max(1, -(-len(everyone) // DEPARTMENTS_PER_PAGE))
        view.page = min(max(page, 0), view.pages - 1)
        start = view.page * DEPARTMENTS_PER_PAGE
        view.departments = everyone[start : start + DEPARTMENTS_PER_PAGE]
    return view


async def _departments(session: AsyncSession) -> list[tuple[int, str]]:
    rows = await session.exec(
        select(Department)
        .where(col(Department.active).is_(True), col(Department.provisional).is_(False))
        .order_by(col(Department.code))
    )
    return [(d.id, d.name) for d in rows if d.id is not None]


def _first_open(draft: Draft) -> Step:
    for step in draft.steps:
        if not answered(step, draft.result, draft.items):
            return step
    return Step(Kind.SUMMARY)


def _next(draft: Draft, current: Step, *, editing: bool) -> Step:
    steps = draft.steps
    if current not in steps:
        return _first_open(draft)
    following = steps[steps.index(current) + 1]
    if editing and (current.item < 0 or following.item != current.item):
        # Changing one answer from the summary: back to the summary once that item is done.
        for step in steps:
            if not answered(step, draft.result, draft.items):
                return step
        return Step(Kind.SUMMARY)
    return following


# --- the dialog -----------------------------------------------------------------------------------


async def open_dialog(
    session: AsyncSession,
    turn: Turn,
    *,
    resume: str | None = None,
) -> View:
    """录入结果 / 继续录入: the draft (made on first use) at the remembered step, or the first
    unanswered one, or the summary."""
    draft = await _draft_for(session, turn, create=True)
    if isinstance(draft, View):
        return draft
    today = turn.today
    step = Step.parse(resume) if resume else None
    if step is None or step not in draft.steps:
        step = _first_open(draft)
    return await _view(session, draft, step, today=today)


async def show_step(
    session: AsyncSession,
    turn: Turn,
    *,
    step: str,
    page: int = 0,
    hint: str = "",
) -> View:
    """Show a step again (a department page, a stale button, an edit from the summary)."""
    draft = await _draft_for(session, turn, create=False)
    if isinstance(draft, View):
        return draft
    wanted = Step.parse(step)
    if wanted is None or wanted not in draft.steps:
        wanted = _first_open(draft)
    return await _view(
        session, draft, wanted, today=turn.today, page=page, hint=hint, editing=turn.editing
    )


async def go_back(
    session: AsyncSession,
    turn: Turn,
    *,
    step: str,
) -> View | None:
    """返回: the previous step; None before the first one (the caller shows the assignment)."""
    draft = await _draft_for(session, turn, create=False)
    if isinstance(draft, View):
        return draft
    current = Step.parse(step)
    steps = draft.steps
    if current is None or current not in steps:
        return await _view(
            session, draft, _first_open(draft), today=turn.today, editing=turn.editing
        )
    index = steps.index(current)
    if index == 0:
        return None
    return await _view(session, draft, steps[index - 1], today=turn.today, editing=turn.editing)


async def leave(session: AsyncSession, turn: Turn) -> View:
    """取消 (or 返回 before the first step): the dialog ends, the draft stays."""
    draft = await _draft_for(session, turn, create=False)
    if isinstance(draft, View):
        return draft
    return View(Screen.LEFT, dossier=draft.dossier)


_DATE_PATTERNS = (
    re.compile(r"^(?P<y>\d{4})[-/.年](?P<m>\d{1,2})[-/.月](?P<d>\d{1,2})日?$"),
    re.compile(r"^(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})$"),
    re.compile(r"^(?P<m>\d{1,2})[-/.月](?P<d>\d{1,2})日?$"),
)


def parse_date(raw: str, today: date) -> date | None:
    """2026-03-02, 2026/3/2, 2026年3月2日, 20260302, 3-2, 3月2日 (this year); None otherwise."""
    cleaned = raw.strip().replace(" ", "").replace("　", "")
    cleaned = cleaned.translate(str.maketrans("０１２３４５６７８９－／．", "0123456789-/."))
    for pattern in _DATE_PATTERNS:
        match = pattern.match(cleaned)
        if match is None:
            continue
        parts = match.groupdict()
        try:
            return date(int(parts.get("y") or today.year), int(parts["m"]), int(parts["d"]))
        except ValueError:
            return None
    return None


async def answer(
    session: AsyncSession,
    turn: Turn,
    *,
    step: str,
    value: str,
    typed: bool = False,
) -> View:
    """One answer (a button's value, or what was typed) to one step; the next step, or the same
    step with a hint when the answer cannot be taken."""
    draft = await _draft_for(session, turn, create=False)
    if isinstance(draft, View):
        return draft
    today = turn.today
    current = Step.parse(step)
    if current is None or current not in draft.steps:
        return await _view(session, draft, _first_open(draft), today=today, hint="stale")
    result, item = draft.result, draft.items.get(current.item)
    value = value.strip()
    hint = ""
    before = _snapshot(result, item)
    match current.kind:
        case Kind.DATE:
            hint = _set_date(result, value, today, draft.dossier)
        case Kind.METHOD:
            chosen = _pick(value, METHODS, typed)
            if chosen is None:
                hint = "method"
            else:
                result.method = chosen
        case Kind.CATEGORY:
            assert item is not None
            hint = _set_category(item, value)
        case Kind.FINDINGS:
            assert item is not None
            if not typed:
                hint = "type_findings"
            elif len(value) < FINDINGS_MIN:
                hint = "findings_short"
            elif len(value) > FINDINGS_MAX:
                hint = "findings_long"
            else:
                item.findings = value
        case Kind.ACTION:
            assert item is not None
            if typed or value not in ACTIONS:
                hint = "use_buttons"
            else:
                if value != item.action:
                    item.rectify_deadline = None
                    item.transfer_department = None
                item.action = value
        case Kind.DEADLINE:
            assert item is not None
            hint = _set_deadline(item, value, result.inspection_date or today, typed)
        case Kind.DEPARTMENT:
            assert item is not None
            found = await _pick_department(session, value, typed)
            if isinstance(found, str):
                item.transfer_department = found
            else:
                view = await _view(session, draft, current, today=today, hint="department")
                if found:
                    view.departments, view.pages, view.page = found, 1, 0
                    view.hint = "department_many"
                return view
        case Kind.EVIDENCE:
            hint = "evidence"
        case Kind.SUMMARY:
            hint = "summary"
    if hint:
        return await _view(session, draft, current, today=today, hint=hint, editing=turn.editing)
    result.updated_at = turn.now
    session.add(result)
    if item is not None:
        item.updated_at = turn.now
        session.add(item)
    await session.flush()
    after = _snapshot(result, item)
    if after != before:
        await record(
            session,
            actor=f"tg:{turn.identity.tg_user_id}",
            action="result.answer",
            entity="result",
            entity_id=str(result.id),
            at=turn.now,
            detail={"step": current.key, "before": before, "after": after},
        )
    return await _view(
        session,
        draft,
        _next(draft, current, editing=turn.editing),
        today=today,
        editing=turn.editing,
    )


def _snapshot(result: Result, item: ResultItem | None) -> dict[str, object]:
    out: dict[str, object] = {
        "date": result.inspection_date.isoformat() if result.inspection_date else None,
        "method": result.method,
    }
    if item is not None:
        out |= {
            "item": item.position,
            "category": item.category,
            "findings": item.findings,
            "action": item.action,
            "rectify_deadline": item.rectify_deadline.isoformat()
            if item.rectify_deadline
            else None,
            "transfer_department": item.transfer_department,
        }
    return out


def _pick(value: str, options: Sequence[str], typed: bool) -> str | None:
    if not typed and value.isdigit() and int(value) < len(options):
        return options[int(value)]
    return value if typed and value in options else None


def _set_date(result: Result, value: str, today: date, dossier: Dossier) -> str:
    if value == "today":
        chosen: date | None = today
    elif value == "yesterday":
        chosen = today - timedelta(days=1)
    else:
        chosen = parse_date(value, today)
    if chosen is None:
        return "date"
    if chosen > today:
        return "date_future"
    if chosen < dossier.window_start:
        return "date_before_window"
    result.inspection_date = chosen
    return ""


def _set_category(item: ResultItem, value: str) -> str:
    digits = value.removeprefix("第").removesuffix("类").strip()
    if not digits.isdigit() or int(digits) not in CATEGORIES:
        return "category"
    category = int(digits)
    item.category = category
    # Answers the new category no longer asks for must not linger (they would make follow-ups).
    if category not in DESCRIBED_CATEGORIES:
        item.findings = None
    if category not in PROBLEM_CATEGORIES:
        item.action = None
        item.rectify_deadline = None
        item.transfer_department = None
    return ""


def _set_deadline(item: ResultItem, value: str, inspected: date, typed: bool) -> str:
    if not typed and value.startswith("d") and value[1:].isdigit():
        chosen: date | None = inspected + timedelta(days=int(value[1:]))
    else:
        chosen = parse_date(value, inspected)
    if chosen is None:
        return "deadline"
    if chosen <= inspected:
        return "deadline_past"
    if chosen > inspected + timedelta(days=366):
        return "deadline_far"
    item.rectify_deadline = chosen
    return ""


async def _pick_department(
    session: AsyncSession, value: str, typed: bool
) -> str | list[tuple[int, str]]:
    """A department code, or the candidates (maybe none) when the answer is ambiguous."""
    if not typed:
        department = await session.get(Department, int(value)) if value.isdigit() else None
        if department is not None and department.active:
            return department.code
        return []
    everyone = list(
        await session.exec(
            select(Department).where(
                col(Department.active).is_(True), col(Department.provisional).is_(False)
            )
        )
    )
    exact = [d for d in everyone if value in (d.name, d.code)]
    matches = exact or [d for d in everyone if value and value in d.name]
    if len(matches) == 1:
        return matches[0].code
    return [(d.id, d.name) for d in matches[:DEPARTMENTS_PER_PAGE] if d.id is not None]


@dataclass(frozen=True)
class EvidenceFile:
    kind: str  # photo | document
    file_id: str
    file_unique_id: str
    file_name: str | None
    size: int
    sha256: str


async def add_evidence(
    session: AsyncSession,
    turn: Turn,
    *,
    step: str,
    file: EvidenceFile,
) -> View:
    """A photo or document for the item whose evidence step is open; the same bytes twice are
    kept once."""
    draft = await _draft_for(session, turn, create=False)
    if isinstance(draft, View):
        return draft
    today = turn.today
    current = Step.parse(step)
    if current is None or current not in draft.steps or current.kind is not Kind.EVIDENCE:
        shown = current if current in draft.steps else _first_open(draft)
        assert shown is not None
        return await _view(
            session, draft, shown, today=today, hint="evidence_here", editing=turn.editing
        )
    item = draft.items[current.item]
    added = await _insert_ignore(
        session,
        Evidence.__table__,  # type: ignore[attr-defined]
        {
            "result_id": draft.result.id,
            "result_item_id": item.id,
            "kind": file.kind,
            "file_id": file.file_id,
            "file_unique_id": file.file_unique_id,
            "file_name": file.file_name,
            "size": file.size,
            "sha256": file.sha256,
            "uploaded_by": turn.identity.tg_user_id,
            "created_at": turn.now,
        },
    )
    if not added:
        # The same bytes were withdrawn earlier: sending them again puts them back.
        added = (
            await session.exec(
                update(Evidence)
                .where(
                    col(Evidence.result_item_id) == item.id,
                    col(Evidence.sha256) == file.sha256,
                    col(Evidence.withdrawn_at).is_not(None),
                )
                .values(withdrawn_at=None, withdrawn_by=None)
            )
        ).rowcount
    if added:
        await record(
            session,
            actor=f"tg:{turn.identity.tg_user_id}",
            action="result.evidence",
            entity="result",
            entity_id=str(draft.result.id),
            at=turn.now,
            detail={"item": item.position, "sha256": file.sha256, "kind": file.kind},
        )
    return await _view(
        session,
        draft,
        current,
        today=today,
        notice="evidence_saved" if added else "evidence_duplicate",
        editing=turn.editing,
    )


async def withdraw_evidence(
    session: AsyncSession,
    turn: Turn,
    *,
    step: str,
    evidence_id: int,
) -> View:
    """删除 on an evidence step: the file no longer counts (summary, co-signature, review), but
    is never deleted; who withdrew it and when stay on the row and in the audit trail."""
    draft = await _draft_for(session, turn, create=False)
    if isinstance(draft, View):
        return draft
    current = Step.parse(step)
    if current is None or current not in draft.steps or current.kind is not Kind.EVIDENCE:
        return await _view(session, draft, _first_open(draft), today=turn.today, hint="stale")
    item = draft.items[current.item]
    evidence = await session.get(Evidence, evidence_id)
    if evidence is None or evidence.result_item_id != item.id:
        return await _view(
            session, draft, current, today=turn.today, hint="stale", editing=turn.editing
        )
    withdrawn = await session.exec(
        update(Evidence)
        .where(col(Evidence.id) == evidence_id, col(Evidence.withdrawn_at).is_(None))
        .values(withdrawn_at=turn.now, withdrawn_by=turn.identity.tg_user_id)
    )
    if withdrawn.rowcount:
        await record(
            session,
            actor=f"tg:{turn.identity.tg_user_id}",
            action="result.evidence_withdraw",
            entity="result",
            entity_id=str(draft.result.id),
            at=turn.now,
            detail={
                "item": item.position,
                "evidence_id": evidence_id,
                "sha256": evidence.sha256,
                "kind": evidence.kind,
                "file_name": evidence.file_name,
            },
        )
    return await _view(
        session,
        draft,
        current,
        today=turn.today,
        notice="evidence_withdrawn" if withdrawn.rowcount else "evidence_gone",
        editing=turn.editing,
    )


async def next_step(
    session: AsyncSession,
    turn: Turn,
    *,
    step: str,
) -> View:
    """下一项 on an evidence step."""
    draft = await _draft_for(session, turn, create=False)
    if isinstance(draft, View):
        return draft
    current = Step.parse(step)
    today = turn.today
    if current is None or current not in draft.steps or current.kind is not Kind.EVIDENCE:
        return await _view(session, draft, _first_open(draft), today=today, hint="stale")
    return await _view(
        session,
        draft,
        _next(draft, current, editing=turn.editing),
        today=today,
        editing=turn.editing,
    )


# --- submission and co-signature ------------------------------------------------------------------


def cosign_buttons(cosign_id: int) -> Keyboard:
    return [
        [
            (text("button.cosign.confirm"), CoSignCb(action="confirm", cosign_id=cosign_id).pack()),
            (text("button.cosign.object"), CoSignCb(action="object", cosign_id=cosign_id).pack()),
        ]
    ]


def review_buttons(result_id: int, version: int) -> Keyboard:
    return [
        [
            (
                text("button.review.approve"),
                ReviewCb(action="approve", result_id=result_id, version=version).pack(),
            ),
            (
                text("button.review.return"),
                ReviewCb(action="return", result_id=result_id, version=version).pack(),
            ),
        ]
    ]


def rework_buttons(inspection_id: int) -> Keyboard:
    return [
        [
            (
                text("button.result.rework"),
                ResultCb(action="open", inspection_id=inspection_id).pack(),
            )
        ]
    ]


def render_summary(dossier: Dossier, draft: DraftView, *, headline: str = "") -> str:
    """The result as co-signers and reviewers read it; long findings are cut to fit."""
    for limit in (800, 300, 80):
        body = render("results/summary.j2", d=dossier, r=draft, headline=headline, limit=limit)
        if len(body) <= 4096:
            break
    return body[:4096]


async def _seats(session: AsyncSession, inspection_id: int) -> list[Assignment]:
    return list(
        await session.exec(
            select(Assignment)
            .where(
                Assignment.inspection_id == inspection_id,
                col(Assignment.status).in_(LIVE_SEATS),
            )
            .order_by(col(Assignment.pick_index))
        )
    )


async def _tell_group(
    session: AsyncSession, inspection_id: int, *, key: str, body: str, now: datetime
) -> None:
    """One message to every member of the group (`key` plus the chat is the idempotency key)."""
    for seat in await _seats(session, inspection_id):
        chat = await inspector_chat(session, seat.inspector_id)
        if chat is not None:
            await enqueue(session, key=f"{key}:{chat}", chat_id=chat, text=body, now=now)


async def submit(
    session: AsyncSession,
    turn: Turn,
    *,
    office_admins: Sequence[int] = (),
) -> View:
    """提交: the other members get the summary to co-sign; a second tap changes nothing."""
    result = (
        await session.exec(select(Result).where(Result.inspection_id == turn.inspection_id))
    ).first()
    seat = await _seat(session, turn.inspection_id, turn.identity)
    if (
        result is not None
        and seat is not None
        and result.entered_by == seat.inspector_id
        and result.status != ResultStatus.DRAFT
    ):
        dossier = await load_dossier(session, turn.inspection_id)
        assert dossier is not None
        return View(
            Screen.SUBMITTED, dossier=dossier, draft=await draft_view(session, result, dossier)
        )
    draft = await _draft_for(session, turn, create=False)
    if isinstance(draft, View):
        return draft
    today = turn.today
    missing = _first_open(draft)
    if missing.kind is not Kind.SUMMARY:
        return await _view(session, draft, missing, today=today, hint="incomplete")
    result = draft.result
    claimed = await session.exec(
        update(Result)
        .where(col(Result.id) == result.id, col(Result.status) == ResultStatus.DRAFT)
        .values(
            status=ResultStatus.SUBMITTED,
            version=Result.version + 1,
            submitted_at=turn.now,
            updated_at=turn.now,
        )
    )
    await session.refresh(result)
    view = await draft_view(session, result, draft.dossier)
    if not claimed.rowcount:
        return View(Screen.SUBMITTED, dossier=draft.dossier, draft=view)
    assert result.id is not None
    inspection = await session.get(Inspection, turn.inspection_id)
    assert inspection is not None
    inspection.status = InspectionStatus.SUBMITTED
    inspection.updated_at = turn.now
    session.add(inspection)
    await record(
        session,
        actor=f"tg:{turn.identity.tg_user_id}",
        action="result.submit",
        entity="result",
        entity_id=str(result.id),
        at=turn.now,
        detail={"version": result.version, "summary": _summary_record(view)},
    )
    calendar = await load_calendar(session)
    deadline = deadline_after(calendar, today, "cosign", draft.dossier.task_deadlines)
    others = 0
    for member in await _seats(session, turn.inspection_id):
        assert member.id is not None
        mine = member.id == draft.seat.id
        row = CoSignature(
            result_id=result.id,
            version=result.version,
            assignment_id=member.id,
            inspector_id=member.inspector_id,
            status=CoSignStatus.ENTERED if mine else CoSignStatus.PENDING,
            created_at=turn.now,
            decided_at=turn.now if mine else None,
        )
        session.add(row)
        await session.flush()
        if mine:
            continue
        others += 1
        assert row.id is not None
        inspector = await open_inspector_duty(
            session,
            kind="cosign",
            subject=f"assignment:{member.id}",
            deadline=deadline,
            inspection_id=turn.inspection_id,
            inspector_id=member.inspector_id,
            now=turn.now,
        )
        chat = await inspector_chat(session, member.inspector_id)
        if chat is not None:
            await enqueue(
                session,
                key=f"result:cosign:{row.id}:{chat}",
                chat_id=chat,
                text=render_summary(
                    draft.dossier, view, headline=text("result.headline.cosign", deadline=deadline)
                ),
                buttons=cosign_buttons(row.id),
                now=turn.now,
                notify_department=inspector.department_code,
            )
    if not others:
        await _all_cosigned(
            session, result, draft.dossier, now=turn.now, tz=turn.tz, office_admins=office_admins
        )
    return View(Screen.SUBMITTED, dossier=draft.dossier, draft=view)


def _summary_record(view: DraftView) -> dict[str, object]:
    """What was submitted, for the audit trail (the draft itself is edited in place)."""
    return {
        "date": view.inspection_date.isoformat() if view.inspection_date else None,
        "method": view.method,
        "items": [
            {
                "position": i.position,
                "category": i.category,
                "findings": i.findings,
                "action": i.action,
                "rectify_deadline": i.rectify_deadline.isoformat() if i.rectify_deadline else None,
                "transfer_department": i.transfer_department,
                "evidence": i.evidence,
            }
            for i in view.items
        ],
    }


class Answer(StrEnum):
    DONE = "done"
    ALREADY = "already"
    REFUSED = "refused"
    STALE = "stale"


@dataclass
class Reply:
    """The outcome of a co-signature or a review, for the person who acted."""

    answer: Answer
    text: str = ""
    reason: str = ""
    all_done: bool = False


async def open_inspector_duty(
    session: AsyncSession,
    *,
    kind: str,
    subject: str,
    deadline: date,
    inspection_id: int,
    inspector_id: int,
    now: datetime,
) -> Inspector:
    """A duty of one inspector (their department's liaison is told when it is overdue)."""
    inspector = await session.get(Inspector, inspector_id)
    assert inspector is not None
    await open_duty(
        session,
        kind=kind,
        subject=subject,
        deadline=deadline,
        responsible_role="inspector",
        department_code=inspector.department_code,
        inspection_id=inspection_id,
        inspector_id=inspector_id,
        now=now,
    )
    return inspector


async def _cancel_duty(session: AsyncSession, *, kind: str, subject: str, now: datetime) -> None:
    await session.exec(
        update(Duty)
        .where(
            col(Duty.kind) == kind,
            col(Duty.subject) == subject,
            col(Duty.status) == DutyStatus.OPEN,
        )
        .values(status=DutyStatus.CANCELLED, done_at=now)
    )


async def cosign_card(session: AsyncSession, *, cosign_id: int, identity: Identity) -> Reply:
    row = await session.get(CoSignature, cosign_id)
    if row is None or row.inspector_id not in identity.inspector_ids:
        return Reply(Answer.REFUSED, reason="not_yours")
    result = await session.get(Result, row.result_id)
    assert result is not None
    dossier = await load_dossier(session, result.inspection_id)
    assert dossier is not None
    if row.status != CoSignStatus.PENDING or result.version != row.version:
        return Reply(Answer.STALE, reason="cosign_over")
    return Reply(Answer.DONE, render_summary(dossier, await draft_view(session, result, dossier)))


async def cosign(
    session: AsyncSession,
    *,
    cosign_id: int,
    identity: Identity,
    confirm: bool,
    comment: str = "",
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
    office_admins: Sequence[int] = (),
) -> Reply:
    """确认无误, or 有异议 with a comment (which sends the result back to its enterer)."""
    row = await session.get(CoSignature, cosign_id)
    if row is None or row.inspector_id not in identity.inspector_ids:
        return Reply(Answer.REFUSED, reason="not_yours")
    result = await session.get(Result, row.result_id)
    assert result is not None and result.id is not None
    seat = await session.get(Assignment, row.assignment_id)
    if seat is None or seat.status not in LIVE_SEATS:
        return Reply(Answer.STALE, reason="closed")
    dossier = await load_dossier(session, result.inspection_id)
    assert dossier is not None
    if row.status in (CoSignStatus.CONFIRMED, CoSignStatus.OBJECTED):
        return Reply(Answer.ALREADY, render("results/cosigned.j2", d=dossier, row=row))
    if row.status != CoSignStatus.PENDING or result.version != row.version:
        return Reply(Answer.STALE, reason="cosign_over")
    if not confirm and len(comment.strip()) < 2:
        return Reply(Answer.STALE, reason="comment_short")
    claimed = await session.exec(
        update(CoSignature)
        .where(col(CoSignature.id) == cosign_id, col(CoSignature.status) == CoSignStatus.PENDING)
        .values(
            status=CoSignStatus.CONFIRMED if confirm else CoSignStatus.OBJECTED,
            comment=None if confirm else comment.strip(),
            decided_at=now,
        )
    )
    await session.refresh(row)
    if not claimed.rowcount:
        return Reply(Answer.ALREADY, render("results/cosigned.j2", d=dossier, row=row))
    today = local_today(now, tz)
    await complete_duty(
        session, kind="cosign", subject=f"assignment:{row.assignment_id}", now=now, today=today
    )
    inspector = await session.get(Inspector, row.inspector_id)
    assert inspector is not None
    await record(
        session,
        actor=f"tg:{identity.tg_user_id}",
        action="result.cosign" if confirm else "result.object",
        entity="result",
        entity_id=str(result.id),
        at=now,
        detail={"version": row.version, "assignment_id": row.assignment_id, "comment": row.comment},
    )
    if confirm:
        statuses = list(
            await session.exec(
                select(CoSignature.status).where(
                    CoSignature.result_id == result.id, CoSignature.version == row.version
                )
            )
        )
        done = all(s in (CoSignStatus.CONFIRMED, CoSignStatus.ENTERED) for s in statuses)
        if done:
            await _all_cosigned(
                session, result, dossier, now=now, tz=tz, office_admins=office_admins
            )
        return Reply(Answer.DONE, render("results/cosigned.j2", d=dossier, row=row), all_done=done)
    # An objection ends this round: the others need not co-sign a result that will change.
    others = list(
        await session.exec(
            select(CoSignature).where(
                CoSignature.result_id == result.id,
                CoSignature.version == row.version,
                CoSignature.status == CoSignStatus.PENDING,
            )
        )
    )
    for other in others:
        other.status = CoSignStatus.VOID
        other.decided_at = now
        session.add(other)
        await _cancel_duty(
            session, kind="cosign", subject=f"assignment:{other.assignment_id}", now=now
        )
    await _back_to_draft(
        session,
        result,
        dossier,
        reason=text("result.objection_reason", name=inspector.name, comment=row.comment or ""),
        now=now,
        today=today,
        key=f"result:objected:{row.id}",
        template="results/objected.j2",
        context={"objector": inspector.name, "comment": row.comment},
        skip_inspector=row.inspector_id,
    )
    return Reply(Answer.DONE, render("results/cosigned.j2", d=dossier, row=row))


async def _back_to_draft(
    session: AsyncSession,
    result: Result,
    dossier: Dossier,
    *,
    reason: str,
    now: datetime,
    today: date,
    key: str,
    template: str,
    context: dict[str, object],
    skip_inspector: int | None = None,
) -> None:
    """An objection or a return: the enterer edits the draft again; the group is told."""
    result.status = ResultStatus.DRAFT
    result.returned_reason = reason
    result.updated_at = now
    session.add(result)
    inspection = await session.get(Inspection, result.inspection_id)
    assert inspection is not None
    seats = await _seats(session, result.inspection_id)
    inspection.status = (
        InspectionStatus.CONFIRMED
        if all(s.status == AssignmentStatus.CONFIRMED for s in seats)
        else InspectionStatus.ASSIGNED
    )
    inspection.updated_at = now
    session.add(inspection)
    await session.flush()
    for seat in seats:
        if seat.inspector_id == skip_inspector:
            continue
        chat = await inspector_chat(session, seat.inspector_id)
        if chat is None:
            continue
        enterer = seat.inspector_id == result.entered_by
        await enqueue(
            session,
            key=f"{key}:{chat}",
            chat_id=chat,
            text=render(template, d=dossier, enterer=enterer, **context),
            buttons=rework_buttons(result.inspection_id) if enterer else None,
            now=now,
        )


async def _all_cosigned(
    session: AsyncSession,
    result: Result,
    dossier: Dossier,
    *,
    now: datetime,
    tz: str,
    office_admins: Sequence[int],
) -> None:
    """Everyone confirmed: the result counts as submitted; the lead liaison reviews it."""
    assert result.id is not None
    result.status = ResultStatus.COSIGNED
    result.cosigned_at = now
    result.updated_at = now
    session.add(result)
    inspection = await session.get(Inspection, result.inspection_id)
    assert inspection is not None
    inspection.status = InspectionStatus.COSIGNED
    inspection.updated_at = now
    session.add(inspection)
    today = local_today(now, tz)
    await complete_duty(
        session, kind="inspect", subject=f"inspection:{inspection.id}", now=now, today=today
    )
    calendar = await load_calendar(session)
    deadline = deadline_after(calendar, today, "review", dossier.task_deadlines)
    await open_duty(
        session,
        kind="review",
        subject=f"inspection:{inspection.id}",
        deadline=deadline,
        responsible_role="liaison",
        department_code=dossier.lead_department,
        inspection_id=inspection.id,
        now=now,
    )
    view = await draft_view(session, result, dossier)
    for liaison in await department_contacts(session, dossier.lead_department, office_admins):
        await enqueue(
            session,
            key=f"result:review:{result.id}:{result.version}:{liaison}",
            chat_id=liaison,
            text=render_summary(
                dossier, view, headline=text("result.headline.review", deadline=deadline)
            ),
            buttons=review_buttons(result.id, result.version),
            now=now,
        )
    await _tell_group(
        session,
        result.inspection_id,
        key=f"result:cosigned:{result.id}:{result.version}",
        body=render("results/all_cosigned.j2", d=dossier),
        now=now,
    )
    await record(
        session,
        actor="bot",
        action="result.cosigned",
        entity="result",
        entity_id=str(result.id),
        at=now,
        detail={"version": result.version},
    )


# --- review ---------------------------------------------------------------------------------------


async def may_review(session: AsyncSession, inspection_id: int, identity: Identity) -> bool:
    """The lead department's liaison, or the office."""
    if identity.is_office:
        return True
    inspection = await session.get(Inspection, inspection_id)
    if inspection is None:
        return False
    lead = await liaison_departments_of(session, inspection.lead_department)
    return any(code in identity.liaison_departments for code in lead)


async def review_card(
    session: AsyncSession, *, result_id: int, version: int, identity: Identity
) -> Reply:
    result = await session.get(Result, result_id)
    if result is None or not await may_review(session, result.inspection_id, identity):
        return Reply(Answer.REFUSED, reason="not_yours")
    dossier = await load_dossier(session, result.inspection_id)
    assert dossier is not None
    view = await draft_view(session, result, dossier)
    if result.status != ResultStatus.COSIGNED or result.version != version:
        return Reply(Answer.STALE, render_summary(dossier, view), reason="review_over")
    return Reply(Answer.DONE, render_summary(dossier, view))


async def review(
    session: AsyncSession,
    *,
    result_id: int,
    version: int,
    identity: Identity,
    approve: bool,
    reason: str = "",
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
    office_admins: Sequence[int] = (),
) -> Reply:
    """通过, or 退回 with a reason (back to the inspectors as a draft). Once per submission."""
    from bot.followups import open_followups

    result = await session.get(Result, result_id)
    if result is None or not await may_review(session, result.inspection_id, identity):
        return Reply(Answer.REFUSED, reason="not_yours")
    dossier = await load_dossier(session, result.inspection_id)
    assert dossier is not None and result.id is not None
    earlier = (
        await session.exec(
            select(Review).where(Review.result_id == result_id, Review.version == version)
        )
    ).first()
    if earlier is not None:
        return Reply(Answer.ALREADY, render("review/decided.j2", d=dossier, review=earlier))
    if result.status != ResultStatus.COSIGNED or result.version != version:
        return Reply(Answer.STALE, reason="review_over")
    if not approve and len(reason.strip()) < 2:
        return Reply(Answer.STALE, reason="reason_short")
    inserted = await _insert_ignore(
        session,
        Review.__table__,  # type: ignore[attr-defined]
        {
            "result_id": result_id,
            "version": version,
            "decision": "approved" if approve else "returned",
            "reason": None if approve else reason.strip(),
            "reviewer": f"tg:{identity.tg_user_id}",
            "reviewer_name": identity.display_name,
            "decided_at": now,
        },
    )
    decided = (
        await session.exec(
            select(Review).where(Review.result_id == result_id, Review.version == version)
        )
    ).one()
    if not inserted:
        return Reply(Answer.ALREADY, render("review/decided.j2", d=dossier, review=decided))
    today = local_today(now, tz)
    await complete_duty(
        session, kind="review", subject=f"inspection:{result.inspection_id}", now=now, today=today
    )
    await record(
        session,
        actor=f"tg:{identity.tg_user_id}",
        action="result.approve" if approve else "result.return",
        entity="result",
        entity_id=str(result.id),
        at=now,
        detail={"version": version, "reason": decided.reason},
    )
    if approve:
        await _approve(session, result, dossier, now=now, today=today, office_admins=office_admins)
        await open_followups(session, result=result, now=now, tz=tz, office_admins=office_admins)
    else:
        await _back_to_draft(
            session,
            result,
            dossier,
            reason=text("result.return_reason", reason=decided.reason or ""),
            now=now,
            today=today,
            key=f"result:returned:{decided.id}",
            template="results/returned.j2",
            context={"review": decided},
        )
        calendar = await load_calendar(session)
        due = max(
            dossier.window_end,
            due_after(calendar, today, "resubmit", dossier.task_deadlines, RESUBMIT_WORKING_DAYS),
        )
        await open_inspector_duty(
            session,
            kind="inspect",
            subject=f"inspection:{result.inspection_id}",
            deadline=due,
            inspection_id=result.inspection_id,
            inspector_id=result.entered_by,
            now=now,
        )
    return Reply(Answer.DONE, render("review/decided.j2", d=dossier, review=decided))


async def _approve(
    session: AsyncSession,
    result: Result,
    dossier: Dossier,
    *,
    now: datetime,
    today: date,
    office_admins: Sequence[int],
) -> None:
    result.status = ResultStatus.APPROVED
    result.approved_at = now
    result.returned_reason = None
    result.updated_at = now
    session.add(result)
    inspection = await session.get(Inspection, result.inspection_id)
    assert inspection is not None and result.inspection_date is not None
    inspection.status = InspectionStatus.APPROVED
    inspection.updated_at = now
    session.add(inspection)
    calendar = await load_calendar(session)
    # Published within 20 working days of the inspection result (DOMAIN §7).
    await open_duty(
        session,
        kind="publish",
        subject=f"inspection:{inspection.id}",
        deadline=deadline_after(
            calendar, result.inspection_date, "publish", dossier.task_deadlines
        ),
        responsible_role="office",
        department_code=dossier.lead_department,
        inspection_id=inspection.id,
        now=now,
    )
    await _tell_group(
        session,
        result.inspection_id,
        key=f"result:approved:{result.id}:{result.version}",
        body=render("results/approved.j2", d=dossier),
        now=now,
    )


async def waiting_reviews(
    session: AsyncSession, identity: Identity
) -> list[tuple[Result, Dossier]]:
    """Co-signed results this liaison (or the office) should review."""
    rows = list(
        await session.exec(
            select(Result)
            .where(Result.status == ResultStatus.COSIGNED)
            .order_by(col(Result.cosigned_at))
        )
    )
    out = []
    for result in rows:
        if await may_review(session, result.inspection_id, identity):
            dossier = await load_dossier(session, result.inspection_id)
            assert dossier is not None
            out.append((result, dossier))
    return out
