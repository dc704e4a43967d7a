"""How long one sweep takes with 1,000,000 open duties of which 1% are due, and its memory.

Builds a database the size of a busy province (20 departments, 2,000 bound inspectors with
their liaisons and groups, 5,000 inspections, 1,000,000 open duties), then runs `bot.sweeper.sweep`
once in its own process at Monday 2026-03-02 10:00 Beijing time. Of the duties due (spread over
every department and kind), 60% get a 懒政提醒单 (to the responsible inspector(s), liaison or
office members, copied to the liaison), 25% a 怠政督办单 (liaison, department group, office
group) and 15% a 失职问责单 (office group, with buttons). Each notice's own messages go out one
by one (about 9,900); the copies are one digest per recipient (liaisons, department groups, the
office group: about 190 messages): about 10,100 outbox messages for 10,000 due duties, where one
message per recipient per notice made 22,000. A second sweep right after must find nothing
(exactly once).

    .venv/bin/python -m bench.sweep [--duties N] [--due-ratio R] [--database-url URL]
        [--sqlite-cache FILE]

SQLite by default (a fresh file); with `--database-url postgresql+asyncpg://…` a throwaway
database is created next to the one named and dropped afterwards. `sweep_s` is the wall time of
the `sweep()` call (the process, its imports, the ORM mappers and the connection pool are up
before it starts, and it swept at 20:59 the evening before, when nothing was due, as a running
bot sweeps every minute);
peak RSS is the sweeping process's `ru_maxrss` (or its rendering child's, if larger), measured
from a lean wrapper process. CPU is given for the sweeping process and, apart, for the child it
forks to render a big batch's messages (bot.notices.FORK_AT). The last line is
machine-readable:

    sweep_s=N due=N peak_rss_mb=N
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel

import storage.models as m

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # Monday 10:00 in Beijing
TODAY = date(2026, 3, 2)
DEPARTMENTS = 20
INSPECTORS_PER_DEPARTMENT = 100
INSPECTIONS = 5_000
KINDS = ("confirm", "cosign", "inspect", "review", "publish", "followup")
CHUNK = 20_000


def table(model: type[SQLModel]) -> Table:
    found: Table = model.__table__  # type: ignore[attr-defined]
    return found


def department(index: int) -> str:
    return f"D{index % DEPARTMENTS + 1:02d}"


def duty_rows(count: int, due_every: int) -> Iterator[dict[str, Any]]:
    """The duties: every `due_every`-th is due today, the others later (1 to 90 days). The due
    ones are the `n`-th due duty's, spread over every inspection, department and kind (the
    duty's own index would put them all in one department)."""
    created = NOW - timedelta(days=30)
    for i in range(count):
        due = i % due_every == 0
        n = i // due_every if due else i
        inspection = n % INSPECTIONS
        kind = KINDS[n % len(KINDS)]
        member = inspection * 2 + (n // len(KINDS)) % 2  # one of the inspection's two seats
        inspector_id: int | None = None
        role = "inspector"
        if kind in ("confirm", "cosign", "followup"):
            inspector_id = _seat_inspector(member) + 1
        elif kind == "review":
            role = "liaison"
        elif kind == "publish":
            role = "office"
        row: dict[str, Any] = {
            "kind": kind,
            "subject": f"bench:{i}",
            "inspection_id": inspection + 1,
            "responsible_role": role,
            "inspector_id": inspector_id,
            "department_code": department(inspection),
            "status": "open",
            "created_at": created,
            "done_at": None,
            "supervision_deadline": None,
        }
        if due:
            ladder = n // DEPARTMENTS % 20  # independent of the department (n % 20)
            if ladder < 12:  # the reminder date has come (deadline Wednesday)
                row.update(stage=0, deadline=TODAY + timedelta(days=2), next_check_on=TODAY)
            elif ladder < 17:  # the deadline passed last Wednesday
                row.update(stage=1, deadline=TODAY - timedelta(days=5), next_check_on=TODAY)
            else:  # the supervision deadline passed last Friday
                row.update(
                    stage=2,
                    deadline=TODAY - timedelta(days=19),
                    supervision_deadline=TODAY - timedelta(days=3),
                    next_check_on=TODAY,
                )
        else:
            later = TODAY + timedelta(days=1 + i % 90)
            row.update(stage=i % 3, deadline=later + timedelta(days=7), next_check_on=later)
        yield row


def _seat_inspector(seat: int) -> int:
    """0-based inspector of a seat: the two seats of an inspection are in its department."""
    inspection, which = divmod(seat, 2)
    base = (inspection % DEPARTMENTS) * INSPECTORS_PER_DEPARTMENT
    return base + (inspection // DEPARTMENTS * 2 + which) % INSPECTORS_PER_DEPARTMENT


async def _insert(
    engine: AsyncEngine, model: type[SQLModel], rows: Iterator[dict[str, Any]]
) -> int:
    count = 0
    chunk: list[dict[str, Any]] = []
    async with engine.begin() as conn:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= CHUNK:
                await conn.execute(table(model).insert(), chunk)
                count += len(chunk)
                chunk = []
        if chunk:
            await conn.execute(table(model).insert(), chunk)
            count += len(chunk)
    return count


async def build(url: str, duties: int, due_every: int) -> None:
    from storage.db import make_engine  # the bot's engine: a SQLite file made as the bot makes it

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)
        stamp = {"created_at": NOW, "updated_at": NOW}
        await _insert(
            engine,
            m.Department,
            ({"code": department(d), "name": f"部门{d + 1}", **stamp} for d in range(DEPARTMENTS)),
        )
        inspectors = DEPARTMENTS * INSPECTORS_PER_DEPARTMENT
        await _insert(
            engine,
            m.Inspector,
            (
                {
                    "cert_no": f"C{i:06d}",
                    "name": f"检查员{i}",
                    "department_code": department(i // INSPECTORS_PER_DEPARTMENT),
                    **stamp,
                }
                for i in range(inspectors)
            ),
        )
        people: list[tuple[int, str, str | None, int | None]] = [
            (10_000 + i, "inspector", None, i + 1) for i in range(inspectors)
        ]
        people += [(50_000 + d, "liaison", department(d), None) for d in range(DEPARTMENTS)]
        people += [(60_000 + n, "office", None, None) for n in (1, 2)]
        await _insert(
            engine,
            m.Person,
            ({"tg_user_id": tg, "display_name": "", "created_at": NOW} for tg, *_ in people),
        )
        await _insert(
            engine,
            m.RoleGrant,
            (
                {
                    "person_id": n + 1,
                    "role": role,
                    "department_code": code,
                    "inspector_id": inspector,
                    "active": True,
                    "granted_at": NOW,
                }
                for n, (_tg, role, code, inspector) in enumerate(people)
            ),
        )
        chats = [(-1, "office", None)] + [
            (-100 - d, "department", department(d)) for d in range(20)
        ]
        await _insert(
            engine,
            m.ChatBinding,
            (
                {"chat_id": c, "kind": k, "department_code": code, "bound_by": 1, "bound_at": NOW}
                for c, k, code in chats
            ),
        )
        await _insert(
            engine,
            m.Target,
            ({"key": f"T{i:08d}", "name": f"对象{i}有限公司", **stamp} for i in range(INSPECTIONS)),
        )
        window = {"window_start": date(2026, 3, 1), "window_end": date(2026, 6, 30)}
        await _insert(
            engine,
            m.Task,
            iter(
                [
                    {
                        "name": "2026年度双随机抽查",
                        "year": 2026,
                        "lead_department": "D01",
                        "created_by": "bench",
                        **window,
                        **stamp,
                    }
                ]
            ),
        )
        await _insert(
            engine,
            m.Draw,
            iter(
                [
                    {
                        "task_id": 1,
                        "seed_hex": "00",
                        "commitment": "c",
                        "candidate_digest": "d",
                        "committed_by": "bench",
                        "committed_at": NOW,
                    }
                ]
            ),
        )
        await _insert(
            engine,
            m.Inspection,
            (
                {
                    "draw_id": 1,
                    "target_id": i + 1,
                    "target_key": f"T{i:08d}",
                    "lead_department": department(i),
                    "rank": str(i),
                    **window,
                    **stamp,
                }
                for i in range(INSPECTIONS)
            ),
        )
        await _insert(
            engine,
            m.InspectionItem,
            (
                {"inspection_id": i + 1, "task_id": 1, "draw_id": 1, "item_code": "X", "year": 2026}
                for i in range(INSPECTIONS)
            ),
        )
        await _insert(
            engine,
            m.Assignment,
            (
                {
                    "inspection_id": seat // 2 + 1,
                    "inspector_id": _seat_inspector(seat) + 1,
                    "pick_index": seat % 2,
                    "created_at": NOW,
                }
                for seat in range(INSPECTIONS * 2)
            ),
        )
        await _insert(engine, m.Duty, duty_rows(duties, due_every))
        if url.startswith("postgresql"):
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE"))
        else:
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


# --- the sweeping process -------------------------------------------------------------------


async def child(url: str) -> None:
    from sqlalchemy.orm import configure_mappers

    from bot.clock import FrozenClock
    from bot.config import Settings
    from bot.notices import prepare_messages
    from bot.render import text as render_text
    from bot.sweeper import sweep
    from storage.db import Database

    settings = Settings(_env_file=None, database_url=url, office_admins=[])
    db = Database(url)
    try:
        # What a running bot has done long before its sweeper's first minute: mapped the
        # models, read the text catalogue (its commands' descriptions, set at start), run its
        # jobs' start hooks (bot/scheduler.py: the notices' templates compiled, SQLite's WAL
        # checkpoint left to its own job) and opened the pool.
        configure_mappers()
        prepare_messages()
        await db.defer_checkpoints()
        render_text("commands.private.notices")
        async with db.read() as session:
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        # ... and swept every minute: the last sweep before quiet hours, the evening before,
        # found nothing due (the sweeps that issued notices in earlier days compiled the rest).
        evening = await sweep(db, FrozenClock(NOW - timedelta(hours=13, minutes=1)), settings)
        assert evening.due == 0 and not evening.quiet, evening
        clock = FrozenClock(NOW)
        started, cpu, forked = time.perf_counter(), time.process_time(), _children_cpu()
        report = await sweep(db, clock, settings)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        forked = _children_cpu() - forked
        again = await sweep(db, clock, settings)
    finally:
        await db.dispose()
    digests = getattr(report, "digests", 0)  # the same bench measures the code before them
    print(
        f"{seconds} {cpu} {report.due} {report.reminders} {report.supervisions} "
        f"{report.accountabilities} {report.messages} {digests} {again.due} {forked}"
    )


def _children_cpu() -> float:
    """CPU seconds of the child processes that ended (the batch's rendering child)."""
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


_MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, check=False)
sys.stdout.write(done.stdout.decode())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def fresh_database(base_url: str, workdir: Path) -> Iterator[str]:
    if base_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{workdir / 'sweep.sqlite3'}"
        return
    name = f"dsr_bench_sweep_{os.getpid()}"
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(base_url, f'CREATE DATABASE "{name}"'))
    try:
        yield url
    finally:
        asyncio.run(_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duties", type=int, default=1_000_000)
    parser.add_argument("--due-ratio", type=float, default=0.01)
    parser.add_argument("--database-url", default="sqlite")
    parser.add_argument(
        "--sqlite-cache",
        type=Path,
        help="a built SQLite database kept here between runs (made on the first run); each run "
        "sweeps a copy",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(child(args.child))
        return
    base_url = args.database_url
    if base_url.startswith("postgresql://"):
        base_url = "postgresql+asyncpg://" + base_url.split("://", 1)[1]
    backend = "SQLite" if base_url.startswith("sqlite") else "PostgreSQL"
    due_every = max(round(1 / args.due_ratio), 1)

    with (
        tempfile.TemporaryDirectory(prefix="dsr-bench-") as tmp,
        fresh_database(base_url, Path(tmp)) as url,
    ):
        started = time.perf_counter()
        cache: Path | None = args.sqlite_cache if backend == "SQLite" else None
        if cache is not None and cache.exists():
            shutil.copyfile(cache, Path(tmp) / "sweep.sqlite3")
            print(f"{backend}: copied {cache} (built by an earlier run)")
        else:
            asyncio.run(build(url, args.duties, due_every))
            print(
                f"{backend}: built {args.duties:,} open duties "
                f"in {time.perf_counter() - started:.0f} s"
            )
            if cache is not None:
                shutil.copyfile(Path(tmp) / "sweep.sqlite3", cache)
        env = os.environ | {"PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "dsr-pyc")}
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, sys.executable, "-m", "bench.sweep", "--child", url],
            stdout=subprocess.PIPE,
            env=env,
            check=False,
        )
        if done.returncode:
            raise SystemExit(f"the sweep failed ({done.returncode})")
        figures, peak_kib = done.stdout.decode().split("\n")[:2]
    (
        seconds,
        cpu,
        due,
        reminders,
        supervisions,
        accountabilities,
        messages,
        digests,
        again,
        forked,
    ) = figures.split()
    peak_mb = int(peak_kib) / 1024
    print(
        f"{backend}: one sweep, {int(due):,} due: {int(reminders):,} 懒政提醒单, "
        f"{int(supervisions):,} 怠政督办单, {int(accountabilities):,} 失职问责单, "
        f"{int(messages):,} messages queued ({int(digests):,} of them digests) "
        f"in {float(seconds):.2f} s "
        f"(CPU of the sweeping process {float(cpu):.2f} s, "
        f"of its rendering child {float(forked):.2f} s); "
        f"a second sweep found {again} due; peak RSS {peak_mb:.0f} MB"
    )
    if int(again):
        raise SystemExit("the second sweep found duties again: not exactly once")
    print(f"sweep_s={float(seconds):.2f} due={due} peak_rss_mb={peak_mb:.0f}")


if __name__ == "__main__":
    main()
