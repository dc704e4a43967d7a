"""`dsr calendar load FILE` and `dsr notices export`: the office's command line."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook
from sqlmodel import col, select
from typer.testing import CliRunner

import bot.cli
from bot.cli import app
from bot.clock import FrozenClock
from bot.config import Settings
from bot.duties import load_calendar
from bot.sweeper import sweep
from storage.db import Database
from storage.models import Holiday
from tests.test_sweeper import at, beijing, build_world, open_confirm


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test database is built from the models; the CLI's migrate-first step is not ours.
    monkeypatch.setattr(bot.cli, "upgrade", lambda url: None)


def _invoke(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"DATABASE_URL": settings.database_url})
    return result.exit_code, result.output


def _workbook(path: Path, rows: list[list[object]]) -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


@pytest.mark.usefixtures("cli")
async def test_load_an_xlsx_with_real_dates(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    # As the office types it: a title-less sheet, real Excel dates, 班 on a make-up Sunday.
    file = _workbook(
        tmp_path / "2027年节假日.xlsx",
        [
            ["日期", "类型", "备注"],
            [datetime(2027, 1, 1), "休", "元旦"],
            [datetime(2027, 2, 6), "休", "春节"],
            [datetime(2027, 2, 7), "休", ""],
            [datetime(2027, 2, 8), "休", ""],
            [datetime(2027, 2, 14), "班", "调休"],
        ],
    )
    code, output = await asyncio.to_thread(_invoke, settings, "calendar", "load", str(file))
    assert code == 0, output
    assert "节假日安排已加载：2027年" in output and "<b>" not in output
    assert "休息日 4 天，调休上班日 1 天" in output
    assert "2027年12月31日" in output and "请核对：2027年" in output  # only 4 rest days
    async with db.read() as session:
        calendar = await load_calendar(session)
        working = [
            d.working for d in await session.exec(select(Holiday).order_by(col(Holiday.day)))
        ]
    assert working == [False, False, False, False, True]
    assert calendar.is_working_day(date(2027, 2, 14)) and not calendar.is_working_day(
        date(2027, 2, 8)
    )
    assert not calendar.is_estimated(date(2027, 6, 1))


@pytest.mark.usefixtures("cli")
async def test_a_bad_file_is_refused_with_its_rows(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    file = tmp_path / "bad.csv"
    file.write_text("日期,种类\n2027-01-01,休\n", encoding="utf-8")
    code, output = await asyncio.to_thread(_invoke, settings, "calendar", "load", str(file))
    assert code == 1 and "表头缺少“类型”列" in output
    code, output = await asyncio.to_thread(
        _invoke, settings, "calendar", "load", str(tmp_path / "missing.csv")
    )
    assert code == 2 and "找不到文件" in output
    async with db.read() as session:
        assert list(await session.exec(select(Holiday))) == []


@pytest.mark.usefixtures("cli")
async def test_notices_export(
    db: Database, clock: FrozenClock, settings: Settings, tmp_path: Path
) -> None:
    world = await build_world(db, clock.now())
    await open_confirm(db, world, clock, date(2026, 3, 4))
    at(clock, beijing(2026, 3, 5))
    await sweep(db, clock, settings)
    out = tmp_path / "三单.xlsx"
    code, output = await asyncio.to_thread(
        _invoke, settings, "notices", "export", "--out", str(out)
    )
    assert code == 0, output
    assert "已导出 1 份三单" in output
    rows = list(load_workbook(out).worksheets[0].iter_rows(values_only=True))
    assert rows[1][:3] == ("督〔2026〕1号", "怠政督办单", "未办结")
