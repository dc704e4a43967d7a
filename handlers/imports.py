"""/import: the office sends a directory file; the bot answers with the report."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import BufferedInputFile, Document, FSInputFile, Message

from bot.app import Services
from bot.chats import binding_of
from bot.directories import import_file, write_template
from bot.people import Identity
from bot.render import render
from handlers.results import edit_in_place
from storage.directory import KIND_ALIASES, SCHEMAS

PROGRESS_EVERY_S = 2.0


class ImportDialog(StatesGroup):
    waiting_file = State()


async def _office_chat(message: Message, services: Services) -> bool:
    """Imports happen privately or in the office group, never in a department group."""
    if message.chat.type == "private":
        return True
    async with services.db.read() as session:
        binding = await binding_of(session, message.chat.id)
    if binding is not None and binding.kind == "office":
        return True
    await message.answer(render("imports/wrong_chat.j2"))
    return False


def _kind(args: str | None) -> tuple[str | None, bool]:
    """The kind named after /import, and whether what was named is understood."""
    word = (args or "").strip().split(maxsplit=1)[0] if (args or "").strip() else ""
    if not word:
        return None, True
    kind = KIND_ALIASES.get(word.lower())
    return kind, kind is not None


async def import_with_caption(
    message: Message,
    command: CommandObject,
    bot: Bot,
    services: Services,
    identity: Identity,
    state: FSMContext,
) -> None:
    """A document sent with the caption /import [kind]."""
    kind, understood = _kind(command.args)
    if not understood:
        await message.answer(render("imports/unknown_kind.j2"))
        return
    if await _office_chat(message, services):
        await _run(message, bot, services, identity, kind)


async def import_start(
    message: Message, command: CommandObject, services: Services, state: FSMContext
) -> None:
    """Ask for the file."""
    kind, understood = _kind(command.args)
    if not understood:
        await message.answer(render("imports/unknown_kind.j2"))
        return
    if not await _office_chat(message, services):
        return
    await state.set_state(ImportDialog.waiting_file)
    await state.update_data(kind=kind)
    await message.answer(render("imports/send_file.j2", kind=kind))


async def import_cancel(message: Message, state: FSMContext) -> None:
    """Leave the import without sending a file."""
    await state.clear()
    await message.answer(render("imports/cancelled.j2"))


async def import_file_received(
    message: Message, bot: Bot, services: Services, identity: Identity, state: FSMContext
) -> None:
    """The file the office was asked for."""
    data = await state.get_data()
    await state.clear()
    await _run(message, bot, services, identity, data.get("kind"))


async def import_not_a_file(message: Message) -> None:
    """Anything but a document while we wait for one."""
    await message.answer(render("imports/not_a_file.j2"))


async def _run(
    message: Message, bot: Bot, services: Services, identity: Identity, kind: str | None
) -> None:
    document: Document | None = message.document
    assert document is not None
    name = document.file_name or "import.xlsx"
    limit_mb = min(services.settings.telegram_file_max_mb, services.settings.import_max_mb)
    if document.file_size is not None and document.file_size > limit_mb * 1024 * 1024:
        await message.answer(render("imports/too_big.j2", mb=limit_mb))
        return
    status = await message.answer(render("imports/started.j2", name=name))
    last = time.monotonic()

    async def progress(rows: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            await edit_in_place(status, render("imports/progress.j2", name=name, rows=rows))

    with tempfile.TemporaryDirectory(prefix="dsr-import-") as folder:
        path = Path(folder) / Path(name).name
        await bot.download(document, destination=path)
        report = await import_file(
            services.db,
            path,
            kind=kind,
            actor=f"tg:{identity.tg_user_id}",
            clock=services.clock,
            max_bytes=services.settings.import_max_bytes,
            error_limit=services.settings.import_error_limit,
            progress=progress,
            display_name=name,
        )
        await edit_in_place(status, render("imports/report.j2", report=report))
        if report.error_file is not None:
            await message.answer_document(
                FSInputFile(report.error_file, filename=report.error_file.name),
                caption=render("imports/error_file.j2", count=report.outcome.rejected_rows),
            )
        elif report.report_file is not None:
            await message.answer_document(
                FSInputFile(report.report_file, filename=report.report_file.name),
                caption=render("imports/report_file.j2"),
            )


async def template(message: Message, command: CommandObject) -> None:
    """/template KIND: the Excel template to fill in."""
    kind, understood = _kind(command.args)
    if kind is None or not understood or kind not in SCHEMAS:
        await message.answer(render("imports/template_usage.j2"))
        return
    with tempfile.TemporaryDirectory(prefix="dsr-template-") as folder:
        path = write_template(kind, Path(folder) / f"{kind}.xlsx")
        await message.answer_document(
            BufferedInputFile(
                path.read_bytes(), filename=render("imports/template_name.j2", kind=kind)
            ),
            caption=render("imports/template_caption.j2", kind=kind),
        )


def create_router() -> Router:
    router = Router(name="imports")
    router.message.register(
        import_with_caption, Command("import"), F.document, flags={"role": "office"}
    )
    router.message.register(import_start, Command("import"), flags={"role": "office"})
    router.message.register(
        import_cancel, Command("cancel"), StateFilter(ImportDialog.waiting_file)
    )
    router.message.register(
        import_file_received,
        StateFilter(ImportDialog.waiting_file),
        F.document,
        flags={"role": "office"},
    )
    # Other commands still work while we wait for the file.
    router.message.register(
        import_not_a_file, StateFilter(ImportDialog.waiting_file), ~F.text.startswith("/")
    )
    router.message.register(template, Command("template"), flags={"role": "office"})
    return router
