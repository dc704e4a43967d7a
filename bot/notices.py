"""The 三单 (DOMAIN §8): 懒政提醒单, 怠政督办单 and 失职问责单.

The sweeper (bot/sweeper.py) decides *when* a duty's next notice is due; this module decides
what the notice is and who reads it: numbering (督〔2026〕17号, gap-free per kind and year), the
recipients and the rendered messages (queued in the outbox in the transaction that records the
notice), the office's 问责 / 免责 decision, the list behind /notices and the .xlsx export.

Who reads what (``route``): each notice's own message goes to the people it is addressed to;
everyone copied finds it in their digest, one message per recipient per sweep batch (why:
docs/notices.md):

* 懒政提醒单: its own message to the responsible person (an inspector's bound account; for the
  group duty ``inspect``, every member of the inspection's group; the liaisons for their own
  duty; the office members for the office's). The department's liaisons: in their digest.
* 怠政督办单: to the department, copied to the office: in the digests of the department's
  liaisons, of the department group (no target details), and of the office group (or of the
  office members privately when it has none). A liaison's or the office's own duty: its own
  message to them instead.
* 失职问责单: its own card to the office (the office group when one is bound, otherwise office
  members privately), with the 问责 / 免责 buttons: the office decides each one.
* The decision: the department's liaisons privately and the department group.

Group messages are rendered from ``*_group.j2`` templates, and group digests from entries, that
receive ``DutyView.public()``, which has no target name or code at all (architecture: targets
never go to a group).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import lru_cache
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import Template
from markupsafe import Markup
from openpyxl import Workbook
from sqlalchemy import BindParameter, Dialect, Table, bindparam, func, or_, update
from sqlalchemy import text as text_clause
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import to_local
from bot.duties import day_text
from bot.outbox import Envelope, Keyboard, enqueue_many
from bot.render import environment, has_text, text
from bot.telegram import NoticeCb
from bot.workdays import Calendar
from storage.audit import record
from storage.db import DriverInsert, upsert_insert
from storage.models import (
    Assignment,
    AssignmentStatus,
    ChatBinding,
    Department,
    Duty,
    DutyStatus,
    Inspection,
    InspectionItem,
    Inspector,
    Notice,
    NoticeCounter,
    Person,
    Role,
    RoleGrant,
    Target,
    Task,
)

REMINDER = "reminder"
SUPERVISION = "supervision"
ACCOUNTABILITY = "accountability"
RANK = {REMINDER: 1, SUPERVISION: 2, ACCOUNTABILITY: 3}
NUMBERED = (SUPERVISION, ACCOUNTABILITY)

HOLD = "h"
EXEMPT = "e"
DECISION_WORDS = {HOLD: "问责", EXEMPT: "免责"}
REASONS = {HOLD: 4, EXEMPT: 5}
"""How many reasons each list has (texts ``notice.reason.<h|e>.<n>``, from DOMAIN §8)."""
REASON_MAX = 500

NOTICE: Table = Notice.__table__  # type: ignore[attr-defined]
COUNTER: Table = NoticeCounter.__table__  # type: ignore[attr-defined]
DUTY: Table = Duty.__table__  # type: ignore[attr-defined]
_ACTIVE_SEATS = (
    AssignmentStatus.PENDING,
    AssignmentStatus.CONFIRMED,
    AssignmentStatus.RECUSAL_REQUESTED,
)
_CHUNK = 5000
"""Ids per ``IN (…)`` when loading what notices show: under SQLite's and asyncpg's limits on
bind parameters (32,766), and few queries for a sweep's thousands of duties."""


IDS: BindParameter[Any] = bindparam("ids", expanding=True)
"""Ids for ``IN`` as one parameter (its list given at execution): building a bound literal
for each of thousands of ids cost more than the query."""


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def number_label(kind: str, year: int, seq: int | None) -> str | None:
    """督〔2026〕17号 / 问〔2026〕3号; reminders are not numbered."""
    if seq is None or kind not in NUMBERED:
        return None
    before, after = _number_format(kind, year)
    return f"{before}{seq}{after}"


@lru_cache(maxsize=32)
def _number_format(kind: str, year: int) -> tuple[str, str]:
    """The text ``notice.number.<kind>`` around its ``seq``, rendered once per kind and year
    rather than once per notice (a sweep numbers thousands)."""
    before, _, after = text(f"notice.number.{kind}", year=year, seq="\x00").partition("\x00")
    return before, after


@lru_cache(maxsize=64)
def duty_label(kind: str) -> str:
    """确认接收检查任务 for ``confirm``…; a kind another feature invents shows as itself."""
    key = f"notice.duty.{kind}"
    return text(key) if has_text(key) else kind


@lru_cache(maxsize=8)
def _role_label(role: str) -> str:
    return text(f"notice.responsible.{role}")


@lru_cache(maxsize=64)
def _template(name: str) -> Template:
    return environment().get_template(name)


@lru_cache(maxsize=64)
def _compiled(name: str) -> tuple[Template, dict[str, Any]]:
    template = _template(name)
    return template, dict(template.globals)


def _render(name: str, /, **context: Any) -> str:
    """``bot.render.render`` for the sweep, which renders thousands of notices at a time: the
    template is looked up and compiled once, and its globals (``text``) are flattened once;
    ``Template.render`` merges them from a ChainMap for every message, a third of its cost."""
    template, globals_ = _compiled(name)
    variables = globals_ | context
    body = template.root_render_func(template.new_context(variables, shared=True))
    return template.environment.concat(body).strip()


def reason_text(decision: str, number: int) -> str | None:
    if decision not in REASONS or not 1 <= number <= REASONS[decision]:
        return None
    return text(f"notice.reason.{decision}.{number}")


# --- what a duty is, as people read it ---------------------------------------------------------


class DutyRow(NamedTuple):
    """The columns of a duty the sweeper and the notices need (read with Core, not the ORM).

    The values a sweep handles by the ten thousand (this, ``Subject``, ``Route``, the views)
    are named tuples or slotted dataclasses: a frozen dataclass costs three times as much to
    build, ``dataclasses.replace`` four."""

    id: int
    kind: str
    subject: str
    inspection_id: int | None
    inspector_id: int | None
    responsible_role: str
    department_code: str
    deadline: date
    stage: int
    supervision_deadline: date | None
    created_at: datetime


DUTY_COLUMNS = (
    DUTY.c.id,
    DUTY.c.kind,
    DUTY.c.subject,
    DUTY.c.inspection_id,
    DUTY.c.inspector_id,
    DUTY.c.responsible_role,
    DUTY.c.department_code,
    DUTY.c.deadline,
    DUTY.c.stage,
    DUTY.c.supervision_deadline,
    DUTY.c.created_at,
)


def duty_row(row: Any) -> DutyRow:
    return DutyRow._make(row)


@dataclass(slots=True)
class DutyView:
    """A duty for a template. ``target_*`` are None in the group version (``public()``)."""

    id: int
    kind: str
    label: str
    department_code: str
    department: str
    responsible_role: str
    responsible: tuple[str, ...]
    deadline: date
    deadline_text: str
    estimated: bool
    inspection_id: int | None
    tasks: tuple[str, ...]
    target_name: str | None = None
    target_code: str | None = None

    def public(self) -> DutyView:
        """Without the target and the people (a group's version): built field by field, as
        ``dataclasses.replace`` costs four times as much and a sweep makes thousands."""
        return DutyView(
            id=self.id,
            kind=self.kind,
            label=self.label,
            department_code=self.department_code,
            department=self.department,
            responsible_role=self.responsible_role,
            responsible=(),
            deadline=self.deadline,
            deadline_text=self.deadline_text,
            estimated=self.estimated,
            inspection_id=self.inspection_id,
            tasks=self.tasks,
        )


@dataclass(slots=True)
class NoticeView:
    id: int
    kind: str
    number: str | None
    year: int
    issued_on: date
    new_deadline: date | None
    new_deadline_text: str | None
    estimated: bool
    status: str
    closed_late: bool = False
    decision: str | None = None
    reason: str | None = None
    supervision_number: str | None = None
    closed_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None


class Subject(NamedTuple):
    """The inspection a duty is about: private details and the group's members."""

    target_name: str
    target_code: str
    tasks: tuple[str, ...]
    members: tuple[int, ...]


@dataclass
class People:
    """Everyone the 三单 go to, loaded once per batch (bound people are a few thousand)."""

    inspectors: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    liaisons: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    office: list[int] = field(default_factory=list)
    department_groups: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    office_groups: list[int] = field(default_factory=list)
    departments: dict[str, str] = field(default_factory=dict)
    inspector_names: dict[int, str] = field(default_factory=dict)


async def load_people(session: AsyncSession, office_admins: Iterable[int]) -> People:
    people = People()
    grants = await session.exec(
        select(RoleGrant.role, RoleGrant.department_code, RoleGrant.inspector_id, Person.tg_user_id)
        .join(Person, col(Person.id) == col(RoleGrant.person_id))
        .where(col(RoleGrant.active).is_(True))
        .order_by(col(RoleGrant.id))
    )
    for role, department_code, inspector_id, tg_user_id in grants:
        if role == Role.INSPECTOR and inspector_id is not None:
            people.inspectors[inspector_id].append(tg_user_id)
        elif role == Role.LIAISON and department_code:
            people.liaisons[department_code].append(tg_user_id)
        elif role == Role.OFFICE:
            people.office.append(tg_user_id)
    people.office.extend(office_admins)
    people.office = list(dict.fromkeys(people.office))
    chats = await session.exec(
        select(ChatBinding.chat_id, ChatBinding.kind, ChatBinding.department_code)
        .where(col(ChatBinding.active).is_(True))
        .order_by(col(ChatBinding.id))
    )
    for chat_id, kind, department_code in chats:
        if kind == "office":
            people.office_groups.append(chat_id)
        elif kind == "department" and department_code:
            people.department_groups[department_code].append(chat_id)
    departments = await session.exec(select(Department.code, Department.name))
    people.departments = dict(departments.all())
    return people


async def load_inspector_names(session: AsyncSession, people: People, ids: Iterable[int]) -> None:
    missing = sorted({i for i in ids if i not in people.inspector_names})
    query = select(Inspector.id, Inspector.name).where(col(Inspector.id).in_(IDS))
    for chunk in _chunks(missing):
        for inspector_id, name in await session.exec(query, params={IDS.key: list(chunk)}):
            if inspector_id is not None:
                people.inspector_names[inspector_id] = name


async def load_subjects(session: AsyncSession, inspection_ids: Iterable[int]) -> dict[int, Subject]:
    ids = sorted(set(inspection_ids))
    targets: dict[int, tuple[str, str]] = {}
    tasks: dict[int, list[str]] = defaultdict(list)
    members: dict[int, list[int]] = defaultdict(list)
    found_targets = (
        select(Inspection.id, Target.name, Target.uscc, Target.key)
        .join(Target, col(Target.id) == col(Inspection.target_id))
        .where(col(Inspection.id).in_(IDS))
    )
    found_tasks = (
        select(InspectionItem.inspection_id, Task.name)
        .join(Task, col(Task.id) == col(InspectionItem.task_id))
        .where(col(InspectionItem.inspection_id).in_(IDS))
        .distinct()
        .order_by(col(InspectionItem.inspection_id), col(Task.name))
    )
    found_members = (
        select(Assignment.inspection_id, Assignment.inspector_id)
        .where(
            col(Assignment.inspection_id).in_(IDS),
            col(Assignment.status).in_(_ACTIVE_SEATS),
        )
        .order_by(col(Assignment.inspection_id), col(Assignment.pick_index))
    )
    for some in _chunks(ids):
        params = {IDS.key: list(some)}
        for inspection_id, name, uscc, key in await session.exec(found_targets, params=params):
            if inspection_id is not None:
                targets[inspection_id] = (name, uscc or key)
        for inspection_id, task_name in await session.exec(found_tasks, params=params):
            tasks[inspection_id].append(task_name)
        for inspection_id, inspector_id in await session.exec(found_members, params=params):
            members[inspection_id].append(inspector_id)
    return {
        i: Subject(name, code, tuple(tasks.get(i, ())), tuple(members.get(i, ())))
        for i, (name, code) in targets.items()
    }


def _responsible_inspectors(duty: DutyRow, subject: Subject | None) -> tuple[int, ...]:
    if duty.inspector_id is not None:
        return (duty.inspector_id,)
    if duty.responsible_role == Role.INSPECTOR and subject is not None:
        return subject.members  # the group's duty (inspect): every member
    return ()


def duty_view(
    duty: DutyRow,
    people: People,
    subject: Subject | None,
    calendar: Calendar,
    today: date,
) -> DutyView:
    if duty.responsible_role == Role.INSPECTOR:
        names = tuple(
            people.inspector_names.get(i, "") for i in _responsible_inspectors(duty, subject)
        )
        responsible = tuple(n for n in names if n)
    else:
        responsible = (_role_label(duty.responsible_role),)
    return DutyView(
        id=duty.id,
        kind=duty.kind,
        label=duty_label(duty.kind),
        department_code=duty.department_code,
        department=people.departments.get(duty.department_code, duty.department_code),
        responsible_role=duty.responsible_role,
        responsible=responsible,
        deadline=duty.deadline,
        deadline_text=day_text(duty.deadline),
        estimated=calendar.estimated_between(today, duty.deadline),
        inspection_id=duty.inspection_id,
        tasks=subject.tasks if subject else (),
        target_name=subject.target_name if subject else None,
        target_code=subject.target_code if subject else None,
    )


# --- numbering ----------------------------------------------------------------------------------


async def allocate_numbers(session: AsyncSession, kind: str, year: int, count: int) -> int:
    """Reserve ``count`` consecutive numbers; returns the first. The counter row stays locked
    until the transaction ends (a second sweeper waits), and a rollback returns the numbers."""
    statement = (
        upsert_insert(session.get_bind().dialect.name)(COUNTER)
        .values(kind=kind, year=year, last=count)
        .on_conflict_do_update(
            index_elements=["kind", "year"], set_={"last": COUNTER.c.last + count}
        )
        .returning(COUNTER.c.last)
    )
    last = int((await session.exec(statement)).scalar_one())
    return last - count + 1


# --- buttons ------------------------------------------------------------------------------------


def decision_buttons(notice_id: int) -> Keyboard:
    return [
        [
            (_label("hold"), NoticeCb(action="hold", notice_id=notice_id).pack()),
            (_label("exempt"), NoticeCb(action="exempt", notice_id=notice_id).pack()),
        ]
    ]


@lru_cache(maxsize=8)
def _label(button: str) -> str:
    return text(f"notice.button.{button}")


def reason_buttons(notice_id: int, decision: str) -> Keyboard:
    rows: Keyboard = [
        [
            (
                text(f"notice.reason.{decision}.{n}"),
                NoticeCb(action="pick", notice_id=notice_id, decision=decision, reason=n).pack(),
            )
        ]
        for n in range(1, REASONS[decision] + 1)
    ]
    rows.append(
        [
            (
                text("notice.button.other"),
                NoticeCb(action="other", notice_id=notice_id, decision=decision).pack(),
            )
        ]
    )
    rows.append([(text("notice.button.back"), NoticeCb(action="back", notice_id=notice_id).pack())])
    return rows


# --- issuing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issue:
    """One notice the sweeper found due: its duty, kind and (supervision) new deadline."""

    duty: DutyRow
    kind: str
    new_deadline: date | None = None


@dataclass
class Issued:
    reminders: int = 0
    supervisions: int = 0
    accountabilities: int = 0
    messages: int = 0
    """Messages offered to the outbox: the notices' own messages and the copies."""
    digests: int = 0
    """The copies among them: digest messages, and a recipient's single copy in full."""


class Route(NamedTuple):
    """Who reads one notice, and how (see the module docstring).

    ``own``: chats that get the notice's own message: the people it is addressed to (for a
    失职问责单 the office, which decides it: ``own_group`` says they are office groups, which get
    the group card). ``copies`` (private) and ``group_copies``: chats that find it in their
    digest of the batch instead."""

    own: tuple[int, ...] = ()
    own_group: bool = False
    copies: tuple[int, ...] = ()
    group_copies: tuple[int, ...] = ()


def _unique(chats: Iterable[int], *, without: Iterable[int] = ()) -> tuple[int, ...]:
    found = dict.fromkeys(chats)
    for chat in without:
        found.pop(chat, None)
    return tuple(found)


def _responsible_chats(duty: DutyRow, subject: Subject | None, people: People) -> tuple[int, ...]:
    if duty.responsible_role == Role.INSPECTOR:
        return _unique(
            chat
            for inspector in _responsible_inspectors(duty, subject)
            for chat in people.inspectors.get(inspector, [])
        )
    if duty.responsible_role == Role.LIAISON:
        return _unique(people.liaisons.get(duty.department_code, []))
    if duty.responsible_role == Role.OFFICE:
        return _unique(people.office)
    return ()


def route(kind: str, duty: DutyRow, subject: Subject | None, people: People) -> Route:
    """The recipients of a notice of ``kind`` on ``duty``: the responsible person gets their
    own message; the liaison, department group and office copies go into digests."""
    if kind == ACCOUNTABILITY:
        if people.office_groups:
            return Route(own=_unique(people.office_groups), own_group=True)
        return Route(own=_unique(people.office))
    responsible = _responsible_chats(duty, subject, people)
    liaisons = people.liaisons.get(duty.department_code, [])
    if kind == REMINDER:
        return Route(own=responsible, copies=_unique(liaisons, without=responsible))
    # 怠政督办单: to the department (its liaisons and group), copied to the office (its group,
    # or its members privately when it has none). The responsible person is told directly only
    # when they are among those (a liaison's or the office's own duty).
    private = _unique([*liaisons, *([] if people.office_groups else people.office)])
    own = tuple(c for c in private if c in responsible)
    groups = [*people.department_groups.get(duty.department_code, []), *people.office_groups]
    return Route(own=own, copies=_unique(private, without=own), group_copies=_unique(groups))


async def issue(
    session: AsyncSession,
    issues: Sequence[Issue],
    *,
    now: datetime,
    today: date,
    calendar: Calendar,
    office_admins: Iterable[int],
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> Issued:
    """Record the notices, number them, and queue their messages (each notice's own, and one
    digest per copied recipient), in the caller's transaction.

    Rendering thousands of messages is CPU work that needs no database: it runs beside
    (``_compose_aside``) while the database does ``meanwhile()``, the caller's other writes in
    this transaction (the sweeper's duty updates; always called, once)."""
    result = Issued()
    if not issues:
        if meanwhile is not None:
            await meanwhile()
        return result
    year = today.year
    seqs: dict[int, int] = {}
    for kind in NUMBERED:
        ordered = sorted(i.duty.id for i in issues if i.kind == kind)
        if ordered:
            first = await allocate_numbers(session, kind, year, len(ordered))
            seqs.update({duty_id: first + n for n, duty_id in enumerate(ordered)})
    ids = await _notice_ids(session, len(issues))
    people = await load_people(session, office_admins)
    subjects = await load_subjects(
        session, (i.duty.inspection_id for i in issues if i.duty.inspection_id is not None)
    )
    await load_inspector_names(
        session,
        people,
        (
            inspector
            for i in issues
            for inspector in _responsible_inspectors(
                i.duty, subjects.get(i.duty.inspection_id or 0)
            )
        ),
    )
    batch = _Batch(
        issues=issues,
        ids=ids,
        seqs=seqs,
        supervision_numbers=await _supervision_numbers(
            session, [i.duty.id for i in issues if i.kind == ACCOUNTABILITY]
        ),
        people=people,
        subjects=subjects,
        calendar=calendar,
        today=today,
    )
    # Rendering starts once everything it reads is read (the notices' ids are taken ahead),
    # and the writes go on meanwhile: the notices, ``meanwhile()``, then each part of the
    # messages as it arrives. In a worker thread, the reads' many round trips would each
    # have waited for the interpreter while it renders.
    parts: asyncio.Queue[_Part | None] = asyncio.Queue()
    composing = asyncio.ensure_future(_compose_aside(batch, parts))
    try:
        await _record(session, issues, ids, seqs, now=now, year=year)
        if meanwhile is not None:
            await meanwhile()
        while (part := await parts.get()) is not None:
            await enqueue_many(session, part.messages, now=now)
            result.messages += len(part.messages)
            result.digests += len(part.messages) if part.copies else 0
    finally:
        await composing  # what stopped the rendering, if anything did
    result.reminders = sum(1 for i in issues if i.kind == REMINDER)
    result.supervisions = sum(1 for i in issues if i.kind == SUPERVISION)
    result.accountabilities = sum(1 for i in issues if i.kind == ACCOUNTABILITY)
    return result


async def _notice_ids(session: AsyncSession, count: int) -> list[int]:
    """Ids for ``count`` new notices, taken before they are inserted so that their messages
    can be rendered while the insert runs. PostgreSQL: from the table's sequence, as an insert
    would take them. SQLite: after the highest one; the batch's first write (the sweeper's
    turn) holds the database's only write lock, so no other insert can take them meanwhile
    (and if a caller had not written first, a clash would fail the batch, not mix it up)."""
    if session.get_bind().dialect.name == "postgresql":
        taken = await session.exec(  # type: ignore[call-overload]
            text_clause(
                "SELECT nextval(pg_get_serial_sequence('notice', 'id')) "
                "FROM generate_series(1, :count)"
            ),
            params={"count": count},
        )
        return sorted(int(i) for (i,) in taken)
    highest = (await session.exec(select(func.max(Notice.id)))).one() or 0
    return list(range(highest + 1, highest + 1 + count))


async def _record(
    session: AsyncSession,
    issues: Sequence[Issue],
    ids: Sequence[int],
    seqs: dict[int, int],
    *,
    now: datetime,
    year: int,
) -> None:
    """Insert the notices, with the ids taken for them (``_notice_ids``), in order."""
    rows = [
        {
            "id": notice_id,
            "duty_id": i.duty.id,
            "kind": i.kind,
            "year": year,
            "seq": seqs.get(i.duty.id) if i.kind in NUMBERED else None,
            "issued_at": now,
            "deadline": i.new_deadline,
            "status": "open",
            "closed_late": False,
        }
        for i, notice_id in zip(issues, ids, strict=True)
    ]
    if not rows:
        return
    connection = await session.connection()
    await _notice_insert(connection.dialect, tuple(rows[0])).run(connection, rows)


@lru_cache(maxsize=4)
def _notice_insert(dialect: Dialect, columns: tuple[str, ...]) -> DriverInsert:
    """The insert of ``columns`` (those ``_record`` writes; the decision's start empty)."""
    written: dict[str, Any] = {name: bindparam(name) for name in columns}
    return DriverInsert.of(NOTICE, NOTICE.insert().values(written).inline(), dialect)


async def _supervision_numbers(session: AsyncSession, duty_ids: Sequence[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    query = select(Notice.duty_id, Notice.year, Notice.seq).where(
        col(Notice.duty_id).in_(IDS), Notice.kind == SUPERVISION
    )
    for chunk in _chunks(sorted(duty_ids)):
        for duty_id, year, seq in await session.exec(query, params={IDS.key: list(chunk)}):
            label = number_label(SUPERVISION, year, seq)
            if label:
                found[duty_id] = label
    return found


# --- composing a batch's messages ---------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    """What composing a batch's messages needs, read from the database beforehand."""

    issues: Sequence[Issue]
    ids: list[int]
    """The notices' ids, in the order of ``issues``."""
    seqs: dict[int, int]
    supervision_numbers: dict[int, str]
    people: People
    subjects: dict[int, Subject]
    calendar: Calendar
    today: date


@dataclass(slots=True)
class _Digest:
    """One recipient's copies in one batch: (notice, the duty as this chat may read it)."""

    chat_id: int
    is_group: bool
    entries: list[tuple[NoticeView, DutyView]] = field(default_factory=list)


_OWN_TEMPLATES = {
    REMINDER: "notices/reminder.j2",
    SUPERVISION: "notices/supervision.j2",
    ACCOUNTABILITY: "notices/accountability.j2",
}
_GROUP_TEMPLATES = {
    SUPERVISION: "notices/supervision_group.j2",
    ACCOUNTABILITY: "notices/accountability_group.j2",
}


FORK_AT = 1000
"""Notices from which a batch's messages are rendered in a forked child process rather than a
worker thread. A thread shares the interpreter lock with the event loop and the database
driver's thread, so rendering and the duty updates took turns; a child renders on another
core. Forking costs a few milliseconds and the messages travel back pickled (~20 ms for a
morning's 10,000), so small batches stay in a thread."""


class _Part(NamedTuple):
    """Some of a batch's messages, in the order they are queued: the notices' own (several
    parts of up to ``PART`` messages), then the copies."""

    copies: bool
    messages: list[Envelope]


PART = 2000
"""Own messages per part: the parent queues a part while the child renders the next."""


async def _compose_aside(batch: _Batch, parts: asyncio.Queue[_Part | None]) -> None:
    """The batch's messages (``_parts``) put on ``parts``, then None, away from the event loop:
    in a worker thread, or for a big batch in a forked child (it starts with the batch already
    in memory, and only sends its messages back, part by part). A child that fails or dies fails
    the batch, which then rolls back whole."""
    try:
        if len(batch.issues) < FORK_AT:
            for part in await asyncio.to_thread(lambda: list(_parts(batch))):
                parts.put_nowait(part)
            return
        prepare_messages()  # if the bot's start did not: here, not in each batch's child
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_compose_in_child, args=(batch, send), daemon=True)
        child.start()
        send.close()
        try:
            while (sent := await asyncio.to_thread(receive.recv)) is not None:
                if isinstance(sent, BaseException):
                    raise sent
                parts.put_nowait(sent)
        except EOFError:
            raise RuntimeError("the rendering child ended before sending everything") from None
        finally:
            child.kill()  # nothing once it has sent all: it is exiting
            child.join()
            receive.close()
    finally:
        parts.put_nowait(None)


_COMPOSED_WITH = (
    *_OWN_TEMPLATES.values(),
    *_GROUP_TEMPLATES.values(),
    "notices/digest_entries.j2",
    "notices/digest.j2",
)


def prepare_messages() -> None:
    """Compile the templates composing uses (about 40 ms), into this process's cache, which
    a batch's child inherits; the bot does it when it starts (bot/scheduler.py)."""
    for name in _COMPOSED_WITH:
        _compiled(name)


def _compose_in_child(batch: _Batch, out: Connection) -> None:
    """The child's whole life: render and send the parts, then None (or what stopped it)."""
    try:
        for part in _parts(batch):
            out.send(part)
        out.send(None)
    except Exception as error:  # the parent raises it
        out.send(error)


def _parts(batch: _Batch) -> Iterator[_Part]:
    """The batch's messages, in parts: the own ones as they are rendered, then the copies.
    Pure (no database), so it runs in a worker thread or a child process."""
    today, calendar, people = batch.today, batch.calendar, batch.people
    year = today.year
    own: list[Envelope] = []
    digests: dict[int, _Digest] = {}
    for item, notice_id in zip(batch.issues, batch.ids, strict=True):
        duty = item.duty
        subject = batch.subjects.get(duty.inspection_id or 0)
        notice = NoticeView(
            id=notice_id,
            kind=item.kind,
            number=number_label(item.kind, year, batch.seqs.get(duty.id)),
            year=year,
            issued_on=today,
            new_deadline=item.new_deadline,
            new_deadline_text=day_text(item.new_deadline) if item.new_deadline else None,
            estimated=item.new_deadline is not None
            and calendar.estimated_between(today, item.new_deadline),
            status="open",
            supervision_number=batch.supervision_numbers.get(duty.id),
        )
        view = duty_view(duty, people, subject, calendar, today)
        to = route(item.kind, duty, subject, people)
        if to.own:
            own.extend(_own_messages(notice, duty, view, to))
            if len(own) >= PART:
                yield _Part(False, own)
                own = []
        for chat in to.copies:
            digests.setdefault(chat, _Digest(chat, False)).entries.append((notice, view))
        if to.group_copies:
            public = view.public()
            for chat in to.group_copies:
                digests.setdefault(chat, _Digest(chat, True)).entries.append((notice, public))
    yield _Part(False, own)
    yield _Part(True, [m for digest in digests.values() for m in _copy_messages(digest, today)])


def _copy_messages(digest: _Digest, today: date) -> list[Envelope]:
    """A recipient's copies of one batch: a digest when they are several; a single copy is the
    notice itself, in full, as a formal notice reads (its number, its deadline, what to do), not
    a one-line list. Privately the text the responsible person gets (with the copy's wording);
    a group gets the group card, which has no target and no person. Keyed like a notice's own
    message: the recipient is not among its own recipients (``route``), so no key is shared."""
    if len(digest.entries) != 1:
        return _digest_messages(digest, today)
    notice, view = digest.entries[0]
    if digest.is_group:
        template = _GROUP_TEMPLATES.get(notice.kind)
        if template is None:  # no group card for this kind: its one-line digest
            return _digest_messages(digest, today)
        body = _render(template, notice=notice, duty=view)
    else:
        body = _render(_OWN_TEMPLATES[notice.kind], notice=notice, duty=view, copy=True)
    return [
        Envelope(
            key=f"notice:{notice.kind}:{notice.id}:{digest.chat_id}",
            chat_id=digest.chat_id,
            text=body,
            is_group=digest.is_group,
        )
    ]


def _own_messages(notice: NoticeView, duty: DutyRow, view: DutyView, to: Route) -> list[Envelope]:
    """The notice's own message to each of ``to.own``: the full text privately, the group card
    (no target details) in an office group; a 失职问责单 carries the 问责 / 免责 buttons."""
    if to.own_group:
        body = _render("notices/accountability_group.j2", notice=notice, duty=view.public())
    else:
        body = _render(_OWN_TEMPLATES[notice.kind], notice=notice, duty=view, copy=False)
    buttons = decision_buttons(notice.id) if notice.kind == ACCOUNTABILITY else None
    # An inspector who cannot be reached (blocked the bot) is reported to their liaisons.
    notify = (
        duty.department_code
        if notice.kind == REMINDER and duty.responsible_role == Role.INSPECTOR
        else None
    )
    return [
        Envelope(
            key=f"notice:{notice.kind}:{notice.id}:{chat}",
            chat_id=chat,
            text=body,
            buttons=buttons,
            is_group=to.own_group,
            notify_department=notify,
        )
        for chat in to.own
    ]


# --- digests ------------------------------------------------------------------------------------

TELEGRAM_LIMIT = 4096
"""Telegram's limit on a message's text, in UTF-16 code units of the text once its HTML is
parsed; a digest measures its HTML, which is never shorter."""
DIGEST_BRIEF = 5
"""A digest of more entries than this ends with the hint to use /notices for the details."""
DIGEST_NAME_MAX = 40
"""A digest line cuts a longer target name (/notices shows it whole)."""
_HEADING = 24
"""What a section heading adds to a message, at most (a blank line, the kind, the tags)."""
_SEPARATOR = Markup("\x00")
"""Ends each rendered entry: passed in, so never escaped; not whitespace, so never stripped."""


class DigestEntry(NamedTuple):
    """One line of a digest (templates/notices/digest_entries.j2), its parts ready to print."""

    order: int
    """The line's number in the digest (1, 2, …, across its messages)."""
    number: str | None
    label: str
    department: str
    target: str | None
    responsible: str
    deadline_label: str
    deadline: str
    estimated: bool


def digest_entry(order: int, notice: NoticeView, duty: DutyView) -> DigestEntry:
    """A notice as a digest line: the deadline that matters now (a 怠政督办单's new one,
    otherwise the duty's); a group's duty (``public()``) has no target or responsible."""
    if notice.kind == SUPERVISION and notice.new_deadline_text:
        deadline, estimated = notice.new_deadline_text, notice.estimated
    else:
        deadline, estimated = duty.deadline_text, duty.estimated
    target = duty.target_name
    if target and len(target) > DIGEST_NAME_MAX:
        target = target[: DIGEST_NAME_MAX - 1] + "…"
    return DigestEntry(
        order=order,
        number=notice.number,
        label=duty.label,
        department=duty.department,
        target=target,
        responsible="、".join(duty.responsible),
        deadline_label=_deadline_label(notice.kind),
        deadline=deadline,
        estimated=estimated,
    )


@lru_cache(maxsize=8)
def _deadline_label(kind: str) -> str:
    return text(f"notice.digest.deadline.{kind}")


@lru_cache(maxsize=8)
def _kind_name(kind: str) -> str:
    return text(f"notice.kind.{kind}")


def _units(body: str) -> int:
    return len(body.encode("utf-16-le")) // 2


def _digest_messages(digest: _Digest, today: date) -> list[Envelope]:
    """The recipient's digest: its entries by kind (督办 before 提醒), department and notice, in
    as many messages as Telegram's limit needs. Each is keyed by the first and last notice id it
    covers and its part number: the batch's notices are its own, so no other batch, and no
    second sweeper, can come to the same key, and a batch that rolls back queued nothing."""
    digest.entries.sort(key=lambda e: (-RANK[e[0].kind], e[1].department_code, e[0].id))
    entries = [digest_entry(n, notice, duty) for n, (notice, duty) in enumerate(digest.entries, 1)]
    kinds = [notice.kind for notice, _ in digest.entries]
    departments = len({duty.department_code for _, duty in digest.entries}) > 1
    rendered = _render(
        "notices/digest_entries.j2", entries=entries, departments=departments, sep=_SEPARATOR
    )
    lines = [Markup(line.strip()) for line in rendered.split(_SEPARATOR)[:-1]]
    if len(lines) != len(entries):  # the separator inside a name: one entry at a time
        lines = [
            Markup(
                _render("notices/digest_entries.j2", entries=[e], departments=departments, sep="")
            )
            for e in entries
        ]
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    context: dict[str, Any] = {
        "issued_on": day_text(today),
        "total": len(entries),
        "counts": [(_kind_name(kind), n) for kind, n in counts.items()],
        "group": digest.is_group,
        "hint": len(entries) > DIGEST_BRIEF,
        "estimated": any(e.estimated for e in entries),
    }

    def body(rows: list[tuple[str | None, Markup]], part: int, parts: int) -> str:
        return _render(
            "notices/digest.j2", rows=rows, part=part, parts=parts, last=part == parts, **context
        )

    sections = len(counts) > 1  # one kind: the count line says it
    budget = TELEGRAM_LIMIT - _units(body([], 999, 999))
    parts: list[list[tuple[str | None, Markup]]] = []
    used = 0
    kind_before = None
    for kind, line in zip(kinds, lines, strict=True):
        size = _units(line) + 1
        if not parts or used + size + _HEADING > budget:
            parts.append([])
            used = 0
            kind_before = None  # a message that goes on with a section repeats its heading
        heading = _kind_name(kind) if sections and kind != kind_before else None
        parts[-1].append((heading, line))
        used += size + (_HEADING if heading else 0)
        kind_before = kind
    ids = [notice.id for notice, _ in digest.entries]
    covered = f"{min(ids)}-{max(ids)}"
    return [
        Envelope(
            key=f"notice:digest:{covered}:{digest.chat_id}:{part}",
            chat_id=digest.chat_id,
            text=body(rows, part, len(parts)),
            is_group=digest.is_group,
        )
        for part, rows in enumerate(parts, start=1)
    ]


# --- reading notices back -----------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    notice: NoticeView
    duty: DutyView


def _notice_view(notice: Notice, supervision_number: str | None, calendar: Calendar) -> NoticeView:
    issued_on = notice.issued_at.date()
    return NoticeView(
        id=notice.id or 0,
        kind=notice.kind,
        number=number_label(notice.kind, notice.year, notice.seq),
        year=notice.year,
        issued_on=issued_on,
        new_deadline=notice.deadline,
        new_deadline_text=day_text(notice.deadline) if notice.deadline else None,
        estimated=notice.deadline is not None
        and calendar.estimated_between(issued_on, notice.deadline),
        status=notice.status,
        closed_late=notice.closed_late,
        decision=notice.decision,
        reason=notice.decision_reason,
        supervision_number=supervision_number,
        closed_at=notice.closed_at,
        decided_by=notice.decided_by,
        decided_at=notice.decided_at,
    )


async def _listed(
    session: AsyncSession,
    pairs: Sequence[tuple[Notice, Duty]],
    *,
    calendar: Calendar,
    today: date,
    tz: str,
    people: People | None = None,
) -> list[Listed]:
    duties = [_row_of(duty) for _, duty in pairs]
    people = people or await load_people(session, ())
    subjects = await load_subjects(
        session, (d.inspection_id for d in duties if d.inspection_id is not None)
    )
    await load_inspector_names(
        session,
        people,
        (i for d in duties for i in _responsible_inspectors(d, subjects.get(d.inspection_id or 0))),
    )
    numbers = await _supervision_numbers(
        session, [d.id for (n, _), d in zip(pairs, duties, strict=True) if n.kind == ACCOUNTABILITY]
    )
    listed = []
    for (notice, _), duty in zip(pairs, duties, strict=True):
        issued = to_local(notice.issued_at, tz).date()
        view = replace(_notice_view(notice, numbers.get(duty.id), calendar), issued_on=issued)
        listed.append(
            Listed(
                view,
                duty_view(duty, people, subjects.get(duty.inspection_id or 0), calendar, today),
            )
        )
    return listed


def _row_of(duty: Duty) -> DutyRow:
    return DutyRow(
        id=duty.id or 0,
        kind=duty.kind,
        subject=duty.subject,
        inspection_id=duty.inspection_id,
        inspector_id=duty.inspector_id,
        responsible_role=duty.responsible_role,
        department_code=duty.department_code,
        deadline=duty.deadline,
        stage=duty.stage,
        supervision_deadline=duty.supervision_deadline,
        created_at=duty.created_at,
    )


@dataclass(frozen=True)
class Scope:
    """Whose notices a caller sees: everything (the office), some departments (liaisons, a
    department group), or the duties of some inspectors."""

    everything: bool = False
    departments: tuple[str, ...] = ()
    inspector_ids: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.everything or self.departments or self.inspector_ids)


@dataclass
class NoticeList:
    items: list[Listed]
    counts: dict[str, int]
    undecided: int
    total: int


LIST_LIMIT = 20


def _pending() -> Any:
    """Open notices of open duties, and 失职问责单 still waiting for the office's decision (even
    when the duty was done late in the meantime), unless the duty was cancelled. Read from the
    duty too, so a duty another feature closes without ``complete_duty`` drops off the list."""
    return or_(
        (col(Notice.status) == "open") & (col(Duty.status) == DutyStatus.OPEN),
        (col(Notice.kind) == ACCOUNTABILITY)
        & col(Notice.decision).is_(None)
        & (col(Duty.status) != DutyStatus.CANCELLED),
    )


def _scoped(query: Any, scope: Scope) -> Any:
    if scope.everything:
        return query
    conditions: list[Any] = []
    if scope.departments:
        conditions.append(col(Duty.department_code).in_(scope.departments))
    if scope.inspector_ids:
        seats = select(Assignment.inspection_id).where(
            col(Assignment.inspector_id).in_(scope.inspector_ids),
            col(Assignment.status).in_(_ACTIVE_SEATS),
        )
        conditions.append(col(Duty.inspector_id).in_(scope.inspector_ids))
        conditions.append(
            col(Duty.inspector_id).is_(None)
            & (col(Duty.responsible_role) == Role.INSPECTOR)
            & col(Duty.inspection_id).in_(seats)
        )
    return query.where(or_(*conditions))


async def list_pending(
    session: AsyncSession,
    scope: Scope,
    *,
    calendar: Calendar,
    today: date,
    tz: str,
    limit: int = LIST_LIMIT,
) -> NoticeList:
    """The pending notices of a scope, newest first, one line per duty (its most advanced
    notice), with counts per kind."""
    if scope.empty:
        return NoticeList([], {}, 0, 0)
    joined = select(Notice.kind, func.count()).join(Duty, col(Duty.id) == col(Notice.duty_id))
    counted = await session.exec(
        _scoped(joined.where(_pending()), scope).group_by(col(Notice.kind))
    )
    counts = {kind: int(n) for kind, n in counted}
    undecided_query = select(func.count()).select_from(Notice)
    undecided_query = undecided_query.join(Duty, col(Duty.id) == col(Notice.duty_id)).where(
        Notice.kind == ACCOUNTABILITY, col(Notice.decision).is_(None)
    )
    undecided = int((await session.exec(_scoped(undecided_query, scope))).one())
    total_query = (
        select(func.count(func.distinct(Notice.duty_id)))
        .select_from(Notice)
        .join(Duty, col(Duty.id) == col(Notice.duty_id))
        .where(_pending())
    )
    total = int((await session.exec(_scoped(total_query, scope))).one())
    rows = await session.exec(
        _scoped(
            select(Notice, Duty).join(Duty, col(Duty.id) == col(Notice.duty_id)).where(_pending()),
            scope,
        )
        .order_by(col(Notice.issued_at).desc(), col(Notice.id).desc())
        .limit(limit * 3)
    )
    best: dict[int, tuple[Notice, Duty]] = {}
    for notice, duty in rows:
        kept = best.get(duty.id or 0)
        if kept is None or RANK[notice.kind] > RANK[kept[0].kind]:
            best[duty.id or 0] = (notice, duty)
    pairs = sorted(best.values(), key=lambda p: (p[0].issued_at, p[0].id or 0), reverse=True)
    items = await _listed(session, pairs[:limit], calendar=calendar, today=today, tz=tz)
    return NoticeList(items, counts, undecided, total)


async def one_notice(
    session: AsyncSession, notice_id: int, *, calendar: Calendar, today: date, tz: str
) -> Listed | None:
    row = (
        await session.exec(
            select(Notice, Duty)
            .join(Duty, col(Duty.id) == col(Notice.duty_id))
            .where(Notice.id == notice_id)
        )
    ).first()
    if row is None:
        return None
    (listed,) = await _listed(session, [row], calendar=calendar, today=today, tz=tz)
    return listed


# --- the office's decision ----------------------------------------------------------------------


class NoticeProblem(Exception):
    """``key`` names ``notice.answer.<key>``."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


async def decide(
    session: AsyncSession,
    *,
    notice_id: int,
    decision: str,
    reason: str,
    typed: bool,
    actor: str,
    now: datetime,
    today: date,
    calendar: Calendar,
    tz: str,
) -> Listed:
    """Record 问责 or 免责 on a 失职问责单 and tell the department. Exactly one decision wins when
    two office members press at once: the update only applies while no decision is recorded."""
    reason = reason.strip()[:REASON_MAX]
    if decision not in DECISION_WORDS or not reason:
        raise NoticeProblem("not_found")
    result = await session.exec(
        update(NOTICE)
        .where(
            NOTICE.c.id == notice_id,
            NOTICE.c.kind == ACCOUNTABILITY,
            NOTICE.c.decision.is_(None),
        )
        .values(
            decision=DECISION_WORDS[decision],
            decision_reason=reason,
            decided_by=actor,
            decided_at=now,
            status="decided",
        )
    )
    if not result.rowcount:
        existing = await session.get(Notice, notice_id)
        if existing is None or existing.kind != ACCOUNTABILITY:
            raise NoticeProblem("not_found")
        raise NoticeProblem("already_decided")
    listed = await one_notice(session, notice_id, calendar=calendar, today=today, tz=tz)
    assert listed is not None
    await record(
        session,
        actor=actor,
        action="notice.decide",
        entity="notice",
        entity_id=str(notice_id),
        at=now,
        detail={"decision": DECISION_WORDS[decision], "reason": reason, "typed": typed},
    )
    people = await load_people(session, ())
    department = listed.duty.department_code
    body = _render("notices/decision.j2", notice=listed.notice, duty=listed.duty)
    group_body = _render(
        "notices/decision_group.j2",
        notice=listed.notice,
        duty=listed.duty.public(),
        show_reason=not typed,
    )
    messages = [
        Envelope(f"notice:decision:{notice_id}:{chat}", chat, body)
        for chat in people.liaisons.get(department, [])
    ]
    messages += [
        Envelope(f"notice:decision:{notice_id}:{chat}", chat, group_body, is_group=True)
        for chat in people.department_groups.get(department, [])
    ]
    await enqueue_many(session, messages, now=now)
    return listed


# --- the export ---------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "number",
    "kind",
    "status",
    "department",
    "duty",
    "target",
    "target_code",
    "tasks",
    "responsible",
    "deadline",
    "new_deadline",
    "issued",
    "closed",
    "decision",
    "reason",
    "decided_by",
    "decided_at",
)


def _status_text(notice: NoticeView) -> str:
    if notice.status == "closed" and notice.closed_late:
        return text("notice.status.closed_late")
    return text(f"notice.status.{notice.status}")


async def export_notices(
    session: AsyncSession,
    out: Path,
    *,
    calendar: Calendar,
    today: date,
    tz: str,
    pending_only: bool = False,
) -> int:
    """Every notice (or only pending ones) in an .xlsx ledger, oldest first; returns the count."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(text("notice.export.sheet"))
    sheet.append([text(f"notice.export.col.{c}") for c in EXPORT_COLUMNS])
    query = select(Notice, Duty).join(Duty, col(Duty.id) == col(Notice.duty_id))
    if pending_only:
        query = query.where(_pending())
    rows = list(await session.exec(query.order_by(col(Notice.issued_at), col(Notice.id))))
    people = await load_people(session, ())
    count = 0
    for chunk in _chunks(rows, 2000):
        for item in await _listed(
            session, chunk, calendar=calendar, today=today, tz=tz, people=people
        ):
            n, d = item.notice, item.duty
            sheet.append(
                [
                    n.number or "",
                    text(f"notice.kind.{n.kind}"),
                    _status_text(n),
                    d.department,
                    d.label,
                    d.target_name or "",
                    d.target_code or "",
                    "、".join(d.tasks),
                    "、".join(d.responsible),
                    d.deadline,
                    n.new_deadline,
                    n.issued_on,
                    _local(n.closed_at, tz),
                    n.decision or "",
                    n.reason or "",
                    n.decided_by or "",
                    _local(n.decided_at, tz),
                ]
            )
            count += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(out)
    return count


def _local(moment: datetime | None, tz: str) -> datetime | None:
    # Excel has no time zones: the office reads local wall-clock time.
    return to_local(moment, tz).replace(tzinfo=None) if moment else None
