"""Group chats bound as the office group or a department group."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.audit import record
from storage.models import ChatBinding, Department


@dataclass(frozen=True)
class Binding:
    kind: str  # "office" | "department"
    department_code: str | None = None
    department_name: str | None = None


class BindProblem(Exception):
    def __init__(self, key: str, **params: str) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


async def binding_of(session: AsyncSession, chat_id: int) -> Binding | None:
    row = (
        await session.exec(
            select(ChatBinding, Department)
            .outerjoin(Department, col(Department.code) == col(ChatBinding.department_code))
            .where(ChatBinding.chat_id == chat_id, col(ChatBinding.active).is_(True))
        )
    ).first()
    if row is None:
        return None
    chat, department = row
    return Binding(chat.kind, chat.department_code, department.name if department else None)


async def bind_group(
    session: AsyncSession,
    *,
    chat_id: int,
    title: str,
    kind: str,
    department_code: str | None,
    actor_tg: int,
    now: datetime,
) -> Binding:
    """Bind (or re-bind) a group; the previous binding of that group is kept in the audit."""
    department: Department | None = None
    if kind == "department":
        if not department_code:
            raise BindProblem("department_code_missing")
        department = (
            await session.exec(select(Department).where(Department.code == department_code))
        ).first()
        if department is None:
            raise BindProblem("unknown_department", code=department_code)
    elif kind != "office":
        raise BindProblem("bad_kind")
    row = (await session.exec(select(ChatBinding).where(ChatBinding.chat_id == chat_id))).first()
    before = None if row is None else {"kind": row.kind, "department": row.department_code}
    if row is None:
        row = ChatBinding(chat_id=chat_id, kind=kind, bound_by=actor_tg, bound_at=now)
    row.kind = kind
    row.department_code = department.code if department else None
    row.title = title[:200]
    row.active = True
    row.bound_by = actor_tg
    row.bound_at = now
    session.add(row)
    await record(
        session,
        actor=f"tg:{actor_tg}",
        action="group.bind",
        entity="chat",
        entity_id=str(chat_id),
        at=now,
        detail={"kind": kind, "department": row.department_code, "before": before},
    )
    return Binding(kind, row.department_code, department.name if department else None)


async def migrate_group(
    session: AsyncSession, *, old_chat_id: int, new_chat_id: int, now: datetime
) -> bool:
    """A group upgraded to a supergroup gets a new id; the binding follows it."""
    row = (
        await session.exec(select(ChatBinding).where(ChatBinding.chat_id == old_chat_id))
    ).first()
    if row is None:
        return False
    clash = (
        await session.exec(select(ChatBinding).where(ChatBinding.chat_id == new_chat_id))
    ).first()
    if clash is not None:
        return True  # already moved (Telegram sends the migration twice: old and new chat)
    row.chat_id = new_chat_id
    session.add(row)
    await record(
        session,
        actor="telegram",
        action="group.migrate",
        entity="chat",
        entity_id=str(new_chat_id),
        at=now,
        detail={"from": old_chat_id},
    )
    return True
