"""The draw's shortcuts change nothing: key-ordered or shuffled input, halves or whole."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from bot.draw import (
    Candidate,
    DrawParams,
    Inspector,
    draw,
    draw_inspectors,
    draw_targets,
    rank,
    verify,
)

SEED = "fedcba9876543210" * 4


def _candidates(n: int) -> list[Candidate]:
    rng = random.Random(5)
    return sorted(
        (
            Candidate(
                f"91330102MA{i:07d}X", rng.choice("ABCD ").strip(), flagged=rng.random() < 0.05
            )
            for i in range(n)
        ),
        key=lambda c: c.key,
    )


POOL = [
    Inspector(f"ZF{n:04d}", "市场监管局", expertise=frozenset({"食品"} if n % 3 else ()))
    for n in range(40)
]


def test_ordered_and_shuffled_candidates_give_the_same_record() -> None:
    ordered = _candidates(3000)
    shuffled = list(ordered)
    random.Random(1).shuffle(shuffled)
    params = DrawParams(items={"SC001": ("食品",)})
    a = draw(ordered, POOL, params, seed_hex=SEED)
    b = draw(shuffled, POOL, params, seed_hex=SEED)
    assert a == b and a.to_json() == b.to_json()
    assert verify(a) == []
    # The selection is the documented one: the lowest sha256(seed:key) per stratum.
    for stratum in a.strata:
        expected = sorted(stratum.candidates, key=lambda k: (rank(SEED, k), k))
        assert list(stratum.selected) == expected[: stratum.quota]


def test_the_two_halves_make_the_whole_draw() -> None:
    cands = _candidates(500)
    previous = {cands[0].key: ("ZF0001", "ZF0002")}
    targets = draw_targets(cands, seed_hex=SEED)
    assert targets.groups == () and targets.pool == () and targets.order
    whole = draw(cands, POOL, previous_groups=previous, seed_hex=SEED)
    assert draw_inspectors(targets, POOL, previous_groups=previous) == whole


def test_key_order_with_a_repeated_key_is_still_refused() -> None:
    cands = _candidates(10)
    twice = sorted([*cands, cands[4]], key=lambda c: c.key)
    with pytest.raises(ValueError, match="duplicate"):
        draw_targets(twice, seed_hex=SEED)


def test_a_stratum_where_every_candidate_is_drawn_or_few_fall_below_the_cut() -> None:
    # Ratio 1 (everyone) and tiny strata take the no-cut path; the result is still the ranks.
    cands = [Candidate(f"K{i:02d}", "D") for i in range(7)]
    rec = draw_targets(cands, DrawParams(class_ratios=dict.fromkeys("ABCD", Decimal(1))))
    (d,) = [s for s in rec.strata if s.name == "D"]
    assert d.quota == 7
    assert list(d.selected) == sorted(d.candidates, key=lambda k: (rank(rec.seed_hex, k), k))
