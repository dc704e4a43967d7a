"""Parser for check-item lists (抽查事项清单) as provinces publish them.

Offices receive their lists as government spreadsheets, not in our import template. This module
turns such a spreadsheet into normalized check items; it touches no database (the importer calls
it and decides what to store).

Public API
----------
- ``detect_published_layout(rows) -> Layout | None``: finds the header (any row, one or more rows
  deep) and maps its columns to fields. ``None`` when the rows are not a published list, including
  when they are OUR template (its header has 事项编码).
- ``parse_published(path) -> ParseReport``: reads every sheet of an .xlsx/.xls that has a
  recognizable header, using the file's merged-cell ranges.
- ``parse_published_rows(rows, sheet_name, merged_ranges=None) -> ParseReport``: the same for rows
  already in memory (unit tests, other readers).
Both raise ``PublishedListError`` when no recognizable header is found.

Merged cells and carry-down
---------------------------
Published lists merge cells vertically (one 编制单位 over a whole block, one 抽查类别 over its
items, one 检查依据 over several items). A merged cell is read as blank in every row but the first.
- When merged ranges are known (``parse_published`` always has them from calamine), they are the
  truth: a blank cell inside a merge takes the merge's value, and a blank cell outside any merge is
  really blank (序号 8 of the joint list, row 31, has no 配合部门: blank and not merged).
- Without merge information (``parse_published_rows`` without ``merged_ranges``), a blank cell takes
  the value of the same column in the previous item, but only within the same department block:
  when the 编制单位 changes, everything carried is dropped, so one department never inherits
  another department's 抽查类别, 检查对象, 检查依据 ... On the Hainan lists this reproduces the
  merges exactly, except for that one 配合部门 cell.
- The department itself always carries down (an item must belong to some department).

Rows
----
- A row with no value of its own (merged-over rows included) is blank: skipped and counted.
- A row without 序号, 抽查类别/领域, 抽查事项, 检查对象, 事项类别, 检查方式 and 发起部门 of its own,
  but with more 检查依据 / 检查主体 / 配合部门 text, continues the previous item: its text is
  appended (newline-joined) and the row is counted, not made an item. A row with its own 检查对象 or
  事项类别 under a merged 抽查事项 IS a new item (same check, other object; see quirks).
- Repeated header rows are skipped and counted; footnotes (注：/说明/备注 …) are skipped and noted;
  a row holding nothing but a department name (a section heading) starts a new department block.

Codes
-----
The lists have no 事项编码. Each item gets ``P`` + the first 10 hex digits (upper case) of the
SHA-256 of (department name, domain, item name), each NFKC-folded with whitespace removed, so
re-importing a list gives the same codes, and edits to 检查依据 / 检查主体 / spacing / full- vs
half-width punctuation keep them. When a later item of the same file has the same three fields,
it is discriminated by its 检查对象 (hash of the four fields) if no earlier one had that object,
else numbered ``-2``, ``-3``, … in file order; the first keeps the plain code. Every such case is
listed in ``ParseReport.code_collisions``. Numbering depends on row order, so inserting a duplicate
above an existing one in a later edition shifts those numbers (and only those).

Quirks seen in the Hainan 2020 lists
------------------------------------
Random-check list (75-…（2020年版）.xlsx, one sheet):
- A title row above a two-row header: 抽查项目 is merged over 抽查类别 / 抽查事项 on the row below;
  the other header cells are merged vertically over both rows.
- 编制单位名称 appears once per department, merged over its whole block (the last merge runs one row
  past the end of the sheet); 序号 runs 1..122 across departments (does not restart).
- 抽查类别 cells padded with a dozen line breaks around the word ("\\n\\n…社会保险\\n\\n…"), and the
  same 抽查类别 split into two merges with the text repeated (社会保险, 人力资源服务, 劳务派遣 …).
- Rows that only add a 检查依据 line or a second 检查主体 (省种子总站, 省动物卫生监督所 …) under
  the merged item: continuation rows.
- Long runs of completely blank rows inside 省市场监管局's block: rows merged over by one tall
  item (e.g. 名称规范使用情况的检查 spans 8 rows); counted as blank.
- One 检查依据 merge spans two different items (经营（业务）范围… and 住所（经营场所）…), and others
  span several items (食品销售, 餐饮服务, 食盐): every covered item gets that text.
- Same 抽查事项 merged over two rows that differ in 检查对象 and 事项类别 (餐饮服务: 餐饮服务经营者
  一般 / 学校、托幼机构、养老机构等食堂 重点), and same names under one 抽查类别 with different
  objects (税务稽查 / 各类涉税事项 ×2, 食品生产监督检查 ×2): separate items, codes discriminated.
- 序号 67 repeats 66's 抽查事项 (机电产品国际招投标代理机构检查) under another 抽查类别 and has
  its 检查对象 and 检查依据 merged with 66.
- Bare carriage returns inside citations ("《食品安全法》\\r第一百一十条",
  "第十九条\\r、第五十七条") are stray and removed; "\\r\\n" is a real line break.
- Runs of spaces (and U+3000 / U+00A0) used instead of line breaks between two 检查主体 or two laws
  ("省农业农村厅种植业管理处       省土壤肥料总站"): become line breaks; leading spaces and line
  breaks inside long 抽查事项 enumerations (（一）…；\\n （二）…) are removed.
- 事项类别 with a trailing line break ("一般检查事项\\n"); 检查对象 with a stray line break
  ("拍卖\\n企业") or a trailing 。.
- 检查方式 variants: 现场抽查 / 实地检查 / 现场查看 for on-site, 网络巡查 for online, suffixes
  等 and 相结合 ("现场检查、书面检查等", "自查、调账检查、实地检查相结合"), free text such as
  "采取定期抽查和不定期抽查的方式相结合", and 非现场检查 (off-site: NOT mapped to 现场). 抽样检测
  / 抽样检验, 备案审查, 查阅资料 … stay unmapped (reported) rather than guessed.
- Mixed half/full-width brackets ("县级以上(含县级）公安机关") are kept as written.
Joint list (76-附件1…（第二版）.xls, data on Sheet1; Sheet2/Sheet3 empty):
- Two title rows (附件1, the list's title with a trailing line break) above a one-row header.
- 发起部门 and 配合部门 merges cross 序号 groups (公安部门 over 序号 11-13, 旅游文化部门 over 20-25,
  住房和城乡建设部门 over 28-30), so they are only right with the merge ranges.
- Several initiating departments in one cell ("公安部门、卫生健康部门"): all kept in
  ``lead_departments``, the first is ``lead_department``.
- 配合部门 "市场监管领域相关部门" is a placeholder ("the relevant departments"), not a department:
  kept in ``cooperating_departments`` but not in ``department_names``.
- Department name variants: 人社部门 = 人力资源社会保障部门, 交通部门 = 交通运输部门 (aliased);
  海口海关 next to 海关部门 is kept apart (a named office vs the generic kind).
- A merged (empty) footer row below the data that calamine does not return.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path

from python_calamine import CalamineWorkbook

__all__ = [
    "CATEGORY_GENERAL",
    "CATEGORY_KEY",
    "METHOD_DESK",
    "METHOD_INSTITUTION",
    "METHOD_ONLINE",
    "METHOD_ONSITE",
    "PLACEHOLDER_DEPARTMENTS",
    "HeaderField",
    "Layout",
    "ParseReport",
    "PublishedItem",
    "PublishedListError",
    "detect_published_layout",
    "normalize_block",
    "normalize_name",
    "parse_published",
    "parse_published_rows",
]

CATEGORY_GENERAL = "一般"
CATEGORY_KEY = "重点"
METHOD_ONSITE = "现场"
METHOD_DESK = "书面"
METHOD_ONLINE = "网络"
METHOD_INSTITUTION = "委托专业机构"

# Names that stand for "whichever departments are concerned"; the importer must not create a
# department for them.
PLACEHOLDER_DEPARTMENTS = frozenset({"市场监管领域相关部门"})

# Calamine's merged ranges: ((first_row, first_col), (last_row, last_col)), 0-based, inclusive.
MergedRange = tuple[tuple[int, int], tuple[int, int]]

# How far down a title may push the header.
_HEADER_SCAN_ROWS = 40
_MIN_HEADER_FIELDS = 3


class HeaderField(StrEnum):
    DEPARTMENT = "department"
    SEQ = "seq"
    DOMAIN = "domain"
    NAME = "name"
    OBJECT_TYPE = "object_type"
    CATEGORY = "category"
    METHODS = "methods"
    INSPECTING_BODY = "inspecting_body"
    BASIS = "basis"
    LEAD = "lead"
    COOPERATING = "cooperating"


_F = HeaderField

# Header words after removing all whitespace. Several spellings per field because provinces (and
# years) differ; 事项名称 only matters for lists that are not our template (checked first).
_HEADER_WORDS: dict[str, HeaderField] = {
    "编制单位名称": _F.DEPARTMENT,
    "编制单位": _F.DEPARTMENT,
    "部门名称": _F.DEPARTMENT,
    "序号": _F.SEQ,
    "抽查类别": _F.DOMAIN,
    "抽查领域": _F.DOMAIN,
    "检查类别": _F.DOMAIN,
    "检查领域": _F.DOMAIN,
    "抽查事项": _F.NAME,
    "检查事项": _F.NAME,
    "抽查事项名称": _F.NAME,
    "事项名称": _F.NAME,
    "检查对象": _F.OBJECT_TYPE,
    "抽查对象": _F.OBJECT_TYPE,
    "事项类别": _F.CATEGORY,
    "检查方式": _F.METHODS,
    "抽查方式": _F.METHODS,
    "检查主体": _F.INSPECTING_BODY,
    "抽查主体": _F.INSPECTING_BODY,
    "实施主体": _F.INSPECTING_BODY,
    "检查依据": _F.BASIS,
    "抽查依据": _F.BASIS,
    "依据": _F.BASIS,
    "发起部门": _F.LEAD,
    "牵头部门": _F.LEAD,
    "配合部门": _F.COOPERATING,
}
# Longest first, so "抽查事项名称（…）" is read as 抽查事项名称 and not as a shorter word.
_HEADER_WORDS_LONGEST_FIRST = sorted(_HEADER_WORDS.items(), key=lambda kv: -len(kv[0]))
# Header words that map to no field but still mark a row as header (parents of two-row headers).
_HEADER_PARENT_WORDS = frozenset({"抽查项目", "检查项目", "备注"})
# A header cell may carry an annotation after the word ("检查依据（法律法规）"), but not much more:
# a title such as "…抽查事项清单" must not count as a header cell.
_HEADER_SUFFIX_SLACK = 6
_OUR_TEMPLATE_MARKER = "事项编码"

# Fields whose own value in a row makes it a new item; the others can only continue one.
_IDENTITY_FIELDS = frozenset(
    {_F.SEQ, _F.DOMAIN, _F.NAME, _F.OBJECT_TYPE, _F.CATEGORY, _F.METHODS, _F.LEAD}
)
_CONTINUATION_FIELDS = frozenset({_F.BASIS, _F.INSPECTING_BODY, _F.COOPERATING})

_CATEGORIES = {
    "一般检查事项": CATEGORY_GENERAL,
    "一般事项": CATEGORY_GENERAL,
    "一般": CATEGORY_GENERAL,
    "重点检查事项": CATEGORY_KEY,
    "重点事项": CATEGORY_KEY,
    "重点": CATEGORY_KEY,
}
_METHODS = {
    "现场检查": METHOD_ONSITE,
    "现场抽查": METHOD_ONSITE,
    "实地检查": METHOD_ONSITE,
    "现场核查": METHOD_ONSITE,
    "实地核查": METHOD_ONSITE,
    "现场查看": METHOD_ONSITE,
    "书面检查": METHOD_DESK,
    "书面审查": METHOD_DESK,
    "网络检查": METHOD_ONLINE,
    "网络监测": METHOD_ONLINE,
    "网络巡查": METHOD_ONLINE,
    "线上检查": METHOD_ONLINE,
    "专业机构核查": METHOD_INSTITUTION,
    "委托专业机构": METHOD_INSTITUTION,
    "委托专业机构核查": METHOD_INSTITUTION,
}
# "现场检查、书面检查等", "…实地检查相结合": the suffix is not part of the method.
_METHOD_SUFFIXES = ("相结合", "等")
_DEPARTMENT_ALIASES = {"人社部门": "人力资源社会保障部门", "交通部门": "交通运输部门"}

_FOOTNOTE_RE = re.compile(r"^(注|备注|说明|附注)\s*\d*\s*[:：.．、]")
# Methods and department names are listed with any of these (line breaks included).
_LIST_SPLIT_RE = re.compile(r"[、，,；;/／\s]+")
_CJK = r"\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP_RE = re.compile(rf"(?<=[{_CJK}]) +(?=[{_CJK}])")
_SPACES_RE = re.compile(r"[ \t\u3000\u00a0\u2002-\u200b\ufeff]+")
_WIDE_GAP_RE = re.compile(r" {2,}")
_HEADING_NUMBER_RE = re.compile(
    r"^(?:[一二三四五六七八九十百]+|\d+)[、.．]\s*|^[（(][一二三四五六七八九十]+[)）]"
)
_HEADING_COUNT_RE = re.compile(r"[（(]\s*(?:共\s*)?\d+\s*项\s*[)）]$")
_TRAILING_PUNCT = "。；;，,、"


class PublishedListError(ValueError):
    """The rows or file hold no recognizable published check-item list."""


@dataclass(frozen=True)
class Layout:
    """Where a published list's header is and which column holds which field."""

    header_start: int  # 0-based index of the first header row (rows above are titles)
    data_start: int  # 0-based index of the first row below the header
    columns: Mapping[HeaderField, int]

    @property
    def joint(self) -> bool:
        """A joint list (部门联合抽查) names 发起部门 / 配合部门 instead of a 编制单位."""
        return _F.LEAD in self.columns or _F.COOPERATING in self.columns


@dataclass(frozen=True)
class PublishedItem:
    code: str
    department_name: str  # 编制单位; for joint items the (first) 发起部门
    domain: str  # 抽查类别 / 抽查领域
    name: str  # 抽查事项
    object_type: str
    category: str  # 一般 / 重点 / as written when unmapped / "" when the list has none
    methods: list[str]  # canonical (现场, 书面, 网络, 委托专业机构) or as written
    inspecting_body: str  # one body per line
    basis: str  # one line per source line
    joint: bool
    lead_department: str | None
    cooperating_departments: list[str]
    source_row: int  # 1-based spreadsheet row of the item's first row
    seq: str = ""  # 序号 as written (merged over the item's group)
    sheet: str = ""
    lead_departments: list[str] = field(default_factory=list)  # all 发起部门 when several


@dataclass
class ParseReport:
    items: list[PublishedItem] = field(default_factory=list)
    continuation_rows: int = 0
    blank_rows: int = 0
    unmapped_categories: dict[str, int] = field(default_factory=dict)
    unmapped_methods: dict[str, int] = field(default_factory=dict)
    department_names: list[str] = field(default_factory=list)
    sheets_used: list[str] = field(default_factory=list)
    repeated_header_rows: int = 0
    department_rows: int = 0  # rows holding only a department name (section headings)
    code_collisions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # skipped footnotes, orphan rows


# --- text ------------------------------------------------------------------------------------


def _cell_text(value: object) -> str:
    """Calamine gives str/float/int/bool/date/datetime/time/timedelta or None."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        # 序号 arrive as 1.0; write them as people typed them.
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _unify_breaks(text: str) -> str:
    # "\r\n" is a line break; a bare "\r" appears inside citations where no break belongs.
    return text.replace("\r\n", "\n").replace("\r", "")


def normalize_name(text: str) -> str:
    """One-line text (names, objects, departments): no line breaks, no stray spaces."""
    text = _unify_breaks(text)
    text = _SPACES_RE.sub(" ", text)
    # Line breaks inside a name are wrapping, never meaning: drop them and the indentation.
    text = re.sub(r" *\n+ *", "", text)
    text = _CJK_GAP_RE.sub("", text.strip())
    return text.strip().rstrip(_TRAILING_PUNCT).strip()


def normalize_block(text: str) -> str:
    """Multi-line text (检查依据, 检查主体): one meaningful line per line."""
    lines: list[str] = []
    for raw_line in _unify_breaks(text).split("\n"):
        line = _SPACES_RE.sub(lambda m: "  " if len(m.group()) > 1 else " ", raw_line)
        # A run of spaces was somebody's way to wrap a cell: it separates two laws or bodies.
        for part in _WIDE_GAP_RE.split(line):
            part = _CJK_GAP_RE.sub("", part.strip())
            if part:
                lines.append(part)
    return "\n".join(lines)


def _header_word(cell: object) -> str:
    # "检查\n依据", "序 号", "*抽查事项：" are all header words.
    return re.sub(r"\s+", "", _cell_text(cell)).lstrip("*※").rstrip(":：")


def _header_field(cell: object) -> HeaderField | None:
    word = _header_word(cell)
    if not word:
        return None
    if word in _HEADER_WORDS:
        return _HEADER_WORDS[word]
    for known, header_field in _HEADER_WORDS_LONGEST_FIRST:
        if word.startswith(known) and len(word) <= len(known) + _HEADER_SUFFIX_SLACK:
            return header_field
    return None


def _is_header_cell(cell: object) -> bool:
    return _header_field(cell) is not None or _header_word(cell) in _HEADER_PARENT_WORDS


def _is_header_row(row: Sequence[object]) -> bool:
    """Every non-blank cell is a header word (and there is at least one)."""
    cells = [c for c in row if _cell_text(c).strip()]
    return bool(cells) and all(_is_header_cell(c) for c in cells)


# --- layout ----------------------------------------------------------------------------------


def detect_published_layout(rows: Iterable[Sequence[object]]) -> Layout | None:
    """The header of a published list in `rows`, or None (not a published list / our template)."""
    head: list[Sequence[object]] = []
    for row in rows:
        head.append(row)
        if len(head) >= _HEADER_SCAN_ROWS:
            break
    if any(_header_word(c) == _OUR_TEMPLATE_MARKER for row in head for c in row):
        return None
    for start, row in enumerate(head):
        columns: dict[HeaderField, int] = {}
        _map_header_row(row, columns)
        if len(columns) < _MIN_HEADER_FIELDS:
            continue
        end = start + 1
        # Two-row (or deeper) headers: a row of header words below continues the header.
        while end < len(head) and _is_header_row(head[end]):
            _map_header_row(head[end], columns)
            end += 1
        if _F.NAME in columns:
            return Layout(header_start=start, data_start=end, columns=columns)
    return None


def _map_header_row(row: Sequence[object], columns: dict[HeaderField, int]) -> None:
    for col, cell in enumerate(row):
        header_field = _header_field(cell)
        # The first column wins if a field is named twice (a parent above its own child).
        if header_field is not None and header_field not in columns:
            columns[header_field] = col


# --- parsing ---------------------------------------------------------------------------------


@dataclass
class _Draft:
    department_name: str
    domain: str
    name: str
    object_type: str
    category: str
    methods: list[str]
    inspecting_body: str
    basis: str
    joint: bool
    lead_departments: list[str]
    cooperating_departments: list[str]
    source_row: int
    seq: str
    sheet: str


def _append_line(existing: str, addition: str) -> str:
    if not addition:
        return existing
    if not existing:
        return addition
    present = set(existing.split("\n"))
    new_lines = [line for line in addition.split("\n") if line not in present]
    return "\n".join([existing, *new_lines]) if new_lines else existing


def _split_departments(text: str) -> list[str]:
    names: list[str] = []
    for part in _LIST_SPLIT_RE.split(_unify_breaks(text)):
        name = normalize_name(part)
        name = _DEPARTMENT_ALIASES.get(name, name)
        if name and name not in names:
            names.append(name)
    return names


def _map_category(text: str, unmapped: Counter[str]) -> str:
    category = normalize_name(text)
    if not category:
        return ""
    mapped = _CATEGORIES.get(category)
    if mapped is None:
        unmapped[category] += 1
        return category
    return mapped


def _map_methods(text: str, unmapped: Counter[str]) -> list[str]:
    methods: list[str] = []
    for token in _LIST_SPLIT_RE.split(_unify_breaks(text)):
        token = token.strip()
        if not token:
            continue
        key = token
        for suffix in _METHOD_SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                key = key[: -len(suffix)]
        mapped = _METHODS.get(key)
        if mapped is None and key.startswith("委托"):
            mapped = METHOD_INSTITUTION
        if mapped is None:
            # Kept as written, minus a trailing 等 ("etc."), so 专项检查等 and 专项检查 are one.
            written = token[:-1] if token.endswith("等") and len(token) > 1 else token
            unmapped[written] += 1
            mapped = written
        if mapped not in methods:
            methods.append(mapped)
    return methods


def _merge_anchors(
    merged_ranges: Iterable[MergedRange], n_rows: int
) -> dict[tuple[int, int], tuple[int, int]]:
    """(row, col) of every merged-over cell -> (row, col) of the cell holding the value."""
    anchors: dict[tuple[int, int], tuple[int, int]] = {}
    for (r0, c0), (r1, c1) in merged_ranges:
        # Ranges may run past the last returned row (Hainan's last department merge does).
        for r in range(r0, min(r1, n_rows - 1) + 1):
            for c in range(c0, c1 + 1):
                if (r, c) != (r0, c0):
                    anchors[(r, c)] = (r0, c0)
    return anchors


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _heading_department(text: str) -> str:
    text = _HEADING_NUMBER_RE.sub("", normalize_name(text))
    return _HEADING_COUNT_RE.sub("", text).strip()


class _Collector:
    """Accumulates one report over the sheets of a workbook (codes are unique per file)."""

    def __init__(self) -> None:
        self.report = ParseReport()
        self.drafts: list[_Draft] = []
        self.unmapped_categories: Counter[str] = Counter()
        self.unmapped_methods: Counter[str] = Counter()
        self.departments: dict[str, None] = {}  # insertion-ordered set

    def add_sheet(
        self,
        sheet: str,
        rows: Sequence[Sequence[object]],
        layout: Layout,
        merged_ranges: Iterable[MergedRange] | None,
    ) -> None:
        report = self.report
        report.sheets_used.append(sheet)
        anchors = _merge_anchors(merged_ranges, len(rows)) if merged_ranges is not None else None
        columns = layout.columns
        dept_col = columns.get(_F.DEPARTMENT)
        first_mapped_col = min(columns.values())

        def cell(r: int, c: int) -> str:
            row = rows[r]
            return _cell_text(row[c]) if c < len(row) else ""

        current_dept = ""
        carried: dict[HeaderField, str] = {}
        last: _Draft | None = None
        for r in range(layout.data_start, len(rows)):
            row = rows[r]
            texts = [_cell_text(v) for v in row]
            filled = [(c, t) for c, t in enumerate(texts) if t.strip()]
            if not filled:
                report.blank_rows += 1
                continue
            if _FOOTNOTE_RE.match(filled[0][1].strip()):
                report.notes.append(f"{sheet}!{r + 1}: footnote skipped: {filled[0][1].strip()}")
                continue
            if _is_header_row(row) and len(filled) >= 2:
                report.repeated_header_rows += 1
                continue
            own = {f: cell(r, c) for f, c in columns.items() if cell(r, c).strip()}

            # A lone department name, or a lone text left of / in the 序号 column of a list without
            # a 编制单位 column, is a section heading ("一、省教育厅（12项）"): a new block.
            only_col, only_text = filled[0]
            only_field = next((f for f, c in columns.items() if c == only_col), None)
            if len(filled) == 1 and (
                only_field is _F.DEPARTMENT
                or (
                    dept_col is None
                    and only_field in (None, _F.SEQ)
                    and only_col <= first_mapped_col
                    and not _is_number(only_text.strip())
                )
            ):
                heading = _heading_department(only_text)
                if heading and heading != current_dept:
                    current_dept, carried, last = heading, {}, None
                report.department_rows += 1
                self.departments.setdefault(current_dept, None)
                continue
            if not own:
                report.notes.append(f"{sheet}!{r + 1}: no value under a known header, skipped")
                continue

            values = dict(own)
            if anchors is not None:
                for f, c in columns.items():
                    if f not in own and (r, c) in anchors:
                        ar, ac = anchors[(r, c)]
                        if cell(ar, ac).strip():
                            values[f] = cell(ar, ac)

            dept_text = normalize_name(values.get(_F.DEPARTMENT, ""))
            if dept_text and dept_text != current_dept:
                # A new department block: nothing carries over from the previous department.
                current_dept, carried = dept_text, {}
                last = None

            if not (own.keys() & _IDENTITY_FIELDS):
                if not (own.keys() & _CONTINUATION_FIELDS):
                    report.notes.append(f"{sheet}!{r + 1}: nothing to add to an item, skipped")
                    continue
                if last is None:
                    report.notes.append(f"{sheet}!{r + 1}: continuation without an item, skipped")
                    continue
                last.basis = _append_line(last.basis, normalize_block(own.get(_F.BASIS, "")))
                last.inspecting_body = _append_line(
                    last.inspecting_body, normalize_block(own.get(_F.INSPECTING_BODY, ""))
                )
                for name in _split_departments(own.get(_F.COOPERATING, "")):
                    if name not in last.cooperating_departments:
                        last.cooperating_departments.append(name)
                report.continuation_rows += 1
                continue

            if anchors is None:
                for f, v in carried.items():
                    values.setdefault(f, v)
                carried.update((f, v) for f, v in values.items() if f != _F.DEPARTMENT)

            name = normalize_name(values.get(_F.NAME, ""))
            if not name:
                report.notes.append(f"{sheet}!{r + 1}: row without 抽查事项, skipped")
                continue
            leads = _split_departments(values.get(_F.LEAD, ""))
            cooperating = _split_departments(values.get(_F.COOPERATING, ""))
            department = current_dept or (leads[0] if leads else "")
            if layout.joint:
                for d in (*leads, *cooperating):
                    if d not in PLACEHOLDER_DEPARTMENTS:
                        self.departments.setdefault(d, None)
            if current_dept:
                self.departments.setdefault(current_dept, None)
            last = _Draft(
                department_name=department,
                domain=normalize_name(values.get(_F.DOMAIN, "")),
                name=name,
                object_type=normalize_name(values.get(_F.OBJECT_TYPE, "")),
                category=_map_category(values.get(_F.CATEGORY, ""), self.unmapped_categories),
                methods=_map_methods(values.get(_F.METHODS, ""), self.unmapped_methods),
                inspecting_body=normalize_block(values.get(_F.INSPECTING_BODY, "")),
                basis=normalize_block(values.get(_F.BASIS, "")),
                joint=layout.joint,
                lead_departments=leads,
                cooperating_departments=cooperating,
                source_row=r + 1,
                seq=normalize_name(values.get(_F.SEQ, "")),
                sheet=sheet,
            )
            self.drafts.append(last)

    def finish(self) -> ParseReport:
        report = self.report
        used: set[str] = set()
        objects: dict[str, set[str]] = {}  # base code -> 检查对象 already coded under it
        for draft in self.drafts:
            base = _code(draft.department_name, draft.domain, draft.name)
            seen = objects.setdefault(base, set())
            code = base
            if base in used:
                if draft.object_type not in seen:
                    code = _code(draft.department_name, draft.domain, draft.name, draft.object_type)
                n = 2
                # Same object too (or, unlikely, a used object hash): number in file order.
                while code in used:
                    code, n = f"{base}-{n}", n + 1
                report.code_collisions.append(
                    f"{draft.sheet}!{draft.source_row}: {draft.department_name} / {draft.domain} / "
                    f"{draft.name} already has {base}; this one ({draft.object_type}) is {code}"
                )
            seen.add(draft.object_type)
            used.add(code)
            report.items.append(
                PublishedItem(
                    code=code,
                    department_name=draft.department_name,
                    domain=draft.domain,
                    name=draft.name,
                    object_type=draft.object_type,
                    category=draft.category,
                    methods=draft.methods,
                    inspecting_body=draft.inspecting_body,
                    basis=draft.basis,
                    joint=draft.joint,
                    lead_department=draft.lead_departments[0] if draft.lead_departments else None,
                    cooperating_departments=draft.cooperating_departments,
                    source_row=draft.source_row,
                    seq=draft.seq,
                    sheet=draft.sheet,
                    lead_departments=draft.lead_departments,
                )
            )
        report.unmapped_categories = dict(self.unmapped_categories)
        report.unmapped_methods = dict(self.unmapped_methods)
        report.department_names = list(self.departments)
        return report


def _code_key(text: str) -> str:
    # Cosmetic edits between editions (spaces, full/half width) must not change a code.
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _code(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(_code_key(p) for p in parts).encode("utf-8"))
    return "P" + digest.hexdigest()[:10].upper()


# --- entry points ----------------------------------------------------------------------------


def parse_published_rows(
    rows: Iterable[Sequence[object]],
    sheet_name: str = "Sheet1",
    merged_ranges: Iterable[MergedRange] | None = None,
) -> ParseReport:
    """Parse one sheet's rows (row 0 = spreadsheet row 1). Without `merged_ranges`, blank cells
    carry down within a department block (see the module docstring)."""
    materialized = [list(row) for row in rows]
    layout = detect_published_layout(materialized)
    if layout is None:
        raise PublishedListError(f"{sheet_name}: no published check-item list header found")
    collector = _Collector()
    collector.add_sheet(sheet_name, materialized, layout, merged_ranges)
    return collector.finish()


def parse_published(path: Path) -> ParseReport:
    """Parse every sheet of `path` (.xlsx or .xls) that has a published-list header."""
    workbook = CalamineWorkbook.from_path(str(path))
    collector = _Collector()
    for sheet_name in workbook.sheet_names:
        sheet = workbook.get_sheet_by_name(sheet_name)
        # skip_empty_area=False keeps row indexes equal to spreadsheet rows (merges are absolute).
        rows: Sequence[Sequence[object]] = sheet.to_python(skip_empty_area=False)
        layout = detect_published_layout(rows)
        if layout is None:
            continue
        merged: list[MergedRange] | None = sheet.merged_cell_ranges
        collector.add_sheet(sheet_name, rows, layout, merged)
    if not collector.report.sheets_used:
        raise PublishedListError(f"{path.name}: no sheet with a published check-item list header")
    return collector.finish()
