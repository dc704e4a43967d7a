"""`dsr`: the command line of the office's server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlmodel import select

from bot.clock import SystemClock
from bot.config import Settings
from bot.directories import import_file, write_template
from bot.invites import parse_invite_args, write_invites
from bot.people import InviteProblem, issue_invites
from bot.render import render_plain, text
from storage.db import Database, upgrade
from storage.directory import KIND_ALIASES, SCHEMAS
from storage.models import AppSetting

log = logging.getLogger(__name__)
T = TypeVar("T")

app = typer.Typer(
    help=text("cli.app"), no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
db_app = typer.Typer(help=text("cli.db"), no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    return Settings()


def _with_db(work: Callable[[Database, Settings], Awaitable[T]]) -> T:
    settings = _settings()

    async def main() -> T:
        await asyncio.to_thread(upgrade, settings.database_url)
        db = Database(settings.database_url)
        try:
            return await work(db, settings)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


@db_app.command("upgrade", help=text("cli.db_upgrade"))
def db_upgrade() -> None:
    upgrade(_settings().database_url)
    typer.echo(text("cli.migrated"))


@app.command("import", help=text("cli.import"))
def import_(
    kind: Annotated[str, typer.Argument(help=text("cli.import_kind"))],
    file: Annotated[Path, typer.Argument(help=text("cli.import_file"))],
    strict: Annotated[bool, typer.Option("--strict", help=text("cli.strict"))] = False,
    deactivate_missing: Annotated[
        bool, typer.Option("--deactivate-missing", help=text("cli.deactivate_missing"))
    ] = False,
) -> None:
    resolved = KIND_ALIASES.get(kind.lower())
    if resolved is None:
        raise _fail(text("cli.unknown_kind", kind=kind))

    async def work(db: Database, settings: Settings) -> int:
        report = await import_file(
            db,
            file,
            kind=resolved,
            actor="cli",
            clock=SystemClock(),
            max_bytes=settings.import_max_bytes,
            error_limit=settings.import_error_limit,
            strict=strict,
            deactivate_missing=deactivate_missing,
        )
        typer.echo(render_plain("imports/report.j2", report=report))
        if report.error_file is not None:
            typer.echo(text("cli.error_file", path=report.error_file))
        elif report.report_file is not None:
            typer.echo(text("cli.report_file", path=report.report_file))
        if report.problem:
            return 2
        return 0 if report.applied else 1

    code = _with_db(work)
    if code:
        raise typer.Exit(code)


@app.command("template", help=text("cli.template"))
def template(
    kind: Annotated[str, typer.Argument(help=text("cli.import_kind"))],
    out: Annotated[Path, typer.Argument(help=text("cli.template_out"))],
) -> None:
    resolved = KIND_ALIASES.get(kind.lower())
    if resolved is None or resolved not in SCHEMAS:
        raise _fail(text("cli.unknown_kind", kind=kind))
    write_template(resolved, out)
    typer.echo(text("cli.template_written", path=out))


async def _bot_username(db: Database, settings: Settings) -> str | None:
    if settings.bot_username:
        return settings.bot_username
    async with db.read() as session:
        row = (
            await session.exec(select(AppSetting).where(AppSetting.name == "bot_username"))
        ).first()
    if row is not None:
        return row.value
    if settings.bot_token is None:
        return None
    from bot.app import create_bot  # aiogram takes seconds to import; only load it when needed

    bot = create_bot(settings)
    try:
        return (await bot.me()).username
    finally:
        await bot.session.close()


@app.command("invite", help=text("cli.invite"))
def invite(
    department: Annotated[
        str | None, typer.Option("--department", help=text("cli.invite_department"))
    ] = None,
    role: Annotated[str, typer.Option("--role", help=text("cli.invite_role"))] = "inspector",
    name: Annotated[str, typer.Option("--name", help=text("cli.invite_name"))] = "",
    out: Annotated[Path | None, typer.Option("--out", help=text("cli.invite_out"))] = None,
) -> None:
    words = {"inspector": "", "liaison": "liaison", "office": "office"}
    if role not in words:
        raise _fail(text("cli.unknown_role", role=role))
    args = " ".join(p for p in (words[role], department or "", name) if p)
    request = parse_invite_args(args)
    if request is None:
        raise _fail(render_plain("invites/usage.j2"))

    async def work(db: Database, settings: Settings) -> int:
        username = await _bot_username(db, settings)
        if username is None:
            typer.echo(text("cli.no_username"), err=True)
            return 2
        try:
            async with db.session() as session:
                issued = await issue_invites(
                    session,
                    role=request.role,
                    actor="cli",
                    now=SystemClock().now(),
                    ttl_days=settings.invite_ttl_days,
                    department_code=request.department_code,
                    name=request.name,
                )
        except InviteProblem as problem:
            typer.echo(
                render_plain("invites/problem.j2", key=problem.key, **problem.params), err=True
            )
            return 2
        typer.echo(
            render_plain("invites/issued.j2", issued=issued, username=username, request=request)
        )
        if out is not None:
            write_invites(issued, username, out)
            typer.echo(text("cli.invites_written", path=out))
        return 0

    code = _with_db(work)
    if code:
        raise typer.Exit(code)


@app.command("run", help=text("cli.run"))
def run() -> None:
    settings = _settings()
    if settings.bot_token is None:
        raise _fail(render_plain("cli/no_token.j2"), code=1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_run(settings))


async def _run(settings: Settings) -> None:
    from bot.app import Services, create_bot, create_dispatcher, register_commands

    await asyncio.to_thread(upgrade, settings.database_url)
    db = Database(settings.database_url)
    services = Services(settings=settings, db=db)
    bot = create_bot(settings)
    dispatcher = create_dispatcher(services)
    try:
        me = await bot.me()
        await remember_username(db, me.username or "")
        await register_commands(bot)
        typer.echo(text("cli.starting", username=me.username))
        await dispatcher.start_polling(bot, handle_signals=True)
    finally:
        await bot.session.close()
        await db.dispose()


async def remember_username(db: Database, username: str) -> None:
    """The CLI builds invite links offline from what the running bot learnt."""
    async with db.session() as session:
        row = (
            await session.exec(select(AppSetting).where(AppSetting.name == "bot_username"))
        ).first()
        row = row or AppSetting(name="bot_username", value="")
        row.value = username
        session.add(row)


if __name__ == "__main__":
    app()
