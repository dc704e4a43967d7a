"""Invitations, binding and group bindings at the service level."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlmodel import select

from bot.chats import BindProblem, bind_group, binding_of, migrate_group
from bot.clock import FrozenClock
from bot.directories import import_file
from bot.invites import parse_invite_args
from bot.people import InviteProblem, Redeem, hash_code, issue_invites, load_identity, redeem_invite
from storage.db import Database
from storage.models import Invite, Role
from tests.factories import (
    DEPARTMENT_HEADER,
    DEPARTMENTS,
    INSPECTOR_HEADER,
    inspector_rows,
    write_csv,
)


async def seed(db: Database, clock: FrozenClock, tmp_path: Path, inspectors: int = 3) -> None:
    for header, rows, name in (
        (DEPARTMENT_HEADER, DEPARTMENTS, "d.csv"),
        (INSPECTOR_HEADER, inspector_rows(inspectors), "i.csv"),
    ):
        report = await import_file(
            db,
            write_csv(tmp_path / name, header, rows),
            kind=None,
            actor="t",
            clock=clock,
            max_bytes=1 << 20,
        )
        assert report.ok


async def test_codes_are_unguessable_hashed_and_single_use(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed(db, clock, tmp_path)
    async with db.session() as session:
        issued = await issue_invites(
            session, role=Role.INSPECTOR, actor="t", now=clock.now(), ttl_days=14
        )
    assert len(issued) == 3 and len({i.code for i in issued}) == 3
    assert all(len(i.code) >= 20 for i in issued)
    async with db.read() as session:
        stored = list(await session.exec(select(Invite)))
    assert {s.code_hash for s in stored} == {hash_code(i.code) for i in issued}
    assert not any(i.code in s.code_hash for s in stored for i in issued)

    async with db.session() as session:
        first = await redeem_invite(
            session,
            code=issued[0].code,
            tg_user_id=501,
            display_name="tg name",
            username="u501",
            now=clock.now(),
        )
    assert first.status is Redeem.BOUND and first.grant is not None
    assert (first.grant.role, first.grant.department_code) == (Role.INSPECTOR, "SJJ")
    async with db.session() as session:
        again = await redeem_invite(
            session,
            code=issued[0].code,
            tg_user_id=501,
            display_name="x",
            username=None,
            now=clock.now(),
        )
        stolen = await redeem_invite(
            session,
            code=issued[0].code,
            tg_user_id=777,
            display_name="x",
            username=None,
            now=clock.now(),
        )
        bogus = await redeem_invite(
            session, code="nope", tg_user_id=777, display_name="x", username=None, now=clock.now()
        )
    assert (again.status, stolen.status, bogus.status) == (
        Redeem.ALREADY,
        Redeem.USED,
        Redeem.UNKNOWN,
    )

    async with db.read() as session:
        identity = await load_identity(session, 501, [])
        stranger = await load_identity(session, 777, [])
    assert identity.display_name == "检查员0" and identity.has(Role.INSPECTOR)
    assert not stranger.known


async def test_expired_code_changes_nothing(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed(db, clock, tmp_path, inspectors=1)
    async with db.session() as session:
        (invite,) = await issue_invites(
            session, role=Role.INSPECTOR, actor="t", now=clock.now(), ttl_days=14
        )
    clock.advance(timedelta(days=15))
    async with db.session() as session:
        result = await redeem_invite(
            session,
            code=invite.code,
            tg_user_id=9,
            display_name="x",
            username=None,
            now=clock.now(),
        )
    assert result.status is Redeem.EXPIRED
    async with db.read() as session:
        assert not (await load_identity(session, 9, [])).known
        stored = (await session.exec(select(Invite))).one()
    assert stored.used_at is None


async def test_reissuing_revokes_old_codes_and_skips_bound_people(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed(db, clock, tmp_path, inspectors=2)
    async with db.session() as session:
        old = await issue_invites(
            session, role=Role.INSPECTOR, actor="t", now=clock.now(), ttl_days=14
        )
    async with db.session() as session:
        await redeem_invite(
            session,
            code=old[0].code,
            tg_user_id=1,
            display_name="a",
            username=None,
            now=clock.now(),
        )
    async with db.session() as session:
        new = await issue_invites(
            session,
            role=Role.INSPECTOR,
            actor="t",
            now=clock.now(),
            ttl_days=14,
            department_code="SJJ",
        )
        revoked = await redeem_invite(
            session,
            code=old[1].code,
            tg_user_id=2,
            display_name="b",
            username=None,
            now=clock.now(),
        )
    assert [i.name for i in new] == ["检查员1"]
    assert revoked.status is Redeem.UNKNOWN


async def test_liaison_and_office_invites(db: Database, clock: FrozenClock, tmp_path: Path) -> None:
    await seed(db, clock, tmp_path, inspectors=0)
    async with db.session() as session:
        (liaison,) = await issue_invites(
            session,
            role=Role.LIAISON,
            actor="t",
            now=clock.now(),
            ttl_days=14,
            department_code="SWJ",
            name="王五",
        )
        (office,) = await issue_invites(
            session, role=Role.OFFICE, actor="t", now=clock.now(), ttl_days=14, name="赵六"
        )
    async with db.session() as session:
        await redeem_invite(
            session,
            code=liaison.code,
            tg_user_id=5,
            display_name="x",
            username=None,
            now=clock.now(),
        )
        await redeem_invite(
            session,
            code=office.code,
            tg_user_id=5,
            display_name="x",
            username=None,
            now=clock.now(),
        )
    async with db.read() as session:
        person = await load_identity(session, 5, [])
    assert person.roles == {Role.LIAISON, Role.OFFICE}
    assert person.liaison_departments == ["SWJ"]
    try:
        async with db.session() as session:
            await issue_invites(
                session,
                role=Role.LIAISON,
                actor="t",
                now=clock.now(),
                ttl_days=14,
                department_code="NOPE",
            )
    except InviteProblem as problem:
        assert problem.key == "unknown_department"
    else:
        raise AssertionError("unknown department accepted")


def test_invite_arguments() -> None:
    assert parse_invite_args("") is not None and parse_invite_args("").role is Role.INSPECTOR  # type: ignore[union-attr]
    assert parse_invite_args("SJJ") == parse_invite_args("inspectors SJJ")
    liaison = parse_invite_args("liaison SWJ 王 五")
    assert liaison is not None and (liaison.department_code, liaison.name) == ("SWJ", "王 五")
    assert parse_invite_args("liaison") is None
    assert parse_invite_args("SJJ extra") is None


async def test_group_binding_and_migration(
    db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed(db, clock, tmp_path, inspectors=0)
    async with db.session() as session:
        await bind_group(
            session,
            chat_id=-100,
            title="税务群",
            kind="department",
            department_code="SWJ",
            actor_tg=1,
            now=clock.now(),
        )
    async with db.session() as session:
        assert await migrate_group(session, old_chat_id=-100, new_chat_id=-1001, now=clock.now())
        assert (
            await migrate_group(session, old_chat_id=-100, new_chat_id=-1001, now=clock.now())
            is False
        )
    async with db.read() as session:
        moved = await binding_of(session, -1001)
        gone = await binding_of(session, -100)
    assert moved is not None and moved.department_name == "县税务局" and gone is None
    try:
        async with db.session() as session:
            await bind_group(
                session,
                chat_id=-5,
                title="",
                kind="department",
                department_code="X",
                actor_tg=1,
                now=clock.now(),
            )
    except BindProblem as problem:
        assert problem.key == "unknown_department"
    else:
        raise AssertionError("unknown department bound")
