"""bot.draws against a real database: who may be drawn, commit → execute, void, verify, the
record, joint-inspection merging and replacements (DB-level properties; the algorithm's own
properties are tests/test_draw.py)."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import draw as dsr
from bot.clock import FrozenClock
from bot.draws import (
    DrawProblem,
    candidates,
    commit_draw,
    execute_draw,
    merge_draw,
    pool,
    record_json,
    replace_member,
    verify_draw,
    verify_text,
    void_draw,
)
from bot.tasks import TaskSpec, create_task, mode_of
from bot.uscc import generate
from storage.db import Database
from storage.models import (
    Assignment,
    AssignmentStatus,
    AuditLog,
    ChatBinding,
    CheckItem,
    Department,
    Draw,
    DrawStatus,
    Duty,
    DutyStatus,
    Inspection,
    InspectionItem,
    InspectionStatus,
    Inspector,
    OutboxMessage,
    Target,
    Task,
    TaskStatus,
)

TODAY = date(2026, 3, 2)
OFFICE_CHAT = -100500
SJJ_CHAT = -100600
SWJ_CHAT = -100700
REGIONS = ("城关镇", "东城街道")


@dataclass
class World:
    """Directories written straight into the database (no import files needed)."""

    targets: list[Target] = field(default_factory=list)
    inspectors: list[Inspector] = field(default_factory=list)

    def key(self, n: int) -> str:
        return self.targets[n].key


async def build_world(
    session: AsyncSession,
    now: datetime,
    *,
    targets: int = 60,
    inspectors: int = 8,
    swj_inspectors: int = 3,
    seed: int = 11,
    groups: bool = True,
) -> World:
    """SJJ (a bureau with two stations) and SWJ; items; targets of every class; inspectors."""
    rng = random.Random(seed)
    world = World()
    for code, name, kind, parent in (
        ("SJJ", "县市场监督管理局", "部门", None),
        ("SJJ-CG", "城关市场监管所", "所", "SJJ"),
        ("SJJ-DC", "东城市场监管所", "所", "SJJ"),
        ("SWJ", "县税务局", "部门", None),
    ):
        session.add(
            Department(
                code=code, name=name, kind=kind, parent_code=parent, created_at=now, updated_at=now
            )
        )
    for code, name, dept, category, expertise in (
        ("SC001", "食品销售者检查", "SJJ", "一般", ""),
        ("SC002", "电梯安全检查", "SJJ", "重点", "特种设备"),
        ("SW001", "发票使用检查", "SWJ", "一般", ""),
    ):
        session.add(
            CheckItem(
                code=code,
                name=name,
                department_code=dept,
                category=category,
                expertise=expertise,
                created_at=now,
                updated_at=now,
            )
        )
    seen: set[str] = set()
    for n in range(targets):
        code = generate(rng)
        while code in seen:
            code = generate(rng)
        seen.add(code)
        target = Target(
            key=code,
            uscc=code,
            name=f"测试企业{n}有限公司",
            subject_type="有限责任公司",
            region=REGIONS[n % 2],
            industry="零售业" if n % 3 else "餐饮业",
            credit_class="ABCD "[n % 5].strip(),
            abnormal=n % 13 == 0,
            complaints=4 if n % 17 == 0 else 0,
            tags="食品;小作坊" if n % 4 == 0 else "",
            created_at=now,
            updated_at=now,
        )
        session.add(target)
        world.targets.append(target)
    units = ["城关市场监管所", "东城市场监管所", ""]
    for n in range(inspectors):
        inspector = Inspector(
            cert_no=f"ZF{n:05d}",
            name=f"检查员{n}",
            department_code="SJJ",
            unit=units[n % 3],
            expertise="特种设备" if n % 4 == 0 else "食品安全",
            created_at=now,
            updated_at=now,
        )
        session.add(inspector)
        world.inspectors.append(inspector)
    for n in range(swj_inspectors):
        inspector = Inspector(
            cert_no=f"SW{n:05d}",
            name=f"税务员{n}",
            department_code="SWJ",
            created_at=now,
            updated_at=now,
        )
        session.add(inspector)
        world.inspectors.append(inspector)
    if groups:
        bindings: list[tuple[int, str, str | None]] = [
            (OFFICE_CHAT, "office", None),
            (SJJ_CHAT, "department", "SJJ"),
            (SWJ_CHAT, "department", "SWJ"),
        ]
        for chat, chat_kind, chat_department in bindings:
            session.add(
                ChatBinding(
                    chat_id=chat,
                    kind=chat_kind,
                    department_code=chat_department,
                    bound_by=1,
                    bound_at=now,
                )
            )
    await session.flush()
    return world


def spec(**changes: object) -> TaskSpec:
    base = TaskSpec(
        name="食品销售者抽查",
        year=2026,
        item_codes=["SC001"],
        department_codes=["SJJ"],
        window_start=date(2026, 4, 1),
        window_end=date(2026, 6, 30),
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


async def new_task(session: AsyncSession, now: datetime, **changes: object) -> int:
    created = await create_task(session, spec(**changes), actor="test", now=now, today=TODAY)
    return created.task_id


async def run_draw(db: Database, now: datetime, task_id: int, mode: str | None = None) -> int:
    async with db.session() as session:
        commitment = await commit_draw(session, task_id=task_id, actor="test", now=now, mode=mode)
    async with db.session() as session:
        execution = await execute_draw(session, draw_id=commitment.draw_id, actor="test", now=now)
    assert not execution.drifted
    return commitment.draw_id


async def seeded(db: Database, clock: FrozenClock, **world: object) -> World:
    async with db.session() as session:
        return await build_world(session, clock.now(), **world)  # type: ignore[arg-type]


# --- the happy path ----------------------------------------------------------------------------


async def test_commit_then_execute_creates_inspections_seats_duties(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    async with db.session() as session:
        commitment = await commit_draw(session, task_id=task_id, actor="test", now=clock.now())
    assert commitment.candidate_count == 60
    assert [s.name for s in commitment.strata] == ["A", "B", "C", "D", "unclassified", "flagged"]
    assert sum(s.count for s in commitment.strata) == 60
    async with db.read() as session:
        draw = await session.get(Draw, commitment.draw_id)
        assert draw is not None and draw.status == DrawStatus.COMMITTED and draw.record == {}
        assert draw.commitment == dsr.commitment(draw.seed_hex)
        posted = list(await session.exec(select(OutboxMessage)))
    assert [m.chat_id for m in posted] == [OFFICE_CHAT]
    assert commitment.commitment in posted[0].text and draw.seed_hex not in posted[0].text

    async with db.session() as session:
        execution = await execute_draw(
            session, draw_id=commitment.draw_id, actor="test", now=clock.now()
        )
    assert execution.targets == sum(s.quota for s in commitment.strata)
    async with db.read() as session:
        inspections = list(await session.exec(select(Inspection)))
        seats = list(await session.exec(select(Assignment)))
        duties = list(await session.exec(select(Duty).where(Duty.kind == "inspect")))
        task = await session.get(Task, task_id)
        record = (await session.get(Draw, commitment.draw_id)).record  # type: ignore[union-attr]
    assert task is not None and task.status == TaskStatus.DRAWN
    assert len(inspections) == execution.targets
    assert {i.target_key for i in inspections} == set(record["order"])
    assert len(seats) == 2 * len(record["groups"]) == 2 * execution.groups
    assert all(s.draw_id == commitment.draw_id for s in seats)
    assert {d.subject for d in duties} == {
        f"inspection:{i.id}" for i in inspections if i.status == InspectionStatus.ASSIGNED
    }
    assert all(d.deadline == date(2026, 6, 30) for d in duties)
    async with db.read() as session:
        check = await verify_draw(session, draw_id=commitment.draw_id)
    assert check.consistent, check.problems


# --- who may be drawn: a property over random histories ------------------------------------

# What happened to a target before task A (items SC001, window 2026-04-01..06-30) draws.
HISTORIES = {
    "none": True,
    "inspected_same_item": False,  # 本年已查 SC001
    "inspected_other_item": True,
    "inspected_last_year": True,
    "cancelled_same_item": True,  # the inspection was cancelled: it never happened
    "open_joinable": True,  # another task's open inspection, overlapping, not started: merged
    "open_busy": False,  # another task's open inspection with a submitted result
    "open_disjoint": False,  # another task's open inspection in another window
}


async def _history(
    session: AsyncSession, now: datetime, target: Target, kind: str, other_draw: int
) -> None:
    if kind == "none":
        return
    assert target.id is not None
    year, item, status = 2026, "SC002", InspectionStatus.PUBLISHED
    start, end = date(2026, 1, 5), date(2026, 2, 20)
    if kind == "inspected_same_item":
        item = "SC001"
    elif kind == "inspected_last_year":
        year, item, start, end = 2025, "SC001", date(2025, 5, 1), date(2025, 6, 1)
    elif kind == "cancelled_same_item":
        item, status = "SC001", InspectionStatus.CANCELLED
    elif kind == "open_joinable":
        status, start, end = InspectionStatus.ASSIGNED, date(2026, 5, 1), date(2026, 8, 31)
    elif kind == "open_busy":
        status, start, end = InspectionStatus.SUBMITTED, date(2026, 5, 1), date(2026, 8, 31)
    elif kind == "open_disjoint":
        status, start, end = InspectionStatus.ASSIGNED, date(2026, 9, 1), date(2026, 10, 31)
    inspection = Inspection(
        draw_id=other_draw,
        target_id=target.id,
        target_key=target.key,
        lead_department="SJJ",
        rank="0" * 64,
        window_start=start,
        window_end=end,
        status=status,
        created_at=now,
        updated_at=now,
    )
    session.add(inspection)
    await session.flush()
    assert inspection.id is not None
    session.add(
        InspectionItem(
            inspection_id=inspection.id, task_id=1, draw_id=other_draw, item_code=item, year=year
        )
    )


async def _fresh_database(url: str, n: int) -> Database:
    from tests.conftest import _MIGRATED, _create_postgres_schema, _reset_postgres, _sqlite_template

    if url.startswith("postgresql"):
        if url not in _MIGRATED:
            await _create_postgres_schema(url)
            _MIGRATED.add(url)
        await _reset_postgres(url)
        return Database(url)
    path = url.split(":///", 1)[1] + f".{n}"
    shutil.copyfile(_sqlite_template(), path)
    return Database(f"sqlite+aiosqlite:///{path}")


async def _exclusion_scenario(url: str, n: int, rows: list[tuple[str, bool, bool]]) -> None:
    db = await _fresh_database(url, n)
    now = datetime(2026, 3, 2, 1, tzinfo=UTC)
    try:
        async with db.session() as session:
            world = await build_world(session, now, targets=len(rows), inspectors=4)
            # Task 1 is "another task" (SC002) with an executed draw the histories belong to.
            other = await new_task(session, now, name="其他任务", item_codes=["SC002"])
            draw = Draw(
                task_id=other,
                status=DrawStatus.EXECUTED,
                seed_hex="0" * 64,
                commitment="0" * 64,
                candidate_digest="0" * 64,
                committed_by="test",
                committed_at=now,
            )
            session.add(draw)
            await session.flush()
            assert draw.id is not None
            expected: set[str] = set()
            for target, (kind, alive, active) in zip(world.targets, rows, strict=True):
                target.status = "存续" if alive else "注销"
                target.active = active
                session.add(target)
                await _history(session, now, target, kind, draw.id)
                if alive and active and HISTORIES[kind]:
                    expected.add(target.key)
            task_id = await new_task(session, now, ratio_policy="all")
        async with db.read() as session:
            task = await session.get(Task, task_id)
            assert task is not None
            found = await candidates(session, task, mode_of(task.selection_mode))
        assert set(found.keys()) == expected
        if not expected:
            return
        draw_id = await run_draw(db, now, task_id)
        async with db.read() as session:
            drawn = set(
                await session.exec(
                    select(Inspection.target_key)
                    .join(InspectionItem, col(InspectionItem.inspection_id) == col(Inspection.id))
                    .where(
                        InspectionItem.task_id == task_id,
                        Inspection.status != InspectionStatus.CANCELLED,
                    )
                )
            )
            check = await verify_draw(session, draw_id=draw_id)
        # Policy `all` draws every candidate: exactly the allowed targets, nothing excluded.
        assert drawn == expected
        assert check.consistent, check.problems
    finally:
        await db.dispose()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(sorted(HISTORIES)), st.booleans(), st.booleans()),
        min_size=1,
        max_size=24,
    )
)
def test_excluded_targets_are_never_candidates_nor_drawn(
    db_url: str, rows: list[tuple[str, bool, bool]]
) -> None:
    # Each example gets a database of its own (Hypothesis cannot share an async fixture).
    test_excluded_targets_are_never_candidates_nor_drawn.examples += 1  # type: ignore[attr-defined]
    n = test_excluded_targets_are_never_candidates_nor_drawn.examples  # type: ignore[attr-defined]
    asyncio.run(_exclusion_scenario(db_url, n, rows))


test_excluded_targets_are_never_candidates_nor_drawn.examples = 0  # type: ignore[attr-defined]


# --- scope and pools ---------------------------------------------------------------------------


async def test_filters_and_tags_narrow_the_candidates(db: Database, clock: FrozenClock) -> None:
    world = await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(
            session,
            clock.now(),
            filters={"regions": ["城关镇"], "industries": ["零售业"], "tags": ["食品"]},
        )
    async with db.read() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        found = await candidates(session, task, mode_of(task.selection_mode))
    expected = {
        t.key
        for t in world.targets
        if t.region == "城关镇" and t.industry == "零售业" and "食品" in t.tags.split(";")
    }
    assert expected and set(found.keys()) == expected


async def test_candidates_come_grouped_and_a_broken_row_stops_them(
    db: Database, clock: FrozenClock
) -> None:
    world = await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    async with db.read() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        found = await candidates(session, task, mode_of(task.selection_mode))
    # The database's groups hold exactly the (key, class, flagged) of every target in scope.
    assert isinstance(found.candidates, dsr.CandidateGroups)
    flag = task.flag_threshold
    assert sorted(tuple(c) for c in found.candidates) == sorted(
        (
            t.key,
            t.credit_class,
            dsr.is_flagged(
                abnormal=t.abnormal,
                serious_illegal=t.serious_illegal,
                complaints=t.complaints,
                threshold=flag,
            ),
        )
        for t in world.targets
        if t.active and t.status == "存续"
    )
    for change, problem in (("credit_class", "credit class"), ("key", "newline")):
        async with db.session() as session:
            target = await session.get(Target, world.targets[0].id)
            assert target is not None
            before = getattr(target, change)
            setattr(target, change, "X" if change == "credit_class" else "K1\nK2")
            session.add(target)
        async with db.read() as session:
            task = await session.get(Task, task_id)
            assert task is not None
            with pytest.raises(ValueError, match=problem):
                await candidates(session, task, mode_of(task.selection_mode))
        async with db.session() as session:
            target = await session.get(Target, world.targets[0].id)
            assert target is not None
            setattr(target, change, before)
            session.add(target)


async def test_pool_follows_the_selection_mode(db: Database, clock: FrozenClock) -> None:
    world = await seeded(db, clock, inspectors=9)
    async with db.session() as session:
        world.inspectors[0].certified = False
        world.inspectors[1].active = False
        session.add_all(world.inspectors[:2])
        task_id = await new_task(
            session, clock.now(), selection_mode="stations", stations=["SJJ-CG"]
        )
    async with db.read() as session:
        task = await session.get(Task, task_id)
        assert task is not None

        async def certs(mode: dsr.Mode) -> set[str]:
            return {m.entry.cert_no for m in await pool(session, task, mode)}

        everyone = await certs(dsr.Mode.BUREAU)
        cg = {i.cert_no for i in world.inspectors[2:9] if i.unit == "城关市场监管所"}
        bureau_staff = {i.cert_no for i in world.inspectors[2:9] if i.unit == ""}
        assert everyone == {i.cert_no for i in world.inspectors[2:9]}  # not SWJ, not 0 and 1
        assert await certs(dsr.Mode.STATIONS) == cg
        assert await certs(dsr.Mode.STATION) == cg
        assert await certs(dsr.Mode.BUREAU_STATIONS) == cg | bureau_staff
        regions = {
            m.entry.cert_no: m.entry.region
            for m in await pool(session, task, dsr.Mode.CROSS_REGION)
        }
    assert {regions[c] for c in cg} == {"城关"} and {regions[c] for c in bureau_staff} == {"SJJ"}


async def test_cross_region_never_sends_local_inspectors(db: Database, clock: FrozenClock) -> None:
    world = await seeded(db, clock, targets=40, inspectors=12)
    async with db.session() as session:
        task_id = await new_task(session, clock.now(), selection_mode="cross_region")
    draw_id = await run_draw(db, clock.now(), task_id)
    units = {i.id: i.unit for i in world.inspectors}
    async with db.read() as session:
        rows = list(
            await session.exec(
                select(Inspection.target_key, Assignment.inspector_id).join(
                    Assignment, col(Assignment.inspection_id) == col(Inspection.id)
                )
            )
        )
        check = await verify_draw(session, draw_id=draw_id)
    region = {t.key: t.region for t in world.targets}
    assert rows and check.consistent
    for key, inspector_id in rows:
        assert (
            units[inspector_id]
            != {"城关镇": "城关市场监管所", "东城街道": "东城市场监管所"}[region[key]]
        )


async def test_joint_task_groups_cover_every_department(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock, targets=50, inspectors=10, swj_inspectors=4)
    async with db.session() as session:
        task_id = await new_task(
            session,
            clock.now(),
            department_codes=["SJJ", "SWJ"],
            item_codes=["SC001", "SW001"],
            group_size=3,
        )
    draw_id = await run_draw(db, clock.now(), task_id)
    async with db.read() as session:
        rows = list(
            await session.exec(
                select(Assignment.inspection_id, Inspector.department_code).join(
                    Inspector, col(Inspector.id) == col(Assignment.inspector_id)
                )
            )
        )
        items = list(await session.exec(select(InspectionItem.item_code).distinct()))
        check = await verify_draw(session, draw_id=draw_id)
    groups: dict[int, list[str]] = {}
    for inspection_id, department in rows:
        groups.setdefault(inspection_id, []).append(department)
    assert groups and all(len(g) == 3 and set(g) == {"SJJ", "SWJ"} for g in groups.values())
    assert sorted(items) == ["SC001", "SW001"] and check.consistent


async def test_unmeetable_constraints_are_shortfalls_never_groups_of_one(
    db: Database, clock: FrozenClock
) -> None:
    # SC002 needs 特种设备; in 城关所 nobody has it (only inspectors 0, 4, 8 do; none in 城关).
    world = await seeded(db, clock, targets=30, inspectors=6)
    async with db.session() as session:
        for inspector in world.inspectors[:6]:
            inspector.expertise = "食品安全"
            session.add(inspector)
        task_id = await new_task(
            session,
            clock.now(),
            item_codes=["SC002"],
            selection_mode="station",
            stations=["SJJ-CG"],
        )
    async with db.session() as session:
        commitment = await commit_draw(session, task_id=task_id, actor="test", now=clock.now())
    async with db.session() as session:
        execution = await execute_draw(
            session, draw_id=commitment.draw_id, actor="test", now=clock.now(), detail_chat=777
        )
    assert execution.groups == 0 and len(execution.shortfalls) == execution.targets > 0
    assert {s.reason for s in execution.shortfalls} == {"缺少具备所需业务专长的执法人员"}
    async with db.read() as session:
        statuses = set(await session.exec(select(Inspection.status)))
        seats = (await session.exec(select(func.count()).select_from(Assignment))).one()
        detail = (
            await session.exec(select(OutboxMessage).where(OutboxMessage.chat_id == 777))
        ).one()
        group = (
            await session.exec(
                select(OutboxMessage).where(
                    OutboxMessage.chat_id == OFFICE_CHAT,
                    col(OutboxMessage.idem_key).startswith("draws:executed"),
                )
            )
        ).one()
    assert statuses == {InspectionStatus.SHORTFALL} and seats == 0
    assert execution.shortfalls[0].name in detail.text  # names only privately
    assert "未能组成检查组" in group.text and execution.shortfalls[0].key not in group.text


# --- refusals ----------------------------------------------------------------------------------


async def test_commit_refuses_what_cannot_be_drawn(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock, inspectors=1, swj_inspectors=0)
    async with db.session() as session:
        small = await new_task(session, clock.now())
        empty = await new_task(session, clock.now(), filters={"regions": ["火星"]})
    for task_id, key in (
        (999, "unknown_task"),
        (small, "pool_too_small"),
        (empty, "no_candidates"),
    ):
        with pytest.raises(DrawProblem) as problem:
            async with db.session() as session:
                await commit_draw(session, task_id=task_id, actor="test", now=clock.now())
        assert problem.value.key == key
        assert problem.value.message()  # every problem has a Chinese sentence


async def test_one_pending_draw_per_task_and_execution_happens_once(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    async with db.session() as session:
        first = await commit_draw(session, task_id=task_id, actor="test", now=clock.now())
    with pytest.raises(DrawProblem, match="pending"):
        async with db.session() as session:
            await commit_draw(session, task_id=task_id, actor="test", now=clock.now())
    async with db.session() as session:
        await execute_draw(session, draw_id=first.draw_id, actor="test", now=clock.now())
    with pytest.raises(DrawProblem, match="status_executed"):
        async with db.session() as session:
            await execute_draw(session, draw_id=first.draw_id, actor="test", now=clock.now())
    with pytest.raises(DrawProblem, match="already_drawn"):
        async with db.session() as session:
            await commit_draw(session, task_id=task_id, actor="test", now=clock.now())
    async with db.read() as session:
        inspections = (await session.exec(select(func.count()).select_from(Inspection))).one()
        actions = list(await session.exec(select(AuditLog.action).order_by(col(AuditLog.id))))
    assert inspections == sum(s.quota for s in first.strata)
    assert actions.count("draw.commit") == 1 and actions.count("draw.execute") == 1


async def test_changed_candidates_abandon_the_commitment(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
        commitment = await commit_draw(session, task_id=task_id, actor="test", now=clock.now())
    async with db.session() as session:
        session.add(
            Target(
                key=generate(random.Random(99)),
                name="新登记企业",
                credit_class="A",
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )
    async with db.session() as session:
        execution = await execute_draw(
            session, draw_id=commitment.draw_id, actor="test", now=clock.now()
        )
    assert execution.drifted
    async with db.read() as session:
        draw = await session.get(Draw, commitment.draw_id)
        inspections = (await session.exec(select(func.count()).select_from(Inspection))).one()
        notice = (
            await session.exec(
                select(OutboxMessage).where(col(OutboxMessage.idem_key).startswith("draws:drift"))
            )
        ).one()
    assert draw is not None and draw.status == DrawStatus.ABANDONED and draw.record == {}
    assert inspections == 0 and f"/draw {task_id}" in notice.text
    assert draw.seed_hex not in notice.text  # an unused seed is never published


# --- void --------------------------------------------------------------------------------------


async def test_void_keeps_the_record_and_ends_everything_else(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    draw_id = await run_draw(db, clock.now(), task_id)
    with pytest.raises(DrawProblem, match="reason_missing"):
        async with db.session() as session:
            await void_draw(session, draw_id=draw_id, reason="  ", actor="test", now=clock.now())
    async with db.session() as session:
        voided = await void_draw(
            session, draw_id=draw_id, reason="名录有误", actor="test", now=clock.now()
        )
    assert voided.cancelled > 0 and voided.withdrawn == 2 * voided.cancelled
    async with db.read() as session:
        draw = await session.get(Draw, draw_id)
        task = await session.get(Task, task_id)
        inspections = set(await session.exec(select(Inspection.status)))
        seats = set(await session.exec(select(Assignment.status)))
        duties = set(await session.exec(select(Duty.status)))
        groups = list(
            await session.exec(
                select(OutboxMessage.chat_id).where(
                    col(OutboxMessage.idem_key).startswith("draws:voided")
                )
            )
        )
        check = await verify_draw(session, draw_id=draw_id)
    assert draw is not None and draw.status == DrawStatus.VOIDED and draw.record
    assert draw.void_reason == "名录有误" and draw.voided_by == "test"
    assert task is not None and task.status == TaskStatus.PLANNED
    assert inspections == {InspectionStatus.CANCELLED}
    assert seats == {AssignmentStatus.WITHDRAWN} and duties == {DutyStatus.CANCELLED}
    assert sorted(groups) == sorted([OFFICE_CHAT, SJJ_CHAT])
    assert check.consistent and check.status == DrawStatus.VOIDED
    with pytest.raises(DrawProblem, match="status_voided"):
        async with db.session() as session:
            await void_draw(session, draw_id=draw_id, reason="再次", actor="test", now=clock.now())
    # The task can be drawn again; the new draw ignores the voided inspections.
    again = await run_draw(db, clock.now(), task_id)
    async with db.read() as session:
        assert (await verify_draw(session, draw_id=again)).consistent


async def test_void_refuses_once_results_exist_and_abandons_a_commitment(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
        pending_task = await new_task(session, clock.now(), name="另一个任务")
    draw_id = await run_draw(db, clock.now(), task_id)
    async with db.session() as session:
        inspection = (await session.exec(select(Inspection))).first()
        assert inspection is not None
        inspection.status = InspectionStatus.SUBMITTED
        session.add(inspection)
    with pytest.raises(DrawProblem, match="has_results"):
        async with db.session() as session:
            await void_draw(session, draw_id=draw_id, reason="错误", actor="test", now=clock.now())
    async with db.session() as session:
        commitment = await commit_draw(session, task_id=pending_task, actor="test", now=clock.now())
    async with db.session() as session:
        voided = await void_draw(
            session, draw_id=commitment.draw_id, reason="不抽了", actor="test", now=clock.now()
        )
    assert voided.status == DrawStatus.ABANDONED


# --- verification ------------------------------------------------------------------------------


async def _tamper(db: Database, draw_id: int, change: str) -> None:
    async with db.session() as session:
        draw = await session.get(Draw, draw_id)
        assert draw is not None
        record = json.loads(json.dumps(draw.record))
        stratum = next(s for s in record["strata"] if s["selected"])
        if change == "seed":
            record["seed_hex"] = "f" * 64
        elif change == "candidate":
            stratum["candidates"][0] = stratum["candidates"][0][:-1] + "X"
        elif change == "selected":
            spare = next(k for k in stratum["candidates"] if k not in stratum["selected"])
            stratum["selected"][0] = spare
        draw.record = record
        session.add(draw)


@pytest.mark.parametrize("change", ["seed", "candidate", "selected"])
async def test_verify_finds_a_tampered_record(
    db: Database, clock: FrozenClock, change: str
) -> None:
    await seeded(db, clock, targets=80)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    draw_id = await run_draw(db, clock.now(), task_id)
    async with db.read() as session:
        exported = await record_json(session, draw_id=draw_id)
    assert verify_text(exported) == []
    await _tamper(db, draw_id, change)
    async with db.read() as session:
        check = await verify_draw(session, draw_id=draw_id)
        tampered = await record_json(session, draw_id=draw_id)
    assert not check.consistent and check.problems
    assert verify_text(tampered)


async def test_verify_compares_the_seats_with_the_record(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    draw_id = await run_draw(db, clock.now(), task_id)
    async with db.session() as session:
        seat = (await session.exec(select(Assignment))).first()
        assert seat is not None
        seat.status = AssignmentStatus.WITHDRAWN  # someone edited the database by hand
        session.add(seat)
    async with db.read() as session:
        check = await verify_draw(session, draw_id=draw_id)
    assert not check.problems and check.seat_problems == 1 and not check.consistent


def test_verify_text_explains_unreadable_files() -> None:
    for raw in ("not json", "{}", '{"algorithm": "dsr-draw/1"}', "[]"):
        with pytest.raises(DrawProblem) as problem:
            verify_text(raw)
        assert problem.value.key == "record_unreadable"


async def test_verify_and_record_of_an_unexecuted_draw(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
        commitment = await commit_draw(session, task_id=task_id, actor="test", now=clock.now())
    async with db.read() as session:
        for call in (verify_draw, record_json):
            with pytest.raises(DrawProblem) as problem:
                await call(session, draw_id=commitment.draw_id)
            assert problem.value.key == "not_executed"
            with pytest.raises(DrawProblem, match="unknown_draw"):
                await call(session, draw_id=4242)


# --- replacement after a recusal ---------------------------------------------------------------


async def test_replace_member_appends_to_the_record_and_still_verifies(
    db: Database, clock: FrozenClock
) -> None:
    await seeded(db, clock, inspectors=8)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    draw_id = await run_draw(db, clock.now(), task_id)
    async with db.read() as session:
        before = json.dumps((await session.get(Draw, draw_id)).record, sort_keys=True)  # type: ignore[union-attr]
        seat = (await session.exec(select(Assignment).order_by(col(Assignment.id)))).first()
        assert seat is not None and seat.id is not None
    async with db.session() as session:
        outcome = await replace_member(
            session, assignment_id=seat.id, now=clock.now(), actor="tg:3001"
        )
    assert outcome.replaced and outcome.new_assignment_id and outcome.cert_no
    async with db.read() as session:
        draw = await session.get(Draw, draw_id)
        assert draw is not None
        old = await session.get(Assignment, seat.id)
        new = await session.get(Assignment, outcome.new_assignment_id)
        check = await verify_draw(session, draw_id=draw_id)
    after = json.loads(before)
    # Append-only: everything stored before is unchanged; one replacement was added.
    assert {k: v for k, v in draw.record.items() if k != "replacements"} == {
        k: v for k, v in after.items() if k != "replacements"
    }
    assert len(draw.record["replacements"]) == 1
    assert draw.record["replacements"][0]["replacement"] == outcome.cert_no
    assert old is not None and old.status == AssignmentStatus.RECUSED
    assert new is not None and new.replaces_id == seat.id and new.draw_id == draw_id
    assert new.inspection_id == seat.inspection_id
    assert check.consistent and check.replacements == 1
    with pytest.raises(DrawProblem, match="seat_not_live"):
        async with db.session() as session:
            await replace_member(session, assignment_id=seat.id, now=clock.now(), actor="x")


async def test_replace_member_reports_a_shortfall(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock, targets=10, inspectors=2, swj_inspectors=0)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    draw_id = await run_draw(db, clock.now(), task_id)
    async with db.read() as session:
        seat = (await session.exec(select(Assignment))).first()
        assert seat is not None and seat.id is not None
    async with db.session() as session:
        outcome = await replace_member(session, assignment_id=seat.id, now=clock.now(), actor="x")
    assert not outcome.replaced and outcome.reason == dsr.NO_REPLACEMENT
    async with db.read() as session:
        check = await verify_draw(session, draw_id=draw_id)
        draw = await session.get(Draw, draw_id)
    assert check.consistent
    assert draw is not None and draw.record["replacements"][0]["replacement"] is None


# --- joint inspections (联合抽查) ---------------------------------------------------------------


async def draw_tax_task(db: Database, clock: FrozenClock, *, mergeable: bool) -> int:
    """Task B of the merge tests: SWJ's SW001 on every target, its window overlapping A's."""
    async with db.session() as session:
        b = await new_task(
            session,
            clock.now(),
            name="税务任务",
            item_codes=["SW001"],
            department_codes=["SWJ"],
            ratio_policy="all",
            window_start=date(2026, 5, 1),
            window_end=date(2026, 8, 31),
            mergeable=mergeable,
        )
    return await run_draw(db, clock.now(), b)


async def _two_tasks(
    db: Database, clock: FrozenClock, *, mergeable: bool
) -> tuple[int, int, set[str]]:
    """Task A (SC001) drawn; then task B (SW001, SWJ) draws every target, A's among them.

    Returns the keys of A's inspections that got a group (a shortfall is not joinable)."""
    await seeded(db, clock, targets=30, inspectors=8, swj_inspectors=5)
    async with db.session() as session:
        a = await new_task(session, clock.now(), ratio_policy="all", name="市场监管任务")
    draw_a = await run_draw(db, clock.now(), a)
    async with db.read() as session:
        keys_a = set(
            await session.exec(
                select(Inspection.target_key).where(Inspection.status == InspectionStatus.ASSIGNED)
            )
        )
    draw_b = await draw_tax_task(db, clock, mergeable=mergeable)
    return draw_a, draw_b, keys_a


async def _live(session: AsyncSession) -> list[Inspection]:
    return list(
        await session.exec(
            select(Inspection).where(Inspection.status != InspectionStatus.CANCELLED)
        )
    )


async def _departments(session: AsyncSession, inspection_id: int | None) -> set[str]:
    return set(
        await session.exec(
            select(Inspector.department_code)
            .join(Assignment, col(Assignment.inspector_id) == col(Inspector.id))
            .where(
                Assignment.inspection_id == inspection_id,
                col(Assignment.status).in_(["pending", "confirmed"]),
            )
        )
    )


async def _items(session: AsyncSession, inspection_id: int | None) -> list[str]:
    return sorted(
        await session.exec(
            select(InspectionItem.item_code).where(
                InspectionItem.inspection_id == inspection_id,
                col(InspectionItem.voided_at).is_(None),
            )
        )
    )


async def test_mergeable_tasks_merge_into_one_visit(db: Database, clock: FrozenClock) -> None:
    draw_a, draw_b, keys_a = await _two_tasks(db, clock, mergeable=True)
    async with db.read() as session:
        merged = [i for i in await _live(session) if i.merged]
        gone = list(
            await session.exec(
                select(Inspection).where(Inspection.status == InspectionStatus.CANCELLED)
            )
        )
        b = await session.get(Draw, draw_b)
        assert b is not None
        short_b = {s["target"] for s in b.record["shortfalls"]}
        deadlines = {
            d.subject: d.deadline
            for d in await session.exec(
                select(Duty).where(Duty.kind == "inspect", Duty.status == DutyStatus.OPEN)
            )
        }
        for inspection in merged:
            assert await _items(session, inspection.id) == ["SC001", "SW001"]
            # B's group joins A's (unless B could not form one there: the office decides).
            both = {"SJJ"} if inspection.target_key in short_b else {"SJJ", "SWJ"}
            assert await _departments(session, inspection.id) == both
            assert deadlines[f"inspection:{inspection.id}"] == date(2026, 6, 30)
        checks = [await verify_draw(session, draw_id=d) for d in (draw_a, draw_b)]
    # One visit per target of A, kept by A's draw; B's own inspections folded into them.
    assert {i.target_key for i in merged} == keys_a and len(gone) == len(keys_a)
    assert all(i.draw_id == draw_a for i in merged)
    assert {g.merged_into_id for g in gone} == {i.id for i in merged}
    assert {(i.window_start, i.window_end) for i in merged} == {
        (date(2026, 5, 1), date(2026, 6, 30))
    }
    assert all(c.consistent for c in checks), [c.problems for c in checks]
    async with db.session() as session:
        report = await merge_draw(session, draw_id=draw_b, actor="test", now=clock.now())
    assert not report.merged_now and len(report.merged_before) == len(keys_a)
    assert {m.how for m in report.merged_before} == {"auto"}


async def test_overlap_of_a_non_mergeable_task_waits_for_merge(
    db: Database, clock: FrozenClock
) -> None:
    draw_a, draw_b, keys_a = await _two_tasks(db, clock, mergeable=False)
    async with db.read() as session:
        before = len(await _live(session))
        doubled = [i for i in await _live(session) if i.target_key in keys_a]
    assert len(doubled) == 2 * len(keys_a)  # two visits each, until the office decides
    async with db.session() as session:
        report = await merge_draw(session, draw_id=draw_b, actor="test", now=clock.now())
    assert len(report.merged_now) == len(keys_a)
    assert {m.how for m in report.merged_now} == {"manual"}
    async with db.read() as session:
        after = await _live(session)
        checks = [await verify_draw(session, draw_id=d) for d in (draw_a, draw_b)]
    assert len(after) == before - len(keys_a)
    assert all(c.consistent for c in checks), [c.problems for c in checks]
    # Voiding B afterwards takes its items and seats out of the merged visits, which go on.
    async with db.session() as session:
        voided = await void_draw(session, draw_id=draw_b, reason="重复", actor="t", now=clock.now())
    # A drew every target, so all of B's inspections were folded into A's: none to cancel.
    assert voided.kept == len(keys_a) and voided.cancelled == 0
    async with db.read() as session:
        for inspection in await _live(session):
            assert inspection.draw_id == draw_a
            assert await _items(session, inspection.id) == ["SC001"]
            if inspection.status == InspectionStatus.ASSIGNED:
                assert await _departments(session, inspection.id) == {"SJJ"}
        check_a = await verify_draw(session, draw_id=draw_a)
    assert check_a.consistent


async def test_a_target_a_later_draw_left_without_a_group_joins_the_earlier_visit_on_merge(
    db: Database, clock: FrozenClock
) -> None:
    """/merge folds a shortfall of the later draw into the other task's visit, as an automatic
    merge does (its group goes; the office decides about the department without a member)."""
    await seeded(db, clock, targets=30, inspectors=8, swj_inspectors=5)
    async with db.session() as session:
        a = await new_task(session, clock.now(), ratio_policy="all", name="市场监管任务")
    await run_draw(db, clock.now(), a)
    async with db.session() as session:
        visits = list(
            await session.exec(
                select(Inspection).where(Inspection.status == InspectionStatus.ASSIGNED)
            )
        )
        blocked = min(i.target_key for i in visits)
        for inspector in await session.exec(
            select(Inspector).where(Inspector.department_code == "SWJ")
        ):
            inspector.conflicts = blocked  # every SWJ inspector must recuse from this target
            session.add(inspector)
    draw_b = await draw_tax_task(db, clock, mergeable=False)
    async with db.read() as session:
        [short] = await session.exec(
            select(Inspection).where(Inspection.draw_id == draw_b, Inspection.target_key == blocked)
        )
    assert short.status == InspectionStatus.SHORTFALL
    async with db.session() as session:
        report = await merge_draw(session, draw_id=draw_b, actor="test", now=clock.now())
    assert blocked in {m.key for m in report.merged_now}
    assert len(report.merged_now) == len(visits)
    async with db.read() as session:
        kept = [i for i in await _live(session) if i.target_key == blocked]
        assert [i.draw_id for i in kept] == [visits[0].draw_id]
        assert await _items(session, kept[0].id) == ["SC001", "SW001"]
        assert await _departments(session, kept[0].id) == {"SJJ"}


# --- the liaison's list ------------------------------------------------------------------------


async def test_department_list_goes_privately_to_that_departments_liaison(
    db: Database, clock: FrozenClock
) -> None:
    from bot.draws import send_department_list

    await seeded(db, clock)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    draw_id = await run_draw(db, clock.now(), task_id)
    with pytest.raises(DrawProblem, match="not_liaison"):
        async with db.session() as session:
            await send_department_list(
                session,
                draw_id=draw_id,
                department_index=0,
                tg_user_id=5,
                liaison_departments=["SWJ"],
                now=clock.now(),
            )
    for expected in (1, 0):
        async with db.session() as session:
            sent = await send_department_list(
                session,
                draw_id=draw_id,
                department_index=0,
                tg_user_id=5,
                liaison_departments=["SJJ"],
                now=clock.now(),
            )
        assert sent.queued == expected
    async with db.read() as session:
        message = (
            await session.exec(select(OutboxMessage).where(OutboxMessage.chat_id == 5))
        ).one()
    assert not message.is_group and sent.entries[0].key in message.text
    assert sent.entries[0].name in message.text and "检查组" in message.text


# --- conflicts (回避) and rotation, from the directories ---------------------------------------


async def test_declared_conflicts_and_the_previous_group_are_never_seated(
    db: Database, clock: FrozenClock
) -> None:
    world = await seeded(db, clock, targets=20, inspectors=10)
    conflicted = world.inspectors[:2]
    async with db.session() as session:
        for inspector in conflicted:
            inspector.conflicts = ";".join(t.key for t in world.targets)
            session.add(inspector)
        first = await new_task(session, clock.now(), ratio_policy="all")
    draw_one = await run_draw(db, clock.now(), first)

    async def seats(draw_id: int) -> dict[str, set[int]]:
        async with db.read() as session:
            rows = await session.exec(
                select(Inspection.target_key, Assignment.inspector_id)
                .join(Assignment, col(Assignment.inspection_id) == col(Inspection.id))
                .where(Assignment.draw_id == draw_id)
            )
            out: dict[str, set[int]] = {}
            for key, inspector_id in rows:
                out.setdefault(key, set()).add(inspector_id)
            return out

    before = await seats(draw_one)
    assert before and not {i.id for i in conflicted} & set().union(*before.values())
    # The visits happened and were published; a second task draws the same targets.
    async with db.session() as session:
        for inspection in await session.exec(select(Inspection)):
            inspection.status = InspectionStatus.PUBLISHED
            session.add(inspection)
        second = await new_task(session, clock.now(), ratio_policy="all", item_codes=["SC002"])
    draw_two = await run_draw(db, clock.now(), second)
    after = await seats(draw_two)
    async with db.read() as session:
        record = (await session.get(Draw, draw_two)).record  # type: ignore[union-attr]
        check = await verify_draw(session, draw_id=draw_two)
    assert check.consistent and record["previous_groups"]
    for key, members in after.items():
        assert not members & before.get(key, set())  # rotation: nobody checks it twice running
    assert not {i.id for i in conflicted} & set().union(*after.values())
