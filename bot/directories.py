"""The 一单两库 service: import files, write templates and error reports.

Knows nothing of Telegram: the CLI and the chat handler both call `import_file` and render
the same report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.clock import Clock
from bot.render import text
from storage import directory
from storage.audit import record
from storage.db import Database
from storage.directory import SCHEMAS, Outcome, Progress
from storage.models import ImportRun
from storage.tabular import FileProblem, open_rows

log = logging.getLogger(__name__)

# From this size on, rows are checked in a child process while this one writes (two cores);
# below it a fork is not worth its few milliseconds.
CHILD_FROM_BYTES = 1 << 20


@dataclass
class ImportReport:
    """What an import did, for the screen, the chat and the `.xlsx` next to the input."""

    kind: str
    filename: str
    strict: bool = False
    import_id: int | None = None
    applied: bool = False
    outcome: Outcome = field(default_factory=Outcome)
    problem: str | None = None
    problem_params: dict[str, Any] = field(default_factory=dict)
    error_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Published lists (issue 7): the .xlsx report written even without errors, and the
    # departments the import created as (name, provisional code) for the office to recode.
    report_file: Path | None = None
    departments_created: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when nothing was written (file problem, or --strict with bad rows)."""
        return self.problem is None and self.applied

    def problem_text(self) -> str:
        return text(f"import_error.{self.problem}", **self.problem_params) if self.problem else ""

    def errors(self) -> Iterator[tuple[int, str, str, str]]:
        for error in self.outcome.errors:
            yield (
                error.row,
                error.column,
                error.value,
                text(f"import_error.{error.key}", **error.params),
            )


def _is_published_list(path: Path) -> bool:
    from storage import published_import  # loaded only for a layout none of our templates has

    return published_import.is_published_list(path)


class _StrictAbort(Exception):
    """Raised inside the transaction so that `--strict` rolls every row back."""


def _header(rows: Iterator[tuple[int, list[str]]]) -> list[str]:
    for _number, cells in rows:
        if any(cells):
            return cells
    raise FileProblem("file_empty")


async def import_file(
    db: Database,
    path: Path,
    *,
    kind: str | None,
    actor: str,
    clock: Clock,
    max_bytes: int,
    error_limit: int = 10_000,
    strict: bool = False,
    deactivate_missing: bool = False,
    progress: Progress | None = None,
    error_dir: Path | None = None,
    display_name: str | None = None,
    encoding: str | None = None,
) -> ImportReport:
    """Import one directory file. Bad files and `--strict` failures write nothing.

    A CSV is read in `encoding`, or in the one its first megabyte shows (then, should a later
    byte not be UTF-8, the import starts again in GB18030)."""
    name = display_name or path.name
    report = ImportReport(kind=kind or "", filename=name, strict=strict)

    async def as_gb18030(asked: str | None = kind) -> ImportReport:
        """UTF-8 in its first megabyte only: all of it in GB18030, as a full check reads it."""
        return await import_file(
            db,
            path,
            kind=asked,
            actor=actor,
            clock=clock,
            max_bytes=max_bytes,
            error_limit=error_limit,
            strict=strict,
            deactivate_missing=deactivate_missing,
            progress=progress,
            error_dir=error_dir,
            display_name=display_name,
            encoding="gb18030",
        )

    try:
        source = open_rows(path, max_bytes, encoding=encoding, guess=encoding is None)
        header = _header(source.rows)
        detected = directory.detect_kind(header)
        # Issue 7: a province's list as published (header below titles, no 事项编码).
        if kind in (None, "items") and detected is None and _is_published_list(path):
            folder = error_dir or path.parent
            return await _import_published(
                db,
                path,
                report,
                actor=actor,
                clock=clock,
                strict=strict,
                deactivate_missing=deactivate_missing,
                folder=folder,
            )
        if kind is None:
            if detected is None:
                raise FileProblem("unknown_layout")
            kind = detected
        report.kind = kind
        schema = SCHEMAS[kind]
        _columns, missing = directory.header_map(schema, header)
        if missing:
            raise FileProblem(
                "missing_columns", columns="、".join(missing), kind=text(f"kind.{kind}")
            )
    except FileProblem as problem:
        report.problem, report.problem_params = problem.key, {"name": name, **problem.params}
        return report
    except UnicodeDecodeError:  # in the header's first megabyte
        if source.guessed:
            return await as_gb18030()
        report.problem, report.problem_params = "file_encoding", {"name": name}
        return report

    now = clock.now()
    async with db.session() as session:
        run = ImportRun(
            kind=kind,
            filename=name,
            actor=actor,
            strict=strict,
            deactivate_missing=deactivate_missing,
            started_at=now,
        )
        session.add(run)
        await session.flush()
        assert run.id is not None
        report.import_id = run.id

    try:
        async with db.session() as session:
            conn = await session.connection()
            outcome = await directory.run_import(
                conn,
                schema,
                header,
                source.rows,
                import_id=report.import_id,
                now=now,
                error_limit=error_limit,
                deactivate_missing=deactivate_missing,
                progress=progress,
                in_child=source.size >= CHILD_FROM_BYTES,
            )
            report.outcome = outcome
            if strict and outcome.rejected_rows:
                raise _StrictAbort
            run.status = "done"
            _fill_run(run, outcome, clock)
            session.add(run)
            await record(
                session,
                actor=actor,
                action="import",
                entity=kind,
                entity_id=str(run.id),
                at=now,
                detail={
                    "file": name,
                    "created": outcome.created,
                    "updated": outcome.updated,
                    "rejected": outcome.rejected_rows,
                    "deactivated": outcome.deactivated,
                },
            )
            report.applied = True
    except _StrictAbort:
        async with db.session() as session:
            run.status = "rejected"
            _fill_run(run, report.outcome, clock)
            run.created = run.updated = run.deactivated = 0
            session.add(run)
    except FileProblem as problem:
        # A CSV that turns out unreadable half-way: the transaction is already rolled back.
        await _failed(db, run, clock, problem.key)
        report.problem, report.problem_params = problem.key, {"name": name, **problem.params}
        report.applied = False
    except UnicodeDecodeError:
        # (rolled back) A guessed UTF-8 is read again as GB18030, as a new import run.
        await _failed(db, run, clock, "file_encoding")
        if source.guessed:
            return await as_gb18030()
        report.problem, report.problem_params = "file_encoding", {"name": name}
        report.applied = False

    if report.outcome.errors:
        folder = error_dir or path.parent
        report.error_file = write_error_report(report, folder / f"{Path(name).stem}.errors.xlsx")
    log.info("import %s from %s: %s", kind, name, report.outcome)
    return report


async def _failed(db: Database, run: ImportRun, clock: Clock, problem: str) -> None:
    """An import the file stopped half-way (nothing of it applied) is not left running."""
    async with db.session() as session:
        run.status = "failed"
        run.summary = {"problem": problem}
        run.finished_at = clock.now()
        session.add(run)


def _fill_run(run: ImportRun, outcome: Outcome, clock: Clock) -> None:
    run.total_rows = outcome.total
    run.applied = outcome.applied
    run.created = outcome.created
    run.updated = outcome.updated
    run.rejected = outcome.rejected_rows
    run.deactivated = outcome.deactivated
    run.finished_at = clock.now()


# --- published lists (issue 7): storage.published_import stores, this fills the report ----------


async def _import_published(
    db: Database,
    path: Path,
    report: ImportReport,
    *,
    actor: str,
    clock: Clock,
    strict: bool,
    deactivate_missing: bool,
    folder: Path,
) -> ImportReport:
    """A province's list as published; the `.xlsx` report is written even without errors."""
    from storage import published_import
    from storage.published import PublishedListError

    report.kind = published_import.PUBLISHED_KIND
    try:
        result = await published_import.import_published(
            db,
            path,
            filename=report.filename,
            actor=actor,
            clock=clock,
            strict=strict,
            deactivate_missing=deactivate_missing,
        )
    except PublishedListError:
        report.problem, report.problem_params = "unknown_layout", {"name": report.filename}
        return report
    report.import_id, report.applied = result.import_id, result.applied
    report.outcome = result.outcome
    report.extra = result.report_extra()
    report.departments_created = [(d.name, d.code) for d in result.departments_created]
    out = folder / f"{Path(report.filename).stem}.report.xlsx"
    report.report_file = write_error_report(report, out)
    if report.outcome.errors:
        report.error_file = report.report_file
    log.info("import %s from %s: %s", report.kind, report.filename, report.outcome)
    return report


# --- reports -----------------------------------------------------------------------------------


def write_error_report(report: ImportReport, out: Path) -> Path:
    """Every rejected row with its column and reason, for the office to fix and re-send.

    Also the report of a published-list import (issue 7), errors or not: the departments it
    created and the values it kept as written get a sheet each."""
    from openpyxl import Workbook  # openpyxl takes a while to import; most imports need none

    from storage.published_import import PUBLISHED_KIND

    workbook = Workbook(write_only=True)
    if report.outcome.errors or report.kind != PUBLISHED_KIND:
        sheet = workbook.create_sheet(text("report.errors_sheet"))
        sheet.append(
            [
                text("report.col_row"),
                text("report.col_column"),
                text("report.col_value"),
                text("report.col_reason"),
            ]
        )
        for row in report.errors():
            sheet.append(list(row))
        if report.outcome.errors_truncated:
            sheet.append([text("report.truncated", count=report.outcome.errors_truncated)])
    summary = workbook.create_sheet(text("report.summary_sheet"))
    for label, value in summary_rows(report):
        summary.append([label, value])
    if report.departments_created:
        created = workbook.create_sheet(text("report.extra.departments_sheet"))
        created.append([text("report.extra.col_department"), text("report.extra.col_code")])
        for name, code in report.departments_created:
            created.append([name, code])
    unmapped = [(key, v) for key, v in report.extra.items() if isinstance(v, Mapping)]
    if unmapped:
        values = workbook.create_sheet(text("report.extra.unmapped"))
        values.append(
            [
                text("report.extra.col_what"),
                text("report.col_value"),
                text("report.extra.col_count"),
            ]
        )
        for key, counts in unmapped:
            for value, count in counts.items():
                values.append([text(f"report.extra.{key}"), value, count])
    out.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(out)
    return out


def summary_rows(report: ImportReport) -> list[tuple[str, object]]:
    o = report.outcome
    rows: list[tuple[str, object]] = [
        (text("report.file"), report.filename),
        (text("report.kind"), text(f"kind.{report.kind}") if report.kind else ""),
        (text("report.total"), o.total),
        (text("report.created"), o.created if report.applied else 0),
        (text("report.updated"), o.updated if report.applied else 0),
        (text("report.rejected"), o.rejected_rows),
        (text("report.deactivated"), o.deactivated if report.applied else 0),
    ]
    # A mapping (value -> count) is listed on its own sheet; the summary gives how many values.
    rows += [
        (text(f"report.extra.{key}"), len(value) if isinstance(value, Mapping) else value)
        for key, value in report.extra.items()
    ]
    return rows


def write_template(kind: str, out: Path) -> Path:
    """The Excel template an office fills in: headers, one example row, and a notes sheet."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    schema = SCHEMAS[kind]
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = text(f"kind.{kind}")
    sheet.append([c.header for c in schema.columns])
    sheet.append([c.example for c in schema.columns])
    bold = Font(bold=True)
    for index, column in enumerate(schema.columns, start=1):
        sheet.cell(row=1, column=index).font = bold
        sheet.column_dimensions[get_column_letter(index)].width = max(
            12, len(column.header) * 2 + 4
        )
    sheet.freeze_panes = "A2"
    notes = workbook.create_sheet(text("template.notes_sheet"))
    notes.append(
        [text("template.col_column"), text("template.col_required"), text("template.col_rule")]
    )
    for column in schema.columns:
        rule_key = f"template.rule.{kind}.{column.field}"
        notes.append(
            [
                column.header,
                text("template.required") if column.required else text("template.optional"),
                text(rule_key),
            ]
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(out)
    return out
