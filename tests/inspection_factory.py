"""The world after a draw, written straight into the database (issue #4's tests do not depend on
the draw service): departments, items, a target, inspectors, a task, an executed draw, one
inspection with its items and group, and the people bound to it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from bot import draw as dsr
from bot.uscc import generate
from storage.db import Database
from storage.models import (
    Assignment,
    CheckItem,
    Department,
    Draw,
    DrawStatus,
    Inspection,
    InspectionItem,
    Inspector,
    Person,
    Role,
    RoleGrant,
    Target,
    Task,
    TaskStatus,
)

# Telegram user ids of the people of the world.
INSPECTOR_A = 2001
INSPECTOR_B = 2002
INSPECTOR_C = 2003  # the spare inspector, for replacements
LIAISON_SJJ = 3001
LIAISON_SWJ = 3002
STRANGER = 4040


@dataclass
class World:
    task_id: int
    draw_id: int
    inspection_id: int
    target_id: int
    inspector_ids: list[int]
    assignment_ids: list[int]
    item_ids: list[int] = field(default_factory=list)  # InspectionItem ids
    uscc: str = ""


async def _person(session: AsyncSession, tg: int, name: str, now: datetime) -> Person:
    person = Person(tg_user_id=tg, display_name=name, created_at=now)
    session.add(person)
    await session.flush()
    return person


async def bind_inspector(
    session: AsyncSession, tg: int, inspector_id: int, department: str, now: datetime
) -> None:
    inspector = await session.get(Inspector, inspector_id)
    assert inspector is not None
    person = await _person(session, tg, inspector.name, now)
    assert person.id is not None
    session.add(
        RoleGrant(
            person_id=person.id,
            role=Role.INSPECTOR,
            department_code=department,
            inspector_id=inspector_id,
            granted_at=now,
        )
    )


async def bind_liaison(
    session: AsyncSession, tg: int, department: str, name: str, now: datetime
) -> None:
    person = await _person(session, tg, name, now)
    assert person.id is not None
    session.add(
        RoleGrant(
            person_id=person.id, role=Role.LIAISON, department_code=department, granted_at=now
        )
    )


async def build_world(
    db: Database,
    now: datetime,
    *,
    bind: tuple[bool, bool] = (True, True),
    items: int = 2,
    window: tuple[date, date] = (date(2026, 2, 23), date(2026, 3, 31)),
    liaisons: bool = True,
) -> World:
    rng = random.Random(11)
    async with db.session() as session:
        for code, name, kind, parent in (
            ("SJJ", "县市场监督管理局", "部门", None),
            ("SJJ-CG", "城关市场监管所", "所", "SJJ"),
            ("SWJ", "县税务局", "部门", None),
            ("WJW", "县卫生健康委员会", "部门", None),
        ):
            session.add(
                Department(
                    code=code,
                    name=name,
                    kind=kind,
                    parent_code=parent,
                    created_at=now,
                    updated_at=now,
                )
            )
        codes = []
        for n in range(items):
            code = f"SJJ-{n + 1:03d}"
            codes.append(code)
            session.add(
                CheckItem(
                    code=code,
                    name=["食品经营许可情况检查", "食品标签标识检查", "计量器具检查"][n % 3],
                    basis="《中华人民共和国食品安全法》第三十五条",
                    department_code="SJJ",
                    content="检查是否取得食品经营许可证，许可证是否在有效期内",
                    created_at=now,
                    updated_at=now,
                )
            )
        uscc = generate(rng)
        target = Target(
            key=uscc,
            uscc=uscc,
            name="城关示范超市有限公司",
            subject_type="有限责任公司",
            address="城关镇人民路 8 号",
            region="城关镇",
            credit_class="C",
            abnormal=True,
            complaints=4,
            created_at=now,
            updated_at=now,
        )
        session.add(target)
        # A real, verifiable record of the pure algorithm (bot.draw): the group is whoever it
        # picked, so the replacement after a recusal is the algorithm's own next pick.
        certs = ("ZF00000", "ZF00001", "ZF00002")
        record = dsr.draw(
            [dsr.Candidate(uscc, "C")],
            [dsr.Inspector(cert, "SJJ") for cert in certs],
            dsr.DrawParams(policy=dsr.Policy.ALL),
            seed_hex="5" * 64,
        )
        (group,) = record.groups
        spare = next(c for c in certs if c not in group.members)
        inspectors = []
        for cert, (name, dept, phone) in zip(
            (*group.members, spare),
            (
                ("张三", "SJJ-CG", "13800000001"),
                ("李四", "SJJ", "13800000002"),
                ("王五", "SJJ", "13800000003"),
            ),
            strict=True,
        ):
            inspector = Inspector(
                cert_no=cert,
                name=name,
                department_code=dept,
                unit="城关市场监管所" if dept == "SJJ-CG" else "",
                phone=phone,
                created_at=now,
                updated_at=now,
            )
            session.add(inspector)
            inspectors.append(inspector)
        await session.flush()
        task = Task(
            name="2026 年第一批食品经营者联合抽查",
            year=2026,
            status=TaskStatus.DRAWN,
            item_codes=codes,
            department_codes=["SJJ"],
            lead_department="SJJ",
            window_start=window[0],
            window_end=window[1],
            created_by="tg:1000",
            created_at=now,
            updated_at=now,
        )
        session.add(task)
        await session.flush()
        assert task.id is not None and target.id is not None
        draw = Draw(
            task_id=task.id,
            status=DrawStatus.EXECUTED,
            seed_hex=record.seed_hex,
            commitment=record.commitment,
            candidate_digest=record.candidate_digest,
            record=json.loads(record.to_json()),
            committed_by="tg:1000",
            committed_at=now,
            executed_at=now,
        )
        session.add(draw)
        await session.flush()
        assert draw.id is not None
        inspection = Inspection(
            draw_id=draw.id,
            target_id=target.id,
            target_key=target.key,
            lead_department="SJJ",
            rank=dsr.rank(record.seed_hex, uscc),
            window_start=window[0],
            window_end=window[1],
            created_at=now,
            updated_at=now,
        )
        session.add(inspection)
        await session.flush()
        assert inspection.id is not None
        item_rows = []
        for code in codes:
            row = InspectionItem(
                inspection_id=inspection.id,
                task_id=task.id,
                draw_id=draw.id,
                item_code=code,
                year=2026,
            )
            session.add(row)
            item_rows.append(row)
        seats = []
        for pick, inspector in zip(group.picks, inspectors[:2], strict=True):
            assert inspector.id is not None
            seat = Assignment(
                inspection_id=inspection.id,
                inspector_id=inspector.id,
                pick_index=pick.j,
                draw_id=draw.id,
                created_at=now,
            )
            session.add(seat)
            seats.append(seat)
        await session.flush()
        for tg, inspector, wanted in zip(
            (INSPECTOR_A, INSPECTOR_B), inspectors[:2], bind, strict=True
        ):
            if wanted:
                assert inspector.id is not None
                await bind_inspector(session, tg, inspector.id, inspector.department_code, now)
        assert inspectors[2].id is not None
        await bind_inspector(session, INSPECTOR_C, inspectors[2].id, "SJJ", now)
        if liaisons:
            await bind_liaison(session, LIAISON_SJJ, "SJJ", "市场监管联络员", now)
            await bind_liaison(session, LIAISON_SWJ, "SWJ", "税务联络员", now)
        return World(
            task_id=task.id,
            draw_id=draw.id,
            inspection_id=inspection.id,
            target_id=target.id,
            inspector_ids=[i.id for i in inspectors if i.id is not None],
            assignment_ids=[s.id for s in seats if s.id is not None],
            item_ids=[r.id for r in item_rows if r.id is not None],
            uscc=uscc,
        )
