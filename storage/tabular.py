"""Rows out of `.csv`, `.xlsx` and `.xls` files, as lists of stripped strings (or, a chunk
at a time, a CSV's as read: `chunks`).

CSV streams (memory stays flat for millions of rows); spreadsheets are read with
python-calamine, which is an order of magnitude faster than openpyxl for reading.
"""

from __future__ import annotations

import codecs
import csv
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date, datetime, time
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, TextIO

from python_calamine import CalamineWorkbook

CSV_SUFFIXES = {".csv", ".txt"}
SHEET_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"
_READ_SIZE = 1 << 20


class FileProblem(Exception):
    """A file we cannot import at all; `key` names the message under `import_error.`."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in the child process that checks a big file, and re-raised in the parent.
        return (type(self), (self.key,), self.__dict__)


@dataclass
class RowSource:
    """An opened table: its rows as (1-based row number, cells)."""

    path: Path
    rows: Iterator[tuple[int, list[str]]]
    encoding: str | None = None
    size: int = 0  # bytes
    # UTF-8 as far as the first GUESS_BYTES go (`open_rows(guess=True)`): reading the rows
    # raises UnicodeDecodeError if a later byte is not, and the file is GB18030 after all.
    guessed: bool = False


def check_file(path: Path, max_bytes: int) -> str:
    """Refuse what we cannot read before reading it; returns the lower-case suffix."""
    if not path.is_file():
        raise FileProblem("file_missing", name=path.name)
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | SHEET_SUFFIXES:
        raise FileProblem("file_type", name=path.name)
    size = path.stat().st_size
    if size == 0:
        raise FileProblem("file_empty", name=path.name)
    if size > max_bytes:
        raise FileProblem("file_too_big", name=path.name, mb=max_bytes // (1024 * 1024))
    with path.open("rb") as handle:
        head = handle.read(8)
    if suffix in {".xlsx", ".xlsm"} and not head.startswith(_ZIP_MAGIC):
        raise FileProblem("file_corrupt", name=path.name)
    if suffix == ".xls" and not head.startswith(_OLE_MAGIC):
        raise FileProblem("file_corrupt", name=path.name)
    if suffix in CSV_SUFFIXES and (head.startswith(_ZIP_MAGIC) or head.startswith(_OLE_MAGIC)):
        raise FileProblem("file_type", name=path.name)
    return suffix


def detect_encoding(path: Path, limit: int | None = None) -> str:
    """UTF-8 (with or without BOM) when every byte decodes, otherwise GB18030 (a GBK superset).

    Excel in Chinese saves CSV as GBK. With `limit`, only the first `limit` bytes are read:
    'utf-8' then says no more than that they decode.
    """
    with path.open("rb") as handle:
        if handle.read(3) == b"\xef\xbb\xbf":
            return "utf-8-sig"
        handle.seek(0)
        utf8 = codecs.getincrementaldecoder("utf-8")()
        left = limit
        try:
            while chunk := handle.read(_READ_SIZE if left is None else min(_READ_SIZE, left)):
                utf8.decode(chunk)
                if left is not None:
                    left -= len(chunk)
                    if not left:
                        return "utf-8"  # a character cut at the limit is not an error
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            return "gb18030"
    return "utf-8"


def cell_text(value: Any) -> str:
    """Spreadsheet cells as the text a person typed: 13800000000.0 -> '13800000000'."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


# How a chunk's cells come: "clean" (text, stripped: what the rows give one at a time),
# "text" (a CSV's, unstripped) or "cells" (a sheet's as calamine gives them: text unstripped,
# numbers, dates, booleans; `cell_text` makes each what the rows give one at a time).
Form = Literal["clean", "text", "cells"]


class Chunk(NamedTuple):
    """Rows of a file taken together: their numbers, and their cells as `form` says."""

    numbers: Sequence[int]
    rows: list[list[Any]]
    form: Form = "clean"


class _Rows(ABC):
    """A file's rows as (1-based row number, cells as stripped text); `chunks` hands the rest
    of them over as they are read, for the checks to clean a column at a time (see
    `storage.directory._Checker`). Cleaning 13 cells a row one call at a time, in a
    generator that paired each row with its number, cost as much as parsing a CSV.
    A kind of file says how its chunks come (`FORM`), how to read and how to clean a row."""

    FORM: ClassVar[Form]

    def __init__(self) -> None:
        self.number = 0  # rows read so far

    @abstractmethod
    def _read(self, size: int) -> list[list[Any]]:
        """Up to `size` rows as read; none at the end."""

    @staticmethod
    @abstractmethod
    def _clean(row: list[Any]) -> list[str]:
        """One row as read, as the rows give it one at a time."""

    def __iter__(self) -> _Rows:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        rows = self._read(1)
        if not rows:
            raise StopIteration
        self.number += 1
        return self.number, self._clean(rows[0])

    def chunks(self, size: int) -> Iterator[Chunk]:
        while rows := self._read(size):
            first = self.number + 1
            self.number += len(rows)
            yield Chunk(range(first, first + len(rows)), rows, self.FORM)


class CsvRows(_Rows):
    """A CSV's rows. The file opens at the first row, so a header that does not decode raises
    where the rows are read."""

    FORM: ClassVar[Form] = "text"

    def __init__(self, path: Path, encoding: str, max_bytes: int) -> None:
        super().__init__()
        self.path, self.encoding, self.max_bytes = path, encoding, max_bytes
        self._handle: TextIO | None = None
        self._reader: Any = None

    def _open(self) -> Any:
        # A cell may be as long as the file: the column's own check then says it is too long
        # (csv's default limit of 131,072 characters raised an error for the whole file).
        csv.field_size_limit(max(csv.field_size_limit(), min(self.max_bytes, 2**31 - 1)))
        handle = self.path.open("r", encoding=self.encoding, newline="", buffering=_READ_SIZE)
        self._handle = handle
        first = handle.readline()
        dialect: type[csv.Dialect] = csv.excel
        if "\t" in first and "," not in first:
            dialect = csv.excel_tab
        handle.seek(0)
        self._reader = csv.reader(handle, dialect)
        return self._reader

    def _read(self, size: int) -> list[list[Any]]:
        if self._handle is not None and self._handle.closed:
            return []  # read to the end before
        reader = self._reader or self._open()
        try:
            rows = list(islice(reader, size))
        except csv.Error:  # a NUL byte, a quote left open at the end of the file
            raise FileProblem("file_csv", name=self.path.name, line=reader.line_num) from None
        if not rows:
            self._done()
        return rows

    @staticmethod
    def _clean(row: list[Any]) -> list[str]:
        return list(map(str.strip, row))

    def _done(self) -> None:
        if self._handle is not None:
            self._handle.close()

    __del__ = _done  # a file left half-read (a header alone) closes as a generator's would


class SheetRows(_Rows):
    """A sheet's rows, numbered as Excel shows them: when the used range starts below row 1,
    calamine's iter_rows() pads it with empty rows from row 1 (its columns start at the used
    range)."""

    FORM: ClassVar[Form] = "cells"

    def __init__(self, sheet: Any) -> None:
        super().__init__()
        self._rows: Iterator[list[Any]] = iter(sheet.iter_rows())

    def _read(self, size: int) -> list[list[Any]]:
        return list(islice(self._rows, size))

    @staticmethod
    def _clean(row: list[Any]) -> list[str]:
        # Most cells are text; strip those inline and leave the rest to cell_text().
        return [cell.strip() if type(cell) is str else cell_text(cell) for cell in row]


def clean_rows(chunk: Chunk) -> Iterable[list[str]]:
    """A chunk's rows as the rows give them one at a time."""
    if chunk.form == "text":
        return map(CsvRows._clean, chunk.rows)
    if chunk.form == "cells":
        return map(SheetRows._clean, chunk.rows)
    return chunk.rows


def chunks(rows: Iterator[tuple[int, list[str]]], size: int) -> Iterator[Chunk]:
    """The (rest of the) rows, `size` at a time."""
    if isinstance(rows, _Rows):
        yield from rows.chunks(size)
        return
    while chunk := list(islice(rows, size)):
        numbers, cells = zip(*chunk, strict=True)
        yield Chunk(numbers, list(cells))


def _read_sheet(path: Path) -> Any:
    return CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)


_AHEAD: dict[Path, Future[Any]] = {}


def read_ahead(path: Path, max_bytes: int) -> None:
    """Start reading a spreadsheet's first sheet in a thread, for `first_sheet`.

    python-calamine parses the whole sheet before the first row (1.5 s for 100,000 rows) and
    lets go of the GIL meanwhile, so `dsr import` starts it before importing the rest of
    itself (about a second). Whatever is wrong with the file, `open_rows` says it later."""
    try:
        if check_file(path, max_bytes) not in SHEET_SUFFIXES:
            return
    except FileProblem:
        return
    future: Future[Any] = Future()

    def read() -> None:
        try:
            future.set_result(_read_sheet(path))
        except BaseException as error:  # given to whoever takes the sheet
            future.set_exception(error)

    _AHEAD[path] = future
    threading.Thread(target=read, name="read-ahead", daemon=True).start()


def first_sheet(path: Path) -> Any:
    ahead = _AHEAD.pop(path, None)
    try:
        return ahead.result() if ahead is not None else _read_sheet(path)
    except Exception as exc:  # calamine raises its own error types for broken files
        raise FileProblem("file_corrupt", name=path.name) from exc


# A full UTF-8 pass over a 200 MB file takes about a second before the first row is read;
# GBK text fails as UTF-8 within its first Chinese characters, and our headers are Chinese.
GUESS_BYTES = 1 << 20


def open_rows(
    path: Path, max_bytes: int, *, encoding: str | None = None, guess: bool = False
) -> RowSource:
    """The rows of `path`; a CSV in `encoding`, or as detected: on its first GUESS_BYTES when
    `guess` (the caller then handles `RowSource.guessed`), otherwise on all of it."""
    suffix = check_file(path, max_bytes)
    size = path.stat().st_size
    if suffix in CSV_SUFFIXES:
        guessed = False
        if encoding is None:
            encoding = detect_encoding(path, GUESS_BYTES if guess else None)
            guessed = guess and encoding == "utf-8" and size > GUESS_BYTES
        return RowSource(path, CsvRows(path, encoding, max_bytes), encoding, size, guessed)
    return RowSource(path, SheetRows(first_sheet(path)), size=size)
