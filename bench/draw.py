"""How fast the draw runs at county-of-a-million scale, in the database.

Builds (once per run) a fresh database with 1,000,000 active 存续 targets in 5 strata (credit
classes A–D plus the flagged stratum: abnormal list, serious-illegal list, complaints ≥ 3) and
2,000 certified inspectors of one bureau spread over 10 stations, and one task (credit policy,
default ratios, group size 2, 全局内随机). A new SQLite file by default, or with
`--database-url postgresql+asyncpg://…` a throwaway database created next to the one named
(and dropped afterwards).

    .venv/bin/python -m bench.draw [--targets N] [--inspectors N] [--database-url URL] [--execute]
        [--sqlite-cache FILE]

What is timed (best of `--repeat` runs, seconds):

- read_keys_s: reading the candidate keys alone (`SELECT key … ORDER BY key` with the task's
  scope), the yardstick: no draw can be faster than reading what it draws from;
- draw_s: the target draw: the candidate query (scope, exclusions, class and flags; in this
  task's common case the keys come grouped by class and flag, `bot.draws.candidates`) plus
  `bot.draw.draw_targets` (quotas, ranks, selection, record);
- inspectors_s: the inspector pool and rotation queries plus `bot.draw.draw_inspectors` with
  the 2,000-inspector pool (the partial Fisher–Yates picks for every target);
- verify_s: `bot.draw.verify` on the record (every stratum, every rank, every pick), as
  anyone holding the published record re-runs it; reading the JSON back is reported on its
  own information line (`dsr verify FILE` does both).

Information lines also give the size of the record, the CPU seconds of each timed step (the
machine is shared: wall time grows with other programs' load, CPU time much less; a big draw's
forked child, which ranks part of the keys on the other core, in brackets) and, with
`--execute`, the whole chat execution in the database (inspections, seats, duties, every
assignment message queued; nine in ten inspectors are bound to a Telegram account). The last line is
machine-readable:

    draw_s=N inspectors_s=N verify_s=N read_keys_s=N ratio=N

with ratio = (draw_s + inspectors_s) / read_keys_s. Goals: draw_s + inspectors_s ≤ 5,
verify_s ≤ 3, ratio ≤ 3.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert, inspect, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel, func, select

import storage.models  # noqa: F401  (registers every table)
from bot import draw as dsr
from bot import uscc
from bot.draws import (
    candidates,
    commit_draw,
    execute_draw,
    params_for,
    pool,
    previous_groups,
    read_candidate_keys,
)
from bot.tasks import TaskSpec, create_task, mode_of
from storage.db import Database
from storage.models import (
    CheckItem,
    Department,
    Duty,
    Inspector,
    OutboxMessage,
    Person,
    Role,
    RoleGrant,
    Target,
    Task,
)

T = TypeVar("T")
NOW = datetime(2026, 3, 2, 1, tzinfo=UTC)
# Shares of the five strata: most targets are low risk (as in real directories).
STRATA = (("A", False, 0.55), ("B", False, 0.25), ("C", False, 0.1), ("D", False, 0.05))
FLAGGED_SHARE = 0.05
REGIONS = ("城关", "东城", "西湖", "南山", "北岭", "新区", "开发区", "滨江", "河口", "青山")
BATCH = 20_000


def _keys(count: int, seed: int = 20260302) -> list[str]:
    """`count` distinct, valid USCCs (GB 32100-2015), sorted like a directory export."""
    rng = random.Random(seed)
    keys: set[str] = set()
    while len(keys) < count:
        keys.add(uscc.generate(rng))
    return sorted(keys)


async def _populate(db: Database, targets: int, inspectors: int) -> int:
    """Directories and one task; returns the task id."""
    rng = random.Random(7)
    target_table: Any = Target.__table__  # type: ignore[attr-defined]
    inspector_table: Any = Inspector.__table__  # type: ignore[attr-defined]
    async with db.session() as session:
        session.add(Department(code="SJJ", name="县市场监督管理局", created_at=NOW, updated_at=NOW))
        for n, region in enumerate(REGIONS):
            session.add(
                Department(
                    code=f"SJJ-{n:02d}",
                    name=f"{region}市场监管所",
                    kind="所",
                    parent_code="SJJ",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        session.add(
            CheckItem(
                code="SC001",
                name="食品销售者检查",
                department_code="SJJ",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    keys = _keys(targets)
    bounds: list[tuple[float, str]] = []
    acc = 0.0
    for cls, _flag, share in STRATA:
        acc += share
        bounds.append((acc, cls))
    async with db.engine.begin() as conn:
        rows: list[dict[str, Any]] = []
        for n, key in enumerate(keys):
            roll = rng.random()
            flagged = roll >= 1 - FLAGGED_SHARE
            cls = next((c for b, c in bounds if roll < b), "D")
            rows.append(
                {
                    "key": key,
                    "uscc": key,
                    "name": f"企业{n}",
                    "subject_type": "有限责任公司",
                    "scope": "",
                    "address": "",
                    "region": REGIONS[n % len(REGIONS)] + "镇",
                    "industry": "零售业",
                    "status": "存续",
                    "credit_class": rng.choice("ABCD") if flagged else cls,
                    "abnormal": flagged,
                    "serious_illegal": False,
                    "complaints": 0,
                    "tags": "",
                    "active": True,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
            if len(rows) == BATCH:
                await conn.execute(insert(target_table), rows)
                rows = []
        if rows:
            await conn.execute(insert(target_table), rows)
        await conn.execute(
            insert(inspector_table),
            [
                {
                    "cert_no": f"ZF{n:06d}",
                    "name": f"检查员{n}",
                    "department_code": "SJJ" if n % 11 == 10 else f"SJJ-{n % 10:02d}",
                    "unit": "",
                    "position": "",
                    "expertise": "食品安全" if n % 3 else "特种设备",
                    "certified": True,
                    "conflicts": "",
                    "phone": "",
                    "active": True,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(inspectors)
            ],
        )
    # Nine in ten inspectors have opened their invite: their assignments are queued as
    # messages; the rest are reported to the office (no liaison here) as unreachable.
    person_table: Any = Person.__table__  # type: ignore[attr-defined]
    grant_table: Any = RoleGrant.__table__  # type: ignore[attr-defined]
    bound = [n for n in range(inspectors) if n % 10 != 9]
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(person_table),
            [{"tg_user_id": 10_000_000 + n, "display_name": "", "created_at": NOW} for n in bound],
        )
        await conn.execute(
            insert(grant_table),
            [
                {
                    "person_id": p,
                    "role": Role.INSPECTOR.value,
                    "inspector_id": n + 1,
                    "active": True,
                    "granted_at": NOW,
                }
                for p, n in enumerate(bound, 1)
            ],
        )
    async with db.session() as session:
        created = await create_task(
            session,
            TaskSpec(
                name="百万对象基准任务",
                year=2026,
                item_codes=["SC001"],
                department_codes=["SJJ"],
                window_start=date(2026, 4, 1),
                window_end=date(2026, 6, 30),
            ),
            actor="bench",
            now=NOW,
            today=date(2026, 3, 2),
        )
    return created.task_id


CPU: dict[str, tuple[float, float]] = {}
"""Per timed step, by name: the best CPU seconds of this process (all its threads) and of the
child processes it forked for that run (big draws rank part of their keys in one)."""


def _cpu() -> tuple[float, float]:
    """CPU seconds so far of this process and of its finished (waited-for) children."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


async def _best(repeat: int, work: Callable[[], Awaitable[T]], name: str = "") -> tuple[float, T]:
    """Best wall time of `repeat` runs (and, under `name`, the best CPU time) and the result."""
    best = float("inf")
    cpu = (float("inf"), 0.0)
    result: Any = None
    for _ in range(repeat):
        result = None  # freeing the previous result is not part of the next run
        start, (own, children) = time.perf_counter(), _cpu()
        result = await work()
        best = min(best, time.perf_counter() - start)
        end_own, end_children = _cpu()
        cpu = min(cpu, (end_own - own, end_children - children))
    if name:
        CPU[name] = cpu
    return best, result


async def _run(
    url: str, targets: int, inspectors: int, repeat: int, execute: bool, cache: Path | None = None
) -> None:
    """Populate (or copy the cached SQLite file), time every step, print the figures."""
    database = make_url(url).database
    if cache is not None and database and await asyncio.to_thread(cache.exists):
        await asyncio.to_thread(shutil.copyfile, cache, database)
        print(f"copied the populated database from {cache}")
    db = Database(url)
    try:
        task_id = (await _task_ids(db))[:1]
        if not task_id:
            async with db.engine.begin() as conn:
                await conn.run_sync(SQLModel.metadata.create_all)
            start = time.perf_counter()
            task_id = [await _populate(db, targets, inspectors)]
            print(
                f"populated {targets} targets and {inspectors} inspectors in "
                f"{time.perf_counter() - start:.1f} s ({db.dialect})"
            )
            if cache is not None and database:
                await db.dispose()
                await asyncio.to_thread(shutil.copyfile, database, cache)
        await _measure(db, task_id[0], targets, repeat, execute)
    finally:
        await db.dispose()


async def _task_ids(db: Database) -> list[int]:
    """The bench task of a copied database (none in a new one)."""
    async with db.engine.begin() as conn:
        if not await conn.run_sync(lambda c: inspect(c).has_table("task")):
            return []
        return list((await conn.execute(text("SELECT id FROM task ORDER BY id"))).scalars())


async def _measure(db: Database, task_id: int, targets: int, repeat: int, execute: bool) -> None:
    """The timed part of the run."""
    async with db.read() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        mode = mode_of(task.selection_mode)
        items = [i for i in [await session.get(CheckItem, 1)] if i is not None]
        params = params_for(task, items, mode)
        seed = dsr.new_seed()

        async def read_keys() -> list[str]:
            return await read_candidate_keys(session, task)

        async def target_draw() -> dsr.DrawRecord:
            found = await candidates(session, task, mode)
            return dsr.draw_targets(found.candidates, params, seed_hex=seed)

        async def inspector_draw() -> dsr.DrawRecord:
            members = [m.entry for m in await pool(session, task, mode)]
            previous = await previous_groups(session)
            return dsr.draw_inspectors(drawn, members, previous_groups=previous)

        read_keys_s, keys = await _best(repeat, read_keys, "read_keys")
        draw_s, drawn = await _best(repeat, target_draw, "draw")
        inspectors_s, record = await _best(repeat, inspector_draw, "inspectors")
    published = record.to_json()
    parse_s, parsed = await _best(repeat, _sync(lambda: dsr.DrawRecord.from_json(published)))
    verify_s, problems = await _best(repeat, _sync(lambda: dsr.verify(parsed)), "verify")
    assert problems == [], problems
    assert len(keys) == targets and record.candidate_count == targets
    strata = ", ".join(f"{s.name} {s.count}→{s.quota}" for s in record.strata if s.count)
    print(
        f"strata: {strata}; drawn {len(record.order)}, groups {len(record.groups)}, "
        f"skips {len(record.skips)}, shortfalls {len(record.shortfalls)}"
    )
    print(
        f"record: {len(published) / 1e6:.1f} MB JSON; reading it back (from_json) {parse_s:.2f} s"
    )
    print(
        "CPU seconds of this process, all threads (wall time grows when other programs "
        "share the cores; a database server's own CPU is not counted; a forked child's "
        "in brackets): "
        + " ".join(
            f"{name}={own:.2f}" + (f" (+{children:.2f})" if children >= 0.005 else "")
            for name, (own, children) in CPU.items()
        )
    )
    if execute:
        now = NOW
        async with db.session() as session:
            commitment = await commit_draw(session, task_id=task_id, actor="bench", now=now)
        start, start_cpu = time.perf_counter(), time.process_time()
        async with db.session() as session:
            done = await execute_draw(session, draw_id=commitment.draw_id, actor="bench", now=now)
        execute_s = time.perf_counter() - start
        execute_cpu = time.process_time() - start_cpu
        async with db.read() as session:
            queued = (await session.exec(select(func.count()).select_from(OutboxMessage))).one()
            duties = (await session.exec(select(func.count()).select_from(Duty))).one()
        print(
            f"execute in the database (inspections, seats, duties, announcements): "
            f"{execute_s:.1f} s ({execute_cpu:.1f} s CPU) for {done.inspections} inspections, "
            f"{duties} duties, "
            f"{queued} messages queued"
        )
    ratio = (draw_s + inspectors_s) / read_keys_s
    print(
        f"draw_s={draw_s:.2f} inspectors_s={inspectors_s:.2f} verify_s={verify_s:.2f} "
        f"read_keys_s={read_keys_s:.2f} ratio={ratio:.2f}"
    )


def _sync(work: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def run() -> T:
        return work()

    return run


async def _throwaway_postgres(url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    base = make_url(url)
    name = f"dsr_bench_draw_{int(time.time())}"
    admin = create_async_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))

    async def drop() -> None:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


async def main_async(args: argparse.Namespace) -> None:
    if args.database_url:
        url, drop = await _throwaway_postgres(args.database_url)
        try:
            await _run(url, args.targets, args.inspectors, args.repeat, args.execute)
        finally:
            await drop()
        return
    with tempfile.TemporaryDirectory(prefix="dsr-bench-draw-") as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}"
        cache = Path(args.sqlite_cache) if args.sqlite_cache else None
        await _run(url, args.targets, args.inspectors, args.repeat, args.execute, cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1_000_000)
    parser.add_argument("--inspectors", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--execute", action="store_true")
    parser.add_argument(
        "--sqlite-cache",
        default="",
        help="SQLite only: copy this populated file instead of populating (made when missing)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
