"""Every table of the product, in one place (SQLModel).

Nothing is ever deleted: directory rows are deactivated, invites expire or are used, bindings
are replaced. Times are aware UTC (SQLModel enforces it).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

# Pydantic builds a table's validators when one is first needed, not when the class is made:
# SQLModel does not validate table rows, and every `dsr` command imports these classes (about
# 50 ms of start-up).
SQLModel.model_config["defer_build"] = True


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
    import_id: int | None = None  # the latest import that saw it (no index: nothing looks it up)
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


# --- tasks, draws, inspections (issue 3) ----------------------------------------------------


class TaskStatus(StrEnum):
    PLANNED = "planned"  # created, not drawn yet
    DRAWN = "drawn"  # an executed, non-voided draw exists
    CLOSED = "closed"


class Task(SQLModel, table=True):
    """抽查任务: what to check, where, how many, by whom, and when."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    year: int
    status: str = Field(default=TaskStatus.PLANNED, max_length=16)
    item_codes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    department_codes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    lead_department: str = Field(max_length=64)
    # {"regions": [...], "industries": [...], "subject_types": [...], "tags": [...]}
    filters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    ratio_policy: str = Field(default="credit", max_length=16)  # credit | flat | all
    # {"A": "0.01", "B": "0.03", ...} for credit; {"flat": "0.05"} for flat
    ratios: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    flag_threshold: int = 3
    reinspect: bool = False  # override "not already inspected this year"
    window_start: date
    window_end: date
    selection_mode: str = Field(default="global", max_length=32)
    stations: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    group_size: int = 2
    method: str = Field(default="现场", max_length=32)
    mergeable: bool = True
    # Per-task overrides of duty deadlines (working days), e.g. {"confirm": 2, "review": 3}.
    deadlines: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    created_by: str = Field(max_length=64)
    created_at: datetime
    updated_at: datetime


class DrawStatus(StrEnum):
    COMMITTED = "committed"  # commitment published, not executed
    EXECUTED = "executed"
    VOIDED = "voided"
    ABANDONED = "abandoned"  # committed, then cancelled before execution


class Draw(SQLModel, table=True):
    """One draw of one task. Immutable once executed; voiding keeps it and its record."""

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    status: str = Field(default=DrawStatus.COMMITTED, max_length=16)
    algorithm: str = Field(default="dsr-draw/1", max_length=32)
    # Secret until executed; published in the announcement afterwards.
    seed_hex: str = Field(max_length=64)
    commitment: str = Field(max_length=64)
    candidate_digest: str = Field(max_length=64)
    # The full verifiable record (bot.draw), appended to by replacements; never rewritten.
    record: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    committed_by: str = Field(max_length=64)
    committed_at: datetime
    executed_at: datetime | None = None
    voided_at: datetime | None = None
    voided_by: str | None = Field(default=None, max_length=64)
    void_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # -- issue 3, draw service (bot/draws.py) --
    # What the commitment announcement published besides the commitment and candidate digest:
    # per-stratum counts, the inspector-pool digest, the mode and parameters used. Execution
    # refuses to run when the candidates or the pool no longer match it.
    announced: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class InspectionStatus(StrEnum):
    ASSIGNED = "assigned"  # group drawn, waiting for confirmations
    CONFIRMED = "confirmed"  # every member confirmed
    SUBMITTED = "submitted"  # result entered, waiting for co-signatures
    COSIGNED = "cosigned"  # waiting for review
    APPROVED = "approved"  # reviewed, waiting for publication
    PUBLISHED = "published"
    SHORTFALL = "shortfall"  # no valid group could be drawn; the office decides
    CANCELLED = "cancelled"  # its draw was voided


class Inspection(SQLModel, table=True):
    """One visit to one target ("进一次门，查多项事"): may serve several tasks once merged."""

    __table_args__ = (Index("ix_inspection_target_status", "target_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    draw_id: int = Field(foreign_key="draw.id", index=True)
    target_id: int = Field(foreign_key="target.id")
    target_key: str = Field(max_length=64)
    lead_department: str = Field(max_length=64)
    rank: str = Field(max_length=64)
    batch_order: int = 0
    window_start: date
    window_end: date
    method: str = Field(default="现场", max_length=32)
    status: str = Field(default=InspectionStatus.ASSIGNED, max_length=16)
    merged: bool = False
    # -- issue 3: set when /merge folded this inspection into another one (then CANCELLED) --
    merged_into_id: int | None = Field(default=None, foreign_key="inspection.id")
    created_at: datetime
    updated_at: datetime


class InspectionItem(SQLModel, table=True):
    """Which task's which check item an inspection covers."""

    __table_args__ = (UniqueConstraint("inspection_id", "task_id", "item_code"),)

    id: int | None = Field(default=None, primary_key=True)
    inspection_id: int = Field(foreign_key="inspection.id", index=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    draw_id: int = Field(foreign_key="draw.id")
    item_code: str = Field(max_length=64)
    year: int = Field(index=True)
    # -- issue 3: its draw was voided while the inspection lives on for another draw's items --
    voided_at: datetime | None = None


class AssignmentStatus(StrEnum):
    PENDING = "pending"  # delivered (or waiting to be), not confirmed
    CONFIRMED = "confirmed"
    RECUSAL_REQUESTED = "recusal_requested"
    RECUSED = "recused"  # recusal approved; a replacement took the seat
    WITHDRAWN = "withdrawn"  # issue 3: the draw that gave the seat was voided, or it moved (merge)


# Seats that still count: not recused, not withdrawn by a void or a merge.
LIVE_SEATS = (
    AssignmentStatus.PENDING,
    AssignmentStatus.CONFIRMED,
    AssignmentStatus.RECUSAL_REQUESTED,
)


class Assignment(SQLModel, table=True):
    """An inspector's seat in an inspection's group."""

    __table_args__ = (UniqueConstraint("inspection_id", "inspector_id"),)

    id: int | None = Field(default=None, primary_key=True)
    inspection_id: int = Field(foreign_key="inspection.id", index=True)
    inspector_id: int = Field(foreign_key="inspector.id", index=True)
    pick_index: int  # j of the partial Fisher–Yates pick (bot.draw)
    status: str = Field(default=AssignmentStatus.PENDING, max_length=20)
    replaces_id: int | None = Field(default=None, foreign_key="assignment.id")
    # -- issue 3: the draw whose record holds this pick (differs from the inspection's draw
    # when the inspection was merged from several draws) --
    draw_id: int | None = Field(default=None, foreign_key="draw.id", index=True)
    delivered_at: datetime | None = None
    confirmed_at: datetime | None = None
    recusal_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime


# --- delivery (issue 5) ---------------------------------------------------------------------


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up (403, or too many attempts)
    SKIPPED = "skipped"  # an edit with nothing to do: see `last_error` for why


class OutboxMessage(SQLModel, table=True):
    """A message to send, written in the same transaction as the change that causes it."""

    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    idem_key: str = Field(max_length=200, unique=True)
    chat_id: int = Field(sa_type=BigInteger, index=True)
    is_group: bool = False
    # sendMessage | sendDocument | editMessageText | editMessageReplyMarkup
    method: str = Field(default="sendMessage", max_length=32)
    # An edit's target: the idempotency key of the earlier row whose message it edits.
    edits_key: str | None = Field(default=None, max_length=200)
    text: str = Field(sa_column=Column(Text, nullable=False))
    reply_markup: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    document_name: str | None = Field(default=None, max_length=200)
    document: bytes | None = Field(default=None, sa_type=LargeBinary)
    # Who to tell when the recipient cannot be reached (403): a department's liaisons.
    notify_department: str | None = Field(default=None, max_length=64)
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    attempts: int = 0
    # 429s seen; they are Telegram telling us when to come back, not failures (bot/sender.py).
    throttled: int = 0
    next_attempt_at: datetime
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    tg_message_id: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime
    sent_at: datetime | None = None


# --- deadlines and the 三单 (issue 5) --------------------------------------------------------


class DutyStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    DONE_LATE = "done_late"
    CANCELLED = "cancelled"


class Duty(SQLModel, table=True):
    """A thing someone must do by a date (a deadline in working days). The sweeper escalates it."""

    __table_args__ = (
        UniqueConstraint("kind", "subject"),
        Index("ix_duty_open_due", "status", "next_check_on"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)  # confirm | inspect | cosign | review | publish | followup ...
    subject: str = Field(max_length=64)  # e.g. "assignment:12", "inspection:5"
    inspection_id: int | None = Field(default=None, foreign_key="inspection.id", index=True)
    responsible_role: str = Field(max_length=16)  # inspector | liaison | office
    inspector_id: int | None = Field(default=None, foreign_key="inspector.id")
    department_code: str = Field(max_length=64)
    deadline: date
    status: str = Field(default=DutyStatus.OPEN, max_length=16)
    stage: int = 0  # 0 nothing sent, 1 reminded, 2 supervised, 3 accountability
    next_check_on: date  # the next date the sweeper must look at this duty
    supervision_deadline: date | None = None
    created_at: datetime
    done_at: datetime | None = None


class Notice(SQLModel, table=True):
    """懒政提醒单 / 怠政督办单 / 失职问责单; one per duty and kind."""

    __table_args__ = (UniqueConstraint("duty_id", "kind"), UniqueConstraint("kind", "year", "seq"))

    id: int | None = Field(default=None, primary_key=True)
    duty_id: int = Field(foreign_key="duty.id", index=True)
    kind: str = Field(max_length=16)  # reminder | supervision | accountability
    year: int
    seq: int | None = None  # the 17 of 督〔2026〕17号; reminders are not numbered
    issued_at: datetime
    deadline: date | None = None  # the new deadline a supervision order sets
    status: str = Field(default="open", max_length=16)  # open | closed | decided
    closed_late: bool = False
    decision: str | None = Field(default=None, max_length=16)  # 问责 | 免责
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = None
    closed_at: datetime | None = None


class Holiday(SQLModel, table=True):
    """State Council dates loaded by the office for years the calendar package lacks."""

    id: int | None = Field(default=None, primary_key=True)
    day: date = Field(unique=True)
    working: bool  # True = 班 (make-up workday), False = 休
    loaded_by: str = Field(max_length=64)
    loaded_at: datetime


# --- assignments, results, co-signature, review, follow-up (issue 4) -------------------------
# A result is one row per inspection that goes draft -> submitted -> cosigned -> approved and
# back to draft when a co-inspector objects or the reviewer returns it; `version` counts the
# submissions, and co-signatures and reviews are kept per version, so nothing is overwritten.


class RecusalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class RecusalRequest(SQLModel, table=True):
    """申请回避: one request of one inspector for one seat, and what the liaison decided."""

    id: int | None = Field(default=None, primary_key=True)
    assignment_id: int = Field(foreign_key="assignment.id", index=True)
    inspection_id: int = Field(foreign_key="inspection.id", index=True)
    inspector_id: int = Field(foreign_key="inspector.id")
    department_code: str = Field(max_length=64, index=True)  # the inspector's department
    reason_code: str = Field(default="other", max_length=16)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=RecusalStatus.PENDING, max_length=16)
    requested_by: int = Field(sa_type=BigInteger)
    requested_at: datetime
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = None
    replacement_id: int | None = Field(default=None, foreign_key="assignment.id")


class ResultStatus(StrEnum):
    DRAFT = "draft"  # being entered (or returned)
    SUBMITTED = "submitted"  # waiting for the co-inspectors
    COSIGNED = "cosigned"  # waiting for review
    APPROVED = "approved"


class Result(SQLModel, table=True):
    """检查结果 of one inspection, entered by one of its inspectors (谁检查、谁录入、谁负责)."""

    id: int | None = Field(default=None, primary_key=True)
    inspection_id: int = Field(foreign_key="inspection.id", unique=True)
    status: str = Field(default=ResultStatus.DRAFT, max_length=16)
    version: int = 0  # submissions so far
    entered_by: int = Field(foreign_key="inspector.id")
    inspection_date: date | None = None
    method: str | None = Field(default=None, max_length=32)
    # Why it is a draft again (an objection or the reviewer's return), shown while editing.
    returned_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    submitted_at: datetime | None = None
    cosigned_at: datetime | None = None
    approved_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class ResultItem(SQLModel, table=True):
    """The result for one check item of the inspection: one of the ten categories (DOMAIN §6)."""

    __table_args__ = (UniqueConstraint("result_id", "inspection_item_id"),)

    id: int | None = Field(default=None, primary_key=True)
    result_id: int = Field(foreign_key="result.id", index=True)
    inspection_item_id: int = Field(foreign_key="inspectionitem.id")
    position: int
    category: int | None = None
    findings: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # rectify | case | transfer | judicial | abnormal
    action: str | None = Field(default=None, max_length=16)
    rectify_deadline: date | None = None
    transfer_department: str | None = Field(default=None, max_length=64)
    updated_at: datetime


class Evidence(SQLModel, table=True):
    """A photo or document attached to a result item: Telegram's file id and our SHA-256."""

    __table_args__ = (UniqueConstraint("result_item_id", "sha256"),)

    id: int | None = Field(default=None, primary_key=True)
    result_id: int = Field(foreign_key="result.id", index=True)
    result_item_id: int = Field(foreign_key="resultitem.id")
    kind: str = Field(max_length=16)  # photo | document
    file_id: str = Field(max_length=255)
    file_unique_id: str = Field(max_length=64)
    file_name: str | None = Field(default=None, max_length=255)
    size: int
    sha256: str = Field(max_length=64)
    uploaded_by: int = Field(sa_type=BigInteger)
    created_at: datetime
    # Wrong evidence is withdrawn from a draft, never deleted: who (Telegram user id) and when.
    withdrawn_at: datetime | None = None
    withdrawn_by: int | None = Field(default=None, sa_type=BigInteger)


class CoSignStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    OBJECTED = "objected"
    ENTERED = "entered"  # the member who entered the result
    VOID = "void"  # another member objected first; this round is over


class CoSignature(SQLModel, table=True):
    """One member's 确认无误 / 有异议 on one submission of a result."""

    __table_args__ = (UniqueConstraint("result_id", "version", "assignment_id"),)

    id: int | None = Field(default=None, primary_key=True)
    result_id: int = Field(foreign_key="result.id", index=True)
    version: int
    assignment_id: int = Field(foreign_key="assignment.id")
    inspector_id: int = Field(foreign_key="inspector.id")
    status: str = Field(default=CoSignStatus.PENDING, max_length=16)
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime
    decided_at: datetime | None = None


class Review(SQLModel, table=True):
    """复核 of one submission: approved, or returned with a reason."""

    __table_args__ = (UniqueConstraint("result_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    result_id: int = Field(foreign_key="result.id", index=True)
    version: int
    decision: str = Field(max_length=16)  # approved | returned
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reviewer: str = Field(max_length=64)
    reviewer_name: str = Field(default="", max_length=200)
    decided_at: datetime


class FollowUpStatus(StrEnum):
    OPEN = "open"
    DONE = "done"


class FollowUp(SQLModel, table=True):
    """后续处置 of one result item with a problem, owned by the inspector who entered it."""

    __table_args__ = (UniqueConstraint("result_item_id"),)

    id: int | None = Field(default=None, primary_key=True)
    inspection_id: int = Field(foreign_key="inspection.id", index=True)
    result_id: int = Field(foreign_key="result.id")
    result_item_id: int = Field(foreign_key="resultitem.id")
    inspector_id: int = Field(foreign_key="inspector.id", index=True)
    department_code: str = Field(max_length=64)
    action: str = Field(max_length=16)
    rectify_deadline: date | None = None
    transfer_department: str | None = Field(default=None, max_length=64)
    status: str = Field(default=FollowUpStatus.OPEN, max_length=16)
    completed_on: date | None = None
    completed_at: datetime | None = None
    created_at: datetime


class FollowUpEntry(SQLModel, table=True):
    """A progress or completion note of a follow-up (text and date), append-only."""

    id: int | None = Field(default=None, primary_key=True)
    followup_id: int = Field(foreign_key="followup.id", index=True)
    kind: str = Field(max_length=16)  # progress | completion | acknowledged
    text: str = Field(sa_column=Column(Text, nullable=False))
    on_date: date
    entered_by: str = Field(max_length=64)
    created_at: datetime


class TransferStatus(StrEnum):
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"


class Transfer(SQLModel, table=True):
    """抄告、移送 to another department; its liaison acknowledges receipt."""

    __table_args__ = (UniqueConstraint("followup_id"),)

    id: int | None = Field(default=None, primary_key=True)
    followup_id: int = Field(foreign_key="followup.id")
    inspection_id: int = Field(foreign_key="inspection.id", index=True)
    from_department: str = Field(max_length=64)
    to_department: str = Field(max_length=64, index=True)
    status: str = Field(default=TransferStatus.SENT, max_length=16)
    created_at: datetime
    acknowledged_by: str | None = Field(default=None, max_length=64)
    acknowledged_at: datetime | None = None


# --- 三单 numbering (issue 5: deadlines and notices) -----------------------------------------


class NoticeCounter(SQLModel, table=True):
    """The last number issued per kind and year (the 17 of 督〔2026〕17号). Incremented in the
    transaction that issues the notice, so a rollback gives the number back: no gaps, no twins."""

    __table_args__ = (UniqueConstraint("kind", "year"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    year: int
    last: int = 0
