"""Import of the 一单两库 directories (and the department list) from our templates.

One schema per kind says which Chinese column feeds which field and how a cell is checked.
Rows stream in batches; each batch is validated, checked against the keys already stored,
and upserted by natural key in the same transaction as the whole import, so `--strict` can
roll everything back and a crash leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import operator
import pickle
import re
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from multiprocessing.connection import Connection
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Dialect,
    MetaData,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy import Column as SAColumn
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateTable, DropTable
from sqlmodel import col

from bot import uscc
from storage.models import CheckItem, Department, Inspector, Target
from storage.tabular import Chunk, cell_text, chunks, clean_rows


class RowError(Exception):
    """One bad cell: `key` names the reason under `import_error.` in templates/texts.yaml."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass
class Context:
    """What cell checks may consult: the departments known so far."""

    department_codes: set[str]
    now: datetime


Parser = Callable[[str, Context], Any]
ColumnCheck = Callable[[Sequence[str], Context], Sequence[Any] | None]


@dataclass(frozen=True)
class Check:
    """A cell check, and the same check over a whole column of a big file's chunk (`column`),
    made of C loops: the values, or None when some cell needs the cell check (to be reported
    with its row, or to be converted the slow way).

    A CSV's or a sheet's chunk comes as read (`storage.tabular.Chunk.form`): a column with
    cells that are not text goes through `cell_text`, one that is all text is stripped, unless
    `strip=False` says the column check already refuses a cell with spaces around it (the row
    path then strips it)."""

    cell: Parser
    column: ColumnCheck | None = None
    strip: bool = True

    def __call__(self, value: str, ctx: Context) -> Any:
        return self.cell(value, ctx)


def columnwise(column: ColumnCheck, *, strip: bool = True) -> Callable[[Parser], Check]:
    """Decorates a cell check with its column version."""
    return lambda cell: Check(cell, column, strip)


@dataclass(frozen=True)
class Column:
    header: str
    field: str
    parse: Parser
    required: bool = True
    aliases: tuple[str, ...] = ()
    example: str = ""


@dataclass(frozen=True)
class Schema:
    kind: str
    model: type[Any]
    key_field: str
    columns: tuple[Column, ...]
    finish: Callable[[dict[str, Any], Context], None] | None = None
    key_column: str = ""  # the header reported for key problems, when key_field is derived
    # `finish` over a chunk's columns; False when some row needs `finish` itself. Without it
    # (or without a column version of every cell check) a schema is checked row by row.
    finish_columns: Callable[[dict[str, Sequence[Any]], Context], bool] | None = None

    @property
    def table(self) -> Table:
        return cast(Table, self.model.__table__)

    @property
    def key_header(self) -> str:
        return self.key_column or next(c.header for c in self.columns if c.field == self.key_field)


# --- cell checks -------------------------------------------------------------------------

_SPLIT = re.compile(r"[;；,，、\s]+")


def _text_column(values: Sequence[str], max_len: int, required: bool) -> Sequence[str] | None:
    if (required and "" in values) or max(map(len, values), default=0) > max_len:
        return None
    return values


def text(max_len: int, required: bool = True) -> Check:
    def parse(value: str, _ctx: Context) -> str:
        if not value and required:
            raise RowError("required")
        if len(value) > max_len:
            raise RowError("too_long", max=max_len)
        return value

    return Check(parse, lambda values, _ctx: _text_column(values, max_len, required))


_YES = {"是", "y", "yes", "1", "true", "√"}
_NO = {"否", "n", "no", "0", "false", ""}
_YES_NO = dict.fromkeys(_YES, True) | dict.fromkeys(_NO, False)


def _yes_no_column(values: Sequence[str], _ctx: Context) -> list[bool] | None:
    try:
        return list(map(_YES_NO.__getitem__, values))
    except KeyError:
        return None


@columnwise(_yes_no_column, strip=False)
def yes_no(value: str, _ctx: Context) -> bool:
    answer = _YES_NO.get(value)  # the usual spellings, without lower()
    if answer is not None:
        return answer
    lowered = value.lower()
    if lowered in _YES:
        return True
    if lowered in _NO:
        return False
    raise RowError("yes_no")


def _count_column(values: Sequence[str], _ctx: Context) -> list[int] | None:
    digits = "".join(values)
    if digits and not (digits.isascii() and digits.isdigit()):
        return None
    if "" in values:
        values = [value or "0" for value in values]
    return list(map(int, values))


@columnwise(_count_column, strip=False)
def count(value: str, _ctx: Context) -> int:
    if not value:
        return 0
    if value.isascii() and value.isdigit():  # what Decimal would make of it, faster
        return int(value)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise RowError("count") from None
    if number < 0 or number != number.to_integral_value():
        raise RowError("count")
    return int(number)


_GRADES = {"A", "B", "C", "D", ""}


@columnwise(lambda values, _ctx: values if _GRADES.issuperset(values) else None, strip=False)
def credit_class(value: str, _ctx: Context) -> str:
    if value in _GRADES:
        return value
    grade = value.upper().removesuffix("类").removesuffix("级")
    if grade in _GRADES:
        return grade
    raise RowError("credit")


# 在业/开业 are how some registries spell 存续; the draw only takes 存续.
_STATUS = {"在业": "存续", "开业": "存续", "存续（在营、开业、在册）": "存续"}


_status_text = text(32)


def _status_column(values: Sequence[str], _ctx: Context) -> Sequence[str] | None:
    return _text_column(list(map(_STATUS.get, values, values)), 32, True)


@columnwise(_status_column)
def status(value: str, ctx: Context) -> str:
    return _STATUS.get(value) or _status_text(value, ctx)


def department_code(value: str, ctx: Context) -> str:
    if not value:
        raise RowError("required")
    if value not in ctx.department_codes:
        raise RowError("unknown_department", code=value)
    return value


# GB 32100-2015 weighs the first 17 characters by 3**i mod 31 and picks the 18th so that the
# weighted sum plus its own value is 0 mod 31; a table per position makes that one pass in C.
_USCC_WEIGHTS = [pow(3, position, 31) for position in range(17)] + [1]
_USCC_TABLES = tuple(
    {char: value * weight % 31 for value, char in enumerate(uscc.CHARSET)}
    for weight in _USCC_WEIGHTS
)
_lookup = dict.__getitem__


def _valid_uscc(code: str) -> bool:
    """Same answer as `uscc.is_valid`, several times faster: it runs for every target row."""
    if len(code) != 18:
        return False
    try:
        return sum(map(_lookup, _USCC_TABLES, code)) % 31 == 0
    except KeyError:
        return False


# The same sum for a whole column of codes at once, in C loops: the codes side by side in one
# string; for each position, its characters (a slice) turned into their weighted values
# (translate) and read as one big integer with a 16-bit lane per code (UTF-16 puts each
# value in two bytes); the 18 integers added up, each lane holds its code's sum (at most
# 18 * 30, so no lane carries into the next), and every sum must be a multiple of 31.
_USCC_WEIGHED = tuple(
    str.maketrans({char: chr(value * weight % 31) for value, char in enumerate(uscc.CHARSET)})
    for weight in _USCC_WEIGHTS
)
_MULTIPLES_OF_31 = "".join(chr(31 * k) for k in range(18 * 30 // 31 + 1))
_USCC_CHARS = re.compile(f"[{uscc.CHARSET}]*")


def _all_valid_uscc(codes: Sequence[str]) -> bool:
    """Whether every one of `codes` is a valid USCC as it is (normalized): `_valid_uscc` for
    each, about six times faster."""
    joined = "".join(codes)
    if len(joined) != 18 * len(codes) or min(map(len, codes), default=18) != 18:
        return False
    if not _USCC_CHARS.fullmatch(joined):
        return False
    total = 0
    for position, weighed in enumerate(_USCC_WEIGHED):
        values = joined[position::18].translate(weighed).encode("utf-16-le")
        total += int.from_bytes(values, "little")
    sums = total.to_bytes(2 * len(codes), "little").decode("utf-16-le")
    return not sums.strip(_MULTIPLES_OF_31)


def _uscc_column(values: Sequence[str], _ctx: Context) -> Sequence[str | None] | None:
    codes = [value for value in values if value] if "" in values else values
    if not _all_valid_uscc(codes):
        return None  # codes to normalize or to report
    return values if codes is values else [value or None for value in values]


@columnwise(_uscc_column, strip=False)
def optional_uscc(value: str, _ctx: Context) -> str | None:
    if not value:
        return None
    # uscc.normalize() only changes full-width characters beyond upper() and spaces.
    code = value.strip().upper().replace(" ", "") if value.isascii() else uscc.normalize(value)
    if _valid_uscc(code):
        return code
    reason = uscc.problem(code)
    if reason:
        raise RowError(reason)
    return code


def conflicts(value: str, _ctx: Context) -> str:
    codes = [uscc.normalize(part) for part in _SPLIT.split(value) if part]
    for code in codes:
        reason = uscc.problem(code)
        if reason:
            raise RowError("conflict_code", code=code)
    return ";".join(dict.fromkeys(codes))


def phone(value: str, _ctx: Context) -> str:
    if value and not re.fullmatch(r"\+?[\d\- ]{7,20}", value):
        raise RowError("phone")
    return value


CATEGORIES = {"重点": "重点", "重点检查事项": "重点", "重点事项": "重点"}
CATEGORIES |= {"一般": "一般", "一般检查事项": "一般", "一般事项": "一般"}


def category(value: str, _ctx: Context) -> str:
    try:
        return CATEGORIES[value]
    except KeyError:
        raise RowError("category") from None


METHODS = {"现场": "现场", "现场检查": "现场", "现场抽查": "现场", "实地检查": "现场"}
METHODS |= {"书面": "书面", "书面检查": "书面", "书面审查": "书面"}
METHODS |= {"网络": "网络", "网络检查": "网络", "网络监测": "网络"}
METHODS |= {"委托专业机构": "委托专业机构", "专业机构核查": "委托专业机构"}
METHODS |= {"委托": "委托专业机构", "委托第三方": "委托专业机构"}


def methods(value: str, _ctx: Context) -> str:
    picked: list[str] = []
    for part in _SPLIT.split(value):
        if not part:
            continue
        mapped = METHODS.get(part)
        if mapped is None:
            raise RowError("method", value=part)
        picked.append(mapped)
    return "、".join(dict.fromkeys(picked))


def ratio(value: str, _ctx: Context) -> str:
    """Stored as a percentage string: '5%', '0.5%', '100%'."""
    if not value:
        return ""
    raw = value.replace("％", "%")
    try:
        number = Decimal(raw.removesuffix("%"))
    except InvalidOperation:
        raise RowError("ratio") from None
    if not raw.endswith("%") and number <= 1:
        number *= 100
    if not Decimal(0) < number <= Decimal(100):
        raise RowError("ratio")
    return f"{number.normalize():f}%"


DEPARTMENT_KINDS = {"部门": "部门", "科室": "科室", "股室": "科室", "所": "所"}
DEPARTMENT_KINDS |= {"市场监管所": "所", "监管所": "所", "": "部门"}


def department_kind(value: str, _ctx: Context) -> str:
    try:
        return DEPARTMENT_KINDS[value]
    except KeyError:
        raise RowError("department_kind") from None


def parent_code(value: str, ctx: Context) -> str | None:
    if not value:
        return None
    if value not in ctx.department_codes:
        raise RowError("unknown_department", code=value)
    return value


def code(value: str, _ctx: Context) -> str:
    value = value.replace(" ", "")
    if not value:
        raise RowError("required")
    if len(value) > 64:
        raise RowError("too_long", max=64)
    return value


# --- cross-field rules ---------------------------------------------------------------------

NON_MARKET_WORDS = ("产品", "项目", "自然人", "非市场", "其他")


def finish_target(values: dict[str, Any], _ctx: Context) -> None:
    other = values.pop("other_id")
    if values["uscc"]:
        values["key"] = values["uscc"]
    elif other:
        if not any(word in values["subject_type"] for word in NON_MARKET_WORDS):
            raise RowError("uscc_required_for_market")
        values["key"] = other
    else:
        raise RowError("uscc_or_other")


def finish_target_columns(values: dict[str, Sequence[Any]], _ctx: Context) -> bool:
    usccs = values["uscc"]
    if None in usccs:
        return False  # rows keyed by 其他标识: finish_target checks them one by one
    values["key"] = usccs
    return True


def finish_item(values: dict[str, Any], _ctx: Context) -> None:
    # 一般 items may not go below 5% (000_3f1c823edaaa13fb.txt); 重点 have no limit.
    low = values["ratio"] and Decimal(values["ratio"].removesuffix("%")) < 5
    if values["category"] == "一般" and low:
        raise RowError("general_ratio_low")


def finish_department(values: dict[str, Any], ctx: Context) -> None:
    # A later row may name this one as its parent.
    ctx.department_codes.add(values["code"])


SCHEMAS: dict[str, Schema] = {
    "departments": Schema(
        "departments",
        Department,
        "code",
        (
            Column("名称", "name", text(200), example="县市场监督管理局"),
            Column("代码", "code", code, aliases=("部门代码",), example="SJJ"),
            Column("类型", "kind", department_kind, required=False, example="部门"),
            Column("上级代码", "parent_code", parent_code, required=False, example=""),
        ),
        finish_department,
    ),
    "items": Schema(
        "items",
        CheckItem,
        "code",
        (
            Column("事项编码", "code", code, example="SJJ-001"),
            Column("事项名称", "name", text(500), example="食品生产者生产活动的检查"),
            Column(
                "抽查依据",
                "basis",
                text(4000, required=False),
                aliases=("检查依据",),
                example="《中华人民共和国食品安全法》第一百一十条",
            ),
            Column(
                "抽查主体", "department_code", department_code, aliases=("检查主体",), example="SJJ"
            ),
            Column(
                "抽查对象类型",
                "object_type",
                text(500, required=False),
                aliases=("抽查对象", "检查对象"),
                example="食品生产企业",
            ),
            Column("事项类别", "category", category, example="重点"),
            Column(
                "抽查方式",
                "methods",
                methods,
                required=False,
                aliases=("检查方式",),
                example="现场、书面",
            ),
            Column("抽查比例", "ratio", ratio, required=False, example="5%"),
            Column(
                "抽查频次",
                "frequency",
                text(64, required=False),
                required=False,
                example="每年一次",
            ),
            Column(
                "检查内容",
                "content",
                text(4000, required=False),
                required=False,
                example="生产许可、原料进货查验、出厂检验记录",
            ),
            Column(
                "所需专长",
                "expertise",
                text(200, required=False),
                required=False,
                example="食品安全",
            ),
        ),
        finish_item,
    ),
    "targets": Schema(
        "targets",
        Target,
        "key",
        (
            Column(
                "名称",
                "name",
                text(300),
                aliases=("企业名称", "主体名称"),
                example="某某食品有限公司",
            ),
            Column("统一社会信用代码", "uscc", optional_uscc, example="91330102MA2H3X4Y5Z"),
            Column("其他标识", "other_id", text(64, required=False), required=False, example=""),
            Column("主体类型", "subject_type", text(64, required=False), example="有限责任公司"),
            Column("经营范围", "scope", text(4000, required=False), example="食品生产"),
            Column(
                "地址",
                "address",
                text(300, required=False),
                aliases=("住所",),
                example="某某街道某某路1号",
            ),
            Column("所属区域", "region", text(100, required=False), example="城关镇"),
            Column("行业", "industry", text(100, required=False), example="食品制造业"),
            Column("登记状态", "status", status, example="存续"),
            Column(
                "信用风险等级", "credit_class", credit_class, aliases=("信用风险分类",), example="A"
            ),
            Column("经营异常名录", "abnormal", yes_no, example="否"),
            Column("严重违法失信", "serious_illegal", yes_no, example="否"),
            Column("投诉举报次数", "complaints", count, example="0"),
            Column("标签", "tags", text(300, required=False), example="食品;小作坊"),
        ),
        finish_target,
        key_column="统一社会信用代码",
        finish_columns=finish_target_columns,
    ),
    "inspectors": Schema(
        "inspectors",
        Inspector,
        "cert_no",
        (
            Column("姓名", "name", text(64), example="张三"),
            Column("部门代码", "department_code", department_code, example="SJJ"),
            Column(
                "单位/所",
                "unit",
                text(100, required=False),
                aliases=("单位", "所"),
                example="城关市场监管所",
            ),
            Column("职务", "position", text(100, required=False), example="科员"),
            Column("业务专长", "expertise", text(300, required=False), example="食品安全;特种设备"),
            Column("执法证号", "cert_no", code, example="33010200001"),
            Column("是否持证", "certified", yes_no, example="是"),
            Column("回避对象", "conflicts", conflicts, required=False, example=""),
            Column(
                "手机",
                "phone",
                phone,
                required=False,
                aliases=("手机号", "联系电话"),
                example="13800000000",
            ),
        ),
    ),
}

# The same names users type on the command line and in the bot.
KIND_ALIASES = {"departments": "departments", "items": "items", "targets": "targets"}
KIND_ALIASES |= {"inspectors": "inspectors", "部门": "departments", "事项": "items"}
KIND_ALIASES |= {"对象": "targets", "检查对象": "targets", "人员": "inspectors"}


def normalize_header(raw: str) -> str:
    """'抽查主体（部门代码）' -> '抽查主体', '*名称' -> '名称'."""
    cleaned = re.sub(r"\s+", "", raw).replace("（", "(").lstrip("*＊")
    return cleaned.split("(", 1)[0]


def header_map(schema: Schema, header: Sequence[str]) -> tuple[dict[int, Column], list[str]]:
    """Column index -> Column, and the headers of required columns that are missing."""
    wanted: dict[str, Column] = {}
    for column in schema.columns:
        for name in (column.header, *column.aliases):
            wanted[normalize_header(name)] = column
    found: dict[int, Column] = {}
    seen: set[str] = set()
    for index, raw in enumerate(header):
        match = wanted.get(normalize_header(raw))
        if match is not None and match.field not in seen:
            found[index] = match
            seen.add(match.field)
    missing = [c.header for c in schema.columns if c.required and c.field not in seen]
    return found, missing


def detect_kind(header: Sequence[str]) -> str | None:
    """Which of our templates a header row belongs to."""
    names = {normalize_header(h) for h in header}
    if "事项编码" in names:
        return "items"
    if "统一社会信用代码" in names or "其他标识" in names:
        return "targets"
    if "执法证号" in names:
        return "inspectors"
    if "代码" in names and "名称" in names:
        return "departments"
    return None


# --- the run -------------------------------------------------------------------------------
#
# A big file is checked in a child process while this one writes what the child has checked:
# the checks are Python and the writes mostly the database's C, so each gets a core of its
# own. Batches travel through a pipe (one in the pipe, one being written), so memory stays
# flat however long the file is.


@dataclass
class Rejected:
    row: int
    column: str
    value: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    total: int = 0
    created: int = 0
    updated: int = 0
    rejected_rows: int = 0
    deactivated: int = 0
    errors: list[Rejected] = field(default_factory=list)
    errors_truncated: int = 0

    @property
    def applied(self) -> int:
        return self.created + self.updated


Progress = Callable[[int], Awaitable[None]]
BATCH = 5000
# How much of a rejected cell the report repeats (an Excel cell holds at most 32,767).
SHOWN_CHARS = 200


class PickledRows:
    """A batch's rows as the checking child pickled them (`_check_in_child`), unpickled where
    they are iterated: on SQLite inside executemany, in the driver's thread. Unpickled by the
    parent's loop as they arrived, they held the GIL while the writer thread wanted it back
    between two rows, and the writer waited (about 0.2 s a million rows, measured)."""

    __slots__ = ("blob", "count")

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.blob = pickle.dumps(rows, pickle.HIGHEST_PROTOCOL)
        self.count = len(rows)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = pickle.loads(self.blob)
        return iter(rows)


Rows = list[tuple[Any, ...]] | PickledRows


@dataclass
class Batch:
    """The checked rows of up to BATCH rows of the file, and what checking them found.

    `rows` are the upsert's parameters, ready for the driver, each key once: a repeat of a key
    earlier in the batch is rejected here, a repeat of an earlier batch by the writer. What
    every row has (the import's id, the time) is not in them: `_Checker.constants`.
    """

    rows: Rows = field(default_factory=list)
    # Each row's number in the file (a CSV's chunk checked by columns: a range, pickled small).
    numbers: Sequence[int] = field(default_factory=list)
    total: int = 0
    rejected_rows: int = 0
    errors: list[Rejected] = field(default_factory=list)
    errors_truncated: int = 0
    touched: list[str] = field(default_factory=list)  # keys of rejected rows


def _defaults(schema: Schema) -> dict[str, Any]:
    """Column defaults for fields a template does not carry (so every row has every key)."""
    present = {c.field for c in schema.columns} | {schema.key_field, "id"}
    out: dict[str, Any] = {}
    for name, info in schema.model.model_fields.items():
        if name not in present:
            out[name] = info.get_default(call_default_factory=True)
    return out


def _same(value: Any) -> Any:
    return value


def _processor(column: SAColumn[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy would do to a value of `column` before handing it to the driver."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    if process is not None and isinstance(column.type, Boolean):
        # Three possible values: look the answer up rather than call SQLAlchemy per row.
        return {value: process(value) for value in (None, False, True)}.__getitem__
    return process


_TEXT = {str}  # the cell types of a column that needs no `cell_text`


class _Checker:
    """Every check of a row that needs no database; it runs in the child for big files.

    A chunk of BATCH rows is checked a column at a time when the schema allows it (every
    check has a column version): C loops instead of a Python call per cell. A chunk with
    anything unusual (a bad cell, a blank or short row, a repeated key) is checked again row
    by row, so what is reported and how is the same either way.
    """

    def __init__(
        self,
        schema: Schema,
        header: Sequence[str],
        ctx: Context,
        dialect: Dialect,
        stamp: dict[str, Any],
        error_limit: int,
    ) -> None:
        columns, _missing = header_map(schema, header)
        self.ctx = ctx
        self.error_limit = error_limit
        self.reported = 0
        self.key_field = schema.key_field
        self.key_header = schema.key_header
        self.finish = schema.finish
        self.finish_columns = schema.finish_columns
        self.items = list(columns.items())
        self.cells_of = [(index, column.parse) for index, column in self.items]
        self.fields = [column.field for column in columns.values()]
        self.width = max(columns, default=-1) + 1
        defaults = _defaults(schema)
        # Optional columns the file leaves out take what an empty cell would give.
        for column in schema.columns:
            if column not in columns.values():
                defaults[column.field] = column.parse("", ctx)
        self.defaults = defaults
        table = schema.table
        processors = {c.name: _processor(c, dialect) for c in table.columns}
        stored = [c.name for c in table.columns if c.name != "id"]
        # The same for every row (the stamp, defaults, columns the file leaves out): bound
        # once by the writer, as the driver takes them.
        read = {column.field for column in columns.values()} | {self.key_field}
        self.constants = {
            name: (processors.get(name) or _same)(value)
            for name, value in (defaults | stamp).items()
            if name in stored and name not in read
        }
        # What each row brings, in the writer's order.
        self.names = [name for name in stored if name not in self.constants]
        self.key_index = self.names.index(self.key_field)
        self.base = defaults | stamp  # what `finish` may read besides the row's own cells
        self.processors = {
            name: process for name, process in processors.items() if process and name in self.names
        }
        self.order = operator.itemgetter(*self.names)
        self.repeating = set(self.names)  # columns whose values repeat, as far as seen
        checks = [(index, column.field, column.parse) for index, column in self.items]
        self.columnwise = [
            (index, name, parse.column, parse.strip)
            for index, name, parse in checks
            if isinstance(parse, Check) and parse.column is not None
        ]
        if len(self.columnwise) < len(checks) or (self.finish and not self.finish_columns):
            self.columnwise = []

    def batches(self, rows: Iterator[tuple[int, list[str]]]) -> Iterator[Batch]:
        """The file's rows, checked: a batch for every BATCH rows."""
        for chunk in chunks(rows, BATCH):
            batch = self._by_columns(chunk) if self.columnwise else None
            yield batch or self._by_rows(chunk)

    def _by_columns(self, chunk: Chunk) -> Batch | None:
        """The chunk checked column by column; None if some row needs a closer look."""
        numbers, rows, form = chunk
        if min(map(len, rows)) < self.width or not all(map(any, rows)):
            return None  # short or blank rows
        cells = list(zip(*rows, strict=False))  # cells beyond the header's are left out
        values: dict[str, Sequence[Any]] = {}
        for index, name, check, strip in self.columnwise:
            given: Sequence[Any] = cells[index]
            if form == "cells" and not _TEXT.issuperset(map(type, given)):
                given = list(map(cell_text, given))  # numbers, dates: as a row would have them
            elif strip and form != "clean":
                given = list(map(str.strip, given))
            checked = check(given, self.ctx)
            if checked is None:
                return None
            values[name] = checked
        if self.finish_columns and not self.finish_columns(values, self.ctx):
            return None
        keys = values[self.key_field]
        if not all(keys) or len(set(keys)) < len(keys):
            # A row without its key (a row of spaces is a blank row), or a repeated key: the
            # rows tell what it is.
            return None
        columns = []
        for name in self.names:
            column = values[name]
            if name in self.processors:
                column = list(map(self.processors[name], column))
            if name in self.repeating:
                # Equal values as one object: pickled, unpickled and encoded for SQLite once
                # (that costs the child less than it saves the writer).
                same: dict[Any, Any] = {}
                column = list(map(same.setdefault, column, column))
                if len(same) * 2 > len(column):
                    self.repeating.discard(name)  # names, addresses: not worth it
            columns.append(column)
        return Batch(list(zip(*columns, strict=True)), numbers, total=len(rows))

    def _by_rows(self, chunk: Chunk) -> Batch:
        ctx, cells_of, fields, base = self.ctx, self.cells_of, self.fields, self.base
        finish, key_field, order = self.finish, self.key_field, self.order
        per_row = list(self.processors.items())
        width, padding = self.width, [""] * self.width
        numbers: list[int] = []
        written: list[tuple[Any, ...]] = []
        batch, seen = Batch(written, numbers), set[str]()
        for number, cells in zip(chunk.numbers, clean_rows(chunk), strict=True):
            if not any(cells):
                continue
            batch.total += 1
            if len(cells) < width:
                cells = cells + padding[len(cells) :]
            try:
                parsed = [parse(cells[index], ctx) for index, parse in cells_of]
            except RowError:
                self._reject_cells(batch, number, cells)
                continue
            values = dict(base)
            values.update(zip(fields, parsed, strict=True))
            if finish is not None:
                try:
                    finish(values, ctx)
                except RowError as error:
                    self._reject(batch, number, self.key_header, "", error)
                    self._rejected(batch, values)
                    continue
            key = values[key_field]
            if key in seen:
                self._reject(batch, number, self.key_header, key, RowError("duplicate_key"))
                batch.rejected_rows += 1
                continue
            seen.add(key)
            for name, process in per_row:
                values[name] = process(values[name])
            written.append(order(values))
            numbers.append(number)
        return batch

    def _reject_cells(self, batch: Batch, number: int, cells: list[str]) -> None:
        """Check a bad row cell by cell, to report every bad cell of it."""
        values = dict(self.defaults)
        for index, column in self.items:
            try:
                values[column.field] = column.parse(cells[index], self.ctx)
            except RowError as error:
                self._reject(batch, number, column.header, cells[index], error)
        self._rejected(batch, values)

    def _reject(self, batch: Batch, number: int, column: str, value: str, error: RowError) -> None:
        if self.reported < self.error_limit:
            shown = value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"
            batch.errors.append(Rejected(number, column, shown, error.key, error.params))
            self.reported += 1
        else:
            batch.errors_truncated += 1

    def _rejected(self, batch: Batch, values: dict[str, Any]) -> None:
        batch.rejected_rows += 1
        key = values.get(self.key_field)
        if isinstance(key, str) and key:
            batch.touched.append(key)  # a rejected row still names an entry the office keeps


def _check_in_child(checker: _Checker, rows: Iterator[Any], out: Connection) -> None:
    """The child's whole life: send the checked batches, then None or what stopped it."""
    # Rows hold no reference cycles and the child ends with the file: the cyclic collector
    # would only walk the young rows (about a tenth of the checking time, measured).
    gc.disable()
    try:
        for batch in checker.batches(rows):
            if isinstance(batch.rows, list):
                batch.rows = PickledRows(batch.rows)
            out.send(batch)
        out.send(None)
    except Exception as error:  # the parent raises it (a FileProblem, a decoding error)
        out.send(error)


@asynccontextmanager
async def _checked(
    checker: _Checker, rows: Iterator[tuple[int, list[str]]], in_child: bool
) -> AsyncIterator[AsyncIterator[Batch]]:
    """The checked batches of `rows`, from a child process when `in_child`."""

    async def here() -> AsyncGenerator[Batch]:
        for batch in checker.batches(rows):
            yield batch

    if not in_child:
        async with aclosing(here()) as batches:
            yield batches
        return

    # fork: the child starts at once, with the opened file and the checks already built.
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_check_in_child, args=(checker, rows, send), daemon=True)
    child.start()
    send.close()
    pending: asyncio.Future[Any] | None = None

    async def received() -> AsyncGenerator[Batch]:
        nonlocal pending
        pending = asyncio.ensure_future(asyncio.to_thread(receive.recv))
        while (item := await pending) is not None:
            if isinstance(item, BaseException):
                raise item
            # The next batch travels while this one is written.
            pending = asyncio.ensure_future(asyncio.to_thread(receive.recv))
            yield item

    try:
        async with aclosing(received()) as batches:
            yield batches
    finally:
        child.kill()  # nothing once it has finished; after a failure it has no reader left
        if pending is not None:
            await asyncio.wait([pending])  # the pipe is closed now, so the read ends
            if not pending.cancelled():
                pending.exception()  # an EOFError after a kill: seen, not logged
        child.join()
        receive.close()


def _upsert_set(table: Table, statement: Any, key_field: str) -> dict[str, Any]:
    keep = {"id", "created_at", key_field}
    return {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keep}


def _sql_literal(value: Any) -> str:
    """A driver value as SQL, stored as SQLite stores it bound: NULL, a number or a text."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int | float):
        return repr(int(value) if isinstance(value, bool) else value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


class _SqliteWriter:
    """One executemany of one upsert per batch, bound straight from the checked rows; what
    every row has is written into the statement (binding it for each row cost a tenth).

    A key this import has already written is left as it is, and the upsert's condition
    names it through a SQL function (called for those rows only), so finding repeats costs
    no extra lookup.
    """

    FUNCTION = "dsr_import_repeat"

    def __init__(
        self,
        conn: AsyncConnection,
        table: Table,
        key_field: str,
        names: list[str],
        constants: dict[str, Any],
    ):
        self.conn = conn
        fixed: dict[str, Any] = {
            name: literal_column(_sql_literal(value)) for name, value in constants.items()
        }
        statement = sqlite.insert(table).values({n: bindparam(n) for n in names} | fixed)
        excluded = statement.excluded
        again = table.c.import_id == excluded.import_id
        repeat = getattr(func, self.FUNCTION)(excluded[key_field])
        upsert = statement.on_conflict_do_update(
            index_elements=[key_field],
            set_=_upsert_set(table, statement, key_field),
            where=case((again, repeat), else_=true()),
        )
        compiled = upsert.compile(dialect=conn.dialect)
        assert list(compiled.positiontup or ()) == names
        self.sql = compiled.string
        self.repeated: set[str] = set()
        self.driver: Any = None

    def _repeat(self, key: str) -> int:
        self.repeated.add(key)
        return 0

    async def open(self) -> None:
        self.driver = (await self.conn.get_raw_connection()).driver_connection
        await self.driver.create_function(self.FUNCTION, 1, self._repeat)

    async def write(self, rows: Rows) -> tuple[int, set[str]]:
        """Upsert `rows`: how many were written, and the keys left alone as repeats."""
        self.repeated = set()
        cursor = await self.driver.executemany(self.sql, rows)
        written = int(cursor.rowcount)
        await cursor.close()
        return written, self.repeated

    async def close(self) -> None:
        await self.driver.create_function(self.FUNCTION, 1, None)


STAGE = "dsr_import_stage"


class _PostgresWriter:
    """Each batch is copied into a temporary stage (COPY), then one `INSERT … SELECT … ON
    CONFLICT` upserts it, adding what every row has as parameters, and returns the keys it
    wrote; the others repeat this import's."""

    def __init__(
        self,
        conn: AsyncConnection,
        table: Table,
        key_field: str,
        names: list[str],
        constants: dict[str, Any],
    ):
        from sqlalchemy.dialects import postgresql  # its import costs the SQLite CLI 0.1 s

        self.conn = conn
        self.names = names
        self.key_index = names.index(key_field)
        self.stage = Table(
            STAGE,
            MetaData(),
            *(SAColumn(name, table.c[name].type) for name in names),
            prefixes=["TEMPORARY"],
        )
        statement = postgresql.insert(table)
        upsert = statement.on_conflict_do_update(
            index_elements=[key_field],
            set_=_upsert_set(table, statement, key_field),
            where=table.c.import_id.is_distinct_from(statement.excluded.import_id),
        )
        fixed: list[Any] = [bindparam(name, type_=table.c[name].type) for name in constants]
        moved = select(*(self.stage.c[name] for name in names), *fixed)
        applied = upsert.from_select([*names, *constants], moved).returning(table.c[key_field])
        compiled = applied.compile(dialect=conn.dialect)
        self.apply_sql = compiled.string
        self.arguments = [constants[name] for name in compiled.positiontup or ()]
        self.driver: Any = None

    async def open(self) -> None:
        await self.conn.execute(CreateTable(self.stage))
        self.driver = (await self.conn.get_raw_connection()).driver_connection

    async def write(self, given: Rows) -> tuple[int, set[str]]:
        rows = list(given)  # unpickled once, here
        await self.driver.execute(f"TRUNCATE {STAGE}")
        await self.driver.copy_records_to_table(STAGE, records=rows, columns=self.names)
        written = {r[0] for r in await self.driver.fetch(self.apply_sql, *self.arguments)}
        return len(written), {row[self.key_index] for row in rows} - written

    async def close(self) -> None:
        await self.conn.execute(DropTable(self.stage))


# SQLite's default page cache (2 MB) is much smaller than the key index of a big directory,
# and upserting a million rows through it took twice as long as through 64 MB.
SQLITE_CACHE_KIB = 64 * 1024


@asynccontextmanager
async def _sqlite_cache(conn: AsyncConnection) -> AsyncIterator[None]:
    """A bigger page cache on this connection for the import, the old size back after."""
    if conn.dialect.name != "sqlite":
        yield
        return
    old = int((await conn.exec_driver_sql("PRAGMA cache_size")).scalar_one())
    page = int((await conn.exec_driver_sql("PRAGMA page_size")).scalar_one())
    if (-old if old < 0 else old * page // 1024) >= SQLITE_CACHE_KIB:
        yield
        return
    await conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    try:
        yield
    finally:
        await conn.exec_driver_sql(f"PRAGMA cache_size = {old}")


async def run_import(
    conn: AsyncConnection,
    schema: Schema,
    header: Sequence[str],
    rows: Iterator[tuple[int, list[str]]],
    *,
    import_id: int,
    now: datetime,
    error_limit: int,
    deactivate_missing: bool,
    progress: Progress | None = None,
    in_child: bool = False,
) -> Outcome:
    """Validate and upsert every row; the caller owns the transaction.

    `in_child` checks the rows in a forked child process while this one writes (for big
    files: a fork costs milliseconds); `rows` then belongs to the child.
    """
    async with _sqlite_cache(conn):
        return await _run_import(
            conn,
            schema,
            header,
            rows,
            import_id=import_id,
            now=now,
            error_limit=error_limit,
            deactivate_missing=deactivate_missing,
            progress=progress,
            in_child=in_child,
        )


async def _count(conn: AsyncConnection, table: Table) -> int:
    return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _run_import(
    conn: AsyncConnection,
    schema: Schema,
    header: Sequence[str],
    rows: Iterator[tuple[int, list[str]]],
    *,
    import_id: int,
    now: datetime,
    error_limit: int,
    deactivate_missing: bool,
    progress: Progress | None,
    in_child: bool,
) -> Outcome:
    department_codes = set((await conn.execute(select(col(Department.code)))).scalars())
    stamp = {"import_id": import_id, "active": True, "updated_at": now, "created_at": now}
    ctx = Context(department_codes, now)
    checker = _Checker(schema, header, ctx, conn.dialect, stamp, error_limit)
    table, key_field = schema.table, schema.key_field
    kind = _SqliteWriter if conn.dialect.name == "sqlite" else _PostgresWriter
    writer = kind(conn, table, key_field, checker.names, checker.constants)
    key_index = checker.key_index
    outcome = Outcome()
    touched: list[str] = []
    written = 0
    # Created is what the table grew by: the upsert cannot tell an insert from an update.
    before = await _count(conn, table)

    def reject(error: Rejected) -> None:
        if len(outcome.errors) < error_limit:
            outcome.errors.append(error)
        else:
            outcome.errors_truncated += 1

    await writer.open()
    async with _checked(checker, rows, in_child) as batches:
        async for batch in batches:
            outcome.total += batch.total
            outcome.rejected_rows += batch.rejected_rows
            outcome.errors_truncated += batch.errors_truncated
            for error in batch.errors:
                reject(error)
            touched += batch.touched
            if batch.rows:
                count, repeated = await writer.write(batch.rows)
                written += count
                if repeated:  # keys an earlier batch wrote (no Python loop over rows otherwise)
                    for number, row in zip(batch.numbers, batch.rows, strict=True):
                        key = row[key_index]
                        if key in repeated:
                            reject(Rejected(number, schema.key_header, key, "duplicate_key"))
                            outcome.rejected_rows += 1
            if progress is not None and batch.total:
                await progress(outcome.total)
    await writer.close()
    outcome.errors.sort(key=operator.attrgetter("row"))  # repeats are found after bad cells
    outcome.created = await _count(conn, table) - before
    outcome.updated = written - outcome.created

    if deactivate_missing:
        # A rejected row still names an entry the office meant to keep.
        key_column = table.c[key_field]
        for start in range(0, len(touched), BATCH):
            chunk = touched[start : start + BATCH]
            await conn.execute(
                update(table).where(key_column.in_(chunk)).values(import_id=import_id)
            )
        result = await conn.execute(
            update(table)
            .where(
                and_(
                    table.c.active.is_(True),
                    or_(table.c.import_id.is_(None), table.c.import_id != import_id),
                )
            )
            .values(active=False, updated_at=now)
        )
        outcome.deactivated = result.rowcount
    return outcome
