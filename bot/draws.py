"""The draw against the database (随机抽取): who may be drawn, the commitment, the execution,
voiding, verification, the exported record, joint-inspection merging (联合抽查) and the
replacement after an approved recusal.

The algorithm itself is `bot.draw` (dsr-draw/1, pure); this module feeds it from the
directories and turns its record into inspections, seats and duties. Decisions the issue left
open are written down in docs/draws-service.md. Services never commit: the caller's unit of
work does, so an execution and its announcements land together or not at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import filterfalse
from typing import Any

from sqlalchemy import Table, Text, case, insert, or_
from sqlalchemy import cast as sql_cast
from sqlalchemy import select as sql_select
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import draw as dsr
from bot.assignments import announce_assignments
from bot.dossier import DEFAULT_TIMEZONE, inspector_chat, inspector_chats
from bot.draw import Candidate, DrawParams, DrawRecord, Mode, Policy
from bot.duties import DutySpec, cancel_duties, open_duties
from bot.outbox import Envelope, Keyboard, enqueue, enqueue_edit, enqueue_many, mark_sent
from bot.render import render, text
from bot.tasks import TaskProblem, mode_of, percent
from bot.telegram import AssignmentCb, DrawCb
from storage.audit import record
from storage.db import fetch_rows
from storage.models import (
    LIVE_SEATS,
    Assignment,
    AssignmentStatus,
    ChatBinding,
    CheckItem,
    Department,
    DepartmentKind,
    Draw,
    DrawStatus,
    Duty,
    DutyStatus,
    Inspection,
    InspectionItem,
    InspectionStatus,
    Inspector,
    Target,
    Task,
    TaskStatus,
)

log = logging.getLogger(__name__)

# An open inspection keeps its target out of other draws (DOMAIN §4) ...
OPEN_INSPECTIONS = (
    InspectionStatus.ASSIGNED,
    InspectionStatus.CONFIRMED,
    InspectionStatus.SUBMITTED,
    InspectionStatus.COSIGNED,
    InspectionStatus.SHORTFALL,
)
# ... unless nobody has entered a result yet, so another task's items can still join the visit.
JOINABLE = (InspectionStatus.ASSIGNED, InspectionStatus.CONFIRMED)
# A draw can be voided while none of its inspections has a result.
VOIDABLE = (InspectionStatus.ASSIGNED, InspectionStatus.CONFIRMED, InspectionStatus.SHORTFALL)
LIST_CHUNK = 20  # inspections per private message of a liaison's list
_SPLIT = re.compile(r"[;；,，、\s]+")
_STATION_SUFFIXES = ("市场监督管理所", "市场监管所", "监管所", "管理所", "所")


class DrawProblem(TaskProblem):
    """Why a draw operation cannot go ahead; `key` names the message under `draw.problem.`."""

    scope = "draw"


def _split(value: str) -> frozenset[str]:
    return frozenset(p for p in _SPLIT.split(value or "") if p)


# --- who may be drawn ------------------------------------------------------------------------


def params_for(task: Task, items: Sequence[CheckItem], mode: Mode) -> DrawParams:
    """The task's settings in the pure module's terms (all of them go into the record)."""
    policy = Policy(task.ratio_policy)
    class_ratios = dict(dsr.DEFAULT_CLASS_RATIOS)
    flat: Decimal | None = None
    if policy is Policy.CREDIT:
        class_ratios.update({c: Decimal(task.ratios[c]) for c in dsr.CLASSES if c in task.ratios})
    elif policy is Policy.FLAT:
        flat = Decimal(task.ratios["flat"])
    by_code = {i.code: i for i in items}
    return DrawParams(
        policy=policy,
        class_ratios=class_ratios,
        flat_ratio=flat,
        flag_threshold=task.flag_threshold,
        group_size=task.group_size,
        mode=mode,
        stations=tuple(task.stations),
        items={
            code: tuple(sorted(_split(by_code[code].expertise))) if code in by_code else ()
            for code in task.item_codes
        },
        # One department needs no coverage rule: everyone in the pool is from it.
        departments=tuple(task.department_codes) if len(task.department_codes) > 1 else (),
    )


@dataclass(frozen=True)
class OpenInspection:
    id: int
    target_key: str
    status: str
    window_start: date
    window_end: date
    task_ids: frozenset[int]
    all_mergeable: bool
    draw_id: int


async def _open_inspections(session: AsyncSession) -> dict[str, list[OpenInspection]]:
    """Open inspections by target key, with the tasks whose live items they hold."""
    rows = await session.exec(
        select(Inspection, InspectionItem.task_id, Task.mergeable)
        .join(InspectionItem, col(InspectionItem.inspection_id) == col(Inspection.id))
        .join(Task, col(Task.id) == col(InspectionItem.task_id))
        .where(
            col(Inspection.status).in_(OPEN_INSPECTIONS), col(InspectionItem.voided_at).is_(None)
        )
    )
    found: dict[int, dict[str, Any]] = {}
    for inspection, task_id, mergeable in rows:
        entry = found.setdefault(
            inspection.id or 0,
            {
                "key": inspection.target_key,
                "status": inspection.status,
                "start": inspection.window_start,
                "end": inspection.window_end,
                "draw": inspection.draw_id,
            },
        )
        entry.setdefault("tasks", set()).add(task_id)
        entry["mergeable"] = entry.get("mergeable", True) and bool(mergeable)
    out: dict[str, list[OpenInspection]] = {}
    for iid, e in sorted(found.items()):
        out.setdefault(e["key"], []).append(
            OpenInspection(
                iid,
                e["key"],
                e["status"],
                e["start"],
                e["end"],
                frozenset(e["tasks"]),
                e["mergeable"],
                e["draw"],
            )
        )
    return out


def joinable(inspection: OpenInspection, task_id: int | None, start: date, end: date) -> bool:
    """Can a visit for this task be the same as that inspection ("进一次门，查多项事")?

    Another task, windows that overlap, nobody has entered a result yet. Such an inspection
    does not keep the target out of the task's draw (名单比对 finds the overlap instead).
    """
    return (
        inspection.status in JOINABLE
        and task_id not in inspection.task_ids
        and inspection.window_start <= end
        and start <= inspection.window_end
    )


def automatic(inspection: OpenInspection, task: Task) -> bool:
    """Merged at once when every task involved allows it; otherwise the office uses /merge."""
    return task.mergeable and inspection.all_mergeable


async def excluded_keys(session: AsyncSession, task: Task) -> dict[str, str]:
    """Targets this task may not draw, and why: 'inspected' (this year, one of its items) or
    'open' (in an open inspection this task cannot join)."""
    out: dict[str, str] = {}
    if not task.reinspect:
        rows = await session.exec(
            select(Inspection.target_key)
            .join(InspectionItem, col(InspectionItem.inspection_id) == col(Inspection.id))
            .where(
                InspectionItem.year == task.year,
                col(InspectionItem.item_code).in_(task.item_codes),
                col(InspectionItem.voided_at).is_(None),
                Inspection.status != InspectionStatus.CANCELLED,
            )
        )
        out.update(dict.fromkeys(rows, "inspected"))
    for key, inspections in (await _open_inspections(session)).items():
        if key in out:
            continue
        if not all(joinable(i, task.id, task.window_start, task.window_end) for i in inspections):
            out[key] = "open"
    return out


def station_stem(name: str) -> str:
    """'城关市场监管所' -> '城关': the part a target's region starts with (异地交叉)."""
    for suffix in _STATION_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def region_key(region: str, stems: Sequence[str]) -> str:
    """A target's region as the stations see it: '城关镇' -> '城关' when a station is 城关所."""
    best = ""
    for stem in stems:
        if stem and region.startswith(stem) and len(stem) > len(best):
            best = stem
    return best or region


@dataclass
class CandidateSet:
    """The draw's candidates in `Candidate` field order (key, class, flagged, region).

    In the common case (no 异地交叉, no tag filter) a `dsr.CandidateGroups`: a million named
    tuples cost a second, a million rows most of one; it reads as (key, class, flagged)
    tuples. Read candidates by index either way.
    """

    candidates: Sequence[Candidate]
    excluded: Counter[str]

    def keys(self) -> Iterator[str]:
        if isinstance(self.candidates, dsr.CandidateGroups):
            return self.candidates.keys()
        return (c[0] for c in self.candidates)


def _scope(columns: Sequence[Any], task: Task, dialect: str) -> Any:
    """Targets in the task's scope: active, 存续, its region/industry/subject-type filters;
    in code-point order (PostgreSQL's "C" collation: a locale's order is both slower to sort
    and not the order the draw sorts in)."""
    query = select(*columns).where(col(Target.active).is_(True), Target.status == "存续")
    for name, column in (
        ("regions", Target.region),
        ("industries", Target.industry),
        ("subject_types", Target.subject_type),
    ):
        values = task.filters.get(name) or []
        if values:
            query = query.where(col(column).in_(values))
    key = col(Target.key).collate("C") if dialect == "postgresql" else col(Target.key)
    return query.order_by(key)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def candidates(session: AsyncSession, task: Task, mode: Mode) -> CandidateSet:
    """In scope, 存续, active, not excluded; sorted by key (the pure draw is fastest so)."""
    excluded = await excluded_keys(session, task)
    flagged = or_(
        col(Target.abnormal).is_(True),
        col(Target.serious_illegal).is_(True),
        col(Target.complaints) >= task.flag_threshold,
    )
    cross = mode is Mode.CROSS_REGION
    tags = set(task.filters.get("tags") or [])
    dialect = _dialect(session)
    counter: Counter[str] = Counter()
    if not cross and not tags:
        groups = await _candidate_groups(session, task, flagged, dialect)
        if excluded:
            for code, keys in groups.items():
                counter.update(map(excluded.__getitem__, filter(excluded.__contains__, keys)))
                groups[code] = list(filterfalse(excluded.__contains__, keys))
        return CandidateSet(dsr.CandidateGroups(groups), counter)
    # 异地交叉 and tag filters need a column each and a look at every row.
    columns: list[Any] = [Target.key, Target.credit_class, case((flagged, True), else_=False)]
    if cross:
        columns.append(Target.region)
    if tags:
        columns.append(Target.tags)
    stems = await _station_stems(session, task) if cross else []
    with paused_gc():
        rows = await fetch_rows(session, _scope(columns, task, dialect))
        found: list[Any] = []
        for row in rows:
            key = row[0]
            why = excluded.get(key)
            if why is not None:
                counter[why] += 1
            elif tags and not (_split(row[-1]) & tags):
                continue
            else:
                region = region_key(row[3], stems) if cross else ""
                found.append(Candidate(key, row[1], bool(row[2]), region))
    return CandidateSet(found, counter)


async def _candidate_groups(
    session: AsyncSession, task: Task, flagged: Any, dialect: str
) -> dict[int, list[str]]:
    """The candidates in scope per (credit class, flagged) code (dsr.CandidateGroups), read as
    one row: per code, its keys joined with newlines.

    A million candidates as rows cost the driver a tuple each (more than reading the keys
    alone, and the draw then splits them into strata); here the database joins each code's
    keys and the reader only splits ten strings. The keys come in key order from the ordered
    subquery; the draw checks that (and would sort them), so it is not taken on trust. One
    count of all of them finds a key with a newline (it would split in two): a count per code
    costs the database more than the rest of the query (measured).
    """
    groups = dsr.CandidateGroups
    code = case(groups.CLASS_CODES, value=Target.credit_class, else_=len(groups.CODES)) + case(
        (flagged, groups.FLAGGED), else_=0
    )
    scoped = _scope([Target.key, code.label("code")], task, dialect).subquery()
    joined = [
        func.aggregate_strings(scoped.c.key, "\n").filter(scoped.c.code == c) for c in groups.CODES
    ]
    other = func.count().filter(scoped.c.code >= len(groups.CODES))  # another credit class
    with paused_gc():
        ((*found, total, bad),) = await fetch_rows(
            session, sql_select(*joined, func.count(), other)
        )
    if bad:
        raise ValueError(f"{bad} candidate(s) with a credit class other than A, B, C, D or blank")
    out = {
        c: text_.split("\n")
        for c, text_ in zip(groups.CODES, found, strict=True)
        if text_ is not None
    }
    if sum(map(len, out.values())) != total:
        raise ValueError("a candidate key contains a newline")
    return out


@contextmanager
def paused_gc() -> Iterator[None]:
    """A million new tuples make the cyclic collector rescan everything again and again
    (more than half the time of building the candidates); nothing here makes cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def read_candidate_keys(session: AsyncSession, task: Task) -> list[str]:
    """Only the keys in scope, read the same way (the benchmark's yardstick)."""
    with paused_gc():
        scope = _scope([Target.key], task, _dialect(session))
        return [row[0] for row in await fetch_rows(session, scope)]


async def _station_stems(session: AsyncSession, task: Task) -> list[str]:
    rows = await session.exec(
        select(Department.name).where(
            Department.kind == DepartmentKind.STATION,
            col(Department.parent_code).in_(task.department_codes),
        )
    )
    return [station_stem(n) for n in rows]


@dataclass(frozen=True)
class PoolMember:
    inspector_id: int
    name: str
    entry: dsr.Inspector


async def pool(session: AsyncSession, task: Task, mode: Mode) -> list[PoolMember]:
    """Active, certified inspectors of the task's departments and the mode's stations.

    A station (kind 所) belongs to the department named as its parent; an inspector belongs
    to a station when their department is the station, or their 单位/所 names one of its
    stations. Everyone else of the department is 局机关 (bureau) staff.
    """
    depts = {d.code: d for d in await session.exec(select(Department))}
    by_unit: dict[tuple[str, str], Department] = {}
    for d in depts.values():
        if d.kind == DepartmentKind.STATION and d.parent_code:
            by_unit[(d.parent_code, d.name)] = d
            by_unit[(d.parent_code, d.code)] = d
    wanted = set(task.department_codes)
    stations = set(task.stations)
    out: list[PoolMember] = []
    # Thousands of new objects next to a drawn million: a collection would rescan the million
    # (a quarter of a second, measured), and these make no cycles. Columns, not ORM objects:
    # a fraction of the time for a bureau's thousands.
    with paused_gc():
        rows = await fetch_rows(
            session,
            sql_select(
                col(Inspector.id),
                col(Inspector.name),
                col(Inspector.cert_no),
                col(Inspector.department_code),
                col(Inspector.unit),
                col(Inspector.expertise),
                col(Inspector.conflicts),
            )
            .where(col(Inspector.active).is_(True), col(Inspector.certified).is_(True))
            .order_by(col(Inspector.cert_no)),
        )
        for inspector_id, name, cert_no, department_code, unit, expertise, conflicts in rows:
            home = depts.get(department_code)
            if home is None or not home.active:
                continue
            station: Department | None
            if home.kind == DepartmentKind.STATION:
                station, bureau = home, home.parent_code or home.code
            else:
                bureau = (
                    home.code
                    if home.kind == DepartmentKind.DEPARTMENT
                    else home.parent_code or home.code
                )
                station = by_unit.get((bureau, unit.strip()))
            if bureau not in wanted:
                continue
            if mode in (Mode.STATIONS, Mode.STATION) and (
                station is None or station.code not in stations
            ):
                continue
            if (
                mode is Mode.BUREAU_STATIONS
                and stations
                and station is not None
                and station.code not in stations
            ):
                continue
            entry = dsr.Inspector(
                cert_no=cert_no,
                department=bureau,
                unit=station.code if station else "",
                # Bureau staff are from no township: in 异地交叉 they may go anywhere.
                region=station_stem(station.name) if station else bureau,
                expertise=_split(expertise),
                conflicts=_split(conflicts),
            )
            out.append(PoolMember(inspector_id, name, entry))
    return out


def pool_digest(members: Iterable[dsr.Inspector]) -> str:
    """Fingerprint of the pool's public fields (the record's `inspectors`, minus conflicts)."""
    lines = sorted(
        "\t".join((i.cert_no, i.department, i.unit, i.region, ";".join(sorted(i.expertise))))
        for i in members
    )
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


async def previous_groups(session: AsyncSession) -> dict[str, tuple[str, ...]]:
    """Each target's group at its latest inspection that was not cancelled (rotation)."""
    latest = (
        select(Inspection.target_key, func.max(Inspection.id).label("iid"))
        .where(Inspection.status != InspectionStatus.CANCELLED)
        .group_by(col(Inspection.target_key))
        .subquery()
    )
    out: dict[str, list[str]] = {}
    with paused_gc():  # as in pool: a drawn million may be in memory
        rows = await session.exec(
            select(latest.c.target_key, Inspector.cert_no)
            .join(Assignment, col(Assignment.inspection_id) == latest.c.iid)
            .join(Inspector, col(Inspector.id) == col(Assignment.inspector_id))
            .where(col(Assignment.status).in_(LIVE_SEATS))
        )
        for key, cert in rows:
            out.setdefault(key, []).append(cert)
        return {k: tuple(sorted(v)) for k, v in out.items()}


# --- small lookups -----------------------------------------------------------------------------


MAX_ID = 2**31 - 1  # PostgreSQL integer keys: a bigger number typed or forged is unknown


async def _task(session: AsyncSession, task_id: int) -> Task:
    task = await session.get(Task, task_id) if 0 < task_id <= MAX_ID else None
    if task is None:
        raise DrawProblem("unknown_task", task_id=task_id)
    return task


async def _draw(session: AsyncSession, draw_id: int) -> Draw:
    found = (
        (
            await session.exec(
                select(Draw).where(Draw.id == draw_id).execution_options(populate_existing=True)
            )
        ).first()
        if 0 < draw_id <= MAX_ID
        else None
    )
    if found is None:
        raise DrawProblem("unknown_draw", draw_id=draw_id)
    return found


async def _items(session: AsyncSession, task: Task) -> list[CheckItem]:
    rows = await session.exec(select(CheckItem).where(col(CheckItem.code).in_(task.item_codes)))
    by_code = {i.code: i for i in rows}
    return [by_code[c] for c in task.item_codes if c in by_code]


async def _names(session: AsyncSession, codes: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    rows = await session.exec(select(Department).where(col(Department.code).in_(wanted)))
    return {d.code: d.name for d in rows}


async def office_chats(session: AsyncSession) -> list[int]:
    rows = await session.exec(
        select(ChatBinding.chat_id).where(
            ChatBinding.kind == "office", col(ChatBinding.active).is_(True)
        )
    )
    return sorted(rows)


async def department_chats(session: AsyncSession, code: str) -> list[int]:
    rows = await session.exec(
        select(ChatBinding.chat_id).where(
            ChatBinding.kind == "department",
            ChatBinding.department_code == code,
            col(ChatBinding.active).is_(True),
        )
    )
    return sorted(rows)


async def _to_groups(
    session: AsyncSession,
    chats: Iterable[int],
    *,
    key: str,
    text: str,
    now: datetime,
    buttons: Keyboard | None = None,
) -> None:
    """The same message to each of these group chats, keyed `key:chat` (once per chat)."""
    for chat in chats:
        await enqueue(
            session,
            key=f"{key}:{chat}",
            chat_id=chat,
            is_group=True,
            text=text,
            buttons=buttons,
            now=now,
        )


def stratum_label(name: str) -> str:
    return text(f"draw.stratum.{name}")


# --- step 1: the commitment --------------------------------------------------------------------


@dataclass(frozen=True)
class StratumLine:
    name: str
    label: str
    ratio: str  # '10%'
    count: int
    quota: int
    selected: int | None = None


@dataclass
class TaskView:
    """The task's parameters as the announcements show them."""

    id: int
    name: str
    year: int
    departments: list[str]  # names
    lead: str
    items: list[str]  # codes
    policy: str
    mode: str
    stations: list[str]
    group_size: int
    window_start: date
    window_end: date
    method: str
    mergeable: bool
    reinspect: bool
    flag_threshold: int
    filters: dict[str, list[str]]


async def task_view(session: AsyncSession, task: Task, mode: Mode) -> TaskView:
    assert task.id is not None
    names = await _names(session, [*task.department_codes, *task.stations])
    return TaskView(
        id=task.id,
        name=task.name,
        year=task.year,
        departments=[names.get(c, c) for c in task.department_codes],
        lead=names.get(task.lead_department, task.lead_department),
        items=list(task.item_codes),
        policy=task.ratio_policy,
        mode=mode.value,
        stations=[names.get(c, c) for c in task.stations],
        group_size=task.group_size,
        window_start=task.window_start,
        window_end=task.window_end,
        method=task.method,
        mergeable=task.mergeable,
        reinspect=task.reinspect,
        flag_threshold=task.flag_threshold,
        filters={k: list(v) for k, v in task.filters.items() if v},
    )


@dataclass
class Commitment:
    draw_id: int
    task: TaskView
    commitment: str
    candidate_digest: str
    candidate_count: int
    pool_size: int
    pool_digest: str
    strata: list[StratumLine]
    empty: list[str]
    excluded: dict[str, int]
    warnings: list[str]
    office_chats: list[int]
    reply: str | None = None
    """The commitment as the caller shows it in ``reply_chat`` (then ``commitment_shown``)."""


def _strata_preview(cands: Sequence[Candidate], params: DrawParams) -> list[StratumLine]:
    ratios = dsr.stratum_ratios(params)
    # Count (class, flag) pairs first: a handful of distinct pairs, each mapped once.
    pairs: Counter[tuple[str, bool]] = Counter((c[1], bool(c[2])) for c in cands)
    counts: Counter[str] = Counter()
    for (cls, flag), n in pairs.items():
        counts[dsr.stratum_of(Candidate("", cls, flag), params.policy)] += n
    return [
        StratumLine(name, stratum_label(name), percent(r), counts[name], dsr.quota(counts[name], r))
        for name, r in ratios.items()
    ]


def commitment_buttons(draw_id: int) -> Keyboard:
    return [
        [
            (text("draw.button.execute"), DrawCb(act="run", draw_id=draw_id).pack()),
            (text("draw.button.abandon"), DrawCb(act="drop", draw_id=draw_id).pack()),
        ]
    ]


async def commit_draw(
    session: AsyncSession,
    *,
    task_id: int,
    actor: str,
    now: datetime,
    mode: str | None = None,
    post_to_office: bool = True,
    with_buttons: bool = True,
    reply_chat: int | None = None,
) -> Commitment:
    """Step 1: fix the candidates and a secret seed; publish the commitment sha256(seed).

    The office group gets the commitment (with 执行抽取/放弃 when it came from chat) unless
    the caller already shows it there (`post_to_office=False`). A caller that answers in chat
    names it (`reply_chat`): the answer (`Commitment.reply`) is queued too, as a direct answer
    the caller sends itself (`commitment_shown`), so that every copy can lose its buttons once
    the draw is executed, abandoned or voided (`_retire_commitment`).
    """
    task = await _task(session, task_id)
    assert task.id is not None
    if task.status == TaskStatus.CLOSED:
        raise DrawProblem("task_closed", task_id=task.id)
    for other in await session.exec(
        select(Draw).where(
            Draw.task_id == task.id,
            col(Draw.status).in_([DrawStatus.COMMITTED, DrawStatus.EXECUTED]),
        )
    ):
        key = "pending" if other.status == DrawStatus.COMMITTED else "already_drawn"
        raise DrawProblem(key, task_id=task.id, draw_id=other.id)
    chosen = mode_of(mode) if mode else mode_of(task.selection_mode)
    if chosen in (Mode.STATIONS, Mode.STATION) and not task.stations:
        raise DrawProblem("mode_needs_stations", mode=text(f"draw.mode.{chosen.value}"))
    items = await _items(session, task)
    params = params_for(task, items, chosen)
    cands = await candidates(session, task, chosen)
    if not cands.candidates:
        raise DrawProblem("no_candidates", task_id=task.id, excluded=sum(cands.excluded.values()))
    members = await pool(session, task, chosen)
    if len(members) < task.group_size:
        raise DrawProblem(
            "pool_too_small",
            count=len(members),
            size=task.group_size,
            mode=text(f"draw.mode.{chosen.value}"),
        )
    office = await office_chats(session)
    copies = [reply_chat] if reply_chat is not None else []
    if post_to_office:
        copies += [chat for chat in office if chat != reply_chat]
    seed = dsr.new_seed()
    strata = _strata_preview(cands.candidates, params)
    digest = dsr.keys_digest(cands.keys())
    pdigest = pool_digest(m.entry for m in members)
    warnings: list[str] = []
    if params.policy is Policy.FLAT and params.flat_ratio is not None:
        general = [i.code for i in items if i.category != "重点"]
        if general and dsr.below_general_minimum(params.flat_ratio, key_item=False):
            warnings.append(
                text(
                    "task.warning.general_below_5",
                    ratio=percent(params.flat_ratio),
                    items="、".join(general),
                )
            )
    draw = Draw(
        task_id=task.id,
        status=DrawStatus.COMMITTED,
        algorithm=dsr.ALGORITHM,
        seed_hex=seed,
        commitment=dsr.commitment(seed),
        candidate_digest=digest,
        record={},
        committed_by=actor,
        committed_at=now,
        announced={
            "mode": chosen.value,
            "candidate_count": len(cands.candidates),
            "strata": [dataclasses.asdict(s) for s in strata],
            "pool_size": len(members),
            "pool_digest": pdigest,
            "excluded": dict(cands.excluded),
            # Not published: the chats whose copy of the commitment has buttons to retire.
            "copies": copies,
        },
    )
    session.add(draw)
    await session.flush()
    assert draw.id is not None
    view = Commitment(
        draw_id=draw.id,
        task=await task_view(session, task, chosen),
        commitment=draw.commitment,
        candidate_digest=digest,
        candidate_count=len(cands.candidates),
        pool_size=len(members),
        pool_digest=pdigest,
        strata=strata,
        empty=[s.label for s in strata if s.count == 0],
        excluded=dict(cands.excluded),
        warnings=warnings,
        office_chats=office,
    )
    await record(
        session,
        actor=actor,
        action="draw.commit",
        entity="draw",
        entity_id=str(draw.id),
        at=now,
        detail={
            "task_id": task.id,
            "commitment": draw.commitment,
            "candidate_digest": digest,
            "pool_digest": pdigest,
            "mode": chosen.value,
        },
    )
    buttons = commitment_buttons(draw.id) if with_buttons else None
    for chat in copies:
        note = None
        if chat not in office:  # privately: say whether the group has it too
            note = text("draw.note.posted" if office else "draw.note.no_office_group")
        body = render("draws/commitment.j2", c=view, note=note)
        if chat == reply_chat:
            view.reply = body
        await enqueue(
            session,
            key=_copy_key(draw.id, chat),
            chat_id=chat,
            is_group=chat in office,
            text=body,
            buttons=buttons,
            # The caller sends this one itself; the outbox only if it never says it did.
            not_before=now + SHOWN_WITHIN if chat == reply_chat else None,
            now=now,
        )
    return view


SHOWN_WITHIN = timedelta(seconds=60)
"""How long the outbox leaves a commitment's direct answer to the handler that shows it."""


def _copy_key(draw_id: int, chat: int) -> str:
    return f"draws:commit:{draw_id}:{chat}"


async def commitment_shown(
    session: AsyncSession, *, draw_id: int, chat_id: int, message_id: int, now: datetime
) -> bool:
    """The caller showed the commitment in `reply_chat` as message `message_id`."""
    return await mark_sent(session, key=_copy_key(draw_id, chat_id), message_id=message_id, now=now)


async def _retire_commitment(
    session: AsyncSession, draw: Draw, *, now: datetime, shown_in: int | None
) -> None:
    """Every copy of the commitment loses its 执行抽取/放弃 and says what became of the draw
    (已执行 / 已放弃 / 已作废), through the outbox, in the transaction that changed it. The copy
    in `shown_in` is the one whose button was pressed: its handler edits it itself."""
    assert draw.id is not None
    line = text(f"draw_copy.{draw.status}", draw_id=draw.id)
    chats = draw.announced.get("copies")
    if chats is None:  # committed before the copies were remembered
        chats = await office_chats(session)
    for chat in chats:
        if chat == shown_in:
            continue
        await enqueue_edit(
            session,
            key=f"draws:commit_{draw.status}:{draw.id}:{chat}",
            edits=_copy_key(draw.id, chat),
            text=lambda old: f"{old}\n\n{line}",
            now=now,
        )


# --- step 2: the execution ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShortfallLine:
    batch: int
    key: str
    name: str
    reason: str  # text for people
    detail: str


@dataclass(frozen=True)
class DepartmentLine:
    code: str
    name: str
    inspections: int
    inspectors: int


@dataclass(frozen=True)
class MergeLine:
    """One target of the comparison report (名单比对)."""

    inspection_id: int
    key: str
    name: str
    tasks: list[str]  # '#3 食品销售抽查'
    window_start: date
    window_end: date
    how: str  # auto | manual | pending (an overlap left for /merge)
    added_members: int


@dataclass
class Execution:
    draw_id: int
    task: TaskView
    drifted: bool = False  # candidates or pool changed since the commitment: abandoned
    seed: str = ""
    commitment: str = ""
    candidate_digest: str = ""
    candidate_count: int = 0
    strata: list[StratumLine] = field(default_factory=list)
    targets: int = 0
    inspections: int = 0
    groups: int = 0
    skips: int = 0
    shortfalls: list[ShortfallLine] = field(default_factory=list)
    departments: list[DepartmentLine] = field(default_factory=list)
    merged: list[MergeLine] = field(default_factory=list)
    overlaps: list[MergeLine] = field(default_factory=list)  # not automatic: /merge decides
    load_cap: int = 0
    pool_size: int = 0


async def draw_state(session: AsyncSession, *, draw_id: int) -> DrawProblem | None:
    """None while the draw waits for execution; otherwise why its buttons no longer act."""
    draw = await session.get(Draw, draw_id) if 0 < draw_id <= MAX_ID else None
    if draw is None:
        return DrawProblem("unknown_draw", draw_id=draw_id)
    if draw.status != DrawStatus.COMMITTED:
        return DrawProblem(f"status_{draw.status}", draw_id=draw_id)
    return None


async def _claim(session: AsyncSession, draw_id: int, *, now: datetime) -> Draw:
    """Committed -> executed exactly once, even with two presses or two processes."""
    await _draw(session, draw_id)  # unknown (or absurd) ids end here
    result = await session.exec(
        update(Draw)
        .where(col(Draw.id) == draw_id, col(Draw.status) == DrawStatus.COMMITTED)
        .values(status=DrawStatus.EXECUTED, executed_at=now)
    )
    draw = await _draw(session, draw_id)
    if not result.rowcount:
        raise DrawProblem(f"status_{draw.status}", draw_id=draw_id)
    return draw


async def execute_draw(
    session: AsyncSession,
    *,
    draw_id: int,
    actor: str,
    now: datetime,
    detail_chat: int | None = None,
    tz: str = DEFAULT_TIMEZONE,
    office_admins: Sequence[int] = (),
    shown_in: int | None = None,
) -> Execution:
    """Step 2: reveal the seed, draw, create inspections, seats and duties, merge, announce.
    `shown_in`: the chat whose copy of the commitment the caller edits itself."""
    draw = await _claim(session, draw_id, now=now)
    task = await _task(session, draw.task_id)
    assert task.id is not None and draw.id is not None
    mode = Mode(draw.announced.get("mode", mode_of(task.selection_mode).value))
    view = Execution(draw_id=draw.id, task=await task_view(session, task, mode))
    items = await _items(session, task)
    params = params_for(task, items, mode)
    cands = await candidates(session, task, mode)
    members = await pool(session, task, mode)
    digest = dsr.keys_digest(cands.keys())
    pdigest = pool_digest(m.entry for m in members)
    if digest != draw.candidate_digest or pdigest != draw.announced.get("pool_digest"):
        # The commitment promised these candidates and this pool; a different set would make
        # the published digest a lie. The office draws again (a new commitment).
        draw.status = DrawStatus.ABANDONED
        draw.executed_at = None
        draw.void_reason = text("draw.drift_reason")
        session.add(draw)
        view.drifted = True
        await _retire_commitment(session, draw, now=now, shown_in=shown_in)
        await record(
            session,
            actor=actor,
            action="draw.drift",
            entity="draw",
            entity_id=str(draw.id),
            at=now,
            detail={
                "candidates_changed": digest != draw.candidate_digest,
                "pool_changed": pdigest != draw.announced.get("pool_digest"),
            },
        )
        await _to_groups(
            session,
            await office_chats(session),
            key=f"draws:drift:{draw.id}",
            text=render("draws/drifted.j2", e=view),
            now=now,
        )
        return view

    previous = await previous_groups(session)
    # Seconds of pure computation for a big draw: off the event loop, so the bot keeps
    # answering others meanwhile.
    rec = await asyncio.to_thread(
        dsr.draw,
        cands.candidates,
        [m.entry for m in members],
        params,
        previous_groups=previous,
        seed_hex=draw.seed_hex,
    )
    draw.record = json.loads(rec.to_json())
    session.add(draw)
    await _retire_commitment(session, draw, now=now, shown_in=shown_in)
    task.status = TaskStatus.DRAWN
    task.updated_at = now
    session.add(task)

    by_cert = {m.entry.cert_no: m for m in members}
    targets = await _targets_by_key(session, rec.order)
    groups = {g.target: g for g in rec.groups}
    open_now = await _open_inspections(session)
    ids = await _create_inspections(session, draw, task, rec, targets, by_cert, now=now)

    live: list[int] = []
    duties: list[DutySpec] = []
    for key in rec.order:
        iid = ids[key]
        partner = next(
            (
                o
                for o in open_now.get(key, [])
                if joinable(o, task.id, task.window_start, task.window_end)
            ),
            None,
        )
        if partner is not None:
            inspection = await session.get(Inspection, iid)
            assert inspection is not None
            if automatic(partner, task):
                line = await _merge_into(
                    session, keep_id=partner.id, gone=inspection, actor=actor, now=now, manual=False
                )
                view.merged.append(line)
                continue
            view.overlaps.append(await _overlap(session, inspection, partner))
        live.append(iid)
        if key in groups:
            duties.append(
                DutySpec(
                    kind="inspect",
                    subject=f"inspection:{iid}",
                    deadline=task.window_end,
                    responsible_role="inspector",
                    department_code=task.lead_department,
                    inspection_id=iid,
                )
            )
    await open_duties(session, duties, now=now)

    cert_department = {i.cert_no: i.department for i in rec.pool}
    names = await _names(session, task.department_codes)
    drawn_certs = {p.cert_no for g in rec.groups for p in g.picks}
    view.seed = draw.seed_hex
    view.commitment = draw.commitment
    view.candidate_digest = draw.candidate_digest
    view.candidate_count = rec.candidate_count
    view.strata = [
        StratumLine(
            s.name, stratum_label(s.name), percent(s.ratio), s.count, s.quota, len(s.selected)
        )
        for s in rec.strata
    ]
    view.targets = len(rec.order)
    view.inspections = len(live)
    view.groups = len(rec.groups)
    view.skips = len(rec.skips)
    view.load_cap = rec.load_cap
    view.pool_size = len(rec.pool)
    short = {s.target for s in rec.shortfalls}
    batches = {key: n for n, key in enumerate(rec.order, 1) if key in short}
    view.shortfalls = [
        ShortfallLine(
            batches[s.target],
            s.target,
            targets[s.target][1],
            text(f"draw.shortfall.{s.reason}"),
            s.detail,
        )
        for s in rec.shortfalls
    ]
    view.departments = [
        DepartmentLine(
            code,
            names.get(code, code),
            len(rec.order),
            sum(1 for c in drawn_certs if cert_department.get(c) == code),
        )
        for code in task.department_codes
    ]
    await record(
        session,
        actor=actor,
        action="draw.execute",
        entity="draw",
        entity_id=str(draw.id),
        at=now,
        detail={
            "task_id": task.id,
            "targets": len(rec.order),
            "groups": len(rec.groups),
            "shortfalls": len(rec.shortfalls),
            "merged": [m.inspection_id for m in view.merged],
        },
    )
    await _announce_execution(session, view, task, now=now, detail_chat=detail_chat)
    await _announce_assignments(session, draw.id, now=now, tz=tz, office_admins=office_admins)
    return view


INSPECTION: Table = Inspection.__table__  # type: ignore[attr-defined]
INSPECTION_ITEM: Table = InspectionItem.__table__  # type: ignore[attr-defined]
ASSIGNMENT: Table = Assignment.__table__  # type: ignore[attr-defined]


async def _create_inspections(
    session: AsyncSession,
    draw: Draw,
    task: Task,
    rec: DrawRecord,
    targets: dict[str, tuple[int, str]],
    by_cert: dict[str, PoolMember],
    *,
    now: datetime,
) -> dict[str, int]:
    """An inspection per drawn target (in batch order), its items and its seats: three
    executemany INSERTs, not an ORM object per row (a county draw creates 100,000 rows).
    Returns the inspection id per target key."""
    assert draw.id is not None and task.id is not None
    groups = {g.target: g for g in rec.groups}
    await session.exec(
        insert(INSPECTION),
        params=[
            {
                "draw_id": draw.id,
                "target_id": targets[key][0],
                "target_key": key,
                "lead_department": task.lead_department,
                "rank": dsr.rank(draw.seed_hex, key),
                "batch_order": batch,
                "window_start": task.window_start,
                "window_end": task.window_end,
                "method": task.method,
                "status": (
                    InspectionStatus.ASSIGNED if key in groups else InspectionStatus.SHORTFALL
                ).value,
                "merged": False,
                "merged_into_id": None,
                "created_at": now,
                "updated_at": now,
            }
            for batch, key in enumerate(rec.order, 1)
        ],
    )
    ids: dict[str, int] = dict(
        (
            await session.exec(
                select(Inspection.target_key, Inspection.id).where(Inspection.draw_id == draw.id)
            )
        ).all()  # type: ignore[arg-type]
    )
    items = [
        {
            "inspection_id": ids[key],
            "task_id": task.id,
            "draw_id": draw.id,
            "item_code": code,
            "year": task.year,
            "voided_at": None,
        }
        for key in rec.order
        for code in task.item_codes
    ]
    if items:
        await session.exec(insert(INSPECTION_ITEM), params=items)
    seats = [
        {
            "inspection_id": ids[group.target],
            "inspector_id": by_cert[pick.cert_no].inspector_id,
            "pick_index": pick.j,
            "status": AssignmentStatus.PENDING.value,
            "replaces_id": None,
            "draw_id": draw.id,
            "delivered_at": None,
            "confirmed_at": None,
            "recusal_reason": None,
            "created_at": now,
        }
        for group in rec.groups
        for pick in group.picks
    ]
    if seats:
        await session.exec(insert(ASSIGNMENT), params=seats)
    return ids


async def _announce_assignments(
    session: AsyncSession, draw_id: int, *, now: datetime, tz: str, office_admins: Sequence[int]
) -> None:
    """Issue #4's private messages per inspection (确认接收/申请回避/详情)."""
    await announce_assignments(
        session, draw_id=draw_id, now=now, tz=tz, office_admins=office_admins
    )


async def _targets_by_key(session: AsyncSession, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        rows = await session.exec(
            select(Target.id, Target.key, Target.name).where(col(Target.key).in_(chunk))
        )
        for tid, key, name in rows:
            assert tid is not None
            out[key] = (tid, name)
    return out


async def _announce_execution(
    session: AsyncSession, view: Execution, task: Task, *, now: datetime, detail_chat: int | None
) -> None:
    """Counts to the groups (never names or USCCs); details privately to whoever executed."""
    key = f"draws:executed:{view.draw_id}"
    office = render("draws/executed_office.j2", e=view)
    await _to_groups(session, await office_chats(session), key=key, text=office, now=now)
    for n, line in enumerate(view.departments):
        listing = DrawCb(act="list", draw_id=view.draw_id, n=n).pack()
        await _to_groups(
            session,
            await department_chats(session, line.code),
            key=key,
            text=render("draws/executed_department.j2", e=view, d=line),
            buttons=[[(text("draw.button.department_list"), listing)]],
            now=now,
        )
    if detail_chat is not None and (view.shortfalls or view.merged or view.overlaps):
        await enqueue(
            session,
            key=f"draws:detail:{view.draw_id}:{detail_chat}",
            chat_id=detail_chat,
            text=render("draws/executed_detail.j2", e=view),
            now=now,
        )


# --- merging (联合抽查) ------------------------------------------------------------------------


async def _overlap(
    session: AsyncSession, inspection: Inspection, other: OpenInspection
) -> MergeLine:
    """A target this draw shares with another task's open inspection, left for /merge."""
    assert inspection.id is not None
    target = await session.get(Target, inspection.target_id)
    labels = await _task_labels(session, other.id)
    return MergeLine(
        inspection_id=inspection.id,
        key=inspection.target_key,
        name=target.name if target else "",
        tasks=[*labels, *await _task_labels(session, inspection.id)],
        window_start=max(inspection.window_start, other.window_start),
        window_end=min(inspection.window_end, other.window_end),
        how="pending",
        added_members=0,
    )


async def _task_labels(session: AsyncSession, inspection_id: int) -> list[str]:
    rows = await session.exec(
        select(Task.id, Task.name)
        .join(InspectionItem, col(InspectionItem.task_id) == col(Task.id))
        .where(
            InspectionItem.inspection_id == inspection_id, col(InspectionItem.voided_at).is_(None)
        )
        .distinct()
        .order_by(col(Task.id))
    )
    return [text("draw.task_label", id=tid, name=name) for tid, name in rows]


async def _merge_into(
    session: AsyncSession,
    *,
    keep_id: int,
    gone: Inspection,
    actor: str,
    now: datetime,
    manual: bool,
) -> MergeLine:
    """Fold `gone` into the inspection `keep_id`: one visit, every item, both groups.

    `gone` is kept (CANCELLED, merged_into_id) with its rows, so the history stays readable;
    its live seats move to the kept inspection as new, undelivered seats (the inspectors get
    a fresh assignment message naming every item), deduplicated by inspector.
    """
    keep = await session.get(Inspection, keep_id)
    assert keep is not None and keep.id is not None and gone.id is not None
    have_items = {
        (i.task_id, i.item_code)
        for i in await session.exec(
            select(InspectionItem).where(
                InspectionItem.inspection_id == keep.id, col(InspectionItem.voided_at).is_(None)
            )
        )
    }
    added_items: list[str] = []
    for item in await session.exec(
        select(InspectionItem).where(
            InspectionItem.inspection_id == gone.id, col(InspectionItem.voided_at).is_(None)
        )
    ):
        if (item.task_id, item.item_code) in have_items:
            continue
        added_items.append(item.item_code)
        session.add(
            InspectionItem(
                inspection_id=keep.id,
                task_id=item.task_id,
                draw_id=item.draw_id,
                item_code=item.item_code,
                year=item.year,
            )
        )
    kept_seats = list(
        await session.exec(select(Assignment).where(Assignment.inspection_id == keep.id))
    )
    seated = {a.inspector_id for a in kept_seats}
    # Who already works on the kept visit (and was told about it) hears about the new items.
    told = [a for a in kept_seats if a.status in LIVE_SEATS and a.delivered_at is not None]
    added = 0
    for seat in list(
        await session.exec(
            select(Assignment)
            .where(Assignment.inspection_id == gone.id, col(Assignment.status).in_(LIVE_SEATS))
            .order_by(col(Assignment.id))
        )
    ):
        seat.status = AssignmentStatus.WITHDRAWN
        session.add(seat)
        if seat.inspector_id in seated:
            continue
        seated.add(seat.inspector_id)
        added += 1
        session.add(
            Assignment(
                inspection_id=keep.id,
                inspector_id=seat.inspector_id,
                pick_index=seat.pick_index,
                draw_id=seat.draw_id,
                created_at=now,
            )
        )
    keep.window_start = max(keep.window_start, gone.window_start)
    keep.window_end = min(keep.window_end, gone.window_end)
    keep.merged = True
    if added:
        keep.status = InspectionStatus.ASSIGNED  # the newcomers have to confirm
    keep.updated_at = now
    session.add(keep)
    gone.status = InspectionStatus.CANCELLED
    gone.merged = True
    gone.merged_into_id = keep.id
    gone.updated_at = now
    session.add(gone)
    await session.flush()
    await cancel_duties(session, inspection_id=gone.id, now=now)
    # The merged visit must happen within both windows: its deadline is the earlier end.
    await session.exec(
        update(Duty)
        .where(
            col(Duty.kind) == "inspect",
            col(Duty.subject) == f"inspection:{keep.id}",
            col(Duty.status) == DutyStatus.OPEN,
            col(Duty.deadline) > keep.window_end,
        )
        .values(deadline=keep.window_end)
    )
    await record(
        session,
        actor=actor,
        action="inspection.merge",
        entity="inspection",
        entity_id=str(keep.id),
        at=now,
        detail={"merged": gone.id, "manual": manual, "added_members": added},
    )
    target = await session.get(Target, keep.target_id)
    if added_items and told:
        await _tell_added_items(
            session,
            keep,
            gone,
            target_name=target.name if target else keep.target_key,
            codes=added_items,
            seats=told,
            now=now,
        )
    return MergeLine(
        inspection_id=keep.id,
        key=keep.target_key,
        name=target.name if target else "",
        tasks=await _task_labels(session, keep.id),
        window_start=keep.window_start,
        window_end=keep.window_end,
        how="manual" if manual else "auto",
        added_members=added,
    )


@dataclass(frozen=True)
class AddedItem:
    code: str
    name: str
    department: str  # the item's own department (its 检查事项清单), by name


@dataclass(frozen=True)
class AddedItems:
    """What the inspectors of a kept inspection are told when a merge adds items to it."""

    inspection_id: int
    target_name: str
    items: list[AddedItem]
    department: str  # the department whose task brought the items (lead of the merged visit)
    window_start: date
    window_end: date


async def _tell_added_items(
    session: AsyncSession,
    keep: Inspection,
    gone: Inspection,
    *,
    target_name: str,
    codes: list[str],
    seats: list[Assignment],
    now: datetime,
) -> None:
    """A private message to each inspector already on `keep`: the items and the department
    the merge added, in the merge's transaction (the newcomers get a whole new assignment)."""
    assert keep.id is not None and gone.id is not None
    checks = {
        c.code: c
        for c in await session.exec(select(CheckItem).where(col(CheckItem.code).in_(codes)))
    }
    names = await _names(
        session, [gone.lead_department, *(c.department_code for c in checks.values())]
    )
    items = []
    for code in codes:
        check = checks.get(code)
        dept = check.department_code if check else ""
        items.append(AddedItem(code, check.name if check else "", names.get(dept, dept)))
    view = AddedItems(
        inspection_id=keep.id,
        target_name=target_name,
        items=items,
        department=names.get(gone.lead_department, gone.lead_department),
        window_start=keep.window_start,
        window_end=keep.window_end,
    )
    body = render("draws/merged_items.j2", m=view)
    chats = await inspector_chats(session, [a.inspector_id for a in seats])
    messages = []
    for seat in seats:
        chat = chats.get(seat.inspector_id)
        if chat is None or seat.id is None:
            continue
        detail = AssignmentCb(action="detail", assignment_id=seat.id).pack()
        messages.append(
            Envelope(
                key=f"draws:merged:{keep.id}:{gone.id}:{seat.id}",
                chat_id=chat,
                text=body,
                buttons=[[(text("button.assignment.detail"), detail)]],
            )
        )
    await enqueue_many(session, messages, now=now)


@dataclass
class MergeReport:
    draw_id: int
    task_name: str
    merged_now: list[MergeLine]
    merged_before: list[MergeLine]


async def merge_draw(
    session: AsyncSession,
    *,
    draw_id: int,
    actor: str,
    now: datetime,
    tz: str = DEFAULT_TIMEZONE,
    office_admins: Sequence[int] = (),
) -> MergeReport:
    """/merge: join this draw's inspections with other tasks' open inspections of the same
    targets whose windows overlap, mergeable or not (the office decided); and the 名单比对
    report of everything merged so far."""
    draw = await _draw(session, draw_id)
    if draw.status != DrawStatus.EXECUTED:
        raise DrawProblem(f"status_{draw.status}", draw_id=draw_id)
    task = await _task(session, draw.task_id)
    merged_now: list[MergeLine] = []
    open_now = await _open_inspections(session)
    # A target this draw could not give a group (a shortfall) joins another task's visit too,
    # as it does when tasks merge automatically: that visit's group goes, the office decides
    # about the department left without a member.
    foldable = (*JOINABLE, InspectionStatus.SHORTFALL)
    mine = list(
        await session.exec(
            select(Inspection)
            .where(Inspection.draw_id == draw_id, col(Inspection.status).in_(foldable))
            .order_by(col(Inspection.id))
        )
    )
    for inspection in mine:
        assert inspection.id is not None
        if inspection.status not in foldable or await _has_pending_recusal(session, inspection.id):
            continue  # merged away by an earlier step of this loop, or busy
        partner: OpenInspection | None = None
        for other in open_now.get(inspection.target_key, []):
            if (
                other.id != inspection.id
                and other.draw_id != draw_id
                and joinable(other, task.id, inspection.window_start, inspection.window_end)
                and not await _has_pending_recusal(session, other.id)
            ):
                partner = other
                break
        if partner is None:
            continue
        # The earlier inspection stays and the later one folds into it; a shortfall always folds.
        if partner.id < inspection.id or inspection.status == InspectionStatus.SHORTFALL:
            keep_id, gone = partner.id, inspection
        else:
            other_row = await session.get(Inspection, partner.id)
            assert other_row is not None
            keep_id, gone = inspection.id, other_row
        merged_now.append(
            await _merge_into(
                session, keep_id=keep_id, gone=gone, actor=actor, now=now, manual=True
            )
        )
        open_now = await _open_inspections(session)
    before = await merge_lines(session, draw_id)
    done = {m.inspection_id for m in merged_now}
    if merged_now:
        # The seats that moved are undelivered again: their inspectors get the merged visit.
        await _announce_assignments(session, draw_id, now=now, tz=tz, office_admins=office_admins)
    await record(
        session,
        actor=actor,
        action="draw.merge",
        entity="draw",
        entity_id=str(draw_id),
        at=now,
        detail={"merged": sorted(done)},
    )
    return MergeReport(
        draw_id=draw_id,
        task_name=task.name,
        merged_now=merged_now,
        merged_before=[m for m in before if m.inspection_id not in done],
    )


async def _has_pending_recusal(session: AsyncSession, inspection_id: int) -> bool:
    seat = (
        await session.exec(
            select(Assignment.id).where(
                Assignment.inspection_id == inspection_id,
                Assignment.status == AssignmentStatus.RECUSAL_REQUESTED,
            )
        )
    ).first()
    return seat is not None


async def merge_lines(session: AsyncSession, draw_id: int) -> list[MergeLine]:
    """Every merged inspection that holds this draw's items (the comparison report)."""
    rows = list(
        await session.exec(
            select(Inspection)
            .join(InspectionItem, col(InspectionItem.inspection_id) == col(Inspection.id))
            .where(
                InspectionItem.draw_id == draw_id,
                col(InspectionItem.voided_at).is_(None),
                col(Inspection.merged).is_(True),
                Inspection.status != InspectionStatus.CANCELLED,
            )
            .distinct()
            .order_by(col(Inspection.id))
        )
    )
    out: list[MergeLine] = []
    for inspection in rows:
        assert inspection.id is not None
        target = await session.get(Target, inspection.target_id)
        mergeable = list(
            await session.exec(
                select(Task.mergeable)
                .join(InspectionItem, col(InspectionItem.task_id) == col(Task.id))
                .where(InspectionItem.inspection_id == inspection.id)
            )
        )
        out.append(
            MergeLine(
                inspection_id=inspection.id,
                key=inspection.target_key,
                name=target.name if target else "",
                tasks=await _task_labels(session, inspection.id),
                window_start=inspection.window_start,
                window_end=inspection.window_end,
                how="auto" if all(mergeable) else "manual",
                added_members=0,
            )
        )
    return out


# --- abandoning and voiding --------------------------------------------------------------------


@dataclass(frozen=True)
class Abandoned:
    draw_id: int
    task_id: int
    task_name: str
    reason: str


async def abandon_draw(
    session: AsyncSession,
    *,
    draw_id: int,
    actor: str,
    now: datetime,
    reason: str = "",
    announce: bool = True,
    shown_in: int | None = None,
) -> Abandoned:
    """放弃: a committed draw is never executed; its seed stays unused and unpublished.
    `shown_in`: the chat whose copy of the commitment the caller edits itself."""
    await _draw(session, draw_id)
    result = await session.exec(
        update(Draw)
        .where(col(Draw.id) == draw_id, col(Draw.status) == DrawStatus.COMMITTED)
        .values(
            status=DrawStatus.ABANDONED,
            voided_at=now,
            voided_by=actor,
            void_reason=reason or None,
        )
    )
    draw = await _draw(session, draw_id)
    if not result.rowcount:
        raise DrawProblem(f"status_{draw.status}", draw_id=draw_id)
    await _retire_commitment(session, draw, now=now, shown_in=shown_in)
    task = await _task(session, draw.task_id)
    assert task.id is not None
    out = Abandoned(draw_id, task.id, task.name, reason)
    await record(
        session,
        actor=actor,
        action="draw.abandon",
        entity="draw",
        entity_id=str(draw_id),
        at=now,
        detail={"reason": reason},
    )
    if announce:
        await _to_groups(
            session,
            await office_chats(session),
            key=f"draws:abandoned:{draw_id}",
            text=render("draws/abandoned.j2", a=out),
            now=now,
        )
    return out


@dataclass
class Voided:
    draw_id: int
    task_id: int
    task_name: str
    status: str  # voided | abandoned
    reason: str
    cancelled: int = 0  # inspections cancelled
    withdrawn: int = 0  # seats withdrawn
    kept: int = 0  # inspections kept alive for another draw's items


async def void_draw(
    session: AsyncSession, *, draw_id: int, reason: str, actor: str, now: datetime
) -> Voided:
    """/void: the draw and its record stay visible; its inspections and seats end."""
    reason = " ".join(reason.split())
    if not reason:
        raise DrawProblem("reason_missing", draw_id=draw_id)
    draw = await _draw(session, draw_id)
    task = await _task(session, draw.task_id)
    assert task.id is not None
    if draw.status == DrawStatus.COMMITTED:
        await abandon_draw(session, draw_id=draw_id, actor=actor, now=now, reason=reason)
        return Voided(draw_id, task.id, task.name, DrawStatus.ABANDONED, reason)
    if draw.status != DrawStatus.EXECUTED:
        raise DrawProblem(f"status_{draw.status}", draw_id=draw_id)

    touched_ids = set(
        await session.exec(
            select(InspectionItem.inspection_id).where(
                InspectionItem.draw_id == draw_id, col(InspectionItem.voided_at).is_(None)
            )
        )
    )
    touched = [
        i
        for i in await session.exec(
            select(Inspection)
            .where(col(Inspection.id).in_(touched_ids))
            .order_by(col(Inspection.id))
        )
        if i.status != InspectionStatus.CANCELLED
    ]
    busy = [i for i in touched if i.status not in VOIDABLE]
    if busy:
        raise DrawProblem("has_results", draw_id=draw_id, count=len(busy))

    result = await session.exec(
        update(Draw)
        .where(col(Draw.id) == draw_id, col(Draw.status) == DrawStatus.EXECUTED)
        .values(status=DrawStatus.VOIDED, voided_at=now, voided_by=actor, void_reason=reason)
    )
    if not result.rowcount:
        raise DrawProblem("status_voided", draw_id=draw_id)
    draw = await _draw(session, draw_id)
    await _retire_commitment(session, draw, now=now, shown_in=None)
    out = Voided(draw_id, task.id, task.name, DrawStatus.VOIDED, reason)
    notices: list[tuple[int, int]] = []  # (inspector_id, inspection_id)
    for inspection in touched:
        assert inspection.id is not None
        others = (
            await session.exec(
                select(func.count())
                .select_from(InspectionItem)
                .where(
                    InspectionItem.inspection_id == inspection.id,
                    InspectionItem.draw_id != draw_id,
                    col(InspectionItem.voided_at).is_(None),
                )
            )
        ).one()
        await session.exec(
            update(InspectionItem)
            .where(
                col(InspectionItem.inspection_id) == inspection.id,
                col(InspectionItem.draw_id) == draw_id,
                col(InspectionItem.voided_at).is_(None),
            )
            .values(voided_at=now)
        )
        seats = select(Assignment).where(
            Assignment.inspection_id == inspection.id, col(Assignment.status).in_(LIVE_SEATS)
        )
        if others:
            # The visit goes on for another draw's items; only this draw's seats leave.
            seats = seats.where(Assignment.draw_id == draw_id)
            out.kept += 1
        else:
            inspection.status = InspectionStatus.CANCELLED
            inspection.updated_at = now
            session.add(inspection)
            await cancel_duties(session, inspection_id=inspection.id, now=now)
            out.cancelled += 1
        for seat in list(await session.exec(seats)):
            assert seat.id is not None
            seat.status = AssignmentStatus.WITHDRAWN
            session.add(seat)
            out.withdrawn += 1
            notices.append((seat.inspector_id, inspection.id))
            await session.exec(
                update(Duty)
                .where(
                    col(Duty.subject) == f"assignment:{seat.id}",
                    col(Duty.status) == DutyStatus.OPEN,
                )
                .values(status=DutyStatus.CANCELLED, done_at=now)
            )
    still = (
        await session.exec(
            select(func.count())
            .select_from(Draw)
            .where(Draw.task_id == task.id, Draw.status == DrawStatus.EXECUTED)
        )
    ).one()
    if not still and task.status == TaskStatus.DRAWN:
        task.status = TaskStatus.PLANNED
        task.updated_at = now
        session.add(task)
    await record(
        session,
        actor=actor,
        action="draw.void",
        entity="draw",
        entity_id=str(draw_id),
        at=now,
        detail=dataclasses.asdict(out),
    )
    groups = await office_chats(session)
    for code in task.department_codes:
        groups += await department_chats(session, code)
    voided = render("draws/voided_group.j2", v=out)
    await _to_groups(session, groups, key=f"draws:voided:{draw_id}", text=voided, now=now)
    for inspector_id, inspection_id in notices:
        private = await inspector_chat(session, inspector_id)
        if private is None:
            continue
        await enqueue(
            session,
            key=f"draws:withdrawn:{draw_id}:{inspection_id}:{private}",
            chat_id=private,
            text=render("draws/withdrawn.j2", v=out, inspection_id=inspection_id),
            now=now,
        )
    return out


# --- verification and the record ---------------------------------------------------------------


@dataclass
class Verification:
    draw_id: int
    status: str
    problems: list[str]  # from bot.draw.verify and the stored columns (technical, may name keys)
    seat_problems: int  # groups whose live seats differ from the record
    replacements: int
    targets: int

    @property
    def consistent(self) -> bool:
        return not self.problems and not self.seat_problems


def load_record(data: dict[str, Any] | str) -> DrawRecord:
    raw = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return DrawRecord.from_json(raw)


def verify_text(raw: str) -> list[str]:
    """`dsr verify FILE.json`: [] when the record is 一致; raises DrawProblem when unreadable."""
    try:
        rec = DrawRecord.from_json(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DrawProblem("record_unreadable", error=f"{type(error).__name__}: {error}") from None
    return dsr.verify(rec)


async def verify_draw(session: AsyncSession, *, draw_id: int) -> Verification:
    """/verify: re-run the stored record, and check the stored draw and seats agree with it."""
    draw = await _draw(session, draw_id)
    if not draw.record:
        raise DrawProblem(
            "not_executed", draw_id=draw_id, status=text(f"draw.status.{draw.status}")
        )
    try:
        rec = load_record(draw.record)
    except (ValueError, KeyError, TypeError) as error:
        return Verification(draw_id, draw.status, [f"record unreadable: {error}"], 0, 0, 0)
    problems = await asyncio.to_thread(dsr.verify, rec)
    for name, stored, recorded in (
        ("algorithm", draw.algorithm, rec.algorithm),
        ("seed_hex", draw.seed_hex, rec.seed_hex),
        ("commitment", draw.commitment, rec.commitment),
        ("candidate_digest", draw.candidate_digest, rec.candidate_digest),
    ):
        if stored != recorded:
            problems.append(f"stored {name} differs from the record's")
    seat_problems = 0
    if draw.status == DrawStatus.EXECUTED and not problems:
        seat_problems = await _seat_differences(session, draw_id, rec)
    return Verification(
        draw_id,
        draw.status,
        problems,
        seat_problems,
        len(rec.replacements),
        len(rec.order),
    )


async def _seat_differences(session: AsyncSession, draw_id: int, rec: DrawRecord) -> int:
    """Groups whose live seats disagree with the record (after its replacements).

    This draw's seats must all be in the recorded group, and every recorded member must sit
    on the target's live inspection (where a merged visit may also seat another draw's group).
    """
    mine: dict[str, set[str]] = {}
    everyone: dict[str, set[str]] = {}
    live = (
        select(InspectionItem.inspection_id)
        .where(InspectionItem.draw_id == draw_id, col(InspectionItem.voided_at).is_(None))
        .scalar_subquery()
    )
    rows = await session.exec(
        select(Inspection.target_key, Inspector.cert_no, Assignment.draw_id)
        .join(Assignment, col(Assignment.inspection_id) == col(Inspection.id))
        .join(Inspector, col(Inspector.id) == col(Assignment.inspector_id))
        .where(
            col(Inspection.id).in_(live),
            Inspection.status != InspectionStatus.CANCELLED,
            col(Assignment.status).in_(LIVE_SEATS),
        )
    )
    for key, cert, seat_draw in rows:
        everyone.setdefault(key, set()).add(cert)
        if seat_draw == draw_id:
            mine.setdefault(key, set()).add(cert)
    differ = 0
    for group in rec.groups:
        members = set(dsr.current_group(rec, group.target))
        seated = everyone.get(group.target, set())
        if not mine.get(group.target, set()) <= members or not members <= seated:
            differ += 1
    return differ


async def record_json(session: AsyncSession, *, draw_id: int) -> str:
    """The full published record (dsr-draw/1 JSON) of an executed or voided draw.

    A county draw's record is 25 MB (1.5 s to decode and encode for a million candidates):
    the column is read as text and converted in a worker thread, so the bot keeps answering
    others meanwhile (`/record` and `dsr draw record` both come here). json's C decoder and
    encoder each hold the GIL for a whole call, so the event loop still waits for the longer
    of the two: measured on a 22 MB record, its longest pause went from 0.39-0.79 s to
    0.15-0.42 s (a shared 2-core machine, load 2.3)."""
    found = (
        (
            await session.exec(
                select(Draw.status, sql_cast(Draw.record, Text)).where(Draw.id == draw_id)
            )
        ).first()
        if 0 < draw_id <= MAX_ID
        else None
    )
    if found is None:
        raise DrawProblem("unknown_draw", draw_id=draw_id)
    status, raw = found
    if status not in (DrawStatus.EXECUTED, DrawStatus.VOIDED) or not raw:
        raise DrawProblem("not_executed", draw_id=draw_id, status=text(f"draw.status.{status}"))
    return await asyncio.to_thread(_readable_json, raw)


def _readable_json(raw: str) -> str:
    """The stored JSON with its Chinese as characters (the column escapes them)."""
    return json.dumps(json.loads(raw), ensure_ascii=False)


# --- the liaison's list ------------------------------------------------------------------------


@dataclass(frozen=True)
class ListMember:
    name: str
    cert_no: str
    department: str
    status: str


@dataclass(frozen=True)
class ListEntry:
    inspection_id: int
    batch: int
    name: str
    key: str
    window_start: date
    window_end: date
    status: str
    items: list[str]
    members: list[ListMember]


@dataclass
class DepartmentList:
    draw_id: int
    task_name: str
    department: str
    entries: list[ListEntry]
    queued: int  # messages queued now (0: already sent before)


async def send_department_list(
    session: AsyncSession,
    *,
    draw_id: int,
    department_index: int,
    tg_user_id: int,
    liaison_departments: Sequence[str],
    now: datetime,
) -> DepartmentList:
    """The department group's button: the list goes privately to that department's liaison."""
    draw = await _draw(session, draw_id)
    task = await _task(session, draw.task_id)
    if not 0 <= department_index < len(task.department_codes):
        raise DrawProblem("stale_button")
    code = task.department_codes[department_index]
    if code not in liaison_departments:
        raise DrawProblem("not_liaison", department=(await _names(session, [code])).get(code, code))
    if draw.status != DrawStatus.EXECUTED:
        raise DrawProblem(f"status_{draw.status}", draw_id=draw_id)
    inspections = list(
        await session.exec(
            select(Inspection)
            .join(InspectionItem, col(InspectionItem.inspection_id) == col(Inspection.id))
            .where(
                InspectionItem.draw_id == draw_id,
                col(InspectionItem.voided_at).is_(None),
                Inspection.status != InspectionStatus.CANCELLED,
            )
            .distinct()
            .order_by(col(Inspection.batch_order), col(Inspection.id))
        )
    )
    names = await _names(session, [code])
    entries: list[ListEntry] = []
    for inspection in inspections:
        assert inspection.id is not None
        target = await session.get(Target, inspection.target_id)
        items = sorted(
            set(
                await session.exec(
                    select(InspectionItem.item_code).where(
                        InspectionItem.inspection_id == inspection.id,
                        col(InspectionItem.voided_at).is_(None),
                    )
                )
            )
        )
        members = [
            ListMember(i.name, i.cert_no, i.department_code, a.status)
            for a, i in await session.exec(
                select(Assignment, Inspector)
                .join(Inspector, col(Inspector.id) == col(Assignment.inspector_id))
                .where(
                    Assignment.inspection_id == inspection.id,
                    col(Assignment.status).in_(LIVE_SEATS),
                )
                .order_by(col(Assignment.id))
            )
        ]
        entries.append(
            ListEntry(
                inspection.id,
                inspection.batch_order,
                target.name if target else "",
                inspection.target_key,
                inspection.window_start,
                inspection.window_end,
                inspection.status,
                items,
                members,
            )
        )
    out = DepartmentList(draw_id, task.name, names.get(code, code), entries, 0)
    chunks = [entries[i : i + LIST_CHUNK] for i in range(0, len(entries), LIST_CHUNK)] or [[]]
    for n, chunk in enumerate(chunks, 1):
        queued = await enqueue(
            session,
            key=f"draws:list:{draw_id}:{code}:{tg_user_id}:{n}",
            chat_id=tg_user_id,
            text=render(
                "draws/department_list.j2", l=out, entries=chunk, part=n, parts=len(chunks)
            ),
            now=now,
        )
        out.queued += int(queued)
    await record(
        session,
        actor=f"tg:{tg_user_id}",
        action="draw.department_list",
        entity="draw",
        entity_id=str(draw_id),
        at=now,
        detail={"department": code, "inspections": len(entries), "queued": out.queued},
    )
    return out


# --- replacement after an approved recusal ---------------------------------------------------


@dataclass(frozen=True)
class ReplaceOutcome:
    """What `replace_member` did: a new seat, or a shortfall for the office to decide."""

    replaced: bool
    old_assignment_id: int
    new_assignment_id: int | None = None
    inspector_id: int | None = None
    inspector_name: str = ""
    cert_no: str = ""
    reason: str = ""  # bot.draw reason code when no one qualified (no_replacement)
    detail: str = ""
    skips: int = 0


async def replace_member(
    session: AsyncSession, *, assignment_id: int, now: datetime, actor: str
) -> ReplaceOutcome:
    """Draw the replacement for an approved recusal with the draw's own rule (the target's
    partial Fisher–Yates sequence continued), append it to the record, mark the old seat
    recused and create the new one. Verification of the draw still passes afterwards."""
    seat = await session.get(Assignment, assignment_id)
    if seat is None:
        raise DrawProblem("unknown_assignment", assignment_id=assignment_id)
    if seat.status not in LIVE_SEATS:
        raise DrawProblem("seat_not_live", assignment_id=assignment_id)
    inspection = await session.get(Inspection, seat.inspection_id)
    assert inspection is not None and inspection.id is not None
    draw = await _draw(session, seat.draw_id or inspection.draw_id)
    if draw.status != DrawStatus.EXECUTED or not draw.record:
        raise DrawProblem(f"status_{draw.status}", draw_id=draw.id)
    old = await session.get(Inspector, seat.inspector_id)
    assert old is not None and draw.id is not None
    rec = load_record(draw.record)
    _updated, replacement = dsr.replace_inspector(rec, inspection.target_key, old.cert_no)
    # Append-only: the stored parts are copied as they are; only the new entry is added, in
    # the pure module's own JSON form.
    entry = json.loads(
        dataclasses.replace(
            rec,
            strata=(),
            order=(),
            pool=(),
            groups=(),
            skips=(),
            shortfalls=(),
            target_regions={},
            previous_groups={},
            replacements=(replacement,),
        ).to_json()
    )["replacements"][0]
    stored = dict(draw.record)
    stored["replacements"] = [*stored.get("replacements", []), entry]
    draw.record = stored
    session.add(draw)
    seat.status = AssignmentStatus.RECUSED
    session.add(seat)
    outcome: ReplaceOutcome
    if replacement.replacement is None:
        outcome = ReplaceOutcome(
            replaced=False,
            old_assignment_id=assignment_id,
            reason=replacement.reason,
            detail=replacement.detail,
            skips=len(replacement.skips),
        )
    else:
        new = (
            await session.exec(
                select(Inspector).where(Inspector.cert_no == replacement.replacement)
            )
        ).one()
        assert new.id is not None and replacement.j is not None
        existing = (
            await session.exec(
                select(Assignment).where(
                    Assignment.inspection_id == inspection.id, Assignment.inspector_id == new.id
                )
            )
        ).first()
        if existing is not None and existing.status in LIVE_SEATS:
            # A merged visit already seats them for another draw: nothing to add.
            new_seat = existing
        elif existing is not None:
            # Their seat here was withdrawn (a void or a merge): it comes back as the
            # replacement rather than as a duplicate row.
            existing.status = AssignmentStatus.PENDING
            existing.pick_index = replacement.j
            existing.replaces_id = assignment_id
            existing.draw_id = draw.id
            existing.delivered_at = None
            existing.confirmed_at = None
            new_seat = existing
        else:
            new_seat = Assignment(
                inspection_id=inspection.id,
                inspector_id=new.id,
                pick_index=replacement.j,
                replaces_id=assignment_id,
                draw_id=draw.id,
                created_at=now,
            )
        session.add(new_seat)
        await session.flush()
        assert new_seat.id is not None
        outcome = ReplaceOutcome(
            replaced=True,
            old_assignment_id=assignment_id,
            new_assignment_id=new_seat.id,
            inspector_id=new.id,
            inspector_name=new.name,
            cert_no=new.cert_no,
            skips=len(replacement.skips),
        )
    await record(
        session,
        actor=actor,
        action="draw.replace",
        entity="assignment",
        entity_id=str(assignment_id),
        at=now,
        detail={
            "draw_id": draw.id,
            "inspection_id": inspection.id,
            "replaced": old.cert_no,
            "replacement": replacement.replacement,
            "j": replacement.j,
            "reason": replacement.reason,
            "new_assignment_id": outcome.new_assignment_id,
        },
    )
    return outcome


# --- for the CLI and the list ------------------------------------------------------------------


async def draws_of_task(session: AsyncSession, task_id: int) -> list[Draw]:
    return list(
        await session.exec(select(Draw).where(Draw.task_id == task_id).order_by(col(Draw.id)))
    )
