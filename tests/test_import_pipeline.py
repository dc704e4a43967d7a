"""Issue 2's speed work, held to the same rules: a big file is checked in a child process
(bot.directories.CHILD_FROM_BYTES) and must import exactly as a small one; an over-long CSV
cell or a broken CSV is a clear message; `dsr` migrates only a database that needs it."""

from __future__ import annotations

import asyncio
import csv
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from openpyxl import Workbook, load_workbook
from sqlmodel import col, select
from typer.testing import CliRunner

import bot.directories
import storage.db
import storage.tabular
from bot.cli import app
from bot.clock import FrozenClock
from bot.directories import import_file
from storage import directory
from storage.db import Database, alembic_config, head_revision
from storage.models import ImportRun, Target
from storage.tabular import detect_encoding
from tests.test_tabular import HEADER, MB, codes, stored, target, write_targets


@pytest.fixture(params=["in line", "in a child"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test here runs both ways: rows checked in this process, or in a forked child."""
    child = request.param == "in a child"
    if child:
        monkeypatch.setattr(bot.directories, "CHILD_FROM_BYTES", 0)
    monkeypatch.setattr(directory, "BATCH", 2)
    forks: list[str] = []
    real = multiprocessing.get_context

    def get_context(method: str | None = None) -> Any:
        forks.append(str(method))
        return real(method)

    monkeypatch.setattr(multiprocessing, "get_context", get_context)
    yield str(request.param)
    assert set(forks) == ({"fork"} if child else set())


async def test_repeats_bad_rows_and_reimport_are_the_same_in_a_child(
    db: Database, clock: FrozenClock, tmp_path: Path, where: str
) -> None:
    a, b, c = codes(3)
    rows = [target("甲", a), target("乙", b), target("丙", a), target("坏", "123")]
    rows += [target("丁", c), target("戊", b)]
    path = write_targets(tmp_path / "t.csv", rows)
    report = await import_file(db, path, kind="targets", actor="t", clock=clock, max_bytes=MB)
    outcome = report.outcome
    assert report.ok
    assert (outcome.total, outcome.created, outcome.updated, outcome.rejected_rows) == (6, 3, 0, 3)
    assert [(e.row, e.column, e.key) for e in outcome.errors] == [
        (4, "统一社会信用代码", "duplicate_key"),
        (5, "统一社会信用代码", "uscc_length"),
        (7, "统一社会信用代码", "duplicate_key"),
    ]
    assert await stored(db) == [(a, "甲"), (b, "乙"), (c, "丁")]
    assert report.error_file is not None
    sheet = load_workbook(report.error_file).worksheets[0]
    assert [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)] == [4, 5, 7]

    again = await import_file(db, path, kind="targets", actor="t", clock=clock, max_bytes=MB)
    assert (again.outcome.created, again.outcome.updated, again.outcome.rejected_rows) == (0, 3, 3)
    assert await stored(db) == [(a, "甲"), (b, "乙"), (c, "丁")]


async def test_strict_in_a_child_applies_nothing(
    db: Database, clock: FrozenClock, tmp_path: Path, where: str
) -> None:
    rows = [target(f"企业{i}", code) for i, code in enumerate(codes(5))]
    path = write_targets(tmp_path / "t.csv", [*rows, target("坏", "123")])
    report = await import_file(
        db, path, kind="targets", actor="t", clock=clock, max_bytes=MB, strict=True
    )
    assert not report.applied and report.outcome.rejected_rows == 1
    assert await stored(db) == []


async def test_xlsx_in_a_child(
    db: Database, clock: FrozenClock, tmp_path: Path, where: str
) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    found = codes(3)
    for index, code in enumerate(found):
        sheet.append(target(f"企业{index}", code))
    book.save(tmp_path / "t.xlsx")
    report = await import_file(
        db, tmp_path / "t.xlsx", kind="targets", actor="t", clock=clock, max_bytes=MB
    )
    assert report.ok and report.outcome.created == 3
    assert await stored(db) == [(code, f"企业{i}") for i, code in enumerate(found)]


async def test_a_csv_utf8_only_at_the_start_is_read_as_gb18030_like_a_full_check(
    db: Database, clock: FrozenClock, tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.tabular, "GUESS_BYTES", 256)  # the encoding guessed on 256 bytes
    if where == "in line":
        monkeypatch.setattr(bot.directories, "CHILD_FROM_BYTES", 10 * MB)
    rows = [target(f"企业{i}", code) for i, code in enumerate(codes(30))]
    for row in rows:
        row[3] = "经营" * 1000  # 6 KB a row: past the first megabyte the reader decodes at once
    path = write_targets(tmp_path / "t.csv", rows * 6)
    assert path.stat().st_size > MB
    report = await import_file(db, path, kind="targets", actor="t", clock=clock, max_bytes=2 * MB)
    assert report.ok and report.outcome.created == 30  # UTF-8 throughout: read once

    with path.open("ab") as handle:
        handle.write("城关镇,中文\r\n".encode("gbk"))
    assert detect_encoding(path) == "gb18030"
    report = await import_file(db, path, kind="targets", actor="t", clock=clock, max_bytes=2 * MB)
    full = await import_file(
        db, path, kind="targets", actor="t", clock=clock, max_bytes=2 * MB, encoding="gb18030"
    )
    assert report.problem is not None and not report.applied
    assert (report.problem, report.problem_params) == (full.problem, full.problem_params)
    assert len(await stored(db)) == 30
    async with db.read() as session:  # no run is left "running": each says how it ended
        runs = (await session.exec(select(ImportRun).order_by(col(ImportRun.id)))).all()
    # The UTF-8 guess failed half-way; read again as GB18030, the file stops at its header
    # check, before a run begins (as the full check's import does).
    assert [(r.status, r.summary.get("problem")) for r in runs] == [
        ("done", None),
        ("failed", "file_encoding"),
    ]
    assert all(r.finished_at is not None for r in runs)


async def test_a_cell_longer_than_csv_allows_is_a_rejected_row(
    db: Database, clock: FrozenClock, tmp_path: Path, where: str
) -> None:
    # csv stops at 131,072 characters a field by default; this used to end in a traceback.
    good, long = codes(2)
    huge = target("长", long)
    huge[3] = "食品销售；" * 40_000  # 经营范围, 200,000 characters
    path = write_targets(tmp_path / "t.csv", [target("好", good), huge])
    report = await import_file(db, path, kind="targets", actor="t", clock=clock, max_bytes=10 * MB)
    assert report.ok and report.outcome.created == 1
    [error] = report.outcome.errors
    assert (error.row, error.column, error.key, error.params) == (
        3,
        "经营范围",
        "too_long",
        {"max": 4000},
    )
    assert len(error.value) == directory.SHOWN_CHARS + 1  # shortened for the screen and Excel
    [(_row, column, _value, reason)] = list(report.errors())
    assert (column, reason) == ("经营范围", "内容过长（最多 4000 个字符）")
    assert await stored(db) == [(good, "好")]


@pytest.fixture
def csv_stops_reading(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """csv refuses fields over 1,000 characters whatever storage.tabular asks: a stand-in for
    any csv.Error half-way through a file (Python 3.11 leaves no other one reachable)."""
    real = csv.field_size_limit
    old = real()
    monkeypatch.setattr(csv, "field_size_limit", lambda *new: real(1000))
    yield
    real(old)


def _broken_csv(path: Path) -> Path:
    rows = [target(f"企业{i}", code) for i, code in enumerate(codes(6))]
    write_targets(path, rows)
    bad = target("坏", codes(7)[6])
    bad[3] = "很长" * 1000
    with path.open("a", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerow(bad)
    return path


@pytest.mark.usefixtures("csv_stops_reading")
async def test_a_csv_error_half_way_is_a_file_problem_and_writes_nothing(
    db: Database, clock: FrozenClock, tmp_path: Path, where: str
) -> None:
    path = _broken_csv(tmp_path / "t.csv")
    report = await import_file(db, path, kind="targets", actor="t", clock=clock, max_bytes=MB)
    assert not report.applied and report.problem == "file_csv"
    assert report.problem_text() == (
        "文件“t.csv”第 8 行附近的 CSV 格式有误（如含有空字符或引号未闭合），无法继续读取。"
        "请在 Excel 中打开并另存为“CSV UTF-8”后重试。"
    )
    assert await stored(db) == []


@pytest.mark.usefixtures("csv_stops_reading")
def test_the_cli_reports_a_csv_error_with_a_non_zero_exit(db: Database, tmp_path: Path) -> None:
    path = _broken_csv(tmp_path / "t.csv")
    code, output = _import_cli(db.url, path)
    assert code == 2
    assert "第 8 行附近的 CSV 格式有误" in output
    assert "Traceback" not in output
    assert asyncio.run(_count_targets(db.url)) == 0


async def _count_targets(url: str) -> int:
    fresh = Database(url)
    try:
        async with fresh.read() as session:
            return len((await session.exec(select(col(Target.id)))).all())
    finally:
        await fresh.dispose()


# --- start-up: the schema check --------------------------------------------------------------


def test_head_revision_is_alembics_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert head_revision() == script.get_current_head()


def _import_cli(url: str, path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["import", "targets", str(path)], env={"DATABASE_URL": url})
    return result.exit_code, result.output


def test_a_current_database_is_not_migrated_again(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_upgrade(url: str) -> None:
        raise AssertionError("the database is at head; Alembic must not run")

    monkeypatch.setattr(storage.db, "upgrade", no_upgrade)
    path = write_targets(tmp_path / "t.csv", [target("甲", codes(1)[0])])
    code, output = _import_cli(db.url, path)
    assert code == 0, output
    assert "新增：1" in output


def test_a_new_database_is_migrated_before_the_import(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.sqlite3'}"
    path = write_targets(tmp_path / "t.csv", [target("甲", codes(1)[0])])
    code, output = _import_cli(url, path)
    assert code == 0, output

    async def version() -> str | None:
        fresh = Database(url)
        try:
            return await fresh.revision()
        finally:
            await fresh.dispose()

    assert asyncio.run(version()) == head_revision()
    assert asyncio.run(_count_targets(url)) == 1


def test_bench_rows_are_what_the_import_takes(tmp_path: Path) -> None:
    from bench.import_targets import HEADER as BENCH_HEADER
    from bench.import_targets import write_csv

    write_csv(tmp_path / "b.csv", 3)
    with (tmp_path / "b.csv").open(encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == BENCH_HEADER == HEADER
