"""Working-day calendar (bot.workdays): real 2025/2026 boundaries checked against chinesecalendar,
add/between conventions, estimated years, office overrides and the holiday-file parser."""

from __future__ import annotations

from datetime import date, timedelta

import chinese_calendar
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.workdays import (
    WARNING_DAYS,
    AddResult,
    Calendar,
    RowError,
    package_years,
    parse_holiday_date,
    parse_holiday_rows,
    parse_holiday_type,
)

FIRST, LAST = package_years()
CAL = Calendar()


def days(start: date, end: date) -> list[date]:
    return [start + timedelta(i) for i in range((end - start).days + 1)]


def reference_is_working(day: date) -> bool:
    """chinesecalendar where it has data, Monday–Friday elsewhere."""
    if FIRST <= day.year <= LAST:
        return bool(chinese_calendar.is_workday(day))
    return day.weekday() < 5


def reference_add(start: date, n: int) -> date:
    """Day-by-day stepping, the slow obvious way."""
    day = start
    if n == 0:
        while not reference_is_working(day):
            day += timedelta(1)
        return day
    step = timedelta(1 if n > 0 else -1)
    for _ in range(abs(n)):
        day += step
        while not reference_is_working(day):
            day += step
    return day


# --- what the package covers ------------------------------------------------------------------


def test_package_years_match_the_package_behaviour() -> None:
    assert FIRST <= 2024 and LAST >= 2026
    assert (FIRST, LAST) == (2004, 2026) or chinese_calendar.__version__ != "1.11.0"
    for year in (FIRST, LAST):
        chinese_calendar.is_workday(date(year, 1, 1))
        chinese_calendar.is_workday(date(year, 12, 31))
    for day in (date(FIRST - 1, 12, 31), date(LAST + 1, 1, 1)):
        with pytest.raises(NotImplementedError):
            chinese_calendar.is_workday(day)


def test_every_package_day_matches_chinese_calendar() -> None:
    mismatches = [
        day
        for day in days(date(FIRST, 1, 1), date(LAST, 12, 31))
        if CAL.is_working_day(day) != chinese_calendar.is_workday(day)
    ]
    assert mismatches == []
    assert not CAL.is_estimated(date(FIRST, 1, 1))
    assert not CAL.is_estimated(date(LAST, 12, 31))


# --- real boundaries ----------------------------------------------------------------------------


def assert_rest(start: date, end: date) -> None:
    for day in days(start, end):
        assert not chinese_calendar.is_workday(day), day  # the package agrees
        assert not CAL.is_working_day(day), day


def assert_makeup(day: date, weekday: int) -> None:
    assert day.weekday() == weekday  # 5 = Saturday, 6 = Sunday
    assert chinese_calendar.is_workday(day), day
    assert CAL.is_working_day(day), day


SAT, SUN = 5, 6


def test_2025_spring_festival() -> None:
    assert_rest(date(2025, 1, 28), date(2025, 2, 4))
    assert_makeup(date(2025, 1, 26), SUN)
    assert_makeup(date(2025, 2, 8), SAT)
    assert CAL.is_working_day(date(2025, 1, 27)) and CAL.is_working_day(date(2025, 2, 5))
    # Friday 24 Jan + 2: Sunday 26 (make-up) and Monday 27.
    assert CAL.working_days_add(date(2025, 1, 24), 2) == date(2025, 1, 27)
    # Monday 27 Jan + 1 jumps the whole festival.
    assert CAL.working_days_add(date(2025, 1, 27), 1) == date(2025, 2, 5)
    assert CAL.working_days_between(date(2025, 1, 27), date(2025, 2, 5)) == 1
    assert CAL.working_days_between(date(2025, 1, 27), date(2025, 2, 4)) == 0
    # Wednesday 5 Feb + 3: Thursday, Friday, make-up Saturday 8.
    assert CAL.working_days_add(date(2025, 2, 5), 3) == date(2025, 2, 8)
    # Delivered on a festival day: counting starts after it.
    assert CAL.working_days_add(date(2025, 1, 30), 1) == date(2025, 2, 5)
    assert CAL.working_days_add(date(2025, 1, 30), 0) == date(2025, 2, 5)


def test_2025_national_day() -> None:
    assert_rest(date(2025, 10, 1), date(2025, 10, 8))
    assert_makeup(date(2025, 9, 28), SUN)
    assert_makeup(date(2025, 10, 11), SAT)
    assert CAL.working_days_add(date(2025, 9, 26), 1) == date(2025, 9, 28)
    assert CAL.working_days_add(date(2025, 9, 30), 1) == date(2025, 10, 9)
    assert CAL.working_days_add(date(2025, 10, 10), 1) == date(2025, 10, 11)
    assert CAL.working_days_add(date(2025, 10, 11), 1) == date(2025, 10, 13)
    # Reminders before a deadline right after the holiday.
    assert CAL.working_days_add(date(2025, 10, 9), -1) == date(2025, 9, 30)
    assert CAL.working_days_add(date(2025, 10, 9), -2) == date(2025, 9, 29)
    assert CAL.working_days_add(date(2025, 10, 9), -3) == date(2025, 9, 28)
    # 28 Sep (Sun), 29, 30 Sep, 9, 10, 11 (Sat), 13 Oct.
    assert CAL.working_days_between(date(2025, 9, 26), date(2025, 10, 13)) == 7


def test_2026_spring_festival() -> None:
    # 国办发明电〔2025〕7号: 2月15日至23日放假, 2月14日（周六）、2月28日（周六）上班.
    assert_rest(date(2026, 2, 15), date(2026, 2, 23))
    assert_makeup(date(2026, 2, 14), SAT)
    assert_makeup(date(2026, 2, 28), SAT)
    assert CAL.working_days_add(date(2026, 2, 13), 1) == date(2026, 2, 14)
    assert CAL.working_days_add(date(2026, 2, 14), 1) == date(2026, 2, 24)
    assert CAL.working_days_add(date(2026, 2, 27), 1) == date(2026, 2, 28)
    assert CAL.working_days_between(date(2026, 2, 13), date(2026, 2, 24)) == 2


def test_2026_national_day_and_mid_autumn() -> None:
    # 中秋 9月25日至27日; 国庆 10月1日至7日, 9月20日（周日）、10月10日（周六）上班.
    assert_rest(date(2026, 9, 25), date(2026, 9, 27))
    assert_rest(date(2026, 10, 1), date(2026, 10, 7))
    assert_makeup(date(2026, 9, 20), SUN)
    assert_makeup(date(2026, 10, 10), SAT)
    assert CAL.working_days_add(date(2026, 9, 30), 1) == date(2026, 10, 8)
    assert CAL.working_days_add(date(2026, 10, 9), 1) == date(2026, 10, 10)
    assert CAL.working_days_add(date(2026, 9, 24), 1) == date(2026, 9, 28)
    assert CAL.working_days_add(date(2026, 9, 18), 1) == date(2026, 9, 20)


# --- conventions -------------------------------------------------------------------------------


def test_friday_plus_two_is_tuesday() -> None:
    friday = date(2025, 3, 7)
    assert friday.weekday() == 4
    assert CAL.working_days_add(friday, 2) == date(2025, 3, 11)
    assert CAL.working_days_add(friday, 1) == date(2025, 3, 10)
    assert CAL.working_days_between(friday, date(2025, 3, 11)) == 2
    assert CAL.working_days_between(date(2025, 3, 11), friday) == -2
    assert CAL.working_days_between(friday, friday) == 0


def test_zero_days() -> None:
    assert CAL.working_days_add(date(2025, 3, 7), 0) == date(2025, 3, 7)  # a working Friday
    assert CAL.working_days_add(date(2025, 3, 8), 0) == date(2025, 3, 10)  # Saturday → Monday
    assert CAL.working_days_add(date(2025, 10, 1), 0) == date(2025, 10, 9)


def test_days_before_a_deadline() -> None:
    assert CAL.working_days_add(date(2025, 3, 11), -2) == date(2025, 3, 7)  # Tuesday → Friday
    assert CAL.working_days_add(date(2025, 3, 15), -1) == date(2025, 3, 14)  # Saturday → Friday
    assert CAL.working_days_add(date(2025, 3, 16), -1) == date(2025, 3, 14)  # Sunday → Friday
    assert CAL.working_days_add(date(2025, 3, 17), -1) == date(2025, 3, 14)  # Monday → Friday


dates_2024_2026 = st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31))


@given(dates_2024_2026, st.integers(min_value=-80, max_value=80))
def test_add_and_between_agree(start: date, n: int) -> None:
    result = CAL.working_days_add(start, n)
    assert result == reference_add(start, n)
    assert CAL.is_working_day(result)
    between = CAL.working_days_between(start, result)
    if n > 0 or CAL.is_working_day(start):
        assert between == n
    elif n < 0:  # a rest day: exactly -n working days lie in [result, d), checked below
        assert between == n + 1
    else:  # a rest day: add(d, 0) is the next working day, one working day on
        assert between == 1
    if n < 0:
        span = days(result, start - timedelta(1))
        assert sum(CAL.is_working_day(day) for day in span) == -n


@given(dates_2024_2026, dates_2024_2026)
def test_between_counts_start_exclusive_end_inclusive(a: date, b: date) -> None:
    start, end = min(a, b), max(a, b)
    count = sum(reference_is_working(day) for day in days(start + timedelta(1), end))
    assert CAL.working_days_between(start, end) == count
    assert CAL.working_days_between(end, start) == -count


# --- beyond the data: weekends only, flagged -----------------------------------------------------


def test_year_beyond_the_package_counts_weekends_only_and_is_estimated() -> None:
    year = LAST + 1
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(year, 1, 1))
    for day in days(date(year, 1, 1), date(year, 12, 31)):
        assert CAL.is_working_day(day) == (day.weekday() < 5)
        assert CAL.is_estimated(day)
    monday = next(d for d in days(date(year, 3, 1), date(year, 3, 7)) if d.weekday() == 0)
    friday = monday + timedelta(4)
    assert CAL.working_days_add(friday, 2) == monday + timedelta(8)
    assert CAL.working_days_add(monday, 10) == monday + timedelta(14)
    assert CAL.working_days_between(monday, monday + timedelta(28)) == 20
    assert CAL.working_days_add_checked(friday, 2) == AddResult(monday + timedelta(8), True)
    # A span starting in real data but ending beyond it is flagged; one inside is not.
    last_day = date(LAST, 12, 31)
    assert CAL.working_days_add_checked(last_day, 5).estimated
    assert CAL.estimated_between(last_day, last_day + timedelta(1))
    assert not CAL.estimated_between(date(2025, 1, 1), last_day)
    assert CAL.working_days_add_checked(date(2025, 1, 24), 2) == AddResult(date(2025, 1, 27), False)
    assert CAL.is_estimated(date(FIRST - 1, 6, 1))
    assert CAL.working_days_add(date(FIRST - 1, 12, 31), 1) == reference_add(
        date(FIRST - 1, 12, 31), 1
    )


def test_known_until_and_warning() -> None:
    until = date(LAST, 12, 31)
    assert CAL.known_until() == until
    assert CAL.needs_warning(until - timedelta(WARNING_DAYS))
    assert not CAL.needs_warning(until - timedelta(WARNING_DAYS + 1))
    assert CAL.needs_warning(until + timedelta(10))  # already past
    assert CAL.needs_warning(until - timedelta(90), days=90)


# --- overrides loaded by the office ------------------------------------------------------------


def fake_2027() -> dict[date, bool]:
    """A made-up 2027 Spring Festival: 6–14 Feb off (Saturday to Sunday), make-up Saturday 20."""
    overrides = {day: False for day in days(date(2027, 2, 6), date(2027, 2, 14))}
    overrides[date(2027, 2, 20)] = True
    overrides[date(2027, 1, 1)] = False
    return overrides


def test_2027_overrides_take_effect() -> None:
    cal = Calendar(fake_2027())
    assert date(2027, 2, 5).weekday() == 4 and date(2027, 2, 20).weekday() == SAT
    assert not cal.is_working_day(date(2027, 2, 8))  # a Monday off
    assert not cal.is_working_day(date(2027, 1, 1))  # a Friday off
    assert cal.is_working_day(date(2027, 2, 20))
    assert cal.working_days_add(date(2027, 2, 5), 1) == date(2027, 2, 15)
    assert cal.working_days_add(date(2027, 2, 19), 1) == date(2027, 2, 20)
    assert cal.working_days_add(date(2027, 2, 15), -1) == date(2027, 2, 5)
    assert cal.working_days_between(date(2027, 2, 5), date(2027, 2, 22)) == 7
    assert cal.working_days_add(date(2026, 12, 31), 1) == date(2027, 1, 4)
    assert not cal.is_estimated(date(2027, 7, 1))
    assert cal.is_estimated(date(2028, 7, 1)) == (LAST < 2028)
    assert cal.known_until() == date(max(2027, LAST), 12, 31)
    assert not cal.working_days_add_checked(date(2026, 12, 31), 30).estimated
    # Without the overrides 2027 is (as long as the package lacks it) weekends only.
    if LAST < 2027:
        assert CAL.is_working_day(date(2027, 2, 8))
        assert CAL.working_days_add(date(2027, 2, 5), 1) == date(2027, 2, 8)


def test_overrides_win_over_the_package() -> None:
    cal = Calendar({date(2025, 10, 8): True, date(2025, 1, 26): False, date(2025, 3, 7): False})
    assert cal.is_working_day(date(2025, 10, 8))
    assert not cal.is_working_day(date(2025, 1, 26))
    assert not cal.is_working_day(date(2025, 3, 7))
    assert cal.working_days_add(date(2025, 9, 30), 1) == date(2025, 10, 8)
    assert cal.working_days_add(date(2025, 1, 24), 2) == date(2025, 2, 5)
    # Redundant overrides (a Sunday off, a Monday on) change nothing.
    redundant = Calendar({date(2025, 3, 9): False, date(2025, 3, 10): True})
    assert redundant.working_days_add(date(2025, 3, 7), 2) == date(2025, 3, 11)


def test_loaded_year_after_a_gap_does_not_extend_known_until() -> None:
    gap, loaded = LAST + 1, LAST + 2
    cal = Calendar({date(loaded, 1, 1): False})
    assert cal.known_until() == date(LAST, 12, 31)
    assert cal.is_estimated(date(gap, 6, 1))
    assert not cal.is_estimated(date(loaded, 6, 1))
    assert cal.estimated_between(date(LAST, 12, 1), date(loaded, 1, 2))
    explicit = Calendar({}, loaded_years=[gap])
    assert explicit.known_until() == date(gap, 12, 31)
    assert not explicit.is_estimated(date(gap, 6, 1))
    assert explicit.covered_years() >= {2025, gap}


# --- the office's file ---------------------------------------------------------------------------


def test_parse_holiday_rows_accepts_all_formats() -> None:
    assert (date(2027, 1, 1) - date(1899, 12, 30)).days == 46388
    rows = [
        ["", ""],
        ["日期", "类型", "备注"],
        ["2027-01-01", "休", "元旦"],
        ["2027/2/6", "放假"],
        ["2027年2月7日", "休息"],
        ["", "", ""],
        ["46431", "假"],  # Excel serial of 2027-02-13
        ["46432.0", "休假"],
        ["2027-02-08 00:00:00", " 休 "],
        ["２０２７－０２－０９", "休"],  # full-width, as some editors type it
        ["2027-01-30", "班"],
        ["2027-2-20", "上班"],
        ["2027.02.27", "调休上班"],
        ["2027/03/06", "工作日"],
        ["2027年3月13日", "补班"],
    ]
    overrides, errors = parse_holiday_rows(rows)
    assert errors == []
    assert overrides == {
        date(2027, 1, 1): False,
        date(2027, 2, 6): False,
        date(2027, 2, 7): False,
        date(2027, 2, 13): False,
        date(2027, 2, 14): False,
        date(2027, 2, 8): False,
        date(2027, 2, 9): False,
        date(2027, 1, 30): True,
        date(2027, 2, 20): True,
        date(2027, 2, 27): True,
        date(2027, 3, 6): True,
        date(2027, 3, 13): True,
    }
    cal = Calendar(overrides)
    assert cal.working_days_add(date(2027, 2, 5), 1) == date(2027, 2, 10)


def test_parse_holiday_rows_reports_keyed_errors() -> None:
    rows = [
        ["类型", "日期"],  # columns in the other order
        ["休", "2027-02-30"],
        ["休", "明天"],
        ["班", ""],
        ["", "2027-03-01"],
        ["调休", "2027-03-02"],
        ["休", "1850-01-01"],
        ["休", "12"],
        ["休", "2027-04-05"],
        ["班", "2027/4/5"],
        ["休", "2027-04-05"],  # same again: harmless
        ["休"],  # ragged row
    ]
    overrides, errors = parse_holiday_rows(rows)
    assert overrides == {date(2027, 4, 5): False}
    assert errors == [
        RowError(2, "date", "date_invalid"),
        RowError(3, "date", "date_invalid"),
        RowError(4, "date", "date_missing"),
        RowError(5, "type", "type_missing"),
        RowError(6, "type", "type_invalid"),
        RowError(7, "date", "date_out_of_range"),
        RowError(8, "date", "date_out_of_range"),
        RowError(10, "date", "date_conflict"),
        RowError(12, "date", "date_missing"),
    ]


def test_parse_holiday_rows_header_and_empty_file() -> None:
    assert parse_holiday_rows([]) == ({}, [RowError(0, None, "empty_file")])
    assert parse_holiday_rows([["", " "]]) == ({}, [RowError(0, None, "empty_file")])
    assert parse_holiday_rows([["\ufeff日期 ", "名称"], ["2027-01-01", "元旦"]]) == (
        {},
        [RowError(1, "type", "header_missing")],
    )
    assert parse_holiday_rows([["2027-01-01", "休"]]) == (
        {},
        [RowError(1, "date", "header_missing"), RowError(1, "type", "header_missing")],
    )
    assert parse_holiday_rows([["Date", "Type"], ["2027-01-01", "休"]]) == (
        {date(2027, 1, 1): False},
        [],
    )


def test_parse_single_cells() -> None:
    assert parse_holiday_type("班") is True
    assert parse_holiday_type("休") is False
    assert parse_holiday_type("调休") is None
    assert parse_holiday_date("2027-01-01T00:00:00") == (date(2027, 1, 1), None)
    assert parse_holiday_date("2027年1月1") == (date(2027, 1, 1), None)
    assert parse_holiday_date("2101-01-01") == (None, "date_out_of_range")
    assert parse_holiday_date("2027-13-01") == (None, "date_invalid")
    assert parse_holiday_date("01/02/2027") == (None, "date_invalid")
