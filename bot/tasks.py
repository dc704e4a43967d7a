"""抽查任务: what a task is made of, how the office's words become one, and the task list.

The same parsers serve the chat dialog (`/task`), the task file (`dsr task create --from`,
YAML or the `.xlsx` template) and the checks against the directories, so a rule about a task
lives here once. Problems carry a key under `task.problem.` in templates/texts/draws.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.draw import (
    CLASSES,
    DEFAULT_CLASS_RATIOS,
    DEFAULT_FLAG_THRESHOLD,
    Mode,
    Policy,
    below_general_minimum,
)
from bot.duties import DEFAULT_WORKING_DAYS
from bot.render import text
from storage.audit import record
from storage.models import (
    CheckItem,
    Department,
    DepartmentKind,
    Draw,
    DrawStatus,
    Inspection,
    InspectionItem,
    InspectionStatus,
    Task,
    TaskStatus,
)
from storage.tabular import FileProblem, open_rows

METHODS = ("现场", "书面", "网络", "委托专业机构")
_METHOD_WORDS = {m: m for m in METHODS} | {
    "现场检查": "现场",
    "实地检查": "现场",
    "书面检查": "书面",
    "书面审查": "书面",
    "网络检查": "网络",
    "网络监测": "网络",
    "委托": "委托专业机构",
    "委托第三方": "委托专业机构",
    "onsite": "现场",
    "written": "书面",
    "online": "网络",
    "entrusted": "委托专业机构",
}
_MODE_WORDS: dict[str, Mode] = {m.value: m for m in Mode} | {m.label: m for m in Mode}
_MODE_WORDS |= {"global": Mode.BUREAU, "全局": Mode.BUREAU, "异地": Mode.CROSS_REGION}
_MODE_WORDS |= {"交叉": Mode.CROSS_REGION, "异地检查": Mode.CROSS_REGION}
_POLICY_WORDS: dict[str, Policy] = {p.value: p for p in Policy} | {
    "信用": Policy.CREDIT,
    "信用分类": Policy.CREDIT,
    "信用风险分类": Policy.CREDIT,
    "统一": Policy.FLAT,
    "统一比例": Policy.FLAT,
    "全部": Policy.ALL,
    "全部抽取": Policy.ALL,
    "全覆盖": Policy.ALL,
}
_YES = {"是", "y", "yes", "true", "1", "允许", "可以", "√"}
_NO = {"否", "n", "no", "false", "0", "不允许", "不", ""}
_SPLIT = re.compile(r"[;；,，、\s]+")
_DATE = re.compile(
    r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?|(\d{4})(\d{2})(\d{2})"
)
_CLASS_RATIO = re.compile(r"([ABCDabcd])\s*类?\s*[=:：]?\s*([0-9.]+\s*[%％]?)")
STATION_MODES = (Mode.STATIONS, Mode.STATION)
MAX_GROUP = 10
FILTER_KEYS = ("regions", "industries", "subject_types", "tags")
_FILTER_WORDS = {
    "区域": "regions",
    "地区": "regions",
    "所属区域": "regions",
    "regions": "regions",
    "region": "regions",
    "行业": "industries",
    "industries": "industries",
    "industry": "industries",
    "类型": "subject_types",
    "主体类型": "subject_types",
    "subject_types": "subject_types",
    "标签": "tags",
    "tags": "tags",
    "tag": "tags",
}
_ANY = {"不限", "无", "全部", "all", "none", "-"}


class TaskProblem(Exception):
    """One thing wrong with a task (or, as ``bot.draws.DrawProblem``, a draw); `key` names the
    message under `<scope>.problem.`."""

    scope = "task"

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params

    def message(self) -> str:
        return text(f"{self.scope}.problem.{self.key}", **self.params)


@dataclass
class TaskSpec:
    """A task as the office described it, already parsed (not yet checked against the DB)."""

    name: str
    year: int
    item_codes: list[str]
    department_codes: list[str]
    window_start: date
    window_end: date
    lead_department: str = ""
    filters: dict[str, list[str]] = field(default_factory=dict)
    ratio_policy: str = Policy.CREDIT.value
    ratios: dict[str, str] = field(default_factory=dict)
    flag_threshold: int = DEFAULT_FLAG_THRESHOLD
    reinspect: bool = False
    selection_mode: str = Mode.BUREAU.value
    stations: list[str] = field(default_factory=list)
    group_size: int = 2
    method: str = "现场"
    mergeable: bool = True
    deadlines: dict[str, int] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        """JSON-safe form (dialog state keeps it between messages)."""
        data = dict(self.__dict__)
        data["window_start"] = self.window_start.isoformat()
        data["window_end"] = self.window_end.isoformat()
        return data


# --- parsing what people type or put in a file ---------------------------------------------


def parse_name(value: str) -> str:
    name = " ".join(value.split())
    if not name:
        raise TaskProblem("name_empty")
    if len(name) > 200:
        raise TaskProblem("name_long")
    return name


def parse_year(value: str) -> int:
    raw = value.strip().removesuffix("年")
    if not (raw.isascii() and raw.isdigit()) or not 2000 <= int(raw) <= 2100:
        raise TaskProblem("year", value=value)
    return int(raw)


def parse_codes(value: str | Iterable[Any]) -> list[str]:
    """Codes separated by commas, 、, semicolons or spaces (or a list); order kept, no repeats."""
    parts = _SPLIT.split(value) if isinstance(value, str) else [str(v).strip() for v in value]
    return list(dict.fromkeys(p for p in parts if p))


def parse_ratio(value: str, *, allow_zero: bool = False) -> Decimal:
    """'5%', '0.05' or '5' (the import's convention: without % a number ≤ 1 is a fraction)."""
    raw = value.strip().replace("％", "%").replace(" ", "")
    try:
        number = Decimal(raw.removesuffix("%"))
    except InvalidOperation:
        raise TaskProblem("ratio", value=value) from None
    if not number.is_finite():
        raise TaskProblem("ratio", value=value)
    if raw.endswith("%") or number > 1:
        number /= 100
    low_ok = number >= 0 if allow_zero else number > 0
    if not low_ok or number > 1:
        raise TaskProblem("ratio", value=value)
    return number


def ratio_text(ratio: Decimal) -> str:
    """Stored form of a ratio: a plain decimal string, '0.05'."""
    return f"{ratio.normalize():f}"


def percent(ratio: str | Decimal) -> str:
    """'0.05' -> '5%' for people."""
    number = Decimal(ratio) * 100
    return f"{number.normalize():f}%"


def parse_credit_ratios(value: str) -> dict[str, str]:
    """'A=1% B=3% C=10% D=20%'; classes not named keep their default."""
    found = _CLASS_RATIO.findall(value)
    leftover = _CLASS_RATIO.sub("", value)
    if not found or _SPLIT.sub("", leftover):
        raise TaskProblem("credit_ratios", value=value)
    ratios = {c: ratio_text(DEFAULT_CLASS_RATIOS[c]) for c in CLASSES}
    for cls, raw in found:
        ratios[cls.upper()] = ratio_text(parse_ratio(raw, allow_zero=True))
    return ratios


def parse_date(value: str | date) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    found = _dates(value)
    if len(found) != 1:
        raise TaskProblem("date", value=value)
    return found[0]


def _dates(value: str) -> list[date]:
    out: list[date] = []
    for match in _DATE.finditer(value):
        y, m, d = (match.group(1), match.group(2), match.group(3))
        if y is None:
            y, m, d = match.group(4), match.group(5), match.group(6)
        try:
            out.append(date(int(y), int(m), int(d)))
        except ValueError:
            raise TaskProblem("date", value=match.group(0)) from None
    return out


def parse_window(value: str) -> tuple[date, date]:
    """'2026-04-01 至 2026-06-30' (any two dates)."""
    found = _dates(value)
    if len(found) != 2:
        raise TaskProblem("window", value=value)
    start, end = found
    if start > end:
        raise TaskProblem("window_order", start=start.isoformat(), end=end.isoformat())
    return start, end


def parse_filters(value: str) -> dict[str, list[str]]:
    """'区域=城关镇,新区；行业=餐饮业' ('不限' for none)."""
    if value.strip().lower() in _ANY:
        return {}
    filters: dict[str, list[str]] = {}
    for part in re.split(r"[;；\n]+", value):
        if not part.strip():
            continue
        pieces = re.split(r"[=:：]", part, maxsplit=1)
        if len(pieces) != 2:
            raise TaskProblem("filters", value=part.strip())
        key, rest = pieces
        name = _FILTER_WORDS.get(key.strip().lower())
        values = parse_codes(rest)
        if name is None or not values:
            raise TaskProblem("filters", value=part.strip())
        filters.setdefault(name, [])
        filters[name] = list(dict.fromkeys([*filters[name], *values]))
    return filters


def parse_policy(value: str) -> Policy:
    policy = _POLICY_WORDS.get(value.strip().lower())
    if policy is None:
        raise TaskProblem("policy", value=value)
    return policy


def parse_mode(value: str) -> Mode:
    mode = _MODE_WORDS.get(value.strip().lower()) or _MODE_WORDS.get(value.strip())
    if mode is None:
        raise TaskProblem("mode", value=value)
    return mode


def mode_of(task_mode: str) -> Mode:
    """A stored task's mode (older rows say 'global')."""
    return parse_mode(task_mode)


def parse_group_size(value: str | int) -> int:
    raw = str(value).strip().removesuffix("人")
    if not (raw.isascii() and raw.isdigit()) or not 2 <= int(raw) <= MAX_GROUP:
        raise TaskProblem("group_size", value=value, max=MAX_GROUP)
    return int(raw)


def parse_method(value: str) -> str:
    method = _METHOD_WORDS.get(value.strip().lower()) or _METHOD_WORDS.get(value.strip())
    if method is None:
        raise TaskProblem("method", value=value)
    return method


def parse_bool(value: str | bool | int) -> bool:
    if isinstance(value, bool):
        return value
    raw = str(value).strip().lower()
    if raw in _YES:
        return True
    if raw in _NO:
        return False
    raise TaskProblem("yes_no", value=value)


def parse_threshold(value: str | int) -> int:
    """Complaints that make a target flagged: '3' or '3次'."""
    raw = str(value).strip().removesuffix("次").strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise TaskProblem("threshold", value=value)
    return int(raw)


MAX_WORKING_DAYS = 250  # about a year: a bigger number is a typo, not a deadline
_DAY_WORDS = re.compile(r"\s*(个)?\s*(工作日|工作天|天|日)$")


def parse_working_days(value: str | int) -> int:
    """A deadline override in working days: '3', '3天' or '3个工作日'."""
    raw = _DAY_WORDS.sub("", str(value).strip())
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_WORKING_DAYS:
        raise TaskProblem("working_days", value=value, max=MAX_WORKING_DAYS)
    return int(raw)


# Advanced settings of a task (the dialog's 高级设置; in a YAML task file `flag_threshold:` and
# `deadlines:`; in the .xlsx template one column each, DEADLINE_FIELDS): the flags floor's
# complaints threshold, then the deadline overrides issue #5 reads from the task
# (bot.duties.DEFAULT_WORKING_DAYS; no other is read per task).
ADVANCED_SETTINGS = ("flag_threshold", *DEFAULT_WORKING_DAYS)


@dataclass(frozen=True)
class Setting:
    """One advanced setting of a draft: its value now and its default."""

    key: str
    value: int
    default: int

    @property
    def changed(self) -> bool:
        return self.value != self.default


def setting_default(key: str) -> int:
    return DEFAULT_FLAG_THRESHOLD if key == "flag_threshold" else DEFAULT_WORKING_DAYS[key]


def advanced_settings(draft: Mapping[str, Any]) -> list[Setting]:
    deadlines = draft.get("deadlines", {})
    values = {"flag_threshold": draft.get("flag_threshold", DEFAULT_FLAG_THRESHOLD), **deadlines}
    return [
        Setting(key, int(values.get(key, setting_default(key))), setting_default(key))
        for key in ADVANCED_SETTINGS
    ]


def parse_setting(key: str, value: str) -> int:
    if key == "flag_threshold":
        return parse_threshold(value)
    return parse_working_days(value)


def set_setting(draft: Mapping[str, Any], key: str, value: int | None) -> dict[str, Any]:
    """The draft's update that sets `key` (None: back to its default)."""
    if key == "flag_threshold":
        return {"flag_threshold": DEFAULT_FLAG_THRESHOLD if value is None else value}
    deadlines = {k: v for k, v in draft.get("deadlines", {}).items() if k != key}
    if value is not None:
        deadlines[key] = value
    return {"deadlines": deadlines}


# --- task files: YAML or the .xlsx template --------------------------------------------------

# One optional column per deadline override, in bot.duties.DEFAULT_WORKING_DAYS's order (the
# same list as the dialog's 高级设置); a YAML file may also nest them under `deadlines:`.
DEADLINE_FIELDS = {f"deadline_{key}": key for key in DEFAULT_WORKING_DAYS}

# Field order of the .xlsx template; headers and notes are in texts (task.column / task.rule).
FILE_FIELDS = (
    "name",
    "year",
    "items",
    "departments",
    "lead_department",
    "regions",
    "industries",
    "subject_types",
    "tags",
    "ratio_policy",
    "ratio_a",
    "ratio_b",
    "ratio_c",
    "ratio_d",
    "flat_ratio",
    "flag_threshold",
    "reinspect",
    "window_start",
    "window_end",
    "selection_mode",
    "stations",
    "group_size",
    "method",
    "mergeable",
    *DEADLINE_FIELDS,
)
REQUIRED_FIELDS = ("name", "year", "items", "departments", "window_start", "window_end")
EXAMPLE = {
    "name": "2026年食品销售者双随机抽查",
    "year": "2026",
    "items": "SC001、SC002",
    "departments": "SJJ",
    "lead_department": "SJJ",
    "regions": "城关镇",
    "ratio_policy": "credit",
    "ratio_a": "1%",
    "ratio_b": "3%",
    "ratio_c": "10%",
    "ratio_d": "20%",
    "flag_threshold": "3",
    "reinspect": "否",
    "window_start": "2026-04-01",
    "window_end": "2026-06-30",
    "selection_mode": "全局内随机",
    "group_size": "2",
    "method": "现场",
    "mergeable": "是",
}
_ALIASES = {
    "item_codes": "items",
    "department_codes": "departments",
    "lead": "lead_department",
    "policy": "ratio_policy",
    "mode": "selection_mode",
    "start": "window_start",
    "end": "window_end",
    "flat": "flat_ratio",
    "ratio": "flat_ratio",
}


@dataclass
class RowProblem:
    """A problem in one task of a file: where (row or entry), which column, what."""

    where: str
    column: str
    message: str


@dataclass
class FileTasks:
    specs: list[tuple[str, TaskSpec]] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


def column_label(name: str) -> str:
    return text(f"task.column.{name}")


def column_rule(name: str) -> str:
    """The notes sheet's rule for a column; a deadline's names its default."""
    if name in DEADLINE_FIELDS:
        key = DEADLINE_FIELDS[name]
        return text(
            "task.rule.deadline",
            help=text(f"task.setting.help.{key}"),
            default=DEFAULT_WORKING_DAYS[key],
            max=MAX_WORKING_DAYS,
        )
    return text(f"task.rule.{name}")


def _bare(header: str) -> str:
    """A header without spaces, a leading * or a trailing （…） note: "确认接收期限（工作日）"."""
    return re.sub(r"\s+", "", str(header)).lstrip("*＊").replace("（", "(").split("(", 1)[0]


def _header_key(raw: str) -> str | None:
    cleaned = _bare(raw)
    lowered = cleaned.lower()
    if lowered in FILE_FIELDS:
        return lowered
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    for name in FILE_FIELDS:
        if cleaned == _bare(column_label(name)):
            return name
    return None


def _flatten(entry: Mapping[str, Any]) -> dict[str, Any]:
    """YAML's nested forms (filters:, ratios:, window:) as the flat template columns."""
    flat: dict[str, Any] = {}
    for raw_key, value in entry.items():
        key = str(raw_key)
        if key in ("filters", "筛选条件") and isinstance(value, Mapping):
            for fk, fv in value.items():
                name = _FILTER_WORDS.get(str(fk).strip().lower())
                flat[name or f"?{fk}"] = fv
        elif key in ("ratios", "比例") and isinstance(value, Mapping):
            for rk, rv in value.items():
                rk_s = str(rk).strip().upper()
                flat["flat_ratio" if rk_s == "FLAT" else f"ratio_{rk_s.lower()}"] = rv
        elif key in ("window", "检查期限") and isinstance(value, Sequence) and len(value) == 2:
            flat["window_start"], flat["window_end"] = value[0], value[1]
        elif key in ("deadlines", "期限"):
            flat["deadlines"] = value
        else:
            flat[_header_key(key) or f"?{key}"] = value
    return flat


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, (list, tuple)):
        return "、".join(_cell(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def spec_from_fields(
    values: Mapping[str, Any], where: str
) -> tuple[TaskSpec | None, list[RowProblem]]:
    """One task from its columns (template headers or YAML keys)."""
    problems: list[RowProblem] = []

    def fail(column: str, problem: TaskProblem) -> None:
        problems.append(RowProblem(where, column, problem.message()))

    for key in values:
        if key.startswith("?"):
            fail(key[1:], TaskProblem("unknown_column"))
    raw = {k: _cell(v) for k, v in values.items() if not k.startswith("?") and k != "deadlines"}
    for name in REQUIRED_FIELDS:
        if not raw.get(name):
            fail(column_label(name), TaskProblem("required"))

    def get(name: str, parse: Any, default: Any) -> Any:
        value = raw.get(name, "")
        if value == "":
            return default
        try:
            return parse(value)
        except TaskProblem as problem:
            fail(column_label(name), problem)
            return default

    name = get("name", parse_name, "")
    year = get("year", parse_year, 0)
    items = parse_codes(raw.get("items", ""))
    departments = parse_codes(raw.get("departments", ""))
    lead = raw.get("lead_department", "") or (departments[0] if departments else "")
    filters = {k: parse_codes(raw[k]) for k in FILTER_KEYS if raw.get(k)}
    policy = get("ratio_policy", parse_policy, Policy.CREDIT)
    ratios: dict[str, str] = {}
    if policy is Policy.CREDIT:
        for cls in CLASSES:
            ratio = get(
                f"ratio_{cls.lower()}",
                lambda v: parse_ratio(v, allow_zero=True),
                DEFAULT_CLASS_RATIOS[cls],
            )
            ratios[cls] = ratio_text(ratio)
    elif policy is Policy.FLAT:
        if not raw.get("flat_ratio"):
            fail(column_label("flat_ratio"), TaskProblem("flat_ratio_missing"))
        else:
            ratios["flat"] = ratio_text(get("flat_ratio", parse_ratio, Decimal("0.05")))
    threshold = get("flag_threshold", parse_threshold, DEFAULT_FLAG_THRESHOLD)
    reinspect = get("reinspect", parse_bool, False)
    start = get("window_start", parse_date, date.min)
    end = get("window_end", parse_date, date.min)
    mode = get("selection_mode", parse_mode, Mode.BUREAU)
    stations = parse_codes(raw.get("stations", ""))
    group_size = get("group_size", parse_group_size, 2)
    method = get("method", parse_method, "现场")
    mergeable = get("mergeable", parse_bool, True)
    deadlines: dict[str, int] = {}
    for column, key in DEADLINE_FIELDS.items():
        days = get(column, parse_working_days, None)
        if days is not None:
            deadlines[key] = days
    raw_deadlines = values.get("deadlines")
    if raw_deadlines:
        if not isinstance(raw_deadlines, Mapping):
            fail("deadlines", TaskProblem("deadlines", value=_cell(raw_deadlines)))
        else:
            for dk, dv in raw_deadlines.items():
                if str(dk) not in DEFAULT_WORKING_DAYS:
                    fail("deadlines", TaskProblem("deadlines", value=f"{dk}: {dv}"))
                    continue
                try:
                    deadlines[str(dk)] = parse_working_days(_cell(dv))
                except TaskProblem as problem:
                    fail(f"deadlines.{dk}", problem)
    if start != date.min and end != date.min and start > end:
        fail(
            column_label("window_end"),
            TaskProblem("window_order", start=start.isoformat(), end=end.isoformat()),
        )
    if problems:
        return None, problems
    spec = TaskSpec(
        name=name,
        year=year,
        item_codes=items,
        department_codes=departments,
        lead_department=lead,
        window_start=start,
        window_end=end,
        filters=filters,
        ratio_policy=policy.value,
        ratios=ratios,
        flag_threshold=threshold,
        reinspect=reinspect,
        selection_mode=mode.value,
        stations=stations,
        group_size=group_size,
        method=method,
        mergeable=mergeable,
        deadlines=deadlines,
    )
    return spec, []


def read_task_file(path: Path, max_bytes: int = 5 * 1024 * 1024) -> FileTasks:
    """Every task of a YAML file or a filled-in template, with every problem found."""
    out = FileTasks()
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileProblem("file_missing", name=path.name)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise TaskProblem("yaml", name=path.name, error=str(error).splitlines()[0]) from None
        if isinstance(loaded, Mapping) and "tasks" in loaded:
            loaded = loaded["tasks"]
        entries = [loaded] if isinstance(loaded, Mapping) else loaded
        if not isinstance(entries, list) or not entries:
            raise TaskProblem("yaml_shape", name=path.name)
        for n, entry in enumerate(entries, 1):
            where = text("task.file_entry", n=n)
            if not isinstance(entry, Mapping):
                out.problems.append(
                    RowProblem(where, "", TaskProblem("yaml_shape", name=path.name).message())
                )
                continue
            spec, problems = spec_from_fields(_flatten(entry), where)
            out.problems.extend(problems)
            if spec is not None:
                out.specs.append((where, spec))
        return out
    source = open_rows(path, max_bytes)
    header: list[str] | None = None
    columns: dict[int, str] = {}
    for number, cells in source.rows:
        if not any(cells):
            continue
        if header is None:
            header = cells
            for index, raw in enumerate(cells):
                key = _header_key(raw) if raw else None
                if key is not None:
                    columns[index] = key
            missing = [column_label(n) for n in REQUIRED_FIELDS if n not in columns.values()]
            if missing:
                raise TaskProblem("missing_columns", columns="、".join(missing))
            continue
        values = {key: cells[index] for index, key in columns.items() if index < len(cells)}
        where = text("task.file_row", n=number)
        spec, problems = spec_from_fields(values, where)
        out.problems.extend(problems)
        if spec is not None:
            out.specs.append((where, spec))
    if header is None:
        raise FileProblem("file_empty", name=path.name)
    if not out.specs and not out.problems:
        raise TaskProblem("no_tasks", name=path.name)
    return out


def write_task_template(out: Path) -> Path:
    """The task template: one row per task, an example row, and a notes sheet."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = text("task.template.sheet")
    sheet.append([column_label(n) for n in FILE_FIELDS])
    sheet.append([EXAMPLE.get(n, "") for n in FILE_FIELDS])
    bold = Font(bold=True)
    for index, name in enumerate(FILE_FIELDS, start=1):
        sheet.cell(row=1, column=index).font = bold
        sheet.column_dimensions[get_column_letter(index)].width = max(
            12, len(column_label(name)) * 2 + 4
        )
    sheet.freeze_panes = "A2"
    notes = workbook.create_sheet(text("template.notes_sheet"))
    notes.append(
        [text("template.col_column"), text("template.col_required"), text("template.col_rule")]
    )
    for name in FILE_FIELDS:
        notes.append(
            [
                column_label(name),
                text("template.required") if name in REQUIRED_FIELDS else text("template.optional"),
                column_rule(name),
            ]
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(out)
    return out


# --- checks against the directories ----------------------------------------------------------


@dataclass
class Checked:
    """A spec that passed the checks, with names for people and the warnings to show."""

    spec: TaskSpec
    department_names: dict[str, str]
    item_names: dict[str, str]
    station_names: dict[str, str]
    warnings: list[str]


class TaskInvalid(Exception):
    def __init__(self, problems: list[TaskProblem]) -> None:
        super().__init__([p.key for p in problems])
        self.problems = problems

    def messages(self) -> list[str]:
        return [p.message() for p in self.problems]


async def departments(
    session: AsyncSession, codes: Iterable[str] | None = None
) -> list[Department]:
    query = select(Department).where(col(Department.active).is_(True))
    if codes is not None:
        query = query.where(col(Department.code).in_(list(codes)))
    return list(await session.exec(query.order_by(col(Department.code))))


async def top_departments(session: AsyncSession) -> list[Department]:
    """Departments a task may name (not stations, not sections)."""
    return [d for d in await departments(session) if d.kind == DepartmentKind.DEPARTMENT]


async def stations_of(session: AsyncSession, department_codes: Sequence[str]) -> list[Department]:
    """The 市场监管所 under the task's departments."""
    rows = await session.exec(
        select(Department)
        .where(
            col(Department.active).is_(True),
            Department.kind == DepartmentKind.STATION,
            col(Department.parent_code).in_(list(department_codes)),
        )
        .order_by(col(Department.code))
    )
    return list(rows)


async def items_of(session: AsyncSession, department_codes: Sequence[str]) -> list[CheckItem]:
    rows = await session.exec(
        select(CheckItem)
        .where(
            col(CheckItem.active).is_(True),
            col(CheckItem.department_code).in_(list(department_codes)),
        )
        .order_by(col(CheckItem.code))
    )
    return list(rows)


async def check_spec(session: AsyncSession, spec: TaskSpec, *, today: date) -> Checked:
    """Everything a task must satisfy against the directories; raises TaskInvalid with all."""
    problems: list[TaskProblem] = []
    warnings: list[str] = []
    known = {
        d.code: d for d in await departments(session, [*spec.department_codes, *spec.stations])
    }
    if not spec.department_codes:
        problems.append(TaskProblem("no_departments"))
    for code in spec.department_codes:
        dept = known.get(code)
        if dept is None:
            problems.append(TaskProblem("unknown_department", code=code))
        elif dept.kind == DepartmentKind.STATION:
            problems.append(TaskProblem("station_as_department", code=code))
    lead = spec.lead_department or (spec.department_codes[0] if spec.department_codes else "")
    if lead and lead not in spec.department_codes:
        problems.append(TaskProblem("lead_not_participating", code=lead))
    spec.lead_department = lead
    if len(spec.department_codes) > spec.group_size:
        problems.append(
            TaskProblem(
                "group_too_small", size=spec.group_size, departments=len(spec.department_codes)
            )
        )
    if not 2 <= spec.group_size <= MAX_GROUP:
        problems.append(TaskProblem("group_size", value=spec.group_size, max=MAX_GROUP))

    items: dict[str, CheckItem] = {}
    if spec.item_codes:
        rows = await session.exec(select(CheckItem).where(col(CheckItem.code).in_(spec.item_codes)))
        items = {i.code: i for i in rows}
    else:
        problems.append(TaskProblem("no_items"))
    for code in spec.item_codes:
        item = items.get(code)
        if item is None:
            problems.append(TaskProblem("unknown_item", code=code))
        elif not item.active:
            problems.append(TaskProblem("inactive_item", code=code))
        elif item.department_code not in spec.department_codes and not (
            set(item.cooperating_codes or []) & set(spec.department_codes)
        ):
            problems.append(
                TaskProblem("item_department", code=code, department=item.department_code)
            )

    mode = parse_mode(spec.selection_mode)
    spec.selection_mode = mode.value
    if mode in STATION_MODES and not spec.stations:
        problems.append(TaskProblem("stations_missing", mode=mode.label))
    if mode is Mode.STATION and len(spec.stations) > 1:
        problems.append(TaskProblem("one_station"))
    if mode not in (*STATION_MODES, Mode.BUREAU_STATIONS) and spec.stations:
        spec.stations = []  # only station modes use them; keep the record honest
    for code in spec.stations:
        station = known.get(code)
        if station is None or station.kind != DepartmentKind.STATION:
            problems.append(TaskProblem("unknown_station", code=code))
        elif station.parent_code not in spec.department_codes:
            problems.append(TaskProblem("station_outside", code=code))

    policy = parse_policy(spec.ratio_policy)
    spec.ratio_policy = policy.value
    if policy is Policy.CREDIT:
        spec.ratios = {c: spec.ratios.get(c, ratio_text(DEFAULT_CLASS_RATIOS[c])) for c in CLASSES}
    elif policy is Policy.FLAT:
        if "flat" not in spec.ratios:
            problems.append(TaskProblem("flat_ratio_missing"))
        else:
            spec.ratios = {"flat": spec.ratios["flat"]}
            flat = Decimal(spec.ratios["flat"])
            general = [c for c, i in items.items() if i.category != "重点"]
            if general and below_general_minimum(flat, key_item=False):
                warnings.append(
                    text(
                        "task.warning.general_below_5",
                        ratio=percent(flat),
                        items="、".join(general),
                    )
                )
    else:
        spec.ratios = {}
        general = [c for c, i in items.items() if i.category != "重点"]
        if general:
            warnings.append(text("task.warning.all_general", items="、".join(general)))

    if spec.window_start > spec.window_end:
        problems.append(
            TaskProblem(
                "window_order",
                start=spec.window_start.isoformat(),
                end=spec.window_end.isoformat(),
            )
        )
    elif spec.window_end < today:
        problems.append(TaskProblem("window_past", end=spec.window_end.isoformat()))
    elif not spec.window_start.year <= spec.year <= spec.window_end.year:
        problems.append(TaskProblem("window_year", year=spec.year))
    for key in spec.deadlines:
        if key not in DEFAULT_WORKING_DAYS:
            problems.append(TaskProblem("deadlines", value=key))
    if problems:
        raise TaskInvalid(problems)
    return Checked(
        spec=spec,
        department_names={c: known[c].name for c in spec.department_codes},
        item_names={c: items[c].name for c in spec.item_codes},
        station_names={c: known[c].name for c in spec.stations},
        warnings=warnings,
    )


@dataclass(frozen=True)
class Created:
    task_id: int
    name: str
    warnings: list[str]


async def create_task(
    session: AsyncSession, spec: TaskSpec, *, actor: str, now: datetime, today: date
) -> Created:
    """Check and store one task (audited)."""
    checked = await check_spec(session, spec, today=today)
    s = checked.spec
    task = Task(
        name=s.name,
        year=s.year,
        status=TaskStatus.PLANNED,
        item_codes=s.item_codes,
        department_codes=s.department_codes,
        lead_department=s.lead_department,
        filters={k: v for k, v in s.filters.items() if v},
        ratio_policy=s.ratio_policy,
        ratios=s.ratios,
        flag_threshold=s.flag_threshold,
        reinspect=s.reinspect,
        window_start=s.window_start,
        window_end=s.window_end,
        selection_mode=s.selection_mode,
        stations=s.stations,
        group_size=s.group_size,
        method=s.method,
        mergeable=s.mergeable,
        deadlines=s.deadlines,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    await session.flush()
    assert task.id is not None
    await record(
        session,
        actor=actor,
        action="task.create",
        entity="task",
        entity_id=str(task.id),
        at=now,
        detail={"spec": s.to_data(), "warnings": checked.warnings},
    )
    return Created(task.id, task.name, checked.warnings)


@dataclass
class FileCreated:
    created: list[Created] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


async def create_tasks_from_file(
    session: AsyncSession, path: Path, *, actor: str, now: datetime, today: date
) -> FileCreated:
    """All the file's tasks, or none: any problem in any task leaves the database untouched.

    The caller must roll back when `problems` is not empty (the CLI raises inside the unit of
    work); tasks are only added after every check passed, so nothing is flushed otherwise.
    """
    read = read_task_file(path)
    out = FileCreated(problems=list(read.problems))
    checked: list[tuple[str, TaskSpec]] = []
    for where, spec in read.specs:
        try:
            await check_spec(session, spec, today=today)
        except TaskInvalid as invalid:
            out.problems.extend(RowProblem(where, "", m) for m in invalid.messages())
            continue
        checked.append((where, spec))
    if out.problems:
        return out
    for _where, spec in checked:
        out.created.append(await create_task(session, spec, actor=actor, now=now, today=today))
    return out


# --- the task list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSummary:
    """One line of /tasks: for the office group, and for issue #4's private list."""

    id: int
    name: str
    year: int
    status: str  # TaskStatus, or "committed" when a draw waits for execution
    department_codes: list[str]
    lead_department: str
    window_start: date
    window_end: date
    ratio_policy: str
    selection_mode: str
    item_count: int
    draw_id: int | None  # the latest draw that is not abandoned or voided
    inspections: int  # live inspections (not cancelled) holding this task's items
    shortfalls: int
    draws: list[tuple[int, str]] = field(default_factory=list)  # every draw: (id, DrawStatus)


async def list_tasks(session: AsyncSession, *, include_closed: bool = True) -> list[TaskSummary]:
    """Every task, newest first, with where its draw and inspections stand."""
    tasks = list(await session.exec(select(Task).order_by(col(Task.id).desc())))
    live: dict[int, tuple[int, str]] = {}  # the latest committed or executed draw
    history: dict[int, list[tuple[int, str]]] = {}
    # Columns only: a draw's record holds every candidate key.
    draw_rows = await session.exec(
        select(col(Draw.task_id), col(Draw.id), col(Draw.status)).order_by(col(Draw.id))
    )
    for task_id, draw_id, draw_status in draw_rows:
        assert draw_id is not None
        history.setdefault(task_id, []).append((draw_id, draw_status))
        if draw_status in (DrawStatus.COMMITTED, DrawStatus.EXECUTED):
            live[task_id] = (draw_id, draw_status)
    counts: dict[tuple[int, str], int] = {}
    rows = await session.exec(
        select(InspectionItem.task_id, Inspection.status, func.count(func.distinct(Inspection.id)))
        .join(Inspection, col(Inspection.id) == col(InspectionItem.inspection_id))
        .where(
            col(InspectionItem.voided_at).is_(None),
            Inspection.status != InspectionStatus.CANCELLED,
        )
        .group_by(col(InspectionItem.task_id), col(Inspection.status))
    )
    for task_id, status, count in rows:
        counts[(task_id, status)] = counts.get((task_id, status), 0) + int(count)
    out: list[TaskSummary] = []
    for task in tasks:
        assert task.id is not None
        if not include_closed and task.status == TaskStatus.CLOSED:
            continue
        draw = live.get(task.id)
        status = task.status
        if draw is not None and draw[1] == DrawStatus.COMMITTED:
            status = "committed"
        total = sum(n for (t, _s), n in counts.items() if t == task.id)
        out.append(
            TaskSummary(
                id=task.id,
                name=task.name,
                year=task.year,
                status=status,
                department_codes=list(task.department_codes),
                lead_department=task.lead_department,
                window_start=task.window_start,
                window_end=task.window_end,
                ratio_policy=task.ratio_policy,
                selection_mode=mode_of(task.selection_mode).value,
                item_count=len(task.item_codes),
                draw_id=draw[0] if draw is not None else None,
                inspections=total,
                shortfalls=counts.get((task.id, InspectionStatus.SHORTFALL), 0),
                draws=history.get(task.id, []),
            )
        )
    return out


# --- the /task dialog's questions ------------------------------------------------------------
# The dialog keeps a draft (plain JSON in the FSM) and asks one step at a time; these helpers
# give each step its choices and check what was typed, so the handler only moves between steps.

STEPS = (
    "name",
    "year",
    "departments",
    "lead",
    "items",
    "filters",
    "policy",
    "ratios",
    "window",
    "mode",
    "stations",
    "group",
    "method",
    "mergeable",
    "confirm",
)
# From the summary (confirm): 高级设置 lists the advanced settings; a setting asks its value.
ADVANCED_STEPS = ("advanced", "setting")
MULTI_STEPS = ("departments", "items", "stations")
MAX_BUTTONS = 24  # more choices than this are typed, not pressed
POLICY_CHOICES = ("credit", "credit_custom", "flat", "all")
GROUP_CHOICES = ("2", "3", "4", "5")


def next_step(step: str, draft: Mapping[str, Any]) -> str:
    """The step after `step` for this draft (lead, ratios and stations only when they apply)."""
    for candidate in STEPS[STEPS.index(step) + 1 :]:
        if _applies(candidate, draft):
            return candidate
    return "confirm"


def _applies(step: str, draft: Mapping[str, Any]) -> bool:
    if step == "lead":
        return len(draft.get("departments", [])) >= 2
    if step == "ratios":
        return draft.get("policy") in ("credit_custom", "flat")
    if step == "stations":
        return draft.get("mode") in (
            Mode.STATIONS.value,
            Mode.STATION.value,
            Mode.BUREAU_STATIONS.value,
        )
    return True


async def step_options(
    session: AsyncSession, step: str, draft: Mapping[str, Any], *, today: date
) -> list[tuple[str, str]]:
    """(value, label) choices of a step; empty when the step is typed only."""
    if step == "year":
        return [(str(y), str(y)) for y in (today.year, today.year + 1)]
    if step == "departments":
        return [(d.code, d.name) for d in await top_departments(session)]
    if step == "lead":
        names = {d.code: d.name for d in await departments(session, draft.get("departments", []))}
        return [(c, names.get(c, c)) for c in draft.get("departments", [])]
    if step == "items":
        return [
            (i.code, f"{i.code} {i.name}")
            for i in await items_of(session, draft.get("departments", []))
        ]
    if step == "stations":
        return [(s.code, s.name) for s in await stations_of(session, draft.get("departments", []))]
    if step == "policy":
        return [(p, text(f"task.policy_choice.{p}")) for p in POLICY_CHOICES]
    if step == "mode":
        return [(m.value, text(f"draw.mode.{m.value}")) for m in Mode]
    if step == "group":
        return [(g, text("task.group_choice", n=g)) for g in GROUP_CHOICES]
    if step == "method":
        return [(m, m) for m in METHODS]
    if step == "mergeable":
        return [
            ("yes", text("task.mergeable_choice.yes")),
            ("no", text("task.mergeable_choice.no")),
        ]
    if step == "advanced":
        return [(s.key, text("task.setting.button", s=s)) for s in advanced_settings(draft)]
    if step == "setting":
        default = setting_default(draft.get("editing", ""))
        return [("default", text("task.button.setting_default", value=default))]
    return []


async def accept_codes(
    session: AsyncSession, step: str, draft: Mapping[str, Any], codes: Sequence[str]
) -> list[str]:
    """Typed codes for a multi-choice step, checked against the directories."""
    if not codes:
        raise TaskProblem(f"{step}_none")
    wanted = list(dict.fromkeys(codes))
    if step == "departments":
        known = {d.code: d for d in await departments(session, wanted)}
        for code in wanted:
            if code not in known:
                raise TaskProblem("unknown_department", code=code)
            if known[code].kind == DepartmentKind.STATION:
                raise TaskProblem("station_as_department", code=code)
        return wanted
    if step == "items":
        rows = await session.exec(select(CheckItem).where(col(CheckItem.code).in_(wanted)))
        items = {i.code: i for i in rows}
        for code in wanted:
            item = items.get(code)
            if item is None:
                raise TaskProblem("unknown_item", code=code)
            if not item.active:
                raise TaskProblem("inactive_item", code=code)
        return wanted
    if step == "stations":
        allowed = {s.code for s in await stations_of(session, draft.get("departments", []))}
        for code in wanted:
            if code not in allowed:
                raise TaskProblem("unknown_station", code=code)
        if draft.get("mode") == Mode.STATION.value and len(wanted) > 1:
            raise TaskProblem("one_station")
        return wanted
    raise ValueError(step)


def spec_from_draft(draft: Mapping[str, Any]) -> TaskSpec:
    """The dialog's draft as a spec (every field was parsed when it was entered)."""
    policy = draft.get("policy", "credit")
    start, end = draft["window"]
    return TaskSpec(
        name=draft["name"],
        year=int(draft["year"]),
        item_codes=list(draft["items"]),
        department_codes=list(draft["departments"]),
        lead_department=draft.get("lead") or draft["departments"][0],
        window_start=date.fromisoformat(start),
        window_end=date.fromisoformat(end),
        filters=dict(draft.get("filters", {})),
        ratio_policy="credit" if policy == "credit_custom" else policy,
        ratios=dict(draft.get("ratios", {})),
        reinspect=bool(draft.get("reinspect", False)),
        selection_mode=draft["mode"],
        stations=list(draft.get("stations", [])),
        group_size=int(draft["group"]),
        method=draft["method"],
        mergeable=bool(draft.get("mergeable", True)),
        flag_threshold=int(draft.get("flag_threshold", DEFAULT_FLAG_THRESHOLD)),
        deadlines=dict(draft.get("deadlines", {})),
    )
