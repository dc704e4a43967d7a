"""The big-draw paths change nothing: ranks shared with a forked child, candidates in groups.

`CHILD_FROM` is lowered here so that a few thousand candidates take the child path that a
million take in production; every record is compared with the in-process one.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import replace
from decimal import Decimal

import pytest

import bot.draw as dsr
from bot.draw import (
    Candidate,
    CandidateGroups,
    DrawParams,
    Inspector,
    Policy,
    draw,
    draw_targets,
    rank,
    verify,
)

SEED = "00ff" * 16
POOL = [Inspector(f"ZF{n:04d}", "市场监管局") for n in range(30)]


def _candidates(n: int) -> list[Candidate]:
    """Key-ordered, every class and blank, one in ten flagged (as the database reads them)."""
    rng = random.Random(11)
    keys = sorted({f"9133{rng.randrange(10**14):014d}" for _ in range(n)})
    return [Candidate(k, rng.choice(["A", "B", "C", "D", ""]), rng.random() < 0.1) for k in keys]


def _groups(cands: list[Candidate]) -> CandidateGroups:
    """As the database reads them: per (class, flagged) code, the keys in key order."""
    groups: dict[int, list[str]] = {}
    for c in cands:
        groups.setdefault(CandidateGroups.code(c[1], c[2]), []).append(c.key)
    return CandidateGroups(groups)


@pytest.fixture
def in_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every draw and verification of this test ranks part of its keys in a child."""
    monkeypatch.setattr(dsr, "CHILD_FROM", 1)


def _in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dsr, "CHILD_FROM", 10**12)


@pytest.mark.parametrize(
    "params",
    [
        DrawParams(),
        DrawParams(policy=Policy.FLAT, flat_ratio=Decimal("0.07")),
        DrawParams(policy=Policy.ALL),  # every candidate drawn: the child sends all its ranks
        DrawParams(
            class_ratios={"A": Decimal(0), "B": Decimal("0.5"), "C": Decimal(1), "D": Decimal(1)}
        ),
    ],
    ids=["credit", "flat", "all", "empty-and-full-strata"],
)
def test_the_child_path_gives_the_in_process_record(
    monkeypatch: pytest.MonkeyPatch, params: DrawParams
) -> None:
    cands = _candidates(3000)
    _in_process(monkeypatch)
    here = draw(cands, POOL, params, seed_hex=SEED)
    assert verify(here) == []
    monkeypatch.setattr(dsr, "CHILD_FROM", 1)
    there = draw(cands, POOL, params, seed_hex=SEED)
    assert there.to_json() == here.to_json()
    assert verify(there) == []
    # And it is the documented selection: the lowest sha256(seed:key) in each stratum.
    for stratum in there.strata:
        expected = sorted(stratum.candidates, key=lambda k: (rank(SEED, k), k))
        assert list(stratum.selected) == expected[: stratum.quota]


@pytest.mark.usefixtures("in_child")
def test_the_child_path_still_finds_every_difference() -> None:
    rec = draw(_candidates(2000), POOL, seed_hex=SEED)
    a = rec.strata[0]
    unselected = next(k for k in a.candidates if k not in a.selected)
    swapped = replace(a, selected=(unselected, *a.selected[1:]))
    problems = verify(replace(rec, strata=(swapped, *rec.strata[1:])))
    assert any("stratum A: selected keys are not" in p for p in problems)
    other = replace(rec, seed_hex="11" * 32, commitment=dsr.commitment("11" * 32))
    assert verify(other)
    dropped = replace(a, candidates=a.candidates[1:], count=a.count - 1)
    assert any("digest" in p for p in verify(replace(rec, strata=(dropped, *rec.strata[1:]))))


@pytest.mark.usefixtures("in_child")
def test_a_failing_child_fails_the_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    ranks_below = dsr._ranks_below

    def failing(prefix: bytes, data: bytes, first: int, cut: int) -> list[tuple[bytes, int]]:
        if first > 0:  # only the child ranks keys after the first of a stratum
            raise ValueError("the child's share failed")
        return ranks_below(prefix, data, first, cut)

    monkeypatch.setattr(dsr, "_ranks_below", failing)
    with pytest.raises(ValueError, match="the child's share failed"):
        draw_targets(_candidates(500), seed_hex=SEED)

    def dying(prefix: bytes, data: bytes, first: int, cut: int) -> list[tuple[bytes, int]]:
        if first > 0:
            os._exit(3)  # killed, out of memory, …: no result at all
        return ranks_below(prefix, data, first, cut)

    monkeypatch.setattr(dsr, "_ranks_below", dying)
    with pytest.raises(RuntimeError, match="ended without a result"):
        draw_targets(_candidates(500), seed_hex=SEED)


@pytest.mark.parametrize("policy", list(Policy))
def test_groups_draw_like_the_rows_they_stand_for(policy: Policy) -> None:
    cands = _candidates(1500)
    params = DrawParams(policy=policy, flat_ratio=Decimal("0.05"))
    groups = _groups(cands)
    assert len(groups) == len(cands) and groups
    assert sorted(groups) == sorted(tuple(c[:3]) for c in cands)
    assert [groups[i] for i in range(len(groups))] == list(groups) == list(groups[:])
    assert groups[-1] == list(groups)[-1]
    assert sorted(groups.keys()) == [c.key for c in cands]
    expected = draw_targets(cands, params, seed_hex=SEED)
    assert draw_targets(groups, params, seed_hex=SEED) == expected
    # Keys out of order within a group (not what the database sends) are sorted first.
    backwards = CandidateGroups({code: keys[::-1] for code, keys in groups.groups.items()})
    assert draw_targets(backwards, params, seed_hex=SEED) == expected


def test_groups_refuse_what_rows_refuse() -> None:
    with pytest.raises(ValueError, match="unknown candidate codes"):
        CandidateGroups({10: ["K1"]})
    twice = CandidateGroups({1: ["K1", "K2"], 6: ["K2"]})  # K2 both unflagged and flagged
    with pytest.raises(ValueError, match="duplicate"):
        draw_targets(twice, seed_hex=SEED)
    with pytest.raises(ValueError, match="newline"):
        draw_targets(CandidateGroups({1: ["K1", "K2\nK3"]}), seed_hex=SEED)
    with pytest.raises(IndexError):
        CandidateGroups({1: ["K1"]})[1]


@pytest.mark.usefixtures("in_child")
async def test_the_child_path_works_from_a_worker_thread() -> None:
    # execute_draw and /verify run the pure code in a worker thread of the bot's process.
    cands = _candidates(800)
    rec = await asyncio.to_thread(draw, _groups(cands), POOL, seed_hex=SEED)
    assert rec == draw(cands, POOL, seed_hex=SEED)
    assert await asyncio.to_thread(verify, rec) == []
