"""/task: the office creates a 抽查任务 step by step (buttons or typed answers, 返回/取消 on
every step); /tasks in the office group lists the tasks. States: handlers/tasks.mmd."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.app import Services
from bot.chats import binding_of
from bot.clock import local_date
from bot.draw import DEFAULT_CLASS_RATIOS, Mode
from bot.people import Identity
from bot.render import render, text
from bot.tasks import (
    ADVANCED_STEPS,
    MAX_BUTTONS,
    MAX_WORKING_DAYS,
    MULTI_STEPS,
    STEPS,
    TaskInvalid,
    TaskProblem,
    accept_codes,
    advanced_settings,
    check_spec,
    create_task,
    list_tasks,
    next_step,
    parse_bool,
    parse_codes,
    parse_credit_ratios,
    parse_filters,
    parse_group_size,
    parse_method,
    parse_mode,
    parse_name,
    parse_policy,
    parse_ratio,
    parse_setting,
    parse_window,
    parse_year,
    percent,
    ratio_text,
    set_setting,
    spec_from_draft,
    step_options,
)
from bot.telegram import TaskCb
from handlers.results import edit_in_place

log = logging.getLogger(__name__)


class TaskDialog(StatesGroup):
    name = State()
    year = State()
    departments = State()
    lead = State()
    items = State()
    filters = State()
    policy = State()
    ratios = State()
    window = State()
    mode = State()
    stations = State()
    group = State()
    method = State()
    mergeable = State()
    confirm = State()
    advanced = State()
    setting = State()


STATE_OF: dict[str, State] = {step: getattr(TaskDialog, step) for step in (*STEPS, *ADVANCED_STEPS)}
STEP_OF: dict[str | None, str] = {s.state: step for step, s in STATE_OF.items()}
_CUSTOM_WORDS = {"credit_custom", "自定义", "自定义比例", "信用分类自定义"}
_STATION_MODES = (Mode.STATIONS.value, Mode.STATION.value)
# The steps whose question carries these buttons; pressed (or forged) elsewhere they are stale.
_ACT_STEPS = {
    "toggle": MULTI_STEPS,
    "done": (*MULTI_STEPS, "filters"),
    "reinspect": ("confirm",),
    "create": ("confirm",),
    "advanced": ("confirm",),
}


# --- showing a step --------------------------------------------------------------------------


async def _screen(
    services: Services, state: FSMContext, step: str
) -> tuple[str, InlineKeyboardMarkup]:
    """The step's question and buttons, for the draft as it stands."""
    data = await state.get_data()
    draft: dict[str, Any] = data.get("draft", {})
    today = local_date(services.clock, services.settings.timezone)
    checked = None
    problems: list[str] = []
    async with services.db.read() as session:
        options = await step_options(session, step, draft, today=today)
        if step == "confirm":
            try:
                checked = await check_spec(session, spec_from_draft(draft), today=today)
            except TaskInvalid as invalid:
                problems = invalid.messages()
    await state.update_data(opts=[value for value, _ in options])
    body = render(
        "tasks/step.j2",
        step=step,
        draft=draft,
        options=options,
        typed_only=len(options) > MAX_BUTTONS,
        checked=checked,
        problems=problems,
        today=today,
        percents={k: percent(v) for k, v in draft.get("ratios", {}).items()},
        defaults={c: percent(r) for c, r in DEFAULT_CLASS_RATIOS.items()},
        settings=advanced_settings(draft),
        max_days=MAX_WORKING_DAYS,
    )
    return body, _keyboard(step, options, draft, bool(data.get("hist")), not problems)


def _keyboard(
    step: str, options: list[tuple[str, str]], draft: dict[str, Any], back: bool, can_create: bool
) -> InlineKeyboardMarkup:
    rows: list[list[InlineKeyboardButton]] = []

    def button(label: str, act: str, n: int = -1) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            text=label, callback_data=TaskCb(step=step, act=act, n=n).pack()
        )

    if len(options) <= MAX_BUTTONS:
        chosen = set(draft.get(step, [])) if step in MULTI_STEPS else set()
        row: list[InlineKeyboardButton] = []
        for n, (value, label) in enumerate(options):
            short = label if len(label) <= 28 else label[:27] + "…"
            if step in MULTI_STEPS:
                mark = text("task.button.chosen") if value in chosen else ""
                row.append(button(mark + short, "toggle", n))
            else:
                row.append(button(short, "pick", n))
            if len(row) == (1 if step in ("items", "policy", "mode", "advanced") else 2):
                rows.append(row)
                row = []
        if row:
            rows.append(row)
    if step in MULTI_STEPS:
        rows.append([button(text("task.button.done", n=len(draft.get(step, []))), "done")])
    if step == "filters":
        rows.append([button(text("task.button.no_filters"), "done")])
    if step == "confirm":
        if can_create:
            rows.append([button(text("task.button.create"), "create")])
        key = "task.button.reinspect_on" if draft.get("reinspect") else "task.button.reinspect_off"
        rows.append([button(text(key), "reinspect")])
        rows.append([button(text("task.button.advanced"), "advanced")])
    if step == "advanced":
        rows.append([button(text("task.button.advanced_done"), "back")])
    nav = [button(text("task.button.back"), "back")] if back else []
    nav.append(button(text("button.cancel"), "cancel"))
    rows.append(nav)
    return InlineKeyboardMarkup(inline_keyboard=rows)


async def _show_new(message: Message, services: Services, state: FSMContext, step: str) -> None:
    """Ask `step` in a new message; the previous question loses its buttons."""
    body, keyboard = await _screen(services, state, step)
    previous = (await state.get_data()).get("msg")
    sent = await message.answer(body, reply_markup=keyboard)
    await state.update_data(msg=sent.message_id)
    if previous:
        await _drop_buttons(message, previous)


async def _drop_buttons(message: Message, message_id: int) -> None:
    """The previous question loses its buttons (tidying only: failures do not matter)."""
    if message.bot is None:
        return
    with contextlib.suppress(TelegramBadRequest):
        await message.bot.edit_message_reply_markup(
            chat_id=message.chat.id, message_id=message_id, reply_markup=None
        )


async def _show_here(message: Message, services: Services, state: FSMContext, step: str) -> None:
    """Ask `step` by editing the question the button was on."""
    body, keyboard = await _screen(services, state, step)
    await edit_in_place(message, body, keyboard)
    await state.update_data(msg=message.message_id)


async def _go(state: FSMContext, step: str, updates: dict[str, Any]) -> str:
    """Record the answer to `step` and move to the next step (from an advanced setting: back
    to the list of settings)."""
    data = await state.get_data()
    draft = {**data.get("draft", {}), **updates}
    hist = list(data.get("hist", []))
    if step == "setting":
        nxt = hist.pop() if hist else "advanced"
    else:
        nxt = next_step(step, draft)
        hist.append(step)
    await state.update_data(draft=draft, hist=hist)
    await state.set_state(STATE_OF[nxt])
    return nxt


async def _enter(state: FSMContext, step: str, updates: dict[str, Any]) -> str:
    """Open `step` from the current one (高级设置 from the summary, a setting from the list);
    返回 comes back."""
    data = await state.get_data()
    current = STEP_OF.get(await state.get_state(), "confirm")
    draft = {**data.get("draft", {}), **updates}
    await state.update_data(draft=draft, hist=[*data.get("hist", []), current])
    await state.set_state(STATE_OF[step])
    return step


# --- entering and leaving ----------------------------------------------------------------------


async def task_start(message: Message, state: FSMContext, services: Services) -> None:
    """/task: start a new task (in the private chat: groups do not see typed answers)."""
    if message.chat.type != "private":
        await message.answer(render("tasks/private_only.j2"))
        return
    await state.clear()
    await state.set_state(TaskDialog.name)
    await state.set_data({"draft": {}, "hist": []})
    await _show_new(message, services, state, "name")


async def task_cancel(message: Message, state: FSMContext) -> None:
    """/cancel inside the dialog."""
    data = await state.get_data()
    await state.clear()
    if data.get("msg"):
        await _drop_buttons(message, data["msg"])
    await message.answer(render("tasks/cancelled.j2"))


# --- typed answers -----------------------------------------------------------------------------


async def _typed_value(
    services: Services, step: str, value: str, draft: dict[str, Any]
) -> dict[str, Any]:
    """What a typed answer means for `step`; raises TaskProblem with a hint."""
    if step == "name":
        return {"name": parse_name(value)}
    if step == "year":
        return {"year": parse_year(value)}
    if step in ("departments", "items", "stations"):
        async with services.db.read() as session:
            return {step: await accept_codes(session, step, draft, parse_codes(value))}
    if step == "lead":
        code = value.strip()
        if code not in draft.get("departments", []):
            raise TaskProblem("lead_not_participating", code=code)
        return {"lead": code}
    if step == "filters":
        return {"filters": parse_filters(value)}
    if step == "policy":
        if value.strip().lower() in _CUSTOM_WORDS:
            return {"policy": "credit_custom", "ratios": {}}
        return {"policy": parse_policy(value).value, "ratios": {}}
    if step == "ratios":
        if draft.get("policy") == "flat":
            return {"ratios": {"flat": ratio_text(parse_ratio(value))}}
        return {"ratios": parse_credit_ratios(value)}
    if step == "window":
        start, end = parse_window(value)
        today = local_date(services.clock, services.settings.timezone)
        if end < today:
            raise TaskProblem("window_past", end=end.isoformat())
        return {"window": [start.isoformat(), end.isoformat()]}
    if step == "mode":
        return await _mode(services, parse_mode(value).value, draft)
    if step == "group":
        return {"group": _group(parse_group_size(value), draft)}
    if step == "method":
        return {"method": parse_method(value)}
    if step == "mergeable":
        return {"mergeable": parse_bool(value)}
    if step == "setting":
        key = draft["editing"]
        return set_setting(draft, key, parse_setting(key, value))
    if step == "advanced":
        raise TaskProblem("advanced_use_buttons")
    raise TaskProblem("use_buttons")


async def _mode(services: Services, mode: str, draft: dict[str, Any]) -> dict[str, Any]:
    if mode in _STATION_MODES:
        async with services.db.read() as session:
            today = local_date(services.clock, services.settings.timezone)
            if not await step_options(session, "stations", draft, today=today):
                raise TaskProblem("no_stations")
    return {"mode": mode, "stations": []}


def _group(size: int, draft: dict[str, Any]) -> int:
    departments = len(draft.get("departments", []))
    if size < departments:
        raise TaskProblem("group_too_small", size=size, departments=departments)
    return size


async def typed_answer(message: Message, state: FSMContext, services: Services) -> None:
    """A typed answer to the current step; anything unusable gets a hint and the step stays."""
    step = STEP_OF.get(await state.get_state(), "name")
    data = await state.get_data()
    try:
        updates = await _typed_value(services, step, message.text or "", data.get("draft", {}))
    except TaskProblem as problem:
        await message.answer(render("tasks/hint.j2", step=step, problem=problem.message()))
        return
    nxt = await _go(state, step, updates)
    await _show_new(message, services, state, nxt)


async def not_text(message: Message) -> None:
    """A photo, file or sticker while the dialog waits for an answer."""
    await message.answer(render("tasks/hint.j2", step="", problem=text("task.problem.not_text")))


# --- buttons -----------------------------------------------------------------------------------


async def pressed(
    callback: CallbackQuery,
    callback_data: TaskCb,
    state: FSMContext,
    services: Services,
    identity: Identity,
) -> None:
    """A button of the dialog; only the current question's buttons act."""
    message = callback.message
    step = callback_data.step
    data = await state.get_data()
    current = STEP_OF.get(await state.get_state())
    if (
        not isinstance(message, Message)
        or current != step
        or data.get("msg") not in (None, message.message_id)
        or step not in _ACT_STEPS.get(callback_data.act, (step,))
    ):
        await callback.answer(text("task.stale"), show_alert=True)
        return
    draft: dict[str, Any] = dict(data.get("draft", {}))
    options: list[str] = data.get("opts", [])
    act, n = callback_data.act, callback_data.n
    value = options[n] if 0 <= n < len(options) else None
    if act in ("pick", "toggle") and value is None:
        await callback.answer(text("task.stale"), show_alert=True)
        return
    try:
        if act == "cancel":
            await state.clear()
            await edit_in_place(message, render("tasks/cancelled.j2"), None)
        elif act == "back":
            hist = list(data.get("hist", []))
            previous = hist.pop() if hist else step
            await state.update_data(hist=hist)
            await state.set_state(STATE_OF[previous])
            await _show_here(message, services, state, previous)
        elif act == "toggle":
            chosen = list(draft.get(step, []))
            chosen = [c for c in chosen if c != value] if value in chosen else [*chosen, value]
            if step == "stations" and draft.get("mode") == Mode.STATION.value:
                chosen = [value] if value in chosen else []
            draft[step] = chosen
            await state.update_data(draft=draft)
            await _show_here(message, services, state, step)
        elif act == "done":
            if step == "filters":
                updates: dict[str, Any] = {"filters": {}}
            else:
                chosen = list(draft.get(step, []))
                if not chosen and not (
                    step == "stations" and draft.get("mode") == Mode.BUREAU_STATIONS.value
                ):
                    raise TaskProblem(f"{step}_none")
                updates = {step: chosen}
            await _show_here(message, services, state, await _go(state, step, updates))
        elif act == "pick" and step == "advanced":
            entered = await _enter(state, "setting", {"editing": value})
            await _show_here(message, services, state, entered)
        elif act == "pick":
            assert value is not None
            updates = await _picked(services, step, value, draft)
            await _show_here(message, services, state, await _go(state, step, updates))
        elif act == "reinspect":
            draft["reinspect"] = not draft.get("reinspect", False)
            await state.update_data(draft=draft)
            await _show_here(message, services, state, step)
        elif act == "advanced":
            await _show_here(message, services, state, await _enter(state, "advanced", {}))
        elif act == "create":
            await _create(message, state, services, identity, draft)
    except TaskProblem as problem:
        await callback.answer(problem.message(), show_alert=True)
        return
    await callback.answer()


async def _picked(
    services: Services, step: str, value: str, draft: dict[str, Any]
) -> dict[str, Any]:
    if step == "year":
        return {"year": int(value)}
    if step == "lead":
        return {"lead": value}
    if step == "policy":
        return {"policy": value, "ratios": {}}
    if step == "mode":
        return await _mode(services, value, draft)
    if step == "group":
        return {"group": _group(int(value), draft)}
    if step == "method":
        return {"method": value}
    if step == "mergeable":
        return {"mergeable": value == "yes"}
    if step == "setting":
        return set_setting(draft, draft["editing"], None)
    raise TaskProblem("use_buttons")


async def _create(
    message: Message,
    state: FSMContext,
    services: Services,
    identity: Identity,
    draft: dict[str, Any],
) -> None:
    today = local_date(services.clock, services.settings.timezone)
    try:
        async with services.db.session() as session:
            created = await create_task(
                session,
                spec_from_draft(draft),
                actor=f"tg:{identity.tg_user_id}",
                now=services.clock.now(),
                today=today,
            )
    except TaskInvalid:
        # Something changed since the summary (a directory import): show it again.
        await _show_here(message, services, state, "confirm")
        return
    await state.clear()
    await edit_in_place(message, render("tasks/created.j2", created=created), None)


# --- /tasks in the office group --------------------------------------------------------------


async def tasks_in_group(message: Message, services: Services) -> None:
    """/tasks in the office group: every task with where it stands."""
    async with services.db.read() as session:
        binding = await binding_of(session, message.chat.id)
        if binding is None or binding.kind != "office":
            await message.answer(render("tasks/office_group_only.j2"))
            return
        summaries = await list_tasks(session)
    await message.answer(render("tasks/list.j2", tasks=summaries))


def create_router() -> Router:
    router = Router(name="tasks")
    router.message.register(task_start, Command("task"), flags={"role": "office"})
    router.message.register(
        tasks_in_group,
        Command("tasks"),
        F.chat.type.in_({"group", "supergroup"}),
        flags={"role": "known"},
    )
    router.message.register(task_cancel, Command("cancel"), StateFilter(TaskDialog))
    router.message.register(
        typed_answer,
        StateFilter(TaskDialog),
        F.chat.type == "private",
        F.text,
        ~F.text.startswith("/"),
        flags={"role": "office"},
    )
    router.message.register(not_text, StateFilter(TaskDialog), F.chat.type == "private", ~F.text)
    router.callback_query.register(pressed, TaskCb.filter(), flags={"role": "office"})
    return router
