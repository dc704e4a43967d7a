"""Reading import files (storage/tabular.py), the cell checks of storage/directory.py, the
USCC rules of bot/uscc.py, and the batching of a directory import."""

from __future__ import annotations

import csv
import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from sqlmodel import col, func, select

from bot import uscc
from bot.clock import FrozenClock
from bot.directories import import_file
from storage import directory, tabular
from storage.db import Database
from storage.directory import SCHEMAS, Context, RowError
from storage.models import Target
from storage.tabular import (
    Chunk,
    FileProblem,
    Form,
    cell_text,
    check_file,
    detect_encoding,
    open_rows,
)

MB = 1024 * 1024
CTX = Context({"SJJ", "SWJ"}, datetime(2026, 3, 2, 1, 0, tzinfo=UTC))


def rows_of(path: Path, max_bytes: int = 10 * MB) -> list[tuple[int, list[str]]]:
    return list(open_rows(path, max_bytes).rows)


def problem_of(path: Path, max_bytes: int = 10 * MB) -> FileProblem:
    with pytest.raises(FileProblem) as caught:
        rows_of(path, max_bytes)
    return caught.value


# --- CSV ---------------------------------------------------------------------------------


def test_utf8_csv_is_read_and_cells_stripped(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("名称, 代码 \n 县市场监督管理局 ,SJJ\n\n", encoding="utf-8")
    source = open_rows(path, MB)
    assert source.encoding == "utf-8"
    assert list(source.rows) == [(1, ["名称", "代码"]), (2, ["县市场监督管理局", "SJJ"]), (3, [])]


def test_utf8_bom_is_dropped_from_the_first_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_text("名称,代码\n局,SJJ\n", encoding="utf-8-sig")
    source = open_rows(path, MB)
    assert source.encoding == "utf-8-sig"
    assert next(source.rows) == (1, ["名称", "代码"])


def test_gbk_csv_from_excel_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("名称,代码\r\n县市场监督管理局,SJJ\r\n".encode("gbk"))
    assert detect_encoding(path) == "gb18030"
    assert rows_of(path) == [(1, ["名称", "代码"]), (2, ["县市场监督管理局", "SJJ"])]


def test_gbk_after_a_first_megabyte_of_ascii_is_still_detected(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    ascii_rows = "".join(f"ROW{i:08d},{'x' * 40}\r\n" for i in range(MB // 50 + 10))
    assert len(ascii_rows) > MB
    path.write_bytes(b"name,code\r\n" + ascii_rows.encode() + "城关镇,中文\r\n".encode("gbk"))
    assert detect_encoding(path) == "gb18030"
    assert rows_of(path, 10 * MB)[-1][1] == ["城关镇", "中文"]


def test_utf8_character_across_the_read_boundary_is_still_utf8(tmp_path: Path) -> None:
    path = tmp_path / "edge.csv"
    lines = (b"x" * 63 + b"\n") * (MB // 64 - 1)  # 64 bytes short of 1 MB
    path.write_bytes(lines + b"y" * 62 + "中文\n".encode())  # 中 straddles the first read
    assert detect_encoding(path) == "utf-8"
    assert rows_of(path)[-1] == (MB // 64, ["y" * 62 + "中文"])


def test_undecodable_csv_fails_while_reading(tmp_path: Path) -> None:
    path = tmp_path / "junk.csv"
    path.write_bytes(b"name,code\n\xff\xfe\xfd,1\n")
    source = open_rows(path, MB)
    assert source.encoding == "gb18030"
    with pytest.raises(UnicodeDecodeError):
        list(source.rows)


def test_tab_separated_text_is_split_on_tabs(tmp_path: Path) -> None:
    path = tmp_path / "tabs.txt"
    path.write_text("名称\t代码\n局, 县级\tSJJ\n", encoding="utf-8")
    assert rows_of(path) == [(1, ["名称", "代码"]), (2, ["局, 县级", "SJJ"])]


def test_quoted_cells_keep_commas_and_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["名称", "地址"], ["甲, 乙", "第一行\n第二行"], ["丙"]])
    assert rows_of(path) == [(1, ["名称", "地址"]), (2, ["甲, 乙", "第一行\n第二行"]), (3, ["丙"])]


# --- spreadsheets ------------------------------------------------------------------------


def write_sheet(path: Path, cells: dict[str, Any]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for ref, value in cells.items():
        sheet[ref] = value
    workbook.save(path)
    return path


def test_xlsx_numbers_dates_and_flags_read_as_typed(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["手机", "数", "零", "日期", "时刻", "日", "是否", "文字", "空"])
    sheet.append(
        [
            13800000000,
            2.5,
            0,
            datetime(2026, 3, 2),
            datetime(2026, 3, 2, 9, 30),
            date(2026, 3, 1),
            True,
            "  城关镇  ",
            None,
        ]
    )
    sheet.append([33010200001, -3, 1.0, None, None, None, False, "x", "y"])
    path = tmp_path / "typed.xlsx"
    workbook.save(path)
    source = open_rows(path, MB)
    assert source.encoding is None
    assert list(source.rows) == [
        (1, ["手机", "数", "零", "日期", "时刻", "日", "是否", "文字", "空"]),
        (2, [*("13800000000", "2.5", "0", "2026-03-02", "2026-03-02 09:30:00"),
             *("2026-03-01", "是", "城关镇", "")]),
        (3, ["33010200001", "-3", "1", "", "", "", "否", "x", "y"]),
    ]  # fmt: skip


def test_xlsx_rows_are_numbered_as_excel_shows_them(tmp_path: Path) -> None:
    path = write_sheet(tmp_path / "low.xlsx", {"C3": "名称", "D3": "代码", "C5": "局", "D5": "SJJ"})
    numbered = [(n, cells) for n, cells in rows_of(path) if any(cells)]
    assert numbered == [(3, ["名称", "代码"]), (5, ["局", "SJJ"])]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, ""),
        ("  a b  ", "a b"),
        (True, "是"),
        (False, "否"),
        (13800000000.0, "13800000000"),
        (2.5, "2.5"),
        (-0.0, "0"),
        (1e20, "100000000000000000000"),
        (7, "7"),
        (datetime(2026, 3, 2), "2026-03-02"),
        (datetime(2026, 3, 2, 9, 30, 5), "2026-03-02 09:30:05"),
        (date(2026, 3, 1), "2026-03-01"),
        (time(8, 0), "08:00:00"),
        (timedelta(hours=1), "1:00:00"),
    ],
)
def test_cell_text(value: object, shown: str) -> None:
    assert cell_text(value) == shown


# --- files we refuse ---------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert problem_of(path).key == "file_empty"


@pytest.mark.parametrize("name", ["photo.jpg", "report.pdf", "letter.docx", "noext"])
def test_wrong_type(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"whatever")
    problem = problem_of(path)
    assert problem.key == "file_type" and problem.params == {"name": name}


def test_spreadsheet_renamed_to_csv_is_the_wrong_type(tmp_path: Path) -> None:
    path = write_sheet(tmp_path / "book.xlsx", {"A1": "名称"}).rename(tmp_path / "book.csv")
    assert problem_of(path).key == "file_type"


def test_missing_file(tmp_path: Path) -> None:
    assert problem_of(tmp_path / "gone.csv").key == "file_missing"


def test_oversize(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,b\n" * (MB // 4 + 1))
    problem = problem_of(path, max_bytes=MB)
    assert problem.key == "file_too_big" and problem.params["mb"] == 1
    assert check_file(path, 2 * MB) == ".csv"


def test_xlsx_that_is_not_a_zip_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "fake.xlsx"
    path.write_text("名称,代码\n", encoding="utf-8")
    assert problem_of(path).key == "file_corrupt"


def test_xlsx_with_a_broken_zip_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    good = write_sheet(tmp_path / "good.xlsx", {"A1": "名称"}).read_bytes()
    path.write_bytes(good[: len(good) // 2])
    assert problem_of(path).key == "file_corrupt"


def test_xls_that_is_not_ole_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "old.xls"
    path.write_bytes(b"<html>Excel export</html>")
    assert problem_of(path).key == "file_corrupt"


# --- headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("抽查主体（部门代码）", "抽查主体"),
        ("抽查主体(部门代码)", "抽查主体"),
        ("*名称", "名称"),
        ("＊名称", "名称"),
        (" 统一社会\n信用代码 ", "统一社会信用代码"),
        ("单位/所", "单位/所"),
    ],
)
def test_normalize_header(raw: str, clean: str) -> None:
    assert directory.normalize_header(raw) == clean


def test_header_map_takes_aliases_first_occurrences_and_lists_missing() -> None:
    header = ["*企业名称", "统一社会信用代码（18位）", "住所", "信用风险分类", "名称", "备注"]
    found, missing = directory.header_map(SCHEMAS["targets"], header)
    assert {index: column.field for index, column in found.items()} == {
        0: "name",
        1: "uscc",
        2: "address",
        3: "credit_class",
    }
    assert missing == [
        "主体类型",
        "经营范围",
        "所属区域",
        "行业",
        "登记状态",
        "经营异常名录",
        "严重违法失信",
        "投诉举报次数",
        "标签",
    ]


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (["事项编码", "事项名称"], "items"),
        (["名称", "*统一社会信用代码"], "targets"),
        (["名称", "其他标识"], "targets"),
        (["姓名", "执法证号"], "inspectors"),
        (["名称", "代码（部门）"], "departments"),
        (["名称", "地址"], None),
    ],
)
def test_detect_kind(header: list[str], kind: str | None) -> None:
    assert directory.detect_kind(header) == kind


# --- cell checks -------------------------------------------------------------------------

CODE = "91330102MA2H3X4Y5" + uscc.check_char("91330102MA2H3X4Y5")
FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in CODE)  # what Excel users paste: ９１３３…

GOOD: list[tuple[Callable[[str, Context], Any], str, Any]] = [
    (directory.text(5), "甲乙", "甲乙"),
    (directory.text(5, required=False), "", ""),
    (directory.yes_no, "是", True),
    (directory.yes_no, "YES", True),
    (directory.yes_no, "√", True),
    (directory.yes_no, "否", False),
    (directory.yes_no, "False", False),
    (directory.yes_no, "", False),
    (directory.count, "", 0),
    (directory.count, "3", 3),
    (directory.count, "007", 7),
    (directory.count, "3.0", 3),
    (directory.count, "３", 3),
    (directory.credit_class, "A", "A"),
    (directory.credit_class, "b类", "B"),
    (directory.credit_class, "c级", "C"),
    (directory.credit_class, "", ""),
    (directory.status, "在业", "存续"),
    (directory.status, "存续（在营、开业、在册）", "存续"),
    (directory.status, "注销", "注销"),
    (directory.optional_uscc, "", None),
    (directory.optional_uscc, CODE, CODE),
    (directory.optional_uscc, CODE.lower(), CODE),
    (directory.optional_uscc, f" {CODE[:6]} {CODE[6:]} ", CODE),
    (directory.optional_uscc, FULL_WIDTH, CODE),
    (directory.conflicts, f"{CODE};{CODE.lower()}、{CODE}", CODE),
    (directory.conflicts, "", ""),
    (directory.phone, "13800000000", "13800000000"),
    (directory.phone, "+86 138-0000-0000", "+86 138-0000-0000"),
    (directory.phone, "", ""),
    (directory.category, "重点检查事项", "重点"),
    (directory.category, "一般", "一般"),
    (directory.methods, "现场检查、书面；现场", "现场、书面"),
    (directory.methods, "委托第三方 网络监测", "委托专业机构、网络"),
    (directory.ratio, "5%", "5%"),
    (directory.ratio, "0.5％", "0.5%"),
    (directory.ratio, "0.05", "5%"),
    (directory.ratio, "100%", "100%"),
    (directory.ratio, "", ""),
    (directory.department_kind, "股室", "科室"),
    (directory.department_kind, "", "部门"),
    (directory.parent_code, "SJJ", "SJJ"),
    (directory.parent_code, "", None),
    (directory.department_code, "SWJ", "SWJ"),
    (directory.code, " SJJ 001 ", "SJJ001"),
]


@pytest.mark.parametrize(("parse", "cell", "value"), GOOD)
def test_cell_accepted(parse: Callable[[str, Context], Any], cell: str, value: Any) -> None:
    assert parse(cell, CTX) == value


BAD: list[tuple[Callable[[str, Context], Any], str, str, dict[str, Any]]] = [
    (directory.text(5), "", "required", {}),
    (directory.text(5), "甲乙丙丁戊己", "too_long", {"max": 5}),
    (directory.yes_no, "也许", "yes_no", {}),
    (directory.count, "-1", "count", {}),
    (directory.count, "1.5", "count", {}),
    (directory.count, "三", "count", {}),
    (directory.credit_class, "E", "credit", {}),
    (directory.status, "x" * 33, "too_long", {"max": 32}),
    (directory.optional_uscc, CODE[:17], "uscc_length", {}),
    (directory.optional_uscc, CODE[:17] + "I", "uscc_charset", {}),
    (directory.optional_uscc, CODE[:17] + ("0" if CODE[17] != "0" else "1"), "uscc_check", {}),
    (directory.conflicts, f"{CODE};BAD", "conflict_code", {"code": "BAD"}),
    (directory.phone, "12ab", "phone", {}),
    (directory.category, "特殊", "category", {}),
    (directory.methods, "现场、飞行", "method", {"value": "飞行"}),
    (directory.ratio, "abc", "ratio", {}),
    (directory.ratio, "150%", "ratio", {}),
    (directory.ratio, "0", "ratio", {}),
    (directory.department_kind, "处", "department_kind", {}),
    (directory.parent_code, "NOPE", "unknown_department", {"code": "NOPE"}),
    (directory.department_code, "", "required", {}),
    (directory.department_code, "NOPE", "unknown_department", {"code": "NOPE"}),
    (directory.code, "  ", "required", {}),
    (directory.code, "X" * 65, "too_long", {"max": 64}),
]


@pytest.mark.parametrize(("parse", "cell", "key", "params"), BAD)
def test_cell_rejected(
    parse: Callable[[str, Context], Any], cell: str, key: str, params: dict[str, Any]
) -> None:
    with pytest.raises(RowError) as caught:
        parse(cell, CTX)
    assert (caught.value.key, caught.value.params) == (key, params)


# --- USCC --------------------------------------------------------------------------------

seeds = st.integers(min_value=0, max_value=2**32)


@settings(deadline=None)
@given(seeds)
def test_generated_codes_validate(seed: int) -> None:
    code = uscc.generate(random.Random(seed))
    assert uscc.problem(code) is None and uscc.is_valid(code)
    assert uscc.normalize(code) == code


@settings(deadline=None)
@given(seeds, st.integers(min_value=0, max_value=17), st.sampled_from(uscc.CHARSET + "IOSVZ-a"))
def test_changing_one_character_breaks_the_code(seed: int, position: int, char: str) -> None:
    code = uscc.generate(random.Random(seed))
    changed = code[:position] + char + code[position + 1 :]
    if changed == code:
        return
    assert not uscc.is_valid(changed)
    if position < 17 and char in uscc.CHARSET:
        assert uscc.check_char(changed[:17]) != code[17]


@settings(deadline=None)
@given(st.text())
def test_normalize_is_idempotent(raw: str) -> None:
    once = uscc.normalize(raw)
    assert uscc.normalize(once) == once


@settings(deadline=None)
@given(st.one_of(st.text(alphabet=uscc.CHARSET + "IOSVZa ", max_size=20), st.text(max_size=20)))
def test_fast_uscc_check_agrees_with_bot_uscc(raw: str) -> None:
    assert directory._valid_uscc(raw) == uscc.is_valid(raw)


@settings(deadline=None)
@given(seeds, st.integers(min_value=0, max_value=17), st.sampled_from(uscc.CHARSET + "I0"))
def test_fast_uscc_check_agrees_on_near_misses(seed: int, position: int, char: str) -> None:
    code = uscc.generate(random.Random(seed))
    changed = code[:position] + char + code[position + 1 :]
    assert directory._valid_uscc(changed) == uscc.is_valid(changed)


# --- batching of an import ---------------------------------------------------------------

HEADER = ["名称", "统一社会信用代码", "主体类型", "经营范围", "地址", "所属区域", "行业"]
HEADER += ["登记状态", "信用风险等级", "经营异常名录", "严重违法失信", "投诉举报次数", "标签"]


def target(name: str, code: str) -> list[str]:
    place = ["食品销售", "城关路1号", "城关镇", "零售业"]
    return [name, code, "有限责任公司", *place, "存续", "A", "否", "是", "2", ""]


def codes(count: int) -> list[str]:
    rng = random.Random(11)
    return [uscc.generate(rng) for _ in range(count)]


def write_targets(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *rows])
    return path


async def stored(db: Database) -> list[tuple[str, str]]:
    async with db.read() as session:
        found = await session.exec(select(Target.key, Target.name).order_by(col(Target.id)))
        return [(key, name) for key, name in found.all()]


async def test_repeats_within_and_across_batches(
    db: Database, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directory, "BATCH", 2)
    a, b, c, d = codes(4)
    rows = [target("甲", a), target("乙", b), target("丙", a), target("丁", c)]
    rows += [target("戊", c), target("己", d), target("庚", b)]
    path = write_targets(tmp_path / "t.csv", rows)
    report = await import_file(db, path, kind="targets", actor="t", clock=clock, max_bytes=MB)
    outcome = report.outcome
    assert (outcome.total, outcome.created, outcome.updated, outcome.rejected_rows) == (7, 4, 0, 3)
    assert [(e.row, e.key, e.value) for e in outcome.errors] == [
        (4, "duplicate_key", a),
        (6, "duplicate_key", c),
        (8, "duplicate_key", b),
    ]
    assert await stored(db) == [(a, "甲"), (b, "乙"), (c, "丁"), (d, "己")]

    again = await import_file(db, path, kind="targets", actor="t", clock=clock, max_bytes=MB)
    assert (again.outcome.created, again.outcome.updated, again.outcome.rejected_rows) == (0, 4, 3)
    async with db.read() as session:
        flags = select(Target.abnormal, Target.serious_illegal, Target.complaints)
        assert set((await session.exec(flags)).all()) == {(False, True, 2)}


async def test_strict_rollback_leaves_the_next_import_working(
    db: Database, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directory, "BATCH", 2)
    good = [target(f"企业{i}", code) for i, code in enumerate(codes(5))]
    bad = write_targets(tmp_path / "bad.csv", [*good, target("坏", "123")])
    for _ in range(2):
        report = await import_file(
            db, bad, kind="targets", actor="t", clock=clock, max_bytes=MB, strict=True
        )
        assert not report.applied and report.outcome.rejected_rows == 1
        assert await stored(db) == []
    report = await import_file(
        db, write_targets(tmp_path / "ok.csv", good), kind="targets", actor="t", clock=clock,
        max_bytes=MB,
    )  # fmt: skip
    assert report.ok and report.outcome.created == 5
    assert len(await stored(db)) == 5


async def test_a_file_failing_half_way_writes_nothing(
    db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directory, "BATCH", 2)
    rows = [target(f"企业{i}", code) for i, code in enumerate(codes(7))]

    def failing() -> Iterator[tuple[int, list[str]]]:
        yield from enumerate(rows, start=2)
        raise FileProblem("file_encoding")

    with pytest.raises(FileProblem):
        async with db.session() as session:
            await directory.run_import(
                await session.connection(),
                SCHEMAS["targets"],
                HEADER,
                failing(),
                import_id=1,
                now=clock.now(),
                error_limit=100,
                deactivate_missing=False,
            )
    assert await stored(db) == []
    async with db.session() as session:
        outcome = await directory.run_import(
            await session.connection(),
            SCHEMAS["targets"],
            HEADER,
            iter(enumerate(rows, start=2)),
            import_id=2,
            now=clock.now(),
            error_limit=100,
            deactivate_missing=False,
        )
    assert outcome.created == 7
    async with db.read() as session:
        assert (await session.exec(select(func.count()).select_from(Target))).one() == 7


# --- a big file's chunks, checked a column at a time ---------------------------------------

GOOD_CODES = codes(6)
# Each target column's cells: mostly what the column check passes, and what it must leave to
# the cell check (bad cells, values to normalise or convert the slow way).
CELLS = [
    ["甲公司", "乙公司", "", "名" * 301],
    [*GOOD_CODES, "", GOOD_CODES[0].lower(), GOOD_CODES[1][:17] + "I", "123"],
    ["有限责任公司", "产品", "", "类" * 65],
    ["食品销售", ""],
    ["城关路1号", "", "址" * 301],
    ["城关镇", ""],
    ["零售业", ""],
    ["存续", "在业", "注销", "", "x" * 33],
    ["A", "", "b类", "E"],
    ["否", "是", "", "YES", "也许"],
    ["否", "是", "√"],
    ["0", "12", "", "007", "3.0", "３", "-1"],
    ["", "食品;小作坊", "签" * 301],
]


def checker(ctx: Context = CTX) -> Any:
    from sqlalchemy.dialects import sqlite

    now = ctx.now
    stamp = {"import_id": 1, "active": True, "created_at": now, "updated_at": now}
    return directory._Checker(SCHEMAS["targets"], HEADER, ctx, sqlite.dialect(), stamp, 100)


GOOD_CELLS = [GOOD_CODES if some is CELLS[1] else some[:2] for some in CELLS]
good_rows = st.tuples(*(st.sampled_from(some) for some in GOOD_CELLS))
any_rows = st.tuples(*(st.sampled_from(some) for some in CELLS))
# Three rows in four good ones, so that many chunks pass the column checks.
chunks = st.lists(st.one_of(good_rows, good_rows, good_rows, any_rows), min_size=1, max_size=6)


# A CSV's chunk comes as read, spaces and all (storage.tabular.CsvRows).
SPACES = ["", "", " ", "\u3000", "\t "]
around = st.tuples(st.sampled_from(SPACES), st.sampled_from(SPACES))
all_padded = st.lists(around, min_size=len(HEADER), max_size=len(HEADER))
raw_chunks = st.lists(
    st.tuples(st.one_of(good_rows, good_rows, any_rows), all_padded),
    min_size=1,
    max_size=6,
)


def chunk_of(rows: Sequence[Sequence[Any]], form: Form = "clean") -> Chunk:
    return Chunk(range(2, 2 + len(rows)), [list(cells) for cells in rows], form)


def plain(batch: directory.Batch) -> directory.Batch:
    """The batch with its row numbers as a list (the column path keeps a chunk's range)."""
    return dataclasses.replace(batch, numbers=list(batch.numbers))


@settings(deadline=None, max_examples=300)
@given(chunks)
def test_a_chunk_checked_by_columns_is_what_rows_give(rows: list[tuple[str, ...]]) -> None:
    chunk = chunk_of(rows)
    by_columns = checker()._by_columns(chunk)
    by_rows = checker()._by_rows(chunk)
    if by_columns is not None:
        assert plain(by_columns) == by_rows
        assert not by_rows.errors and by_rows.rejected_rows == 0


Drawn = list[tuple[tuple[Any, ...], list[tuple[str, str]]]]


def padded(rows: Drawn) -> list[tuple[Any, ...]]:
    """The drawn rows, each text cell with the spaces drawn for it around it."""
    return [
        tuple(
            f"{before}{cell}{after}" if isinstance(cell, str) else cell
            for cell, (before, after) in zip(cells, ends, strict=True)
        )
        for cells, ends in rows
    ]


def assert_as_read_is_as_cleaned(raw: list[tuple[Any, ...]], form: Form, clean: Any) -> None:
    """A chunk as read gives, on either path, what its cells cleaned one by one give."""
    expected = checker()._by_rows(chunk_of([tuple(map(clean, cells)) for cells in raw]))
    assert checker()._by_rows(chunk_of(raw, form)) == expected
    by_columns = checker()._by_columns(chunk_of(raw, form))
    if by_columns is not None:
        assert plain(by_columns) == expected


@settings(deadline=None, max_examples=300)
@given(raw_chunks)
def test_an_unstripped_chunk_gives_what_its_stripped_cells_give(rows: Drawn) -> None:
    assert_as_read_is_as_cleaned(padded(rows), "text", str.strip)


# A sheet's chunk comes as calamine gives it: numbers, booleans and dates as such.
SHEET_CELLS: list[list[Any]] = [
    *CELLS[:9],
    [*CELLS[9], True, False, 1.0],
    [*CELLS[10], True, False],
    [*CELLS[11], 0, 12.0, 3, 2.5, -1.0],
    [*CELLS[12], 3.0],
]
sheet_rows = st.tuples(*(st.sampled_from(some) for some in SHEET_CELLS))
sheet_chunks = st.lists(
    st.tuples(st.one_of(good_rows, sheet_rows, sheet_rows), all_padded), min_size=1, max_size=6
)


@settings(deadline=None, max_examples=300)
@given(sheet_chunks)
def test_a_sheet_chunk_gives_what_its_cells_as_text_give(rows: Drawn) -> None:
    assert_as_read_is_as_cleaned(padded(rows), "cells", cell_text)


def test_numbers_in_a_sheet_chunk_are_checked_by_columns() -> None:
    good = [target(f" 企业{n}", code) for n, code in enumerate(GOOD_CODES)]
    cells = [[*row[:9], False, True, 2.0, row[12]] for row in good]
    check = checker()
    batch = check._by_columns(chunk_of(cells, form="cells"))
    assert batch is not None
    assert plain(batch) == checker()._by_rows(chunk_of(cells, form="cells"))
    assert batch.rows[0][check.names.index("complaints")] == 2
    assert batch.rows[0][check.names.index("name")] == "企业0"


def test_a_chunk_of_spaces_goes_row_by_row() -> None:
    good = [target(f"企业{n}", code) for n, code in enumerate(GOOD_CODES)]
    spaces = [" ", "\u3000", *[" "] * (len(HEADER) - 2)]
    assert checker()._by_columns(chunk_of([*good, spaces], form="text")) is None
    batch = checker()._by_rows(chunk_of([*good, spaces], form="text"))
    assert batch.total == len(good)  # the row of spaces is a blank row


def test_spaces_around_text_are_stripped_by_columns() -> None:
    good = [target(f" 企业{n}\u3000", code) for n, code in enumerate(GOOD_CODES)]
    check = checker()
    batch = check._by_columns(chunk_of(good, form="text"))
    assert batch is not None  # no need to go row by row
    assert [row[check.names.index("name")] for row in batch.rows][:2] == ["企业0", "企业1"]
    assert plain(batch) == checker()._by_rows(chunk_of(good, form="text"))
    padded_code = [*good[:-1], target("企业", f" {GOOD_CODES[-1]}")]
    assert check._by_columns(chunk_of(padded_code, form="text")) is None  # the row path


def test_good_chunks_take_the_column_path_and_odd_ones_the_row_path() -> None:
    good = [target(f"企业{n}", code) for n, code in enumerate(GOOD_CODES, start=2)]
    check = checker()
    batch = check._by_columns(chunk_of(good))
    assert batch is not None and batch.total == len(good)
    assert [row[check.key_index] for row in batch.rows] == GOOD_CODES
    assert list(batch.numbers) == [2, 3, 4, 5, 6, 7]
    blank = [*good, [""] * len(HEADER)]
    repeated = [*good, target("重复", GOOD_CODES[0])]
    short = [*good, target("短", codes(7)[6])[:5]]
    lower = [*good, target("小写", codes(7)[6].lower())]
    for odd in (blank, repeated, short, lower):
        assert check._by_columns(chunk_of(odd)) is None


@settings(deadline=None)
@given(st.lists(st.tuples(seeds, st.integers(0, 17), st.sampled_from(uscc.CHARSET + "I0"))))
def test_the_column_uscc_sum_agrees_with_the_one_by_one(
    changes: list[tuple[int, int, str]],
) -> None:
    found = []
    for seed, position, char in changes:
        code = uscc.generate(random.Random(seed))
        found.append(code[:position] + char + code[position + 1 :])
    assert directory._all_valid_uscc(found) == all(map(directory._valid_uscc, found))


# --- reading a spreadsheet ahead (dsr import) ------------------------------------------------


def test_a_sheet_read_ahead_is_the_sheet(tmp_path: Path) -> None:
    path = write_sheet(tmp_path / "a.xlsx", {"A1": "名称", "A2": "甲"})
    tabular.read_ahead(path, MB)
    assert path in tabular._AHEAD
    assert rows_of(path) == [(1, ["名称"]), (2, ["甲"])]
    assert not tabular._AHEAD  # taken


def test_a_broken_sheet_read_ahead_is_corrupt_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    tabular.read_ahead(path, MB)
    assert problem_of(path).key == "file_corrupt"
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("名称\n甲\n", encoding="utf-8")
    tabular.read_ahead(csv_file, MB)  # nothing to read ahead
    tabular.read_ahead(tmp_path / "missing.xlsx", MB)  # open_rows says what is wrong
    assert not tabular._AHEAD
