"""Every table of the product, in one place (SQLModel).

Nothing is ever deleted: directory rows are deactivated, invites expire or are used, bindings
are replaced. Times are aware UTC (SQLModel enforces it).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class Role(StrEnum):
    OFFICE = "office"
    LIAISON = "liaison"
    INSPECTOR = "inspector"


class DepartmentKind(StrEnum):
    DEPARTMENT = "部门"
    SECTION = "科室"
    STATION = "所"


class Department(SQLModel, table=True):
    """部门 / 科室 / 市场监管所. `code` is the natural key."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200, index=True)
    kind: str = Field(default=DepartmentKind.DEPARTMENT, max_length=8)
    parent_code: str | None = Field(default=None, max_length=64)
    # Created by an import of a published list, waiting for the office to give it a real code.
    provisional: bool = False
    active: bool = True
    import_id: int | None = None
    created_at: datetime
    updated_at: datetime


class CheckItem(SQLModel, table=True):
    """抽查事项清单 entry. `code` (事项编码) is the natural key."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(sa_column=Column(Text, nullable=False))
    basis: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    department_code: str = Field(max_length=64, index=True)
    object_type: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    category: str = Field(default="一般", max_length=16)
    methods: str = Field(default="", max_length=200)
    ratio: str = Field(default="", max_length=32)
    frequency: str = Field(default="", max_length=64)
    content: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    expertise: str = Field(default="", max_length=200)
    domain: str = Field(default="", max_length=200)
    inspecting_body: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    joint: bool = False
    cooperating_codes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    active: bool = True
    import_id: int | None = None
    created_at: datetime
    updated_at: datetime


class Target(SQLModel, table=True):
    """检查对象名录库 entry. `key` is the USCC, or 其他标识 for non-market objects."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    uscc: str | None = Field(default=None, max_length=18)
    name: str = Field(max_length=300)
    subject_type: str = Field(default="", max_length=64)
    scope: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    address: str = Field(default="", max_length=300)
    region: str = Field(default="", max_length=100)
    industry: str = Field(default="", max_length=100)
    status: str = Field(default="存续", max_length=32)
    credit_class: str = Field(default="", max_length=1)
    abnormal: bool = False
    serious_illegal: bool = False
    complaints: int = 0
    tags: str = Field(default="", max_length=300)
    active: bool = True
    import_id: int | None = Field(default=None, index=True)
    created_at: datetime
    updated_at: datetime


class Inspector(SQLModel, table=True):
    """执法检查人员名录库 entry. `cert_no` (执法证号) is the natural key."""

    id: int | None = Field(default=None, primary_key=True)
    cert_no: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=64)
    department_code: str = Field(max_length=64, index=True)
    unit: str = Field(default="", max_length=100)
    position: str = Field(default="", max_length=100)
    expertise: str = Field(default="", max_length=300)
    certified: bool = True
    conflicts: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    phone: str = Field(default="", max_length=32)
    active: bool = True
    import_id: int | None = None
    created_at: datetime
    updated_at: datetime


class Person(SQLModel, table=True):
    """A Telegram user the bot knows, bound through an invite."""

    id: int | None = Field(default=None, primary_key=True)
    tg_user_id: int = Field(sa_type=BigInteger, unique=True)
    display_name: str = Field(default="", max_length=200)
    username: str | None = Field(default=None, max_length=64)
    created_at: datetime


class RoleGrant(SQLModel, table=True):
    """One role of one person: the office, a department's liaison, or an inspector entry."""

    __table_args__ = (Index("ix_rolegrant_person_active", "person_id", "active"),)

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="person.id")
    role: str = Field(max_length=16)
    department_code: str | None = Field(default=None, max_length=64)
    inspector_id: int | None = Field(default=None, foreign_key="inspector.id")
    invite_id: int | None = Field(default=None, foreign_key="invite.id")
    active: bool = True
    granted_at: datetime


class Invite(SQLModel, table=True):
    """A one-time deep-link code; only its SHA-256 is stored."""

    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    department_code: str | None = Field(default=None, max_length=64)
    inspector_id: int | None = Field(default=None, foreign_key="inspector.id")
    name: str = Field(default="", max_length=200)
    created_by: str = Field(max_length=64)
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    used_by: int | None = Field(default=None, sa_type=BigInteger)
    revoked_at: datetime | None = None


class ChatBinding(SQLModel, table=True):
    """A group chat bound as the office group or a department group."""

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_type=BigInteger, unique=True)
    kind: str = Field(max_length=16)
    department_code: str | None = Field(default=None, max_length=64)
    title: str = Field(default="", max_length=200)
    active: bool = True
    bound_by: int = Field(sa_type=BigInteger)
    bound_at: datetime


class ImportRun(SQLModel, table=True):
    """One directory import: the audit trail of who loaded what, and what came of it."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    filename: str = Field(max_length=300)
    actor: str = Field(max_length=64)
    strict: bool = False
    deactivate_missing: bool = False
    status: str = Field(default="running", max_length=16)
    total_rows: int = 0
    applied: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    deactivated: int = 0
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    started_at: datetime
    finished_at: datetime | None = None


class AuditLog(SQLModel, table=True):
    """Every state change, append-only."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64)
    entity: str = Field(max_length=64)
    entity_id: str = Field(default="", max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class FsmRecord(SQLModel, table=True):
    """aiogram FSM state and data of one chat/user, so dialogs survive restarts."""

    key: str = Field(primary_key=True, max_length=200)
    state: str | None = Field(default=None, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    updated_at: datetime


class AppSetting(SQLModel, table=True):
    """Small facts the bot learns at run time (its username), for the CLI to reuse."""

    __table_args__ = (UniqueConstraint("name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    value: str = Field(max_length=500)
