"""bot.tasks: what people type, task files, the checks against the directories, the list; and
the CLI (`dsr template task`, `dsr task create --from`, `dsr draw`, `dsr draw record`,
`dsr verify`)."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlmodel import select
from typer.testing import CliRunner

from bot.cli import app
from bot.clock import FrozenClock
from bot.config import Settings
from bot.duties import DEFAULT_WORKING_DAYS
from bot.tasks import (
    ADVANCED_SETTINGS,
    TaskInvalid,
    TaskProblem,
    advanced_settings,
    check_spec,
    create_task,
    create_tasks_from_file,
    list_tasks,
    next_step,
    parse_codes,
    parse_credit_ratios,
    parse_filters,
    parse_group_size,
    parse_mode,
    parse_ratio,
    parse_threshold,
    parse_window,
    parse_working_days,
    read_task_file,
    set_setting,
    spec_from_draft,
    write_task_template,
)
from storage.db import Database
from storage.models import AuditLog, Draw, DrawStatus, OutboxMessage, Task
from tests.test_draws import OFFICE_CHAT, TODAY, build_world, new_task, run_draw, seeded, spec

# --- parsing -----------------------------------------------------------------------------------


def test_ratios_are_exact_decimals() -> None:
    assert parse_ratio("5%") == Decimal("0.05")
    assert parse_ratio("0.05") == Decimal("0.05")
    assert parse_ratio("10") == Decimal("0.1")  # the import's convention: >1 means percent
    assert parse_ratio("１００％".replace("１００", "100")) == 1
    assert parse_ratio("0%", allow_zero=True) == 0
    for bad in ("0", "-1%", "150%", "abc", "NaN", ""):
        with pytest.raises(TaskProblem):
            parse_ratio(bad)
    assert parse_credit_ratios("A=2% c：15%") == {"A": "0.02", "B": "0.03", "C": "0.15", "D": "0.2"}
    with pytest.raises(TaskProblem):
        parse_credit_ratios("A=2% 胡说")


def test_windows_filters_codes_modes() -> None:
    assert parse_window("2026-04-01 至 2026年6月30日") == (date(2026, 4, 1), date(2026, 6, 30))
    assert parse_window("20260401-20260630") == (date(2026, 4, 1), date(2026, 6, 30))
    for bad in ("明天", "2026-04-01", "2026-06-30 2026-04-01", "2026-02-30 2026-03-01"):
        with pytest.raises(TaskProblem):
            parse_window(bad)
    assert parse_filters("区域=城关镇,新区；行业：餐饮业") == {
        "regions": ["城关镇", "新区"],
        "industries": ["餐饮业"],
    }
    assert parse_filters("不限") == {}
    for bad in ("城关镇", "颜色=红", "区域="):
        with pytest.raises(TaskProblem) as problem:
            parse_filters(bad)
        assert "区域" in problem.value.message()
    assert parse_codes("SC001、SC002, SC001 SC003") == ["SC001", "SC002", "SC003"]
    assert parse_mode("异地交叉").value == "cross_region"
    assert parse_mode("global").value == "bureau"
    assert parse_group_size("3人") == 3
    with pytest.raises(TaskProblem):
        parse_group_size("1")


def test_dialog_skips_steps_that_do_not_apply() -> None:
    draft: dict[str, object] = {"departments": ["SJJ"], "policy": "credit", "mode": "bureau"}
    assert next_step("departments", draft) == "items"
    assert next_step("policy", draft) == "window"
    assert next_step("mode", draft) == "group"
    draft |= {"departments": ["SJJ", "SWJ"], "policy": "flat", "mode": "station"}
    assert next_step("departments", draft) == "lead"
    assert next_step("policy", draft) == "ratios"
    assert next_step("mode", draft) == "stations"
    assert next_step("mergeable", draft) == "confirm"


# --- checks against the directories ------------------------------------------------------------


async def test_check_spec_lists_every_problem(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock)
    bad = spec(
        item_codes=["NOPE", "SW001"],
        department_codes=["SJJ", "XX", "SJJ-CG"],
        lead_department="SWJ",
        group_size=2,
        selection_mode="station",
        stations=[],
        window_start=date(2026, 1, 1),
        window_end=date(2026, 2, 1),
    )
    async with db.read() as session:
        with pytest.raises(TaskInvalid) as invalid:
            await check_spec(session, bad, today=TODAY)
    keys = {p.key for p in invalid.value.problems}
    assert keys == {
        "unknown_department",
        "station_as_department",
        "lead_not_participating",
        "group_too_small",
        "unknown_item",
        "item_department",
        "stations_missing",
        "window_past",
    }
    assert all(m and "{{" not in m for m in invalid.value.messages())


async def test_flat_ratio_below_five_percent_warns(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        created = await create_task(
            session,
            spec(ratio_policy="flat", ratios={"flat": "0.03"}, item_codes=["SC001", "SC002"]),
            actor="test",
            now=clock.now(),
            today=TODAY,
        )
    assert len(created.warnings) == 1 and "3%" in created.warnings[0]
    assert "SC001" in created.warnings[0] and "SC002" not in created.warnings[0]  # 重点 is fine
    async with db.read() as session:
        audit = (await session.exec(select(AuditLog).where(AuditLog.action == "task.create"))).one()
        task = await session.get(Task, created.task_id)
    assert audit.entity_id == str(created.task_id) and audit.detail["warnings"]
    assert task is not None and task.ratios == {"flat": "0.03"} and task.status == "planned"


async def test_list_tasks_shows_draw_state(db: Database, clock: FrozenClock) -> None:
    await seeded(db, clock)
    async with db.session() as session:
        first = await new_task(session, clock.now(), name="任务一")
        second = await new_task(session, clock.now(), name="任务二")
    draw_id = await run_draw(db, clock.now(), first)
    from bot.draws import commit_draw

    async with db.session() as session:
        pending = await commit_draw(session, task_id=second, actor="t", now=clock.now())
    async with db.read() as session:
        summaries = {s.id: s for s in await list_tasks(session)}
    assert summaries[first].status == "drawn" and summaries[first].draw_id == draw_id
    assert summaries[first].inspections > 0
    assert summaries[second].status == "committed"
    assert summaries[second].draw_id == pending.draw_id


# --- task files --------------------------------------------------------------------------------

YAML = """
tasks:
  - name: 食品销售者抽查
    year: 2026
    items: [SC001]
    departments: SJJ
    filters: {regions: [城关镇]}
    ratios: {A: 2%, D: 25%}
    window: [{start}, {end}]
    selection_mode: 单一所内随机
    stations: [SJJ-CG]
    group_size: 2
    mergeable: 否
  - name: 联合抽查
    year: 2026
    items: SC001, SW001
    departments: [SJJ, SWJ]
    lead_department: SWJ
    ratio_policy: flat
    flat_ratio: 5%
    window_start: {start}
    window_end: {end}
    deadlines: {confirm: 3}
"""


def _yaml(tmp_path: Path, start: date, end: date, text: str = YAML) -> Path:
    path = tmp_path / "tasks.yaml"
    path.write_text(text.replace("{start}", str(start)).replace("{end}", str(end)), "utf-8")
    return path


def test_yaml_tasks_parse(tmp_path: Path) -> None:
    read = read_task_file(_yaml(tmp_path, date(2026, 4, 1), date(2026, 6, 30)))
    assert not read.problems
    (w1, one), (_w2, two) = read.specs
    assert w1 == "第 1 个任务"
    assert one.ratios == {"A": "0.02", "B": "0.03", "C": "0.1", "D": "0.25"}
    assert one.filters == {"regions": ["城关镇"]} and one.selection_mode == "station"
    assert one.mergeable is False and one.stations == ["SJJ-CG"]
    assert two.department_codes == ["SJJ", "SWJ"] and two.lead_department == "SWJ"
    assert two.ratio_policy == "flat" and two.ratios == {"flat": "0.05"}
    assert two.deadlines == {"confirm": 3}


def test_advanced_settings_share_one_parser_with_task_files(tmp_path: Path) -> None:
    assert parse_working_days("3") == 3 and parse_working_days("3个工作日") == 3
    assert parse_working_days("15 天") == 15 and parse_threshold("5次") == 5
    for bad in ("0", "-1", "三天", "251", "2.5", ""):
        with pytest.raises(TaskProblem) as problem:
            parse_working_days(bad)
        assert "工作日数" in problem.value.message()
    draft: dict[str, object] = {"deadlines": {"publish": 15}}
    draft |= set_setting(draft, "confirm", 3)
    draft |= set_setting(draft, "flag_threshold", 5)
    assert draft["deadlines"] == {"publish": 15, "confirm": 3}
    draft |= set_setting(draft, "publish", None)
    shown = {s.key: (s.value, s.changed) for s in advanced_settings(draft)}
    assert shown["flag_threshold"] == (5, True) and shown["confirm"] == (3, True)
    assert shown["publish"] == (20, False) and list(shown) == list(ADVANCED_SETTINGS)
    assert spec_from_draft(
        {
            **draft,
            "name": "任务",
            "year": 2026,
            "items": ["SC001"],
            "departments": ["SJJ"],
            "window": ["2026-04-01", "2026-06-30"],
            "mode": "bureau",
            "group": 2,
            "method": "现场",
        }
    ).deadlines == {"confirm": 3}

    path = _yaml(
        tmp_path,
        date(2026, 4, 1),
        date(2026, 6, 30),
        YAML.replace("deadlines: {confirm: 3}", "deadlines: {confirm: 3天, publish: 0, nope: 2}"),
    )
    read = read_task_file(path)
    messages = {p.column: p.message for p in read.problems}
    assert set(messages) == {"deadlines.publish", "deadlines"}
    assert "“0”不是有效的期限" in messages["deadlines.publish"]
    assert "nope" in messages["deadlines"]


def test_task_file_problems_name_row_and_column(tmp_path: Path) -> None:
    out = tmp_path / "任务模板.xlsx"
    write_task_template(out)
    book = load_workbook(out)
    sheet = book.worksheets[0]
    header = [c.value for c in sheet[1]]
    assert header[:4] == ["任务名称", "年度", "抽查事项编码", "参与部门代码"]
    assert book.worksheets[1].cell(row=2, column=1).value == "任务名称"
    sheet.append(["坏任务", "二零二六", "SC001", "SJJ", "", "", "", "", "", "flat"])
    book.save(out)
    read = read_task_file(out)
    assert len(read.specs) == 1  # the example row
    by_column = {(p.where, p.column): p.message for p in read.problems}
    assert "不是有效的年度" in by_column[("第 3 行", "年度")]
    assert "必填项为空" in by_column[("第 3 行", "检查开始日期")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed", "utf-8")
    with pytest.raises(TaskProblem, match="yaml"):
        read_task_file(bad)
    bad.write_text("- 1\n- 2\n", "utf-8")
    read = read_task_file(bad)
    assert read.problems and not read.specs


DEADLINE_HEADERS = {
    "confirm": "确认接收期限（工作日）",
    "cosign": "成员会签期限（工作日）",
    "review": "联络员复核期限（工作日）",
    "publish": "结果公示期限（工作日）",
    "followup_entry": "后续处置录入期限（工作日）",
    "supervision": "督办单新期限（工作日）",
}


def _template_with(tmp_path: Path, *rows: dict[str, object]) -> Path:
    """The written template, its example row replaced by `rows` (header text -> cell)."""
    out = tmp_path / "任务.xlsx"
    write_task_template(out)
    book = load_workbook(out)
    sheet = book.worksheets[0]
    header = [c.value for c in sheet[1]]
    sheet.delete_rows(2)
    base = {
        "任务名称": "表格任务",
        "年度": 2026,
        "抽查事项编码": "SC001",
        "参与部门代码": "SJJ",
        "检查开始日期": "2026-04-01",
        "检查结束日期": "2026-06-30",
    }
    for row in rows:
        cells = base | row
        assert set(cells) <= set(header), set(cells) - set(header)
        sheet.append([cells.get(str(h), None) for h in header])
    book.save(out)
    return out


def test_template_has_a_column_per_deadline_override(tmp_path: Path) -> None:
    out = tmp_path / "模板.xlsx"
    write_task_template(out)
    book = load_workbook(out)
    header = [c.value for c in book.worksheets[0][1]]
    assert list(DEADLINE_HEADERS) == list(DEFAULT_WORKING_DAYS)  # one per override, same order
    assert header[-len(DEADLINE_HEADERS) :] == list(DEADLINE_HEADERS.values())
    assert "投诉举报次数阈值" in header
    rules = {r[0]: r[1:] for r in book.worksheets[1].iter_rows(min_row=2, values_only=True)}
    assert rules["确认接收期限（工作日）"][0] == "选填"
    assert "留空为默认 2 个工作日" in str(rules["确认接收期限（工作日）"][1])
    assert "留空为默认 20 个工作日" in str(rules["结果公示期限（工作日）"][1])
    assert "默认 3" in str(rules["投诉举报次数阈值"][1])


async def test_template_deadlines_are_stored_and_bad_ones_refused(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seeded(db, clock)
    good = _template_with(
        tmp_path,
        {
            "确认接收期限（工作日）": 3,
            "结果公示期限（工作日）": "15个工作日",
            "投诉举报次数阈值": 5,
        },
    )
    async with db.session() as session:
        made = await create_tasks_from_file(
            session, good, actor="test", now=clock.now(), today=TODAY
        )
    assert not made.problems and len(made.created) == 1
    async with db.read() as session:
        task = (await session.exec(select(Task))).one()
    assert task.deadlines == {"confirm": 3, "publish": 15}  # empty cells: the defaults
    assert task.flag_threshold == 5

    bad = _template_with(
        tmp_path,
        {"任务名称": "甲", "成员会签期限（工作日）": "三天半"},
        {"任务名称": "乙", "联络员复核期限（工作日）": 0, "督办单新期限（工作日）": 999},
        {"任务名称": "丙", "确认接收期限（工作日）": 4},
    )
    async with db.session() as session:
        made = await create_tasks_from_file(
            session, bad, actor="test", now=clock.now(), today=TODAY
        )
    assert not made.created
    found = {(p.where, p.column): p.message for p in made.problems}
    assert set(found) == {
        ("第 2 行", "成员会签期限（工作日）"),
        ("第 3 行", "联络员复核期限（工作日）"),
        ("第 3 行", "督办单新期限（工作日）"),
    }
    assert found[("第 2 行", "成员会签期限（工作日）")] == (
        "“三天半”不是有效的期限，请输入 1 到 250 之间的工作日数，如 3。"
    )
    assert "“0”不是有效的期限" in found[("第 3 行", "联络员复核期限（工作日）")]
    assert "“999”不是有效的期限" in found[("第 3 行", "督办单新期限（工作日）")]
    async with db.read() as session:
        assert [t.name for t in await session.exec(select(Task))] == ["表格任务"]  # nothing new


async def test_yaml_and_template_with_the_same_deadlines_make_equal_tasks(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seeded(db, clock)
    yaml_file = tmp_path / "任务.yaml"
    yaml_file.write_text(
        "name: 表格任务\nyear: 2026\nitems: SC001\ndepartments: SJJ\n"
        "window_start: 2026-04-01\nwindow_end: 2026-06-30\nflag_threshold: 4\n"
        "deadlines: {cosign: 1, review: 4天, followup_entry: 30, supervision: 10}\n",
        "utf-8",
    )
    xlsx_file = _template_with(
        tmp_path,
        {
            "投诉举报次数阈值": "4次",
            "成员会签期限（工作日）": 1,
            "联络员复核期限（工作日）": "4天",
            "后续处置录入期限（工作日）": "30",
            "督办单新期限（工作日）": 10.0,
        },
    )
    [(_, from_yaml)] = read_task_file(yaml_file).specs
    [(_, from_xlsx)] = read_task_file(xlsx_file).specs
    assert from_yaml == from_xlsx
    assert from_xlsx.deadlines == {
        "cosign": 1,
        "review": 4,
        "followup_entry": 30,
        "supervision": 10,
    }
    async with db.session() as session:
        for path in (yaml_file, xlsx_file):
            made = await create_tasks_from_file(
                session, path, actor="test", now=clock.now(), today=TODAY
            )
            assert not made.problems and len(made.created) == 1
    async with db.read() as session:
        one, two = await session.exec(select(Task).order_by(Task.id))  # type: ignore[arg-type]
    assert one.model_dump(exclude={"id"}) == two.model_dump(exclude={"id"})
    assert two.deadlines == from_xlsx.deadlines and two.flag_threshold == 4


# --- the CLI -----------------------------------------------------------------------------------


def _invoke(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"DATABASE_URL": settings.database_url})
    return result.exit_code, result.output


async def test_cli_task_draw_record_verify(
    db: Database, clock: FrozenClock, settings: Settings, tmp_path: Path
) -> None:
    async with db.session() as session:
        # The CLI runs on today's date: give the directories and the window a real future.
        await build_world(session, clock.now(), targets=40, inspectors=6)
    today = date.today()
    code, output = await asyncio.to_thread(
        _invoke, settings, "template", "task", str(tmp_path / "模板.xlsx")
    )
    assert code == 0 and (tmp_path / "模板.xlsx").exists(), output

    bad = _yaml(tmp_path, today, today + timedelta(days=60), YAML.replace("SW001", "NOPE"))
    code, output = await asyncio.to_thread(_invoke, settings, "task", "create", "--from", str(bad))
    assert code == 1 and "没有创建任何任务" in output and "NOPE" in output
    async with db.read() as session:
        assert not list(await session.exec(select(Task)))  # all or nothing

    good = _yaml(tmp_path, today, today + timedelta(days=60))
    code, output = await asyncio.to_thread(_invoke, settings, "task", "create", "--from", str(good))
    assert code == 0 and "已创建 2 个任务" in output, output
    async with db.read() as session:
        tasks = list(await session.exec(select(Task).order_by(Task.id)))  # type: ignore[arg-type]
    assert [t.name for t in tasks] == ["食品销售者抽查", "联合抽查"]

    code, output = await asyncio.to_thread(_invoke, settings, "draw", str(tasks[1].id))
    assert code == 0, output
    assert "承诺值" in output and "种子（现公布）" in output and "<b>" not in output
    async with db.read() as session:
        draw = (await session.exec(select(Draw))).one()
        queued = list(await session.exec(select(OutboxMessage.chat_id)))
    assert draw.status == DrawStatus.EXECUTED and draw.seed_hex in output
    assert OFFICE_CHAT in queued  # the running bot announces what the CLI did

    code, output = await asyncio.to_thread(_invoke, settings, "draw", str(tasks[1].id))
    assert code == 2 and "已经抽取过" in output

    record = tmp_path / "record.json"
    code, output = await asyncio.to_thread(
        _invoke, settings, "draw", "record", str(draw.id), "--out", str(record)
    )
    assert code == 0 and record.exists(), output
    assert json.loads(record.read_text("utf-8"))["seed_hex"] == draw.seed_hex
    code, output = await asyncio.to_thread(_invoke, settings, "verify", str(record))
    assert code == 0 and "一致" in output, output

    data = json.loads(record.read_text("utf-8"))
    data["strata"][0]["candidates"] = data["strata"][0]["candidates"][1:]
    record.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    code, output = await asyncio.to_thread(_invoke, settings, "verify", str(record))
    assert code == 1 and "不一致" in output

    record.write_text("{不是 JSON", "utf-8")
    code, output = await asyncio.to_thread(_invoke, settings, "verify", str(record))
    assert code == 2 and "无法读取" in output
    code, output = await asyncio.to_thread(_invoke, settings, "draw", "record", "999", "--out", "x")
    assert code == 2 and "999" in output
    code, output = await asyncio.to_thread(_invoke, settings, "draw", "abc")
    assert code == 2 and "用法" in output


def test_text_catalogue_values_are_not_cut_by_yaml_comments() -> None:
    # In YAML an unquoted " #" starts a comment: "任务 #3" would silently become "任务".
    catalogue = Path(__file__).parent.parent / "templates" / "texts" / "draws.yaml"
    for number, line in enumerate(catalogue.read_text("utf-8").splitlines(), 1):
        key, sep, value = line.strip().partition(": ")
        if sep and not key.startswith("#") and " #" in value:
            assert value[0] in "\"'", f"draws.yaml line {number} needs quotes"
