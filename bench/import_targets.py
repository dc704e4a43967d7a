"""How fast `dsr import targets` loads a big 检查对象名录库, and how much memory it takes.

Writes a synthetic CSV (1,000,000 rows by default) and XLSX (100,000 rows) with the 13 columns
of the targets template, then times `dsr import targets FILE` as a subprocess against a fresh
database for each: a new SQLite file by default, or with `--database-url postgresql+asyncpg://…`
a throwaway database created next to the one named (and dropped afterwards).

    .venv/bin/python -m bench.import_targets [--rows-csv N] [--rows-xlsx N] [--repeat N]
                                             [--database-url URL]

Rows/s is rows over the wall time of the whole import command, process startup included;
startup (the same command on a header-only file) is reported on its own as well, and so is
the CPU time, which a busy machine disturbs less than the wall time. A file over a megabyte
is checked in a child process forked by the import while the import writes (see
docs/imports.md): the CPU time is both processes' together, and the wall time only drops
below it when a second core is free. Each import runs `--repeat` times (3 by default), each
into a fresh database, and the median run counts: on this virtual machine the same import
takes 20–50% more CPU from one run to the next (nothing else running), so one run says as
much about the host as about the import; every run's time is printed. Peak RSS is the
largest `ru_maxrss` of the import's processes over all runs, taken in a lean wrapper
process. The last line is for machines:

    csv_rows_per_s=N xlsx_rows_per_s=N peak_rss_mb=N
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from openpyxl import Workbook
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot import uscc

HEADER = [
    "名称",
    "统一社会信用代码",
    "主体类型",
    "经营范围",
    "地址",
    "所属区域",
    "行业",
    "登记状态",
    "信用风险等级",
    "经营异常名录",
    "严重违法失信",
    "投诉举报次数",
    "标签",
]

_REGIONS = ["城关镇", "东城街道", "西湖街道", "南山镇", "北岭乡", "新区", "开发区", "滨江街道"]
_WORDS = ["华兴", "恒达", "鑫源", "和顺", "瑞丰", "宏图", "嘉禾", "永安", "天成", "金穗"]
_TRADES = [
    ("食品", "食品制造业", "食品生产；食品销售；预包装食品批发"),
    ("餐饮", "餐饮业", "餐饮服务；小型餐饮；热食类食品制售"),
    ("药房", "零售业", "药品零售；医疗器械经营；保健食品销售"),
    ("建材", "批发业", "建筑材料销售；五金产品零售；金属材料销售"),
    ("电梯", "通用设备制造业", "特种设备安装改造修理；电梯销售"),
    ("印刷", "印刷业", "包装装潢印刷品印刷；其他印刷品印刷"),
]
_TYPES = ["有限责任公司", "有限责任公司（自然人独资）", "个人独资企业", "股份有限公司"]
_CREDIT = (["A"] * 60) + (["B"] * 25) + (["C"] * 10) + (["D"] * 5)
MB = 1024 * 1024
PYCACHE = Path(tempfile.gettempdir()) / "dsr-bench-pycache"


def target_rows(count: int, seed: int = 20260302) -> Iterator[list[str | int]]:
    """`count` valid target rows with distinct USCCs; the same seed gives the same rows."""
    rng = random.Random(seed)
    seen: set[str] = set()
    for index in range(count):
        code = uscc.generate(rng)
        while code in seen:
            code = uscc.generate(rng)
        seen.add(code)
        word, industry, scope = rng.choice(_TRADES)
        region = rng.choice(_REGIONS)
        yield [
            f"{region}{rng.choice(_WORDS)}{word}{index}有限公司",
            code,
            rng.choice(_TYPES),
            scope,
            f"{region}{rng.choice(_WORDS)}路{rng.randint(1, 999)}号",
            region,
            industry,
            "存续" if rng.random() < 0.9 else "在业",
            rng.choice(_CREDIT),
            "是" if rng.random() < 0.05 else "否",
            "是" if rng.random() < 0.01 else "否",
            rng.choice((0, 0, 0, 0, 1, 2, 3)),
            f"{word};{region}",
        ]


def write_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(target_rows(count))


def write_xlsx(path: Path, count: int) -> None:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("检查对象")
    sheet.append(HEADER)
    for row in target_rows(count):
        sheet.append(row)
    workbook.save(path)


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    output: str
    all_seconds: list[float] = field(default_factory=list)  # every run's, when repeated


# Runs the command and reports its wall time, ru_maxrss and CPU time. A lean wrapper, because
# a child's ru_maxrss starts from the memory of the process it was forked from (this one holds
# the generated rows' bookkeeping), so `wait4` straight from here would over-report.
_MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    out.write(f"{code} {seconds} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(code)
"""


def run_dsr(args: list[str], database_url: str, workdir: Path) -> Run:
    """One `dsr` command in its own process: wall time, peak RSS, and what it printed."""
    env = os.environ | {
        "DATABASE_URL": database_url,
        "IMPORT_MAX_MB": "4096",
        # Byte-code as a deployed install has it (this sandbox sets PYTHONDONTWRITEBYTECODE),
        # kept out of the venv; `db upgrade` before each timed import warms it.
        "PYTHONPYCACHEPREFIX": str(PYCACHE),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    dsr = Path(sys.executable).with_name("dsr")
    figures = workdir / "measure.txt"
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(figures), str(dsr), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
        check=False,
    )
    output = done.stdout.decode("utf-8", "replace")
    if done.returncode:
        raise SystemExit(f"dsr {' '.join(args)} failed ({done.returncode}):\n{output}")
    _code, seconds, peak_kib, cpu = figures.read_text().split()
    return Run(float(seconds), int(peak_kib) / 1024, float(cpu), output)  # maxrss is in KiB


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _count_targets(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM target"))).scalar_one())
    finally:
        await engine.dispose()


@contextmanager
def fresh_database(base_url: str, workdir: Path, label: str) -> Iterator[str]:
    """A migrated, empty database for one run, gone after it (a repeated run must not find the
    rows of the one before: it would time a re-import, all updates)."""
    if base_url.startswith("sqlite"):
        path = workdir / f"{label}.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        run_dsr(["db", "upgrade"], url, workdir)
        try:
            yield url
        finally:
            for leftover in (
                path,
                path.with_name(f"{path.name}-wal"),
                path.with_name(f"{path.name}-shm"),
            ):
                leftover.unlink(missing_ok=True)
        return
    name = f"dsr_bench_{os.getpid()}_{label}"
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(base_url, f'CREATE DATABASE "{name}"'))
    try:
        run_dsr(["db", "upgrade"], url, workdir)
        yield url
    finally:
        asyncio.run(_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def timed_import(
    base_url: str, workdir: Path, label: str, file: Path, rows: int, repeat: int = 1
) -> Run:
    """The median of `repeat` imports of `file` (the slower middle one of an even count), each
    into a fresh database; its peak RSS is the largest of them all."""
    runs: list[Run] = []
    for _ in range(repeat):
        with fresh_database(base_url, workdir, label) as url:
            run = run_dsr(["import", "targets", str(file)], url, workdir)
            stored = asyncio.run(_count_targets(url))
        if stored != rows:
            raise SystemExit(f"{label}: expected {rows} targets, found {stored}:\n{run.output}")
        runs.append(run)
    ordered = sorted(runs, key=lambda run: run.seconds)
    median = ordered[len(ordered) // 2]
    median.peak_rss_mb = max(run.peak_rss_mb for run in runs)
    median.all_seconds = [run.seconds for run in runs]
    return median


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows-csv", type=int, default=1_000_000)
    parser.add_argument("--rows-xlsx", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per import; the median counts")
    parser.add_argument(
        "--database-url",
        default="sqlite",
        help="'sqlite' (a fresh file per run) or a PostgreSQL URL whose server gets "
        "a throwaway database per run",
    )
    args = parser.parse_args(argv)
    base_url = args.database_url
    backend = "SQLite" if base_url.startswith("sqlite") else "PostgreSQL"

    with tempfile.TemporaryDirectory(prefix="dsr-bench-") as tmp:
        workdir = Path(tmp)
        csv_file, xlsx_file = workdir / "targets.csv", workdir / "targets.xlsx"
        empty_file = workdir / "header-only.csv"
        empty_file.write_text(",".join(HEADER) + "\n", encoding="utf-8")

        started = time.perf_counter()
        write_csv(csv_file, args.rows_csv)
        csv_written = time.perf_counter() - started
        started = time.perf_counter()
        write_xlsx(xlsx_file, args.rows_xlsx)
        xlsx_written = time.perf_counter() - started
        print(
            f"generated {args.rows_csv:,} CSV rows ({csv_file.stat().st_size / MB:.0f} MB) "
            f"in {csv_written:.1f} s, {args.rows_xlsx:,} XLSX rows "
            f"({xlsx_file.stat().st_size / MB:.1f} MB) in {xlsx_written:.1f} s"
        )

        print(f"load average before the imports: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        startup = timed_import(base_url, workdir, "startup", empty_file, 0, args.repeat)
        print(
            f"{backend}: startup (header-only import) {startup.seconds:.2f} s, "
            f"CPU {startup.cpu_seconds:.2f} s, peak RSS {startup.peak_rss_mb:.0f} MB"
        )
        results: dict[str, tuple[int, Run]] = {}
        for label, file, rows in (
            ("csv", csv_file, args.rows_csv),
            ("xlsx", xlsx_file, args.rows_xlsx),
        ):
            run = timed_import(base_url, workdir, label, file, rows, args.repeat)
            results[label] = (rows, run)
            net = run.seconds - startup.seconds
            without = f"{rows / net:,.0f}" if net > 0 else "n/a"
            print(
                f"{backend}: {label.upper():4} {rows:>9,} rows in {run.seconds:6.2f} s = "
                f"{rows / run.seconds:>9,.0f} rows/s ({without} rows/s without startup), "
                f"CPU {run.cpu_seconds:.2f} s, peak RSS {run.peak_rss_mb:.0f} MB"
            )
            if len(run.all_seconds) > 1:
                each = " / ".join(f"{rows / seconds:,.0f}" for seconds in run.all_seconds)
                print(f"      each run: {each} rows/s (the median counts)")

    csv_rate = results["csv"][0] / results["csv"][1].seconds
    xlsx_rate = results["xlsx"][0] / results["xlsx"][1].seconds
    peak = max(run.peak_rss_mb for _rows, run in results.values())
    print(f"csv_rows_per_s={csv_rate:.0f} xlsx_rows_per_s={xlsx_rate:.0f} peak_rss_mb={peak:.0f}")


if __name__ == "__main__":
    main()
