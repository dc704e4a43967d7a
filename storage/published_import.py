"""Import of a province's published check-item list (抽查事项清单) as it is (issue 7).

`storage.published` reads the spreadsheet; this module stores what it read, in the same unit of
work as our template import (`bot.directories.import_file`): an `ImportRun` row first, then one
transaction with every upsert, the run's counts and one `AuditLog` row.

Decisions
---------
- Departments are matched by name (NFKC, whitespace ignored). A name the directory lacks
  (编制单位名称, 发起部门, 配合部门; not the placeholder 市场监管领域相关部门) becomes a department
  with ``provisional=True`` and the code ``X`` + the first 8 hex digits of SHA-256(name), so a
  re-import finds it again. When the office later imports a real department under the same name,
  that one wins (non-provisional first) and the next import of the list moves the items to it.
- Items are upserted by the parser's generated code (``P…``): a re-import never duplicates.
  Only the fields a published list carries are written; 抽查比例, 抽查频次, 检查内容 and 所需专长
  that the office set through our template are kept. ``updated_at`` moves only when a field
  changed; ``import_id`` always names the latest import that saw the item.
- Joint items (部门联合抽查): ``department_code`` is the (first) 发起部门; ``cooperating_codes``
  lists the other 发起部门 first, then the 配合部门, so `joint_items` offers the item to every
  department named on it. A joint list has no 事项类别: ``category`` stays empty (not guessed).
- Unmapped 事项类别 / 检查方式 are kept as written and listed in the report; they are not errors.
  The only row errors are values our columns cannot hold (too long) and an item without any
  department. ``--strict`` therefore changes nothing for a clean list, and with such rows writes
  nothing at all.
- ``--deactivate-missing`` only touches items whose latest import was a published list
  (`PUBLISHED_KIND`), that belong to a department present in this file, and that are of the same
  sort (joint or not) as this file's items: importing the joint list never retires the random
  list's items, and template items are never touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from python_calamine import CalamineWorkbook
from sqlalchemy import ColumnElement, and_, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock
from storage.audit import record
from storage.db import Database
from storage.directory import Outcome, Rejected
from storage.models import CheckItem, Department, DepartmentKind, ImportRun
from storage.published import (
    PLACEHOLDER_DEPARTMENTS,
    ParseReport,
    PublishedItem,
    detect_published_layout,
    parse_published,
)

__all__ = [
    "PUBLISHED_KIND",
    "CreatedDepartment",
    "PublishedImport",
    "import_published",
    "is_published_list",
    "joint_items",
    "provisional_code",
]

# ImportRun.kind of a published-list import (and the report's kind: `kind.published_items`).
PUBLISHED_KIND = "published_items"

_SHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xls"})
# detect_published_layout looks no deeper than this for the header.
_HEADER_SCAN_ROWS = 40
_CHUNK = 500  # codes per IN (...) query

# Column widths of the tables (storage.models), checked before writing: PostgreSQL enforces them.
_NAME_MAX = 200
_CATEGORY_MAX = 16
_METHODS_MAX = 200
_DOMAIN_MAX = 200


def is_published_list(path: Path) -> bool:
    """Whether a sheet of `path` has a published list's header (and is not our template)."""
    if path.suffix.lower() not in _SHEET_SUFFIXES:
        return False
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        for name in workbook.sheet_names:
            sheet = workbook.get_sheet_by_name(name)
            head = sheet.to_python(skip_empty_area=False, nrows=_HEADER_SCAN_ROWS)
            if detect_published_layout(head) is not None:
                return True
    except Exception:  # calamine's own errors: the template path reports the broken file
        return False
    return False


def _fold(name: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", name))


def provisional_code(name: str, taken: Collection[str] = ()) -> str:
    """``X`` + hex of SHA-256(name): the same name gets the same code on every import.

    Longer (10, 12, … digits) only if a different department already holds the short one."""
    digest = hashlib.sha256(_fold(name).encode("utf-8")).hexdigest().upper()
    for length in range(8, len(digest) + 1, 2):
        code = "X" + digest[:length]
        if code not in taken:
            return code
    raise ValueError(f"no free provisional code for {name!r}")  # pragma: no cover


@dataclass(frozen=True)
class CreatedDepartment:
    name: str
    code: str


@dataclass
class PublishedImport:
    """What one import of a published list did."""

    import_id: int
    applied: bool
    outcome: Outcome
    parsed: ParseReport
    departments_created: list[CreatedDepartment] = field(default_factory=list)

    def report_extra(self) -> dict[str, Any]:
        """`ImportReport.extra`: keys under `report.extra.` in templates/texts.yaml."""
        parsed = self.parsed
        extra: dict[str, Any] = {
            "continuation_rows": parsed.continuation_rows,
            "blank_rows": parsed.blank_rows,
            "departments_created": len(self.departments_created),
        }
        joint = sum(1 for item in parsed.items if item.joint)
        if joint:
            extra["joint_items"] = joint
        if parsed.unmapped_categories:
            extra["unmapped_categories"] = dict(parsed.unmapped_categories)
        if parsed.unmapped_methods:
            extra["unmapped_methods"] = dict(parsed.unmapped_methods)
        return extra


class _StrictAbort(Exception):
    """Raised inside the transaction so that `--strict` rolls every row back."""


async def import_published(
    db: Database,
    path: Path,
    *,
    filename: str,
    actor: str,
    clock: Clock,
    strict: bool = False,
    deactivate_missing: bool = False,
) -> PublishedImport:
    """Parse `path` and store it. Raises `PublishedListError` when it holds no published list."""
    parsed = await asyncio.to_thread(parse_published, path)
    now = clock.now()
    async with db.session() as session:
        run = ImportRun(
            kind=PUBLISHED_KIND,
            filename=filename,
            actor=actor,
            strict=strict,
            deactivate_missing=deactivate_missing,
            started_at=now,
        )
        session.add(run)
        await session.flush()
        assert run.id is not None
        import_id = run.id

    result = PublishedImport(import_id=import_id, applied=False, outcome=Outcome(), parsed=parsed)
    try:
        async with db.session() as session:
            await _store(session, result, now=now, deactivate_missing=deactivate_missing)
            if strict and result.outcome.rejected_rows:
                raise _StrictAbort
            run.status = "done"
            _fill_run(run, result, clock)
            session.add(run)
            outcome = result.outcome
            await record(
                session,
                actor=actor,
                action="import",
                entity=PUBLISHED_KIND,
                entity_id=str(import_id),
                at=now,
                detail={
                    "file": filename,
                    "created": outcome.created,
                    "updated": outcome.updated,
                    "rejected": outcome.rejected_rows,
                    "deactivated": outcome.deactivated,
                    "departments_created": [d.code for d in result.departments_created],
                },
            )
            result.applied = True
    except _StrictAbort:
        result.departments_created = []  # rolled back with everything else
        async with db.session() as session:
            run.status = "rejected"
            _fill_run(run, result, clock)
            run.created = run.updated = run.deactivated = 0
            session.add(run)
    return result


def _fill_run(run: ImportRun, result: PublishedImport, clock: Clock) -> None:
    outcome, parsed = result.outcome, result.parsed
    run.total_rows = outcome.total
    run.applied = outcome.applied
    run.created = outcome.created
    run.updated = outcome.updated
    run.rejected = outcome.rejected_rows
    run.deactivated = outcome.deactivated
    run.summary = {
        "continuation_rows": parsed.continuation_rows,
        "blank_rows": parsed.blank_rows,
        "departments_created": {d.code: d.name for d in result.departments_created},
        "unmapped_categories": parsed.unmapped_categories,
        "unmapped_methods": parsed.unmapped_methods,
        "sheets": parsed.sheets_used,
        "notes": parsed.notes,
    }
    run.finished_at = clock.now()


# --- the transaction -----------------------------------------------------------------------


def _row_errors(item: PublishedItem) -> list[Rejected]:
    """What our columns cannot hold. Column names are the published list's own headers."""
    row = item.source_row
    owner = "发起部门" if item.joint else "编制单位名称"
    errors: list[Rejected] = []
    if not item.department_name:
        errors.append(Rejected(row, owner, "", "required"))
    checks: list[tuple[str, str, int]] = [
        ("事项类别", item.category, _CATEGORY_MAX),
        ("检查方式", "、".join(item.methods), _METHODS_MAX),
        ("抽查类别", item.domain, _DOMAIN_MAX),
        (owner, item.department_name, _NAME_MAX),
    ]
    checks += [("发起部门", name, _NAME_MAX) for name in item.lead_departments[1:]]
    checks += [("配合部门", name, _NAME_MAX) for name in item.cooperating_departments]
    for column, value, limit in checks:
        if len(value) > limit:
            errors.append(Rejected(row, column, value, "too_long", {"max": limit}))
    return errors


def _department_names(item: PublishedItem) -> list[str]:
    names = [item.department_name, *item.lead_departments, *item.cooperating_departments]
    return [n for n in names if n and n not in PLACEHOLDER_DEPARTMENTS]


async def _departments(
    session: AsyncSession, names: Sequence[str], result: PublishedImport, now: datetime
) -> dict[str, str]:
    """Folded name -> code for every name, creating the missing ones (provisional)."""
    rows = (await session.exec(select(Department))).all()
    # Several departments may share a name: an active, non-provisional one wins.
    rows = sorted(rows, key=lambda d: (not d.active, d.provisional, d.id or 0))
    by_name: dict[str, str] = {}
    for department in rows:
        by_name.setdefault(_fold(department.name), department.code)
    taken = {d.code for d in rows}
    for name in names:
        key = _fold(name)
        if key in by_name:
            continue
        code = provisional_code(name, taken)
        taken.add(code)
        by_name[key] = code
        session.add(
            Department(
                code=code,
                name=name,
                kind=DepartmentKind.DEPARTMENT,
                provisional=True,
                import_id=result.import_id,
                created_at=now,
                updated_at=now,
            )
        )
        result.departments_created.append(CreatedDepartment(name, code))
    return by_name


def _item_values(item: PublishedItem, codes: dict[str, str]) -> dict[str, Any]:
    def code_of(name: str) -> str:
        return codes[_fold(name)]

    others = [*item.lead_departments[1:], *item.cooperating_departments]
    cooperating = [
        code_of(n)
        for n in dict.fromkeys(others)
        if n not in PLACEHOLDER_DEPARTMENTS and n != item.department_name
    ]
    return {
        "name": item.name,
        "basis": item.basis,
        "department_code": code_of(item.department_name),
        "object_type": item.object_type,
        "category": item.category,
        "methods": "、".join(item.methods),
        "domain": item.domain,
        "inspecting_body": item.inspecting_body,
        "joint": item.joint,
        "cooperating_codes": list(dict.fromkeys(cooperating)),
    }


async def _existing_items(session: AsyncSession, codes: Sequence[str]) -> dict[str, CheckItem]:
    found: dict[str, CheckItem] = {}
    for start in range(0, len(codes), _CHUNK):
        chunk = codes[start : start + _CHUNK]
        rows = await session.exec(select(CheckItem).where(col(CheckItem.code).in_(chunk)))
        found.update((item.code, item) for item in rows.all())
    return found


async def _store(
    session: AsyncSession, result: PublishedImport, *, now: datetime, deactivate_missing: bool
) -> None:
    outcome = result.outcome
    valid: list[PublishedItem] = []
    rejected_codes: list[str] = []
    for item in result.parsed.items:
        outcome.total += 1
        errors = _row_errors(item)
        if errors:
            outcome.errors.extend(errors)
            outcome.rejected_rows += 1
            rejected_codes.append(item.code)
        else:
            valid.append(item)

    names = list(dict.fromkeys(n for item in valid for n in _department_names(item)))
    codes = await _departments(session, names, result, now)
    existing = await _existing_items(session, [item.code for item in valid])
    for item in valid:
        values = _item_values(item, codes)
        stored = existing.get(item.code)
        if stored is None:
            session.add(
                CheckItem(
                    code=item.code,
                    **values,
                    import_id=result.import_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            outcome.created += 1
            continue
        changed = {k: v for k, v in values.items() if getattr(stored, k) != v}
        if changed or not stored.active:
            stored.sqlmodel_update(changed)
            stored.active = True
            stored.updated_at = now
        stored.import_id = result.import_id
        session.add(stored)
        outcome.updated += 1
    await session.flush()

    if deactivate_missing and valid:
        sorts = {(codes[_fold(i.department_name)], i.joint) for i in valid}
        published_runs = select(col(ImportRun.id)).where(col(ImportRun.kind) == PUBLISHED_KIND)
        where: list[ColumnElement[bool]] = [
            col(CheckItem.active).is_(True),
            col(CheckItem.import_id).in_(published_runs),
            col(CheckItem.import_id) != result.import_id,
            or_(
                *(
                    and_(col(CheckItem.department_code) == d, col(CheckItem.joint).is_(j))
                    for d, j in sorted(sorts)
                )
            ),
        ]
        if rejected_codes:
            # A rejected row still names an item the list keeps.
            where.append(col(CheckItem.code).not_in(rejected_codes))
        conn = await session.connection()
        retired = await conn.execute(
            update(CheckItem).where(*where).values(active=False, updated_at=now)
        )
        outcome.deactivated = retired.rowcount


# --- queries ---------------------------------------------------------------------------------


async def joint_items(session: AsyncSession, department_code: str) -> list[CheckItem]:
    """Active joint items (部门联合抽查事项) the department initiates or cooperates on, in list
    order: what to offer when the office creates a joint task."""
    rows = await session.exec(
        select(CheckItem)
        .where(col(CheckItem.joint).is_(True), col(CheckItem.active).is_(True))
        .order_by(col(CheckItem.id))
    )
    # Joint items are few (tens to hundreds); JSON membership has no portable SQL.
    return [
        item
        for item in rows.all()
        if item.department_code == department_code
        or department_code in (item.cooperating_codes or [])
    ]
