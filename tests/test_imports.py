"""Directory imports against a real database: what gets stored, what gets reported."""

from __future__ import annotations

from pathlib import Path

from openpyxl import load_workbook
from sqlmodel import col, func, select

from bot.clock import FrozenClock
from bot.directories import ImportReport, import_file
from storage.db import Database
from storage.models import AuditLog, CheckItem, Department, ImportRun, Inspector, Target
from tests.factories import (
    DEPARTMENT_HEADER,
    DEPARTMENTS,
    INSPECTOR_HEADER,
    ITEM_HEADER,
    TARGET_HEADER,
    inspector_rows,
    target_rows,
    write_csv,
    write_xlsx,
)

MB = 1024 * 1024


async def load(
    db: Database,
    path: Path,
    clock: FrozenClock,
    kind: str | None = None,
    *,
    strict: bool = False,
    deactivate_missing: bool = False,
) -> ImportReport:
    return await import_file(
        db,
        path,
        kind=kind,
        actor="test",
        clock=clock,
        max_bytes=5 * MB,
        strict=strict,
        deactivate_missing=deactivate_missing,
    )


async def count(db: Database, model: type[object], *where: object) -> int:
    async with db.read() as session:
        query = select(func.count()).select_from(model)
        for clause in where:
            query = query.where(clause)  # type: ignore[arg-type]
        return int((await session.exec(query)).one())


async def seed_departments(db: Database, clock: FrozenClock, tmp_path: Path) -> None:
    report = await load(db, write_csv(tmp_path / "dep.csv", DEPARTMENT_HEADER, DEPARTMENTS), clock)
    assert report.ok, report.problem_text()


async def test_departments_with_parent_and_kinds(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed_departments(db, clock, tmp_path)
    async with db.read() as session:
        station = (await session.exec(select(Department).where(Department.code == "SJJ-CG"))).one()
    assert (station.name, station.kind, station.parent_code) == ("城关市场监管所", "所", "SJJ")


async def test_targets_gbk_csv_are_stored_field_by_field(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    rows = target_rows(3)
    rows[1][8:13] = ["d", "是", "否", "4", "食品;小作坊"]
    report = await load(db, write_csv(tmp_path / "t.csv", TARGET_HEADER, rows, "gbk"), clock)
    assert report.ok and report.kind == "targets"
    assert (report.outcome.created, report.outcome.updated, report.outcome.rejected_rows) == (
        3,
        0,
        0,
    )
    async with db.read() as session:
        target = (await session.exec(select(Target).where(Target.uscc == rows[1][1]))).one()
    assert target.name == "测试企业1有限公司"
    assert (target.credit_class, target.abnormal, target.serious_illegal) == ("D", True, False)
    assert (target.complaints, target.tags, target.status, target.active) == (
        4,
        "食品;小作坊",
        "存续",
        True,
    )


async def test_utf8_bom_and_xlsx_are_read(db: Database, clock: FrozenClock, tmp_path: Path) -> None:
    bom = await load(
        db, write_csv(tmp_path / "b.csv", TARGET_HEADER, target_rows(2, 1), "utf-8-sig"), clock
    )
    xlsx = await load(db, write_xlsx(tmp_path / "x.xlsx", TARGET_HEADER, target_rows(2, 2)), clock)
    assert bom.ok and xlsx.ok
    assert await count(db, Target) == 4


async def test_reimport_updates_and_never_duplicates(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    rows = target_rows(50)
    path = write_csv(tmp_path / "t.csv", TARGET_HEADER, rows)
    await load(db, path, clock)
    rows[0][0] = "改名后的企业"
    second = await load(db, write_csv(tmp_path / "t2.csv", TARGET_HEADER, rows), clock)
    assert (second.outcome.created, second.outcome.updated) == (0, 50)
    assert await count(db, Target) == 50
    assert await count(db, Target, col(Target.name) == "改名后的企业") == 1


async def test_bad_rows_are_reported_and_good_rows_applied(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    rows = target_rows(4)
    rows[1][1] = "91330102MA2H3X4Y5A"  # wrong check character
    rows[2][8] = "E"
    rows[3][1] = rows[0][1]  # duplicate of row 2 in the file
    report = await load(db, write_csv(tmp_path / "bad.csv", TARGET_HEADER, rows), clock)
    assert report.applied and report.outcome.created == 1 and report.outcome.rejected_rows == 3
    reasons = {(row, column): reason for row, column, _v, reason in report.errors()}
    assert reasons[(3, "统一社会信用代码")].startswith("统一社会信用代码校验位错误")
    assert "A、B、C、D" in reasons[(4, "信用风险等级")]
    assert "重复" in reasons[(5, "统一社会信用代码")]
    assert report.error_file is not None and report.error_file.exists()
    sheet = load_workbook(report.error_file).worksheets[0]
    assert [c.value for c in sheet[1]] == ["行号", "列", "内容", "原因"]
    assert sheet.max_row == 4
    assert await count(db, Target) == 1


async def test_strict_applies_nothing_when_a_row_is_bad(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    rows = target_rows(5)
    rows[4][10] = "也许"
    report = await load(db, write_csv(tmp_path / "s.csv", TARGET_HEADER, rows), clock, strict=True)
    assert not report.applied and report.outcome.rejected_rows == 1
    assert await count(db, Target) == 0
    async with db.read() as session:
        run = (await session.exec(select(ImportRun))).one()
    assert run.status == "rejected"


async def test_deactivate_missing_marks_inactive_and_deletes_nothing(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    rows = target_rows(10)
    await load(db, write_csv(tmp_path / "a.csv", TARGET_HEADER, rows), clock)
    report = await load(
        db, write_csv(tmp_path / "b.csv", TARGET_HEADER, rows[:7]), clock, deactivate_missing=True
    )
    assert report.outcome.deactivated == 3
    assert await count(db, Target) == 10
    assert await count(db, Target, col(Target.active).is_(False)) == 3
    again = await load(db, write_csv(tmp_path / "c.csv", TARGET_HEADER, rows), clock)
    assert again.outcome.updated == 10
    assert await count(db, Target, col(Target.active).is_(True)) == 10


async def test_inspectors_need_known_departments(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed_departments(db, clock, tmp_path)
    rows = inspector_rows(3)
    rows[2][1] = "NOPE"
    rows[1][7] = "91330102MA2H3X4Y5A"
    report = await load(db, write_xlsx(tmp_path / "i.xlsx", INSPECTOR_HEADER, rows), clock)
    assert report.outcome.created == 1 and report.outcome.rejected_rows == 2
    messages = [reason for _r, _c, _v, reason in report.errors()]
    assert any("NOPE" in m for m in messages)
    assert any("回避对象" in m for m in messages)
    async with db.read() as session:
        inspector = (await session.exec(select(Inspector))).one()
    assert (inspector.cert_no, inspector.phone, inspector.certified) == (
        "ZF00000",
        "13800000000",
        True,
    )


async def test_items_general_ratio_floor_and_methods(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed_departments(db, clock, tmp_path)
    rows = [
        [
            "SJJ-001",
            "食品销售者经营活动的检查",
            "《食品安全法》",
            "SJJ",
            "食品经营者",
            "重点",
            "现场检查、书面",
            "100%",
            "每年一次",
            "进货查验",
            "食品安全",
        ],
        [
            "SJJ-002",
            "广告发布行为的检查",
            "《广告法》",
            "SJJ",
            "广告发布者",
            "一般",
            "网络",
            "3%",
            "",
            "",
            "",
        ],
        [
            "SJJ-003",
            "计量器具的检查",
            "《计量法》",
            "SJJ",
            "企业",
            "一般",
            "飞行检查",
            "0.05",
            "",
            "",
            "",
        ],
    ]
    report = await load(db, write_xlsx(tmp_path / "items.xlsx", ITEM_HEADER, rows), clock)
    assert report.outcome.created == 1 and report.outcome.rejected_rows == 2
    messages = " ".join(reason for _r, _c, _v, reason in report.errors())
    assert "不得低于 5%" in messages and "飞行检查" in messages
    async with db.read() as session:
        item = (await session.exec(select(CheckItem))).one()
    assert (item.methods, item.ratio, item.category) == ("现场、书面", "100%", "重点")


async def test_file_problems_write_nothing(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    wrong = tmp_path / "photo.jpg"
    wrong.write_bytes(b"\xff\xd8\xff")
    fake = tmp_path / "fake.xlsx"
    fake.write_text("not a zip")
    missing = write_csv(tmp_path / "cols.csv", ["名称", "统一社会信用代码"], [["甲", "x"]])
    big = write_csv(tmp_path / "big.csv", TARGET_HEADER, target_rows(10))
    cases = {
        "file_empty": await load(db, empty, clock),
        "file_type": await load(db, wrong, clock),
        "file_corrupt": await load(db, fake, clock),
        "missing_columns": await load(db, missing, clock, kind="targets"),
    }
    too_big = await import_file(db, big, kind=None, actor="t", clock=clock, max_bytes=100)
    cases["file_too_big"] = too_big
    for key, report in cases.items():
        assert report.problem == key and not report.applied
        assert report.problem_text()
    assert "登记状态" in cases["missing_columns"].problem_text()
    assert await count(db, Target) == 0
    assert await count(db, ImportRun) == 0


async def test_every_import_is_audited(db: Database, clock: FrozenClock, tmp_path: Path) -> None:
    await seed_departments(db, clock, tmp_path)
    async with db.read() as session:
        entry = (await session.exec(select(AuditLog))).one()
    assert (entry.action, entry.entity, entry.actor) == ("import", "departments", "test")
    assert entry.detail["created"] == 3
