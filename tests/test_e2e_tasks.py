"""The /task dialog end to end: 高级设置 (so a task made in chat can equal one from a file),
garbage at every step, and /tasks in the office group. Real updates through the real
dispatcher against the Bot API fake; assertions on what the office sees and what is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlmodel import col, select

from bot.draws import commit_draw, void_draw
from bot.fakeapi import StoredMessage
from bot.tasks import create_task, create_tasks_from_file
from bot.telegram import TaskCb
from storage.models import Task
from tests.harness import OFFICE, Harness, text_of, unique_text
from tests.test_draws import OFFICE_CHAT, TODAY, run_draw, spec
from tests.test_e2e_draw import LIAISON_SJJ, answer, press, typed, world

ADVANCED = "⚙️ 高级设置（投诉阈值、各项期限）"
BACK_TO_SUMMARY = "✔️ 完成，回到确认"


async def hint(h: Harness, said: str, *expected: str) -> None:
    """Garbage typed at a step: one hint naming the problem; the question keeps its buttons."""
    shown = unique_text(await h.send(OFFICE, said))
    assert shown.startswith("⚠️"), shown
    assert all(e in shown for e in expected), shown


def still_asking(h: Harness, ask: StoredMessage, question: str) -> StoredMessage:
    """The question as it stands now: unchanged by the garbage, buttons and all."""
    now = h.fake.message(ask.chat_id, ask.message_id)
    assert question in text_of(now) and "取消" in now.button_texts()
    return now


async def joint_task_to_summary(h: Harness) -> StoredMessage:
    """A joint task using every step (lead, custom ratios, stations) up to the summary."""
    ask = await typed(h, OFFICE, "/task")
    ask = await typed(h, OFFICE, "联合抽查（高级设置）")
    ask = await press(h, OFFICE, ask, "2026")
    ask = await typed(h, OFFICE, "SJJ, SWJ")
    ask = await press(h, OFFICE, ask, "县税务局")
    ask = await typed(h, OFFICE, "SC001、SW001")
    ask = await typed(h, OFFICE, "区域=城关镇；行业=零售业")
    ask = await press(h, OFFICE, ask, "信用分类（自定义比例）")
    ask = await typed(h, OFFICE, "A=2% D=25%")
    ask = await typed(h, OFFICE, "2026-04-01 至 2026-06-30")
    ask = await press(h, OFFICE, ask, "单一所内随机")
    ask = await press(h, OFFICE, ask, "城关市场监管所")
    ask = await press(h, OFFICE, ask, "完成（已选 1 项）")
    ask = await press(h, OFFICE, ask, "3 人")
    ask = await press(h, OFFICE, ask, "书面")
    ask = await press(h, OFFICE, ask, "不合并")
    assert "请确认抽查任务" in text_of(ask), text_of(ask)
    return ask


async def test_advanced_settings_make_the_chat_task_equal_the_file_task(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    await world(h)
    summary = await joint_task_to_summary(h)
    assert "高级设置：均为默认" in text_of(summary)
    assert ADVANCED in summary.button_texts()

    # The list: every setting with its value and its default.
    ask = await press(h, OFFICE, summary, ADVANCED)
    shown = text_of(ask)
    assert "高级设置" in shown and "投诉举报阈值：3 次（默认）" in shown
    assert "督办单新期限：5 个工作日（默认）" in shown and "结果公示：20 个工作日（默认）" in shown
    assert ask.button_texts() == [
        "投诉举报阈值：3 次（默认）",
        "确认接收：2 个工作日（默认）",
        "成员会签：2 个工作日（默认）",
        "联络员复核：3 个工作日（默认）",
        "结果公示：20 个工作日（默认）",
        "后续处置录入：20 个工作日（默认）",
        "督办单新期限：5 个工作日（默认）",
        BACK_TO_SUMMARY,
        "◀ 返回",
        "取消",
    ]
    await hint(h, "5", "请点击上面消息中的按钮")

    # One setting: typed, checked, with a Chinese hint on garbage.
    ask = await press(h, OFFICE, ask, "投诉举报阈值：3 次（默认）")
    assert "请输入投诉举报阈值" in text_of(ask) and "默认 3" in text_of(ask)
    assert ask.button_texts() == ["恢复默认（3）", "◀ 返回", "取消"]
    await hint(h, "0", "不是有效的次数")
    await hint(h, "很多", "不是有效的次数")
    still_asking(h, ask, "请输入投诉举报阈值")
    ask = await typed(h, OFFICE, "5次")
    assert "投诉举报阈值：5 次（默认 3）" in text_of(ask)

    ask = await press(h, OFFICE, ask, "确认接收：2 个工作日（默认）")
    await hint(h, "2026", "1 到 250")
    await hint(h, "三天", "不是有效的期限")
    ask = await typed(h, OFFICE, "3个工作日")
    ask = await press(h, OFFICE, ask, "结果公示：20 个工作日（默认）")
    ask = await typed(h, OFFICE, "15")
    ask = await press(h, OFFICE, ask, "督办单新期限：5 个工作日（默认）")
    ask = await typed(h, OFFICE, "4 天")
    # Changed, then back to the default; and 返回 leaves a setting unchanged.
    ask = await press(h, OFFICE, ask, "成员会签：2 个工作日（默认）")
    ask = await typed(h, OFFICE, "6")
    ask = await press(h, OFFICE, ask, "成员会签：6 个工作日")
    ask = await press(h, OFFICE, ask, "恢复默认（2）")
    assert "成员会签：2 个工作日（默认）" in ask.button_texts()
    ask = await press(h, OFFICE, ask, "联络员复核：3 个工作日（默认）")
    ask = await press(h, OFFICE, ask, "◀ 返回")
    assert "联络员复核：3 个工作日（默认）" in ask.button_texts()

    summary = await press(h, OFFICE, ask, BACK_TO_SUMMARY)
    shown = text_of(summary)
    assert "请确认抽查任务" in shown
    assert (
        "高级设置：投诉举报阈值 5 次；确认接收 3 个工作日；结果公示 15 个工作日；"
        "督办单新期限 4 个工作日"
    ) in shown
    done = await press(h, OFFICE, summary, "✔️ 创建任务")
    assert "已创建" in text_of(done)

    # The same task written as a YAML file is stored the same way, column for column.
    path = tmp_path / "task.yaml"
    path.write_text(
        """
name: 联合抽查（高级设置）
year: 2026
items: SC001、SW001
departments: SJJ, SWJ
lead_department: SWJ
regions: 城关镇
industries: 零售业
ratio_policy: credit
ratio_a: 2%
ratio_d: 25%
flag_threshold: 5
window_start: 2026-04-01
window_end: 2026-06-30
selection_mode: 单一所内随机
stations: SJJ-CG
group_size: 3
method: 书面
mergeable: 否
deadlines: {confirm: 3, publish: 15, supervision: 4}
""",
        "utf-8",
    )
    async with h.services.db.session() as session:
        made = await create_tasks_from_file(
            session, path, actor="file", now=h.services.clock.now(), today=TODAY
        )
    assert not made.problems and len(made.created) == 1
    async with h.services.db.read() as session:
        chat, filed = list(await session.exec(select(Task).order_by(col(Task.id))))
    assert chat.flag_threshold == 5
    assert chat.deadlines == {"confirm": 3, "publish": 15, "supervision": 4}
    assert _columns(chat) == _columns(filed)


def _columns(task: Task) -> dict[str, Any]:
    return task.model_dump(exclude={"id", "created_by", "created_at", "updated_at"})


async def test_garbage_at_every_step_gets_a_hint_and_the_step_stays(harness: Harness) -> None:
    h = harness
    await world(h)
    ask = await typed(h, OFFICE, "/task")
    await hint(h, "名" * 201, "任务名称太长")
    ask = await typed(h, OFFICE, "逐步检查")
    await hint(h, "明年", "不是有效的年度")
    await hint(h, "1999", "不是有效的年度")
    ask = await press(h, OFFICE, still_asking(h, ask, "年度"), "2026")
    await hint(h, "XX", "XX", "不在部门名录")
    await hint(h, "SJJ-CG", "是市场监管所")
    photo = unique_text(await h.upload(OFFICE, b"GIF89a", "x.gif"))
    assert "文字回答" in photo
    ask = still_asking(h, ask, "参与部门")
    ask = await press(h, OFFICE, ask, "县市场监督管理局")
    ask = await press(h, OFFICE, ask, "县税务局")
    ask = await press(h, OFFICE, ask, "完成（已选 2 项）")
    await hint(h, "GAJ", "不是参与部门")
    ask = await press(h, OFFICE, still_asking(h, ask, "牵头部门"), "县市场监督管理局")
    await hint(h, "NOPE", "NOPE", "不在抽查事项清单")
    ask = still_asking(h, ask, "抽查事项")
    ask = await press(h, OFFICE, ask, "完成（已选 0 项）")  # nothing chosen: an alert
    assert "至少选择一个抽查事项" in str(answer(h)["text"])
    ask = await press(h, OFFICE, ask, "SC001 食品销售者检查")
    ask = await press(h, OFFICE, ask, "完成（已选 1 项）")
    await hint(h, "城关镇", "看不懂")
    await hint(h, "颜色=红", "看不懂")
    ask = await press(h, OFFICE, still_asking(h, ask, "检查对象范围"), "不限（全部对象）")
    await hint(h, "随便", "看不懂")
    ask = await press(h, OFFICE, still_asking(h, ask, "抽查比例方式"), "信用分类（自定义比例）")
    await hint(h, "A=很多", "看不懂")
    await hint(h, "E=5%", "看不懂")
    ask = await typed(h, OFFICE, "B=4%")
    await hint(h, "下个月", "两个日期")
    await hint(h, "2026-06-30 至 2026-04-01", "晚于结束日期")
    await hint(h, "2025-04-01 至 2025-06-30", "已经过去")
    await hint(h, "2026-02-30 至 2026-06-30", "不是有效的日期")
    ask = await typed(h, OFFICE, "2026-04-01 至 2026-06-30")
    await hint(h, "随便", "看不懂")
    ask = await press(h, OFFICE, still_asking(h, ask, "选派方式"), "若干所内随机")
    await hint(h, "SJJ", "不是参与部门下属的市场监管所")
    ask = still_asking(h, ask, "市场监管所")
    ask = await press(h, OFFICE, ask, "完成（已选 0 项）")
    assert "至少选择一个市场监管所" in str(answer(h)["text"])
    ask = await typed(h, OFFICE, "SJJ-CG SJJ-DC")
    await hint(h, "1", "2 到 10")
    await hint(h, "十个", "2 到 10")
    ask = await press(h, OFFICE, still_asking(h, ask, "检查组"), "2 人")
    await hint(h, "上门", "检查方式可选")
    ask = await press(h, OFFICE, still_asking(h, ask, "检查方式"), "现场")
    await hint(h, "也许", "只能填“是”或“否”")
    ask = await typed(h, OFFICE, "是")
    assert "请确认抽查任务" in text_of(ask)
    await hint(h, "创建", "请点击上面消息中的按钮")
    ask = await press(h, OFFICE, still_asking(h, ask, "请确认抽查任务"), ADVANCED)
    await hint(h, "随便", "请点击上面消息中的按钮")
    ask = await press(h, OFFICE, ask, "确认接收：2 个工作日（默认）")
    await hint(h, "-1", "不是有效的期限")
    await hint(h, "0", "不是有效的期限")
    ask = await press(h, OFFICE, still_asking(h, ask, "请输入确认接收"), "◀ 返回")
    ask = await press(h, OFFICE, ask, "◀ 返回")
    done = await press(h, OFFICE, ask, "✔️ 创建任务")
    assert "已创建" in text_of(done)
    async with h.services.db.read() as session:
        task = (await session.exec(select(Task))).one()
    assert task.department_codes == ["SJJ", "SWJ"] and task.lead_department == "SJJ"
    assert task.ratios == {"A": "0.01", "B": "0.04", "C": "0.1", "D": "0.2"}
    assert task.selection_mode == "stations" and task.stations == ["SJJ-CG", "SJJ-DC"]
    assert task.flag_threshold == 3 and task.deadlines == {}


async def test_office_group_task_list_shows_status_and_every_draw(harness: Harness) -> None:
    h = harness
    await world(h)
    now = h.services.clock.now()
    async with h.services.db.session() as session:
        for name in ("未抽任务", "待执行任务", "重抽任务"):
            await create_task(session, spec(name=name), actor="test", now=now, today=TODAY)
    first = await run_draw(h.services.db, now, 3)
    async with h.services.db.session() as session:
        await void_draw(session, draw_id=first, reason="名录有误", actor="test", now=now)
    again = await run_draw(h.services.db, now, 3)
    async with h.services.db.session() as session:
        pending = await commit_draw(session, task_id=2, actor="test", now=now)

    listing = unique_text(await h.send(LIAISON_SJJ, "/tasks", OFFICE_CHAT))
    blocks = {b.split("\n", 1)[0]: b for b in listing.split("\n\n")[1:]}
    assert set(blocks) == {"#3 重抽任务（2026）", "#2 待执行任务（2026）", "#1 未抽任务（2026）"}
    redrawn = blocks["#3 重抽任务（2026）"]
    assert "状态：已抽取" in redrawn and "户" in redrawn
    assert f"抽取：#{first} 已作废；#{again} 已执行" in redrawn
    waiting = blocks["#2 待执行任务（2026）"]
    assert "状态：已提交承诺，待执行抽取" in waiting
    assert f"抽取：#{pending.draw_id} 已提交承诺，待执行" in waiting
    untouched = blocks["#1 未抽任务（2026）"]
    assert "状态：未抽取" in untouched and "抽取：" not in untouched
    assert list(blocks) == ["#3 重抽任务（2026）", "#2 待执行任务（2026）", "#1 未抽任务（2026）"]


async def test_forged_buttons_of_the_current_step_are_stale(harness: Harness) -> None:
    h = harness
    await world(h)
    await typed(h, OFFICE, "/task")
    ask = await typed(h, OFFICE, "伪造按钮")
    assert "年度" in text_of(ask)
    # Acts that belong to other questions, with this step's name: refused, nothing changes.
    for act in ("create", "done", "toggle", "advanced", "reinspect"):
        forged = TaskCb(step="year", act=act, n=0).pack()
        await h.feed(h.fake.press_button(OFFICE, ask, forged, check_keyboard=False))
        assert "过期" in str(answer(h)["text"]), act
    ask = await press(h, OFFICE, still_asking(h, ask, "年度"), "2027")
    assert "参与部门" in text_of(ask)
    async with h.services.db.read() as session:
        assert not list(await session.exec(select(Task)))
