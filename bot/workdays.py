"""Working-day calendar of the Chinese official calendar (工作日历). Pure domain, no database.

Sources, in order of precedence:

1. ``overrides`` loaded by the office from the State Council notice (国务院办公厅关于××年部分节假日
   安排的通知): ``{date: True}`` = 班 (working day, e.g. a 调休 make-up Saturday),
   ``{date: False}`` = 休 (rest day). Overrides win over everything else.
2. The ``chinesecalendar`` package (import name ``chinese_calendar``), which ships the official
   holidays and make-up workdays for the years ``package_years()`` (inclusive; 2004..2026 in
   chinesecalendar 1.11.0 — ``chinese_calendar.is_workday`` raises ``NotImplementedError`` for any
   other year).
3. Otherwise Monday–Friday are working days and Saturday/Sunday are not. A day is *estimated*
   (``Calendar.is_estimated``) when its year is neither in the package's data nor a loaded year;
   the result is then a guess that the next State Council notice may change.

A *loaded year* is, by default, every year that has at least one override date (the notice for a
year is published in one go, so a year with any date loaded is taken as complete); pass
``loaded_years`` to say it explicitly.

Conventions (``d`` a date, ``n`` an int; "working day" as defined above):

* ``working_days_add(d, n)`` with ``n > 0`` is the n-th working day strictly *after* ``d``; ``d``
  itself never counts ("2 working days after delivery on Friday" → Tuesday).
* ``working_days_add(d, 0)`` is ``d`` if ``d`` is a working day, else the first working day after
  ``d``.
* ``working_days_add(d, n)`` with ``n < 0`` is the ``|n|``-th working day strictly *before* ``d``
  ("remind 2 working days before a Tuesday deadline" → the Friday before; before a Saturday
  deadline, 1 working day → Friday).
* The result is always a working day.
* ``working_days_between(start, end)`` is the number of working days in the half-open interval
  ``(start, end]`` (``start`` excluded, ``end`` included), and minus the number of working days in
  ``(end, start]`` when ``end < start``; so it is 0 when ``start == end``.
* Consistency: ``working_days_between(d, working_days_add(d, n)) == n`` for every ``n > 0`` and any
  ``d``, and for *every* ``n`` (including 0 and negatives) when ``d`` is a working day. When ``d``
  is a rest day, ``add(d, 0)`` is 1 working day after ``d`` and ``add(d, n < 0)`` is ``-n - 1``
  working days before it by the ``(start, end]`` count — equivalently, there are exactly ``-n``
  working days in ``[add(d, n), d)``.

Speed: construction builds a sorted array of the working days of every covered year (a few
thousand ints) plus a byte map; ``add``/``between``/``is_working_day`` are then O(log n) bisects or
O(1) arithmetic (Monday–Friday outside the covered years), never a call into ``chinese_calendar``.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from functools import cache
from typing import Final, NamedTuple

import chinese_calendar

__all__ = [
    "DATE_FORMATS",
    "MAX_FILE_YEAR",
    "MIN_FILE_YEAR",
    "REST_WORDS",
    "WARNING_DAYS",
    "WORK_WORDS",
    "AddResult",
    "Calendar",
    "RowError",
    "package_years",
    "parse_holiday_date",
    "parse_holiday_rows",
    "parse_holiday_type",
]

WARNING_DAYS: Final = 60
"""``Calendar.needs_warning`` fires when real data ends this many days (or fewer) after today."""


# ---------------------------------------------------------------------------------------------
# Weekday arithmetic on proleptic ordinals (date(1, 1, 1).toordinal() == 1 is a Monday).


def _weekdays_upto(ordinal: int) -> int:
    """Number of Monday–Friday days with ordinal in [1, ordinal] (negative-safe, monotone)."""
    weeks, rest = divmod(ordinal, 7)
    return weeks * 5 + min(rest, 5)


def _nth_weekday(rank: int) -> int:
    """Smallest ordinal ``o`` with ``_weekdays_upto(o) >= rank``: the rank-th Monday–Friday day."""
    weeks, rest = divmod(rank - 1, 5)
    return weeks * 7 + rest + 1


def _is_weekday(ordinal: int) -> bool:
    return (ordinal - 1) % 7 < 5


# ---------------------------------------------------------------------------------------------
# What the chinesecalendar package knows.


@cache
def package_years() -> tuple[int, int]:
    """First and last year of the installed ``chinesecalendar`` data (inclusive).

    ``chinese_calendar.is_workday`` accepts exactly the years between the smallest and the largest
    key of ``chinese_calendar.holidays`` and raises ``NotImplementedError`` outside them; every
    year in between has data (one State Council notice per year).
    """
    holidays: Mapping[date, str] = chinese_calendar.holidays
    return min(holidays).year, max(holidays).year


@cache
def _package_exceptions() -> dict[int, bool]:
    """``{ordinal: is_working}`` for package days that break the Monday–Friday rule.

    Mirrors ``chinese_calendar.is_workday``: a day works iff it is in ``workdays``, or it is
    Monday–Friday and not in ``holidays`` (tests compare with the package day by day).
    """
    holidays: Mapping[date, str] = chinese_calendar.holidays
    workdays: Mapping[date, str] = chinese_calendar.workdays
    exceptions: dict[int, bool] = {}
    for day in holidays:
        ordinal = day.toordinal()
        if _is_weekday(ordinal) and day not in workdays:
            exceptions[ordinal] = False
    for day in workdays:
        ordinal = day.toordinal()
        if not _is_weekday(ordinal):
            exceptions[ordinal] = True
    return exceptions


# ---------------------------------------------------------------------------------------------
# The calendar.


class AddResult(NamedTuple):
    day: date
    estimated: bool
    """True when a day between the start and ``day`` (both included) is estimated."""


class Calendar:
    """Working days: State Council overrides > chinesecalendar > Monday–Friday (estimated)."""

    __slots__ = (
        "_covered_years",
        "_hi",
        "_is_working",
        "_known_until",
        "_lo",
        "_rank_at_hi",
        "_rank_before_lo",
        "_weekdays_at_hi",
        "_working",
    )

    def __init__(
        self,
        overrides: Mapping[date, bool] | None = None,
        *,
        loaded_years: Iterable[int] | None = None,
    ) -> None:
        first, last = package_years()
        overrides = overrides or {}
        loaded = {d.year for d in overrides} if loaded_years is None else set(loaded_years)
        self._covered_years: frozenset[int] = frozenset(range(first, last + 1)) | loaded

        end_year = last
        while end_year + 1 in self._covered_years:
            end_year += 1
        self._known_until = date(end_year, 12, 31)

        exceptions = dict(_package_exceptions())
        for day, working in overrides.items():
            ordinal = day.toordinal()
            if working == _is_weekday(ordinal):
                exceptions.pop(ordinal, None)  # the override restores the Monday–Friday rule
            else:
                exceptions[ordinal] = bool(working)

        # The table spans whole years from the first to the last year with any data or override;
        # outside it the Monday–Friday rule holds and is computed arithmetically.
        years = [first, last, *(date.fromordinal(o).year for o in exceptions)]
        lo = date(min(years), 1, 1).toordinal()
        hi = date(max(years), 12, 31).toordinal()
        working_map = bytearray(hi - lo + 1)
        for ordinal in range(lo, hi + 1):
            working_map[ordinal - lo] = exceptions.get(ordinal, _is_weekday(ordinal))
        self._lo = lo
        self._hi = hi
        self._is_working = bytes(working_map)
        self._working: list[int] = [lo + i for i, w in enumerate(self._is_working) if w]
        self._rank_before_lo = _weekdays_upto(lo - 1)
        self._rank_at_hi = self._rank_before_lo + len(self._working)
        self._weekdays_at_hi = _weekdays_upto(hi)

    # -- ranks: _rank(o) = number of working days with ordinal <= o (up to a constant) ----------

    def _rank(self, ordinal: int) -> int:
        if self._lo <= ordinal <= self._hi:
            return self._rank_before_lo + bisect_right(self._working, ordinal)
        if ordinal < self._lo:
            return _weekdays_upto(ordinal)
        return self._rank_at_hi + _weekdays_upto(ordinal) - self._weekdays_at_hi

    def _unrank(self, rank: int) -> int:
        """The working day whose rank is ``rank`` (smallest ordinal with ``_rank >= rank``)."""
        index = rank - self._rank_before_lo - 1
        if 0 <= index < len(self._working):
            return self._working[index]
        if index < 0:
            return _nth_weekday(rank)
        return _nth_weekday(rank - self._rank_at_hi + self._weekdays_at_hi)

    def _working_ordinal(self, ordinal: int) -> bool:
        if self._lo <= ordinal <= self._hi:
            return self._is_working[ordinal - self._lo] == 1
        return _is_weekday(ordinal)

    # -- public API ------------------------------------------------------------------------------

    def is_working_day(self, day: date) -> bool:
        return self._working_ordinal(day.toordinal())

    def is_estimated(self, day: date) -> bool:
        """True when ``day``'s year has no real data (neither the package nor a loaded year)."""
        return day.year not in self._covered_years

    def estimated_between(self, start: date, end: date) -> bool:
        """True when any day from ``min(start, end)`` to ``max(start, end)`` (both included) is
        estimated, i.e. a count or a date computed over that span may change with new data."""
        lo, hi = (start.year, end.year) if start <= end else (end.year, start.year)
        covered = self._covered_years
        if lo == hi:
            return lo not in covered
        return not covered.issuperset(range(lo, hi + 1))

    def working_days_add(self, start: date, n: int) -> date:
        """The n-th working day after ``start`` (n > 0), before it (n < 0), or ``start`` itself /
        the next working day (n == 0); ``start`` never counts. See the module docstring."""
        ordinal = start.toordinal()
        if n > 0:
            return date.fromordinal(self._unrank(self._rank(ordinal) + n))
        if n < 0:
            return date.fromordinal(self._unrank(self._rank(ordinal - 1) + n + 1))
        if self._working_ordinal(ordinal):
            return start
        return date.fromordinal(self._unrank(self._rank(ordinal) + 1))

    def working_days_add_checked(self, start: date, n: int) -> AddResult:
        """``working_days_add`` plus whether the span it crossed relied on estimated days."""
        day = self.working_days_add(start, n)
        return AddResult(day, self.estimated_between(start, day))

    def working_days_between(self, start: date, end: date) -> int:
        """Working days in ``(start, end]``; negative (minus those in ``(end, start]``) when
        ``end < start``."""
        return self._rank(end.toordinal()) - self._rank(start.toordinal())

    def known_until(self) -> date:
        """Last day of real data: 31 December of the last year of the unbroken run of covered
        years that starts with the package's data (a loaded year after a gap does not count)."""
        return self._known_until

    def needs_warning(self, today: date, days: int = WARNING_DAYS) -> bool:
        """True when real data ends within ``days`` days of ``today`` (or has already ended)."""
        return (self._known_until - today).days <= days

    def covered_years(self) -> frozenset[int]:
        """Years with real data: the package's years and the loaded years."""
        return self._covered_years


# ---------------------------------------------------------------------------------------------
# Parsing the office's holiday file.

REST_WORDS: Final = frozenset({"休", "休息", "放假", "假", "休假"})
WORK_WORDS: Final = frozenset({"班", "上班", "调休上班", "补班", "工作日"})

DATE_FORMATS: Final = ("YYYY-MM-DD", "YYYY/M/D", "YYYY.M.D", "YYYY年M月D日", "Excel serial")

MIN_FILE_YEAR: Final = 1900
MAX_FILE_YEAR: Final = 2100

_HEADER_DATE: Final = frozenset({"日期", "date"})
_HEADER_TYPE: Final = frozenset({"类型", "type"})

_DATE_RE: Final = re.compile(
    r"(\d{4})\s*(?:[-/.]\s*(\d{1,2})\s*[-/.]\s*(\d{1,2})|年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日?)"
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
)
_SERIAL_RE: Final = re.compile(r"(\d{1,6})(?:\.\d+)?")
_EXCEL_EPOCH: Final = date(1899, 12, 30)  # serial 61 = 1900-03-01 (Excel's 1900 leap-year bug)


class RowError(NamedTuple):
    """One problem in the office file.

    ``row`` is 1-based as the spreadsheet shows it (the header is usually row 1; ``row`` is 0 for
    an empty file). ``column`` is ``"date"`` (the 日期 column), ``"type"`` (the 类型 column) or
    ``None`` (the whole row / file). ``reason`` is a key for the caller's Chinese templates:

    * ``empty_file`` — no non-blank row at all;
    * ``header_missing`` — the header row lacks the column named by ``column``;
    * ``date_missing`` / ``type_missing`` — the cell is blank in a non-blank row;
    * ``date_invalid`` — not a date in any accepted format, or no such day (2027-02-30);
    * ``date_out_of_range`` — a real date outside MIN_FILE_YEAR..MAX_FILE_YEAR;
    * ``type_invalid`` — not one of REST_WORDS / WORK_WORDS;
    * ``date_conflict`` — the date appeared before with the other type (the later row is
      reported; the first one stays in the result).
    """

    row: int
    column: str | None
    reason: str


def _clean(cell: object) -> str:
    text = "" if cell is None else str(cell)
    return unicodedata.normalize("NFKC", text).replace("\ufeff", "").strip()


def parse_holiday_type(text: str) -> bool | None:
    """True for 班 (working day), False for 休 (rest day), None when not recognised."""
    word = re.sub(r"\s+", "", _clean(text))
    if word in REST_WORDS:
        return False
    if word in WORK_WORDS:
        return True
    return None


def parse_holiday_date(text: str) -> tuple[date | None, str | None]:
    """``(date, None)``, or ``(None, reason)`` with reason ``date_invalid`` /
    ``date_out_of_range``. Accepts YYYY-MM-DD, YYYY/M/D, YYYY.M.D, YYYY年M月D日 (optionally with a
    time such as ``00:00:00`` after it, as str(datetime) prints it) and Excel serial numbers
    (``46388`` or ``46388.0``; the 1900 date system)."""
    value = _clean(text)
    match = _DATE_RE.fullmatch(value)
    if match:
        year, month, day = (
            int(match[1]),
            int(match[2] or match[4]),
            int(match[3] or match[5]),
        )
        try:
            parsed = date(year, month, day)
        except ValueError:
            return None, "date_invalid"
    elif _SERIAL_RE.fullmatch(value):
        serial = int(float(value))
        if serial < 61:  # before 1900-03-01, where Excel's calendar is off by its fake 1900-02-29
            return None, "date_out_of_range"
        try:
            parsed = _EXCEL_EPOCH + timedelta(days=serial)
        except OverflowError:
            return None, "date_out_of_range"
    else:
        return None, "date_invalid"
    if not MIN_FILE_YEAR <= parsed.year <= MAX_FILE_YEAR:
        return None, "date_out_of_range"
    return parsed, None


def _header_columns(header: Sequence[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = re.sub(r"\s+", "", _clean(cell)).lower()
        if name in _HEADER_DATE:
            columns.setdefault("date", index)
        elif name in _HEADER_TYPE:
            columns.setdefault("type", index)
    return columns


def parse_holiday_rows(
    rows: Iterable[Sequence[str]],
) -> tuple[dict[date, bool], list[RowError]]:
    """Parse the office's holiday table: a header row with 日期 and 类型 (any order; other columns
    such as 名称/备注 are ignored), then one row per date, 类型 being 休 (rest) or 班 (working day).

    Blank rows are skipped. Returns ``(overrides, errors)``: the overrides of all valid rows, ready
    for ``Calendar(overrides)``, and the errors (``RowError``) in row order. Listing weekend rest
    days or weekday working days (as the notice's "1月28日至2月4日放假" does) is fine.
    """
    overrides: dict[date, bool] = {}
    errors: list[RowError] = []
    columns: dict[str, int] | None = None
    for number, row in _numbered_nonblank(rows):
        if columns is None:
            columns = _header_columns(row)
            missing = [key for key in ("date", "type") if key not in columns]
            errors.extend(RowError(number, key, "header_missing") for key in missing)
            if missing:
                return {}, errors
            continue
        raw_date = _cell(row, columns["date"])
        raw_type = _cell(row, columns["type"])
        day: date | None = None
        working: bool | None = None
        if not raw_date:
            errors.append(RowError(number, "date", "date_missing"))
        else:
            day, reason = parse_holiday_date(raw_date)
            if reason is not None:
                errors.append(RowError(number, "date", reason))
        if not raw_type:
            errors.append(RowError(number, "type", "type_missing"))
        else:
            working = parse_holiday_type(raw_type)
            if working is None:
                errors.append(RowError(number, "type", "type_invalid"))
        if day is None or working is None:
            continue
        previous = overrides.setdefault(day, working)
        if previous != working:
            errors.append(RowError(number, "date", "date_conflict"))
    if columns is None:
        errors.append(RowError(0, None, "empty_file"))
    return overrides, errors


def _numbered_nonblank(rows: Iterable[Sequence[str]]) -> Iterator[tuple[int, Sequence[str]]]:
    for number, row in enumerate(rows, start=1):
        if any(_clean(cell) for cell in row):
            yield number, row


def _cell(row: Sequence[str], index: int) -> str:
    return _clean(row[index]) if index < len(row) else ""
