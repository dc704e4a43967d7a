"""/tasks and /review in a private chat: what waits for the caller, one button per thing to do.
(/tasks in the office group is the task list of handlers/tasks.py.)"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.types import Message

from bot.app import Services
from bot.clock import local_date
from bot.outbox import Keyboard
from bot.people import Identity
from bot.render import render, text
from bot.telegram import (
    AssignmentCb,
    CoSignCb,
    FollowUpCb,
    RecusalCb,
    ResultCb,
    ReviewCb,
    TransferCb,
)
from bot.worklist import Next, Row, Waiting, waiting_items, worklist
from handlers.results import markup

NAME_CHARS = 14  # a target's name on a button, shortened


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def row_button(row: Row) -> tuple[str, str] | None:
    name = _short(row.target_name)
    match row.next:
        case Next.CONFIRM:
            return text("button.assignment.work_confirm", name=name), AssignmentCb(
                action="show", assignment_id=row.assignment_id
            ).pack()
        case Next.ENTER:
            return text("button.assignment.work_enter", name=name), ResultCb(
                action="open", inspection_id=row.inspection_id
            ).pack()
        case Next.RESUME:
            return text("button.assignment.work_resume", name=name), ResultCb(
                action="open", inspection_id=row.inspection_id
            ).pack()
        case Next.COSIGN:
            return text("button.assignment.work_cosign", name=name), CoSignCb(
                action="show", cosign_id=row.cosign_id
            ).pack()
        case Next.FOLLOWUP:
            return text("button.assignment.work_followup", name=name), FollowUpCb(
                action="list", ref=row.inspection_id
            ).pack()
    return None


def recusal_button(row: Row) -> list[tuple[str, str]]:
    """申请回避 beside a confirmed inspection's button, while nothing has been submitted."""
    if not row.recusable:
        return []
    data = AssignmentCb(action="recuse", assignment_id=row.assignment_id).pack()
    return [(text("button.assignment.recuse"), data)]


def waiting_button(item: Waiting) -> tuple[str, str]:
    name = _short(item.title)
    if item.kind == "recusal":
        return text("button.assignment.work_recusal", name=name), RecusalCb(
            action="show", request_id=item.ref
        ).pack()
    if item.kind == "review":
        return text("button.assignment.work_review", name=name), ReviewCb(
            action="show", result_id=item.ref, version=item.version
        ).pack()
    return text("button.assignment.work_transfer", name=name), TransferCb(
        action="show", transfer_id=item.ref
    ).pack()


async def tasks(
    message: Message, state: FSMContext, services: Services, identity: Identity
) -> None:
    """/tasks: my open inspections (status, deadline, next step), and what waits for me."""
    # Leaving any half-answered question; a result draft is in the database and resumes.
    await state.set_state(None)
    today = local_date(services.clock, services.settings.timezone)
    async with services.db.read() as session:
        work = await worklist(session, identity, today=today, tz=services.settings.timezone)
    rows: Keyboard = []
    for row in work.rows:
        button = row_button(row)
        if button is not None:
            rows.append([button, *recusal_button(row)])
    rows.extend([waiting_button(item)] for item in work.waiting)
    await message.answer(
        render("assignments/worklist.j2", w=work, identity=identity, today=today),
        reply_markup=markup(rows),
    )


async def review_list(
    message: Message, state: FSMContext, services: Services, identity: Identity
) -> None:
    """/review: recusal requests, results to review and transfers waiting for me."""
    await state.set_state(None)
    async with services.db.read() as session:
        waiting = await waiting_items(session, identity, tz=services.settings.timezone)
    rows: Keyboard = [[waiting_button(item)] for item in waiting]
    await message.answer(
        render("review/waiting.j2", waiting=waiting, identity=identity), reply_markup=markup(rows)
    )


def create_router() -> Router:
    router = Router(name="worklist")
    router.message.filter(F.chat.type == "private")
    router.message.register(tasks, Command("tasks"), flags={"role": "known"})
    router.message.register(review_list, Command("review"), flags={"role": "known"})
    return router
