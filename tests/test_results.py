"""The result dialog's pure rules: dates, the steps a draft needs, callback data sizes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bot.render import text
from bot.results import Kind, Step, parse_date, steps_of
from bot.telegram import (
    AssignmentCb,
    CoSignCb,
    FollowUpCb,
    RecusalCb,
    ResultCb,
    ReviewCb,
    TransferCb,
)
from storage.models import ResultItem

TODAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-01", date(2026, 3, 1)),
        ("2026/3/1", date(2026, 3, 1)),
        ("2026.03.01", date(2026, 3, 1)),
        ("2026年3月1日", date(2026, 3, 1)),
        ("20260301", date(2026, 3, 1)),
        ("3-1", date(2026, 3, 1)),
        ("3月1日", date(2026, 3, 1)),
        ("２０２６－０３－０１", date(2026, 3, 1)),
        (" 3 / 1 ", date(2026, 3, 1)),
        ("2026-02-30", None),
        ("昨天", None),
        ("", None),
        ("13-45", None),
    ],
)
def test_parse_date(raw: str, expected: date | None) -> None:
    assert parse_date(raw, TODAY) == expected


def item(position: int, category: int | None = None, action: str | None = None) -> ResultItem:
    return ResultItem(
        result_id=1,
        inspection_item_id=position + 1,
        position=position,
        category=category,
        action=action,
        updated_at=NOW,
    )


def test_steps_follow_the_answers() -> None:
    keys = [s.key for s in steps_of([item(0), item(1)])]
    assert keys == ["date", "meth", "cat-0", "evid-0", "cat-1", "evid-1", "sum"]
    keys = [
        s.key
        for s in steps_of(
            [
                item(0, category=8, action="rectify"),
                item(1, category=2, action="transfer"),
                item(2, category=10),
                item(3, category=6),
            ]
        )
    ]
    assert keys == [
        "date", "meth",
        "cat-0", "find-0", "act-0", "due-0", "evid-0",
        "cat-1", "find-1", "act-1", "dept-1", "evid-1",
        "cat-2", "find-2", "evid-2",
        "cat-3", "evid-3",
        "sum",
    ]  # fmt: skip


def test_step_keys_round_trip_and_reject_nonsense() -> None:
    for step in (Step(Kind.DATE), Step(Kind.CATEGORY, 12), Step(Kind.SUMMARY)):
        assert Step.parse(step.key) == step
    assert Step.parse("cat-x") is None and Step.parse("nope") is None


def test_the_ten_categories_are_the_official_texts() -> None:
    assert [text(f"result.category.{n}") for n in range(1, 11)] == [
        "未发现问题",
        "未按规定公示应当公示的信息",
        "公示信息隐瞒真实情况弄虚作假",
        "通过登记的住所（经营场所）无法联系",
        "不配合检查情节严重",
        "未发现开展本次抽查涉及的经营活动",
        "发现问题，依法责令停止",
        "发现问题，依法责令立即改正或者限期改正",
        "发现问题，待后续调查处理",
        "其他情况",
    ]


def test_callback_data_fits_telegram_64_bytes_at_the_largest_ids() -> None:
    big = 2**53
    packed = [
        AssignmentCb(action="confirm", assignment_id=big, reason=3).pack(),
        RecusalCb(action="approve", request_id=big).pack(),
        ResultCb(action="submit", inspection_id=big, step="dept-99", value=str(big)).pack(),
        ResultCb(action="drop", inspection_id=big, step="evid-99", value=str(big)).pack(),
        CoSignCb(action="confirm", cosign_id=big).pack(),
        ReviewCb(action="approve", result_id=big, version=999).pack(),
        FollowUpCb(action="yesterday", ref=big).pack(),
        TransferCb(action="ack", transfer_id=big).pack(),
    ]
    assert all(len(p.encode()) <= 64 for p in packed), [len(p.encode()) for p in packed]
