"""`dsr`: the command line of the office's server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from bot.clock import SystemClock
from bot.config import Settings
from bot.render import render_plain, text

if TYPE_CHECKING:  # SQLAlchemy and the models: imported by the commands, after `dsr import`
    from storage.db import Database  # has started reading a spreadsheet (storage.tabular)

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
    from storage.db import Database

    settings = _settings()

    async def main() -> T:
        db = Database(settings.database_url)
        try:
            await db.upgrade_if_needed()
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


def upgrade(url: str) -> None:
    """`storage.db.upgrade`, imported only by the command that needs it."""
    from storage import db

    db.upgrade(url)
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
    from storage.tabular import read_ahead

    settings = _settings()
    read_ahead(file, settings.import_max_bytes)  # while the rest of the CLI is imported

    from bot.directories import import_file
    from storage.directory import KIND_ALIASES

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
    if kind.lower() in TASK_KINDS:  # issue 3: the task template (dsr task create --from)
        from bot.tasks import write_task_template

        write_task_template(out)
        typer.echo(text("cli.template_written", path=out))
        return
    from bot.directories import write_template
    from storage.directory import KIND_ALIASES, SCHEMAS

    resolved = KIND_ALIASES.get(kind.lower())
    if resolved is None or resolved not in SCHEMAS:
        raise _fail(text("cli.unknown_kind", kind=kind))
    write_template(resolved, out)
    typer.echo(text("cli.template_written", path=out))


calendar_app = typer.Typer(help=text("holiday.cli.group"), no_args_is_help=True)
notices_app = typer.Typer(help=text("notice.cli.group"), no_args_is_help=True)
app.add_typer(calendar_app, name="calendar")
app.add_typer(notices_app, name="notices")


@calendar_app.command("load", help=text("holiday.cli.load"))
def calendar_load(
    file: Annotated[Path, typer.Argument(help=text("holiday.cli.file"))],
) -> None:
    from bot.duties import load_holidays
    from storage.tabular import FileProblem, open_rows

    async def work(db: Database, settings: Settings) -> int:
        try:
            rows = [cells for _, cells in open_rows(file, settings.import_max_bytes).rows]
        except FileProblem as problem:
            typer.echo(
                render_plain("notices/holidays_problem.j2", key=problem.key, params=problem.params),
                err=True,
            )
            return 2
        async with db.session() as session:
            report = await load_holidays(session, rows, actor="cli", now=SystemClock().now())
        typer.echo(render_plain("notices/holidays_report.j2", report=report))
        return 0 if report.applied else 1

    code = _with_db(work)
    if code:
        raise typer.Exit(code)


@notices_app.command("export", help=text("notice.cli.export"))
def notices_export(
    out: Annotated[Path | None, typer.Option("--out", help=text("notice.cli.export_out"))] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help=text("notice.cli.export_pending"))
    ] = False,
) -> None:
    from bot.clock import local_date
    from bot.duties import load_calendar
    from bot.notices import export_notices

    async def work(db: Database, settings: Settings) -> int:
        today = local_date(SystemClock(), settings.timezone)
        path = out or Path(f"notices-{today:%Y%m%d}.xlsx")
        async with db.read() as session:
            count = await export_notices(
                session,
                path,
                calendar=await load_calendar(session),
                today=today,
                tz=settings.timezone,
                pending_only=pending,
            )
        typer.echo(text("notice.cli.exported", count=count, path=path))
        return 0

    _with_db(work)


# --- issue 3: tasks and draws ------------------------------------------------------------------

TASK_KINDS = ("task", "tasks", "任务")
task_app = typer.Typer(help=text("draw.cli.task"), no_args_is_help=True)
app.add_typer(task_app, name="task")


@task_app.command("create", help=text("draw.cli.task_create"))
def task_create(
    file: Annotated[Path, typer.Option("--from", help=text("draw.cli.task_from"))],
) -> None:
    from bot.clock import local_date
    from bot.tasks import FileCreated, TaskProblem, create_tasks_from_file
    from storage.tabular import FileProblem

    class _Rollback(Exception):
        pass

    async def work(db: Database, settings: Settings) -> int:
        clock = SystemClock()
        outcome = FileCreated()
        try:
            async with db.session() as session:
                outcome = await create_tasks_from_file(
                    session,
                    file,
                    actor="cli",
                    now=clock.now(),
                    today=local_date(clock, settings.timezone),
                )
                if outcome.problems:
                    raise _Rollback
        except _Rollback:
            typer.echo(render_plain("tasks/file_problems.j2", problems=outcome.problems), err=True)
            return 1
        except TaskProblem as problem:
            typer.echo(problem.message(), err=True)
            return 2
        except FileProblem as problem:
            typer.echo(text(f"import_error.{problem.key}", **problem.params), err=True)
            return 2
        typer.echo(render_plain("tasks/file_created.j2", created=outcome.created))
        return 0

    code = _with_db(work)
    if code:
        raise typer.Exit(code)


@task_app.command("list", help=text("draw.cli.task_list"))
def task_list() -> None:
    from bot.tasks import list_tasks

    async def work(db: Database, settings: Settings) -> int:
        async with db.read() as session:
            summaries = await list_tasks(session)
        typer.echo(render_plain("tasks/list.j2", tasks=summaries))
        return 0

    _with_db(work)


@app.command("draw", help=text("draw.cli.draw"))
def draw(
    what: Annotated[str, typer.Argument(help=text("draw.cli.draw_what"))],
    draw_id: Annotated[int | None, typer.Argument(help=text("draw.cli.draw_id"))] = None,
    out: Annotated[Path | None, typer.Option("--out", help=text("draw.cli.draw_out"))] = None,
    mode: Annotated[str | None, typer.Option("--mode", help=text("draw.cli.draw_mode"))] = None,
) -> None:
    from bot.draws import DrawProblem, commit_draw, execute_draw, record_json
    from bot.tasks import TaskProblem, parse_mode

    if what == "record":
        if draw_id is None or out is None:
            raise _fail(text("draw.cli.record_usage"))
        record_id: int = draw_id

        async def export(db: Database, settings: Settings) -> int:
            try:
                async with db.read() as session:
                    content = await record_json(session, draw_id=record_id)
            except DrawProblem as problem:
                typer.echo(problem.message(), err=True)
                return 2
            assert out is not None
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(content, encoding="utf-8")
            typer.echo(text("draw.cli.record_written", path=out))
            return 0

        code = _with_db(export)
        if code:
            raise typer.Exit(code)
        return
    if not what.isdigit() or draw_id is not None:
        raise _fail(text("draw.cli.draw_usage"))
    try:
        chosen = parse_mode(mode).value if mode else None
    except TaskProblem as problem:
        raise _fail(problem.message()) from None
    task_id = int(what)

    async def work(db: Database, settings: Settings) -> int:
        clock = SystemClock()
        # Two transactions, as in chat: the commitment is stored (and queued for the office
        # group) before the seed is used.
        try:
            async with db.session() as session:
                commitment = await commit_draw(
                    session,
                    task_id=task_id,
                    actor="cli",
                    now=clock.now(),
                    mode=chosen,
                    with_buttons=False,
                )
            typer.echo(render_plain("draws/commitment.j2", c=commitment, note=None))
            typer.echo("")
            async with db.session() as session:
                execution = await execute_draw(
                    session,
                    draw_id=commitment.draw_id,
                    actor="cli",
                    now=clock.now(),
                    tz=settings.timezone,
                    office_admins=settings.office_admins,
                )
        except DrawProblem as problem:
            typer.echo(problem.message(), err=True)
            return 2
        if execution.drifted:
            typer.echo(render_plain("draws/drifted.j2", e=execution), err=True)
            return 1
        typer.echo(render_plain("draws/executed_office.j2", e=execution))
        if execution.shortfalls or execution.merged:
            typer.echo("")
            typer.echo(render_plain("draws/executed_detail.j2", e=execution))
        return 0

    code = _with_db(work)
    if code:
        raise typer.Exit(code)


@app.command("verify", help=text("draw.cli.verify"))
def verify(
    file: Annotated[Path, typer.Argument(help=text("draw.cli.verify_file"))],
) -> None:
    from bot.draws import DrawProblem, verify_text

    try:
        raw = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise _fail(text("import_error.file_missing", name=file.name)) from None
    try:
        problems = verify_text(raw)
    except DrawProblem as problem:
        raise _fail(problem.message()) from None
    typer.echo(render_plain("draws/verify_file.j2", problems=problems, name=file.name))
    if problems:
        raise typer.Exit(1)


async def _bot_username(db: Database, settings: Settings) -> str | None:
    from sqlmodel import select

    from storage.models import AppSetting

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
    from bot.invites import parse_invite_args, write_invites
    from bot.people import InviteProblem, issue_invites

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
            render_plain(
                "invites/issued.j2",
                issued=issued,
                username=username,
                request=request,
                tz=settings.timezone,
            )
        )
        if out is not None:
            write_invites(issued, username, out, settings.timezone)
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
    from bot.scheduler import Background, periodic_jobs
    from bot.sender import DeliveryLimiter, Sender
    from bot.telegram import AiogramTransport
    from storage.db import Database

    db = Database(settings.database_url)
    await db.upgrade_if_needed()
    services = Services(settings=settings, db=db)
    bot = create_bot(settings)
    dispatcher = create_dispatcher(services)
    sender = Sender(
        db,
        AiogramTransport(bot),
        services.clock,
        limiter=DeliveryLimiter.from_settings(settings),
        office_admins=settings.office_admins,
    )
    try:
        me = await bot.me()
        await remember_username(db, me.username or "")
        await register_commands(bot)
        typer.echo(text("cli.starting", username=me.username))
        # Polling returns on SIGINT/SIGTERM; leaving the block lets sends in flight finish.
        async with Background(sender, periodic_jobs(services), idle=settings.sender_idle_s):
            await dispatcher.start_polling(bot, handle_signals=True)
    finally:
        await bot.session.close()
        await db.dispose()


@app.command("demo", help=text("demo.cli.help"))
def demo(
    reset: Annotated[bool, typer.Option("--reset", help=text("demo.cli.reset"))] = False,
    speed: Annotated[float, typer.Option("--speed", help=text("demo.cli.speed"))] = 0.0,
    port: Annotated[int, typer.Option("--port", help=text("demo.cli.port"))] = 8080,
    headless_check: Annotated[
        bool, typer.Option("--headless-check", help=text("demo.cli.headless_check"))
    ] = False,
) -> None:
    from bot.demo import main  # the demo pulls in aiogram and the web page; load on demand

    if headless_check:
        code = main.headless_check()
    else:
        code = main.serve(reset=reset, speed=speed, port=port)
    if code:
        raise typer.Exit(code)


async def remember_username(db: Database, username: str) -> None:
    """The CLI builds invite links offline from what the running bot learnt."""
    from sqlmodel import select

    from storage.models import AppSetting

    async with db.session() as session:
        row = (
            await session.exec(select(AppSetting).where(AppSetting.name == "bot_username"))
        ).first()
        row = row or AppSetting(name="bot_username", value="")
        row.value = username
        session.add(row)


if __name__ == "__main__":
    app()
