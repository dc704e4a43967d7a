"""Issue 7: the province's lists imported as published, through bot.directories.import_file."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook
from python_calamine import CalamineWorkbook
from sqlmodel import col, func, select
from typer.testing import CliRunner

from bot.cli import app
from bot.clock import FrozenClock
from bot.config import Settings
from bot.directories import ImportReport, import_file, write_template
from bot.render import render, render_plain
from storage.db import Database
from storage.models import AuditLog, CheckItem, Department, ImportRun
from storage.published_import import (
    PUBLISHED_KIND,
    is_published_list,
    joint_items,
    provisional_code,
)

DATA = Path(__file__).parent / "data" / "hainan-2020"
RANDOM_LIST = DATA / "75-海南省市场监管领域随机抽查事项清单（2020年版）.xlsx"
JOINT_LIST = DATA / "76-附件1.海南省市场监管领域部门联合抽查事项清单（第二版）.xls"
MAX_BYTES = 50 * 1024 * 1024

RANDOM_DEPARTMENTS = [
    "省教育厅",
    "省公安厅",
    "省人力资源和社会保障厅",
    "省生态环境厅",
    "省住房和城乡建设厅",
    "省交通运输厅",
    "省农业农村厅",
    "省商务厅",
    "省旅文厅",
    "省卫健委",
    "省应急管理厅",
    "海口海关",
    "国家税务总局海南省税务局",
    "省统计局",
    "省消防救援总队",
    "省市场监管局",
]


def item_code(*parts: str) -> str:
    """The parser's code recipe (pinned in tests/test_published.py): NFKC, no whitespace."""
    key = "\x1f".join(re.sub(r"\s+", "", unicodedata.normalize("NFKC", p)) for p in parts)
    digest = hashlib.sha256(key.encode())
    return "P" + digest.hexdigest()[:10].upper()


def dept(name: str) -> str:
    return provisional_code(name)


@pytest.fixture
def random_list(tmp_path: Path) -> Path:
    # A copy: the report is written next to the input, never into tests/data.
    return Path(shutil.copy(RANDOM_LIST, tmp_path / RANDOM_LIST.name))


@pytest.fixture
def joint_list(tmp_path: Path) -> Path:
    return Path(shutil.copy(JOINT_LIST, tmp_path / JOINT_LIST.name))


def rebuilt(src: Path, out: Path, edit: Callable[[list[list[Any]]], None]) -> Path:
    """`src`'s first sheet rewritten with openpyxl (values and merges), after `edit`."""
    sheet = CalamineWorkbook.from_path(str(src)).get_sheet_by_index(0)
    rows: list[list[Any]] = [list(r) for r in sheet.to_python(skip_empty_area=False)]
    edit(rows)
    workbook = Workbook()
    ws = workbook.active
    assert ws is not None
    ws.title = "Sheet1"
    for row in rows:
        ws.append(row)
    for (r0, c0), (r1, c1) in sheet.merged_cell_ranges or []:
        if (r0, c0) != (r1, c1):
            ws.merge_cells(start_row=r0 + 1, start_column=c0 + 1, end_row=r1 + 1, end_column=c1 + 1)
    workbook.save(out)
    return out


async def run(
    db: Database, clock: FrozenClock, path: Path, kind: str | None = "items", **kwargs: Any
) -> ImportReport:
    # Reports go to a scratch folder, never next to the committed test data.
    if path.parent == DATA:
        kwargs.setdefault("error_dir", Path(tempfile.mkdtemp(prefix="dsr-report-")))
    return await import_file(
        db, path, kind=kind, actor="test", clock=clock, max_bytes=MAX_BYTES, **kwargs
    )


async def items(db: Database) -> dict[str, CheckItem]:
    async with db.read() as session:
        return {i.code: i for i in (await session.exec(select(CheckItem))).all()}


async def departments(db: Database) -> dict[str, Department]:
    async with db.read() as session:
        return {d.name: d for d in (await session.exec(select(Department))).all()}


# --- the random-check list (.xlsx) -------------------------------------------------------------


async def test_random_list_counts_departments_and_report(
    db: Database, clock: FrozenClock, random_list: Path
) -> None:
    report = await run(db, clock, random_list)

    assert report.ok and report.problem is None
    assert report.kind == PUBLISHED_KIND
    o = report.outcome
    assert (o.total, o.created, o.updated, o.rejected_rows, o.deactivated) == (293, 293, 0, 0, 0)
    assert report.extra["continuation_rows"] == 13
    assert report.extra["blank_rows"] == 81
    assert report.extra["departments_created"] == 16
    assert "joint_items" not in report.extra
    assert report.extra["unmapped_methods"]["抽样检测"] == 11
    assert len(report.extra["unmapped_methods"]) == 17
    assert report.departments_created == [(n, dept(n)) for n in RANDOM_DEPARTMENTS]
    assert report.error_file is None

    stored = await departments(db)
    assert sorted(stored) == sorted(RANDOM_DEPARTMENTS)
    assert all(d.provisional and d.active and d.code == dept(d.name) for d in stored.values())
    assert all(d.import_id == report.import_id for d in stored.values())
    assert len(await items(db)) == 293

    async with db.read() as session:
        runs = (await session.exec(select(ImportRun))).all()
        audit = (await session.exec(select(AuditLog))).all()
    (import_run,) = runs
    assert (import_run.kind, import_run.status, import_run.created) == (PUBLISHED_KIND, "done", 293)
    assert import_run.summary["continuation_rows"] == 13
    assert import_run.summary["departments_created"][dept("省公安厅")] == "省公安厅"
    (entry,) = audit
    assert (entry.action, entry.entity, entry.entity_id) == (
        "import",
        PUBLISHED_KIND,
        str(import_run.id),
    )
    assert entry.detail["created"] == 293
    assert len(entry.detail["departments_created"]) == 16

    # The .xlsx report, next to the input, even without errors.
    assert report.report_file == random_list.with_name(f"{random_list.stem}.report.xlsx")
    workbook = load_workbook(report.report_file)
    assert workbook.sheetnames == ["导入汇总", "新建部门", "未能对应的取值"]
    summary = {row[0]: row[1] for row in workbook["导入汇总"].iter_rows(values_only=True)}
    assert summary["数据行数"] == 293
    assert summary["新增"] == 293
    assert summary["合并的续行"] == 13
    assert summary["跳过的空行"] == 81
    assert summary["新建部门"] == 16
    created = list(workbook["新建部门"].iter_rows(values_only=True))
    assert created[0] == ("部门名称", "临时代码")
    assert ("省公安厅", dept("省公安厅")) in created
    unmapped = list(workbook["未能对应的取值"].iter_rows(values_only=True))
    assert ("未能对应的检查方式（按原文保留）", "抽样检测", 11) in unmapped
    assert len(unmapped) == 1 + 17


async def test_random_list_items_field_by_field(
    db: Database, clock: FrozenClock, random_list: Path
) -> None:
    report = await run(db, clock, random_list)
    stored = await items(db)

    # 检查依据 over four rows (rows 12-14 are continuation rows).
    school = stored[
        item_code(
            "省教育厅", "学校招生、办学情况检查", "学校（民办中等职业学校）招生、办学情况检查"
        )
    ]
    assert school.name == "学校（民办中等职业学校）招生、办学情况检查"
    assert school.basis == (
        "《中华人民共和国职业教育法》第十一条\n"
        "《中华人民共和国民办教育促进法》第四十条\n"
        "《中华人民共和国民办教育促进法》第四十一条\n"
        "《中华人民共和国民办教育促进法》第四十二条"
    )
    assert school.department_code == dept("省教育厅")
    assert school.object_type == "民办中等职业学校"
    assert school.category == "一般"
    assert school.methods == "现场、书面、网络、委托专业机构"
    assert school.domain == "学校招生、办学情况检查"
    assert school.inspecting_body == "县级以上教育行政部门和市场监管部门"
    assert (school.joint, school.cooperating_codes, school.active) == (False, [], True)
    assert (school.ratio, school.frequency, school.content, school.expertise) == ("", "", "", "")
    assert school.import_id == report.import_id
    assert school.created_at == school.updated_at == clock.now()

    hotel = stored["PA37AAA200B"]  # code pinned in tests/test_published.py
    assert (hotel.name, hotel.department_code) == (
        "宾馆、旅店取得许可证情况的检查",
        dept("省公安厅"),
    )
    assert hotel.inspecting_body == "县级以上(含县级）公安机关"
    assert hotel.basis == "《旅馆业治安管理办法》第四条"

    # Unmapped methods are kept as written, after the mapped ones.
    customs = stored[item_code("海口海关", "企业稽查领域", "常规稽查")]
    assert customs.methods == "现场实地稽查、线上稽查"
    assert (customs.department_code, customs.inspecting_body) == (
        dept("海口海关"),
        "海口海关稽查部门",
    )

    # 重点 items; one name under one 抽查事项 with two objects gives two items.
    canteens = [i for i in stored.values() if i.name == "食品经营许可情况的检查"]
    assert {(i.object_type, i.category) for i in canteens} >= {
        ("餐饮服务经营者", "一般"),
        ("学校、托幼机构、养老机构等食堂", "重点"),
    }
    assert sum(i.category == "重点" for i in stored.values()) == 30


async def test_reimport_changes_nothing_and_creates_nothing(
    db: Database, clock: FrozenClock, random_list: Path
) -> None:
    first = await run(db, clock, random_list)
    before = await items(db)
    clock.advance(timedelta(days=1))
    second = await run(db, clock, random_list)

    o = second.outcome
    assert (o.total, o.created, o.updated, o.rejected_rows) == (293, 0, 293, 0)
    assert second.extra["continuation_rows"] == 13
    assert second.extra["blank_rows"] == 81
    assert second.extra["departments_created"] == 0
    assert second.departments_created == []
    after = await items(db)
    assert after.keys() == before.keys() and len(after) == 293
    assert len(await departments(db)) == 16
    # Nothing changed: updated_at stays; the latest import that saw each item is recorded.
    assert all(i.updated_at == before[c].updated_at for c, i in after.items())
    assert all(i.import_id == second.import_id != first.import_id for i in after.values())


async def test_changed_basis_updates_the_item(
    db: Database, clock: FrozenClock, random_list: Path, tmp_path: Path
) -> None:
    # openpyxl turns the list's stray bare CRs into line breaks: start from its own copy.
    await run(db, clock, rebuilt(random_list, tmp_path / "same.xlsx", lambda rows: None))

    def new_basis(rows: list[list[Any]]) -> None:
        assert rows[16][3] == "宾馆、旅店取得许可证情况的检查"
        rows[16][8] = "《旅馆业治安管理办法》第四条\n《新订条例》第一条"

    edited = rebuilt(random_list, tmp_path / "edited.xlsx", new_basis)
    clock.advance(timedelta(days=30))
    report = await run(db, clock, edited)

    assert (report.outcome.created, report.outcome.updated) == (0, 293)
    stored = await items(db)
    assert len(stored) == 293
    hotel = stored["PA37AAA200B"]
    assert hotel.basis == "《旅馆业治安管理办法》第四条\n《新订条例》第一条"
    assert hotel.updated_at == clock.now() != hotel.created_at
    assert sum(i.updated_at == clock.now() for i in stored.values()) == 1


async def test_deactivate_missing_only_touches_this_kind_of_list(
    db: Database, clock: FrozenClock, random_list: Path, joint_list: Path, tmp_path: Path
) -> None:
    await run(db, clock, random_list)
    await run(db, clock, joint_list)
    template_file = write_template("items", tmp_path / "template.xlsx")
    assert not is_published_list(template_file)
    async with db.session() as session:
        session.add(
            CheckItem(
                code="SJJ-001",
                name="模板事项",
                department_code=dept("省市场监管局"),
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )

    def drop_last_row(rows: list[list[Any]]) -> None:
        rows.pop()

    last = item_code("省市场监管局", "商标代理行为的检查", "商标代理行为的检查")
    shorter = rebuilt(random_list, tmp_path / "shorter.xlsx", drop_last_row)
    report = await run(db, clock, shorter, deactivate_missing=True)

    assert report.ok
    assert (report.outcome.total, report.outcome.deactivated) == (292, 1)
    stored = await items(db)
    assert not stored[last].active
    assert sum(i.active for i in stored.values()) == 293 + 83 + 1 - 1
    assert stored["SJJ-001"].active  # template items are never retired by a published list
    assert all(i.active for i in stored.values() if i.joint)  # nor the other list's items

    # Back in the list: active again.
    await run(db, clock, random_list)
    assert (await items(db))[last].active


# --- the joint list (.xls) ---------------------------------------------------------------------


async def test_joint_list_items_and_cooperating_codes(
    db: Database, clock: FrozenClock, joint_list: Path
) -> None:
    report = await run(db, clock, joint_list, strict=True)

    assert report.ok  # --strict changes nothing for a clean list
    o = report.outcome
    assert (o.total, o.created, o.rejected_rows) == (83, 83, 0)
    assert report.extra == {
        "continuation_rows": 0,
        "blank_rows": 0,
        "departments_created": 19,
        "joint_items": 83,
    }
    stored_departments = await departments(db)
    assert len(stored_departments) == 19
    assert "市场监管领域相关部门" not in stored_departments  # a placeholder, not a department
    stored = await items(db)
    assert len(stored) == 83 and all(i.joint for i in stored.values())

    fireworks = stored["P586B428CBD"]
    assert fireworks.name == "烟花爆竹生产经营企业运输、燃放情况的检查"
    assert fireworks.domain == "烟花爆竹生产经营企业监管"
    assert fireworks.object_type == "烟花爆竹生产经营企业"
    assert fireworks.department_code == dept("公安部门")
    assert fireworks.cooperating_codes == [dept("应急管理部门"), dept("市场监管部门")]
    assert (fireworks.category, fireworks.methods, fireworks.basis) == ("", "", "")
    assert (fireworks.inspecting_body, fireworks.active) == ("", True)

    # Two initiating departments: the second is offered the item as well.
    scrap = stored["PD53F87EC9C"]
    assert scrap.department_code == dept("商务部门")
    cooperating = ["市场监管部门", "发展改革部门", "公安部门", "生态环境部门", "交通运输部门"]
    cooperating.append("工业和信息化部门")
    assert scrap.cooperating_codes == [dept(n) for n in cooperating]
    # 市场监管领域相关部门 names no department.
    assert stored["P9778E78A4A"].cooperating_codes == []


async def test_joint_list_after_random_list_reuses_departments_by_name(
    db: Database, clock: FrozenClock, random_list: Path, joint_list: Path
) -> None:
    await run(db, clock, random_list)
    report = await run(db, clock, joint_list)
    assert report.extra["departments_created"] == 18  # 海口海关 is already there
    assert "海口海关" not in dict(report.departments_created)
    assert len(await departments(db)) == 16 + 18
    assert len(await items(db)) == 293 + 83


async def test_a_real_department_wins_over_the_provisional_one(
    db: Database, clock: FrozenClock, joint_list: Path
) -> None:
    await run(db, clock, joint_list)
    async with db.session() as session:
        session.add(
            Department(code="GA", name="公安部门", created_at=clock.now(), updated_at=clock.now())
        )
    report = await run(db, clock, joint_list)
    assert report.extra["departments_created"] == 0
    stored = await items(db)
    assert stored["P586B428CBD"].department_code == "GA"
    assert "GA" in stored["PD53F87EC9C"].cooperating_codes


async def test_joint_items_for_initiators_and_cooperators(
    db: Database, clock: FrozenClock, random_list: Path, joint_list: Path
) -> None:
    await run(db, clock, random_list)
    await run(db, clock, joint_list)
    async with db.session() as session:
        emergency = await joint_items(session, dept("应急管理部门"))
        market = await joint_items(session, dept("市场监管部门"))
        police = await joint_items(session, dept("省公安厅"))
    assert "P586B428CBD" in {i.code for i in emergency}  # cooperating
    assert all(
        i.department_code == dept("应急管理部门") or dept("应急管理部门") in i.cooperating_codes
        for i in emergency
    )
    assert "PD53F87EC9C" in {i.code for i in market}  # second initiator
    assert police == []  # the random list's items are not joint

    async with db.session() as session:
        fireworks = (
            await session.exec(select(CheckItem).where(col(CheckItem.code) == "P586B428CBD"))
        ).one()
        fireworks.active = False
        session.add(fireworks)
    async with db.read() as session:
        again = await joint_items(session, dept("应急管理部门"))
    assert [i.code for i in again] == [i.code for i in emergency if i.code != "P586B428CBD"]


# --- row errors, strict, chat, CLI -------------------------------------------------------------


async def test_row_errors_are_rejected_and_strict_writes_nothing(
    db: Database, clock: FrozenClock, random_list: Path, tmp_path: Path
) -> None:
    long_category = "这是一种写得非常非常长以至于放不进事项类别列的类别"

    def too_long(rows: list[list[Any]]) -> None:
        rows[16][5] = long_category

    bad = rebuilt(random_list, tmp_path / "bad.xlsx", too_long)

    strict = await run(db, clock, bad, strict=True)
    assert not strict.applied and strict.problem is None
    assert strict.outcome.rejected_rows == 1
    assert strict.departments_created == []
    assert await items(db) == {} and await departments(db) == {}
    async with db.read() as session:
        (import_run,) = (await session.exec(select(ImportRun))).all()
    assert (import_run.status, import_run.rejected, import_run.created) == ("rejected", 1, 0)
    assert "导入未执行" in render_plain("imports/report.j2", report=strict)

    lenient = await run(db, clock, bad)
    assert lenient.applied
    assert (lenient.outcome.created, lenient.outcome.rejected_rows) == (292, 1)
    assert "PA37AAA200B" not in await items(db)
    ((row, column, value, reason),) = list(lenient.errors())
    assert (row, column, value) == (17, "事项类别", long_category)
    assert "16" in reason
    assert lenient.error_file == lenient.report_file
    assert lenient.error_file is not None
    errors = list(load_workbook(lenient.error_file)["错误明细"].iter_rows(values_only=True))
    assert errors[1][:3] == (17, "事项类别", long_category)


async def test_chat_report_renders_in_both_modes(
    db: Database, clock: FrozenClock, joint_list: Path
) -> None:
    # /import without a kind goes through the same import_file.
    report = await run(db, clock, joint_list, kind=None, display_name="联合清单.xls")
    html = render("imports/report.j2", report=report)
    plain = render_plain("imports/report.j2", report=report)
    for shown in (html, plain):
        assert "联合抽查事项：83" in shown
        assert "新建部门：19" in shown
        assert f"· 公安部门：{dept('公安部门')}" in shown
        assert "导入报告（.xlsx）：联合清单.report.xlsx" in shown
    assert "<b>导入完成</b>" in html and "<b>" not in plain


async def test_cli_imports_the_xls(
    db: Database, clock: FrozenClock, settings: Settings, joint_list: Path
) -> None:
    runner = CliRunner()
    # The CLI runs its own event loop: give it a thread.
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["import", "items", str(joint_list)],
        env={"DATABASE_URL": settings.database_url},
    )
    assert result.exit_code == 0, result.output
    assert "导入完成" in result.output
    assert "新增：83" in result.output
    assert "新建部门：19" in result.output
    report_file = joint_list.with_name(f"{joint_list.stem}.report.xlsx")
    assert report_file.exists()
    summary = {
        r[0]: r[1] for r in load_workbook(report_file)["导入汇总"].iter_rows(values_only=True)
    }
    assert (summary["新增"], summary["联合抽查事项"], summary["新建部门"]) == (83, 83, 19)
    async with db.read() as session:
        count = (await session.exec(select(func.count()).select_from(CheckItem))).one()
    assert count == 83
