"""Who is who: invitations, binding people to directory entries, roles.

Nobody acts before being bound by an invitation from the office (DOMAIN §10). An invite code
is shown once and stored only as its SHA-256, is single use and expires.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.audit import record
from storage.models import Department, Inspector, Invite, Person, Role, RoleGrant


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def invite_link(bot_username: str, code: str) -> str:
    return f"https://t.me/{bot_username}?start={code}"


@dataclass(frozen=True)
class Grant:
    role: Role
    department_code: str | None = None
    department_name: str | None = None
    inspector_id: int | None = None
    inspector_name: str | None = None


@dataclass
class Identity:
    """The caller as the bot sees them: their roles, or none."""

    tg_user_id: int
    person_id: int | None = None
    display_name: str = ""
    grants: list[Grant] = field(default_factory=list)
    office_admin: bool = False

    @property
    def known(self) -> bool:
        return bool(self.grants) or self.office_admin

    @property
    def is_office(self) -> bool:
        return self.office_admin or any(g.role is Role.OFFICE for g in self.grants)

    @property
    def liaison_departments(self) -> list[str]:
        return [
            g.department_code for g in self.grants if g.role is Role.LIAISON and g.department_code
        ]

    @property
    def inspector_ids(self) -> list[int]:
        return [g.inspector_id for g in self.grants if g.role is Role.INSPECTOR and g.inspector_id]

    @property
    def roles(self) -> set[Role]:
        found = {g.role for g in self.grants}
        if self.office_admin:
            found.add(Role.OFFICE)
        return found

    def has(self, role: Role) -> bool:
        return role in self.roles


async def load_identity(
    session: AsyncSession, tg_user_id: int, office_admins: list[int]
) -> Identity:
    identity = Identity(tg_user_id=tg_user_id, office_admin=tg_user_id in office_admins)
    person = (await session.exec(select(Person).where(Person.tg_user_id == tg_user_id))).first()
    if person is None:
        return identity
    identity.person_id = person.id
    identity.display_name = person.display_name
    rows = await session.exec(
        select(RoleGrant, Department, Inspector)
        .outerjoin(Department, col(Department.code) == col(RoleGrant.department_code))
        .outerjoin(Inspector, col(Inspector.id) == col(RoleGrant.inspector_id))
        .where(RoleGrant.person_id == person.id, col(RoleGrant.active).is_(True))
        .order_by(col(RoleGrant.id))
    )
    for grant, department, inspector in rows:
        identity.grants.append(
            Grant(
                role=Role(grant.role),
                department_code=grant.department_code,
                department_name=department.name if department else None,
                inspector_id=grant.inspector_id,
                inspector_name=inspector.name if inspector else None,
            )
        )
    return identity


@dataclass(frozen=True)
class IssuedInvite:
    code: str
    role: Role
    name: str
    department_code: str | None
    department_name: str | None
    expires_at: datetime


class InviteProblem(Exception):
    def __init__(self, key: str, **params: str) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


async def issue_invites(
    session: AsyncSession,
    *,
    role: Role,
    actor: str,
    now: datetime,
    ttl_days: int,
    department_code: str | None = None,
    name: str = "",
) -> list[IssuedInvite]:
    """New codes: for inspectors, one per active inspector not yet bound (older unused codes of
    the same inspector are revoked, so one valid link per person); for a liaison or the office,
    one code."""
    department: Department | None = None
    if department_code is not None:
        department = (
            await session.exec(select(Department).where(Department.code == department_code))
        ).first()
        if department is None:
            raise InviteProblem("unknown_department", code=department_code)
    if role is Role.LIAISON and department is None:
        raise InviteProblem("liaison_needs_department")
    expires = now + timedelta(days=ttl_days)
    issued: list[IssuedInvite] = []

    def make(inspector: Inspector | None, label: str, dept: Department | None) -> IssuedInvite:
        code = secrets.token_urlsafe(16)
        session.add(
            Invite(
                code_hash=hash_code(code),
                role=role,
                department_code=dept.code if dept else None,
                inspector_id=inspector.id if inspector else None,
                name=label,
                created_by=actor,
                created_at=now,
                expires_at=expires,
            )
        )
        return IssuedInvite(
            code, role, label, dept.code if dept else None, dept.name if dept else None, expires
        )

    if role is Role.INSPECTOR:
        bound = select(RoleGrant.inspector_id).where(
            RoleGrant.role == Role.INSPECTOR,
            col(RoleGrant.active).is_(True),
            col(RoleGrant.inspector_id).is_not(None),
        )
        query = (
            select(Inspector, Department)
            .join(Department, col(Department.code) == col(Inspector.department_code))
            .where(col(Inspector.active).is_(True), col(Inspector.id).not_in(bound))
            .order_by(col(Inspector.department_code), col(Inspector.cert_no))
        )
        if department is not None:
            query = query.where(Inspector.department_code == department.code)
        pairs = list(await session.exec(query))
        ids = [inspector.id for inspector, _ in pairs]
        for start in range(0, len(ids), 1000):
            old = await session.exec(
                select(Invite).where(
                    col(Invite.inspector_id).in_(ids[start : start + 1000]),
                    col(Invite.used_at).is_(None),
                    col(Invite.revoked_at).is_(None),
                )
            )
            for invite in old:
                invite.revoked_at = now
                session.add(invite)
        for inspector, dept in pairs:
            issued.append(make(inspector, inspector.name, dept))
    else:
        issued.append(make(None, name, department))
    await record(
        session,
        actor=actor,
        action="invite.issue",
        entity=role,
        at=now,
        entity_id=department_code or "",
        detail={"count": len(issued)},
    )
    return issued


class Redeem(StrEnum):
    BOUND = "bound"
    ALREADY = "already"
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


@dataclass
class Redemption:
    status: Redeem
    grant: Grant | None = None


async def redeem_invite(
    session: AsyncSession,
    *,
    code: str,
    tg_user_id: int,
    display_name: str,
    username: str | None,
    now: datetime,
) -> Redemption:
    invite = (await session.exec(select(Invite).where(Invite.code_hash == hash_code(code)))).first()
    if invite is None or invite.revoked_at is not None:
        return Redemption(Redeem.UNKNOWN)
    if invite.used_at is not None:
        return Redemption(Redeem.ALREADY if invite.used_by == tg_user_id else Redeem.USED)
    if invite.expires_at <= now:
        return Redemption(Redeem.EXPIRED)

    person = (await session.exec(select(Person).where(Person.tg_user_id == tg_user_id))).first()
    if person is None:
        person = Person(
            tg_user_id=tg_user_id, display_name=display_name, username=username, created_at=now
        )
        session.add(person)
        await session.flush()
    assert person.id is not None and invite.id is not None
    invite.used_at = now
    invite.used_by = tg_user_id
    session.add(invite)

    role = Role(invite.role)
    inspector = await session.get(Inspector, invite.inspector_id) if invite.inspector_id else None
    department_code = inspector.department_code if inspector else invite.department_code
    department = (
        (await session.exec(select(Department).where(Department.code == department_code))).first()
        if department_code
        else None
    )
    # The directory name is the person's name in every message; Telegram names are nicknames.
    if inspector is not None:
        person.display_name = inspector.name
    elif invite.name:
        person.display_name = invite.name
    elif not person.display_name:
        person.display_name = display_name
    person.username = username
    session.add(person)
    session.add(
        RoleGrant(
            person_id=person.id,
            role=role,
            department_code=department_code,
            inspector_id=invite.inspector_id,
            invite_id=invite.id,
            granted_at=now,
        )
    )
    await record(
        session,
        actor=f"tg:{tg_user_id}",
        action="invite.redeem",
        entity=role,
        entity_id=str(invite.id),
        at=now,
        detail={
            "person_id": person.id,
            "department": department_code,
            "inspector_id": invite.inspector_id,
        },
    )
    grant = Grant(
        role=role,
        department_code=department_code,
        department_name=department.name if department else None,
        inspector_id=invite.inspector_id,
        inspector_name=inspector.name if inspector else None,
    )
    return Redemption(Redeem.BOUND, grant)
