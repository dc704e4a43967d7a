"""bot.draw (dsr-draw/1): quotas, the target and inspector draws, the record, verification."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from itertools import combinations
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.draw import (
    ALGORITHM,
    CONFLICT,
    DEPARTMENT_UNCOVERED,
    EXPERTISE_UNCOVERED,
    LOAD_CAP,
    NO_REPLACEMENT,
    POOL_TOO_SMALL,
    ROTATION,
    TARGET_REGION_UNKNOWN,
    Candidate,
    DrawParams,
    DrawRecord,
    Inspector,
    Mode,
    Policy,
    below_general_minimum,
    commitment,
    current_group,
    default_load_cap,
    draw,
    is_flagged,
    keys_digest,
    pick_index,
    quota,
    rank,
    replace_inspector,
    stratum_ratios,
    verify,
)

DOCS = Path(__file__).parent.parent / "docs" / "draw.md"
SEED = "0123456789abcdef" * 4
D = Decimal


def _uscc_like(n: int) -> str:
    return f"91330102MA{n:07d}X"


# --- plain unit tests ------------------------------------------------------------------------


def test_quota_is_an_exact_ceiling() -> None:
    assert quota(101, D("0.01")) == 2
    assert quota(100, D("0.01")) == 1
    assert quota(100, D("0.07")) == 7  # float: 100 * 0.07 = 7.000000000000001 → 8
    assert quota(1, D("0.01")) == 1
    assert quota(0, D("0.2")) == 0
    assert quota(7, D(0)) == 0
    assert quota(7, D(1)) == 7
    assert quota(3, D("0.3333333333333333333333333333334")) == 2


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_primitives_follow_the_documented_formulas() -> None:
    sha = _sha
    assert commitment(SEED) == sha(SEED)
    assert rank(SEED, "K1") == sha(SEED + ":K1")
    assert keys_digest(["b", "a", "中"]) == sha("a\nb\n中")
    assert pick_index(SEED, "K1", 3, 7) == int(sha(SEED + ":K1:3"), 16) % 7


def test_flags_and_warnings() -> None:
    assert is_flagged(abnormal=True, serious_illegal=False, complaints=0)
    assert is_flagged(abnormal=False, serious_illegal=True, complaints=0)
    assert is_flagged(abnormal=False, serious_illegal=False, complaints=3)
    assert not is_flagged(abnormal=False, serious_illegal=False, complaints=2)
    assert not is_flagged(abnormal=False, serious_illegal=False, complaints=3, threshold=4)
    assert below_general_minimum(D("0.04"), key_item=False)
    assert not below_general_minimum(D("0.05"), key_item=False)
    assert not below_general_minimum(D("0.01"), key_item=True)
    assert default_load_cap(targets=10, group_size=2, pool_size=7) == 4  # ceil(20/7) + 1
    assert default_load_cap(targets=0, group_size=2, pool_size=0) == 1


def test_strata_and_ratios_per_policy() -> None:
    credit = stratum_ratios(DrawParams())
    assert list(credit) == ["A", "B", "C", "D", "unclassified", "flagged"]
    assert credit["unclassified"] == D("0.1") and credit["flagged"] == D("0.2")
    flat = stratum_ratios(DrawParams(policy=Policy.FLAT, flat_ratio=D("0.3")))
    assert flat == {"flat": D("0.3"), "flagged": D("0.3")}
    flat = stratum_ratios(DrawParams(policy=Policy.FLAT, flat_ratio=D("0.05")))
    assert flat == {"flat": D("0.05"), "flagged": D("0.2")}  # the class-D floor
    assert stratum_ratios(DrawParams(policy=Policy.ALL)) == {"all": D(1)}


def test_empty_strata_are_reported() -> None:
    cands = [Candidate(f"K{i}", "B") for i in range(101)]
    rec = draw(cands, [], seed_hex=SEED)
    by = {s.name: s for s in rec.strata}
    assert [s.name for s in rec.strata] == ["A", "B", "C", "D", "unclassified", "flagged"]
    assert (by["B"].count, by["B"].quota, len(by["B"].selected)) == (101, 4, 4)  # ceil(3.03)
    for name in ("A", "C", "D", "unclassified", "flagged"):
        assert (by[name].count, by[name].quota, by[name].selected) == (0, 0, ())
        assert by[name].digest == hashlib.sha256(b"").hexdigest()
    assert verify(rec) == []


def test_unclassified_and_flagged_strata() -> None:
    cands = [Candidate(f"U{i:03d}", "") for i in range(101)]
    cands += [Candidate(f"F{i:03d}", "A", flagged=True) for i in range(101)]
    rec = draw(cands, [], seed_hex=SEED)
    by = {s.name: s for s in rec.strata}
    assert by["unclassified"].quota == 11  # ceil(101 × 10%)
    assert by["flagged"].quota == 21  # ceil(101 × 20%), although every one is class A
    assert by["A"].count == 0


def test_selection_is_the_lowest_ranks() -> None:
    cands = [Candidate(_uscc_like(i), "C") for i in range(200)]
    rec = draw(cands, [], seed_hex=SEED)
    (c,) = [s for s in rec.strata if s.name == "C"]
    expected = sorted((rank(SEED, k), k) for k in c.candidates)[: c.quota]
    assert list(c.selected) == [k for _, k in expected]
    assert c.quota == 20


def test_policy_all_draws_everyone_in_rank_order() -> None:
    cands = [Candidate(f"K{i}", "ABCD"[i % 4], flagged=i % 3 == 0) for i in range(40)]
    rec = draw(cands, [], DrawParams(policy=Policy.ALL), seed_hex=SEED)
    assert [s.name for s in rec.strata] == ["all"]
    assert sorted(rec.order) == sorted(c.key for c in cands)
    assert list(rec.order) == sorted(rec.order, key=lambda k: rank(SEED, k))
    assert verify(rec) == []


def test_flat_policy() -> None:
    cands = [Candidate(f"K{i:03d}", "A", flagged=i < 10) for i in range(110)]
    rec = draw(cands, [], DrawParams(policy=Policy.FLAT, flat_ratio=D("0.05")), seed_hex=SEED)
    by = {s.name: s for s in rec.strata}
    assert (by["flat"].count, by["flat"].quota) == (100, 5)
    assert (by["flagged"].count, by["flagged"].quota) == (10, 2)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        draw([Candidate("K", "A"), Candidate("K", "B")], [], seed_hex=SEED)
    with pytest.raises(ValueError, match="credit class"):
        draw([Candidate("K", "E")], [], seed_hex=SEED)
    with pytest.raises(ValueError, match="newline"):
        draw([Candidate("K\n1", "A")], [], seed_hex=SEED)
    with pytest.raises(ValueError, match="empty"):
        draw([Candidate("", "A")], [], seed_hex=SEED)
    with pytest.raises(ValueError, match="group_size"):
        draw([], [], DrawParams(group_size=1))
    with pytest.raises(ValueError, match="flat_ratio"):
        draw([], [], DrawParams(policy=Policy.FLAT))
    with pytest.raises(ValueError, match="between 0 and 1"):
        draw([], [], DrawParams(policy=Policy.FLAT, flat_ratio=D("1.5")))
    with pytest.raises(ValueError, match="departments"):
        draw([], [], DrawParams(departments=("a", "b", "c")))
    with pytest.raises(ValueError, match="seed_hex"):
        draw([], [], seed_hex="ABC")
    with pytest.raises(ValueError, match="certificate"):
        draw([], [Inspector("X", "d"), Inspector("X", "e")])


def test_seed_is_fresh_each_draw() -> None:
    a, b = draw([], []), draw([], [])
    assert a.seed_hex != b.seed_hex
    assert re.fullmatch(r"[0-9a-f]{64}", a.seed_hex)
    assert a.commitment == hashlib.sha256(a.seed_hex.encode()).hexdigest()


def _pool(n: int, depts: tuple[str, ...] = ("市场监管局",)) -> list[Inspector]:
    return [Inspector(f"Z{i:03d}", depts[i % len(depts)]) for i in range(n)]


def test_groups_have_two_and_respect_conflicts_and_rotation() -> None:
    cands = [Candidate(f"K{i:02d}", "D") for i in range(50)]
    pool = _pool(6)
    pool[0] = replace(pool[0], conflicts=frozenset(f"K{i:02d}" for i in range(50)))
    prev = {f"K{i:02d}": ["Z001"] for i in range(50)}
    rec = draw(cands, pool, previous_groups=prev, seed_hex=SEED)
    assert len(rec.groups) == 10 and not rec.shortfalls
    for g in rec.groups:
        assert len(g.members) == 2 and not {"Z000", "Z001"} & set(g.members)
    reasons = Counter(s.reason for s in rec.skips)
    assert reasons[CONFLICT] > 0 and reasons[ROTATION] > 0
    assert verify(rec) == []


def test_shortfall_instead_of_a_group_of_one() -> None:
    cands = [Candidate("K1", "D")]
    rec = draw(cands, _pool(1), DrawParams(class_ratios={**_ratios(), "D": D(1)}), seed_hex=SEED)
    assert rec.groups == ()
    (s,) = rec.shortfalls
    assert (s.target, s.reason) == ("K1", POOL_TOO_SMALL)
    assert verify(rec) == []


def _ratios() -> dict[str, Decimal]:
    return {"A": D(1), "B": D(1), "C": D(1), "D": D(1)}


def test_shortfall_reasons_for_expertise_and_departments() -> None:
    cands = [Candidate("K1", "A")]
    pool = [Inspector("Z1", "市场监管局"), Inspector("Z2", "市场监管局"), Inspector("Z3", "税务局")]
    params = DrawParams(class_ratios=_ratios(), items={"P1": ("食品",)})
    (s,) = draw(cands, pool, params, seed_hex=SEED).shortfalls
    assert s.reason == EXPERTISE_UNCOVERED and "食品" in s.detail
    params = DrawParams(class_ratios=_ratios(), departments=("市场监管局", "文旅局"))
    (s,) = draw(cands, pool, params, seed_hex=SEED).shortfalls
    assert s.reason == DEPARTMENT_UNCOVERED and "文旅局" in s.detail


def test_joint_task_and_expertise_are_covered() -> None:
    cands = [Candidate(f"K{i:02d}", "A") for i in range(30)]
    pool = [
        Inspector(f"Z{i:02d}", ("市场监管局", "税务局")[i % 2], expertise=frozenset(tags))
        for i, tags in enumerate([(), (), (), ("食品",), (), (), ("食品", "药品"), (), ("药品",)])
    ]
    params = DrawParams(
        class_ratios=_ratios(),
        group_size=3,
        load_cap=30,
        departments=("市场监管局", "税务局"),
        items={"P1": ("食品",), "P2": ("药品",)},
    )
    rec = draw(cands, pool, params, seed_hex=SEED)
    assert len(rec.groups) == 30 and not rec.shortfalls
    by_cert = {i.cert_no: i for i in pool}
    for g in rec.groups:
        members = [by_cert[c] for c in g.members]
        assert {m.department for m in members} == {"市场监管局", "税务局"}
        assert {"食品", "药品"} <= set().union(*(m.expertise for m in members))
    assert verify(rec) == []


def test_load_cap_is_enforced() -> None:
    cands = [Candidate(f"K{i:03d}", "A") for i in range(100)]
    rec = draw(cands, _pool(10), DrawParams(class_ratios=_ratios()), seed_hex=SEED)
    assert rec.load_cap == 21  # ceil(100 × 2 / 10) + 1
    loads = Counter(c for g in rec.groups for c in g.members)
    assert max(loads.values()) <= 21
    assert any(s.reason == LOAD_CAP for s in rec.skips) or not rec.shortfalls


def test_cross_region_uses_other_regions_only() -> None:
    cands = [Candidate(f"K{i:02d}", "A", region=("西湖区", "上城区", "")[i % 3]) for i in range(12)]
    pool = [Inspector(f"Z{i}", "局", region=("西湖区", "上城区", "")[i % 3]) for i in range(9)]
    params = DrawParams(class_ratios=_ratios(), mode=Mode.CROSS_REGION, load_cap=100)
    rec = draw(cands, pool, params, seed_hex=SEED)
    region = {i.cert_no: i.region for i in pool}
    for g in rec.groups:
        target_region = rec.target_regions[g.target]
        assert all(region[c] and region[c] != target_region for c in g.members)
    assert {s.reason for s in rec.shortfalls} == {TARGET_REGION_UNKNOWN}
    assert len(rec.shortfalls) == 4
    assert verify(rec) == []


def test_replacement_continues_the_sequence_and_verifies() -> None:
    cands = [Candidate(f"K{i:02d}", "A") for i in range(4)]
    rec = draw(cands, _pool(8), DrawParams(class_ratios=_ratios()), seed_hex=SEED)
    g = rec.groups[0]
    rec2, rep = replace_inspector(rec, g.target, g.members[0])
    used = [p.j for p in g.picks] + [s.j for s in rec.skips if s.target == g.target]
    assert rep.j is not None and rep.j > max(used)
    assert rep.replacement not in g.members
    assert current_group(rec2, g.target) == (rep.replacement, g.members[1])
    assert rec2.replacements == (rep,)
    assert verify(rec2) == []
    assert replace_inspector(rec, g.target, g.members[0]) == (rec2, rep)
    # The index formula, replayed by hand over a list.pop working copy.
    work = [i.cert_no for i in rec.pool]
    for j in range(rep.j + 1):
        taken = work.pop(pick_index(SEED, g.target, j, len(work)))
    assert taken == rep.replacement
    # Tampering with the appended replacement is caught.
    forged = replace(rec2, replacements=(replace(rep, replacement="Z007"),))
    if rep.replacement != "Z007":
        assert verify(forged)


def test_replacement_when_nobody_is_left() -> None:
    cands = [Candidate("K1", "A")]
    rec = draw(cands, _pool(2), DrawParams(class_ratios=_ratios()), seed_hex=SEED)
    rec2, rep = replace_inspector(rec, "K1", "Z000")
    assert (rep.replacement, rep.j, rep.reason) == (None, None, NO_REPLACEMENT)
    assert current_group(rec2, "K1") == ("Z001",)
    assert verify(rec2) == []
    with pytest.raises(ValueError, match="short"):
        replace_inspector(rec2, "K1", "Z001")
    with pytest.raises(ValueError, match="not in the group"):
        replace_inspector(rec, "K1", "Z999")


def test_json_field_names() -> None:
    cands = [Candidate(f"K{i}", "A") for i in range(3)]
    rec = draw(cands, _pool(2), DrawParams(class_ratios=_ratios()), seed_hex=SEED)
    obj = json.loads(rec.to_json())
    assert list(obj) == [
        "algorithm",
        "seed_hex",
        "commitment",
        "parameters",
        "candidates",
        "strata",
        "order",
        "target_regions",
        "inspectors",
        "previous_groups",
        "groups",
        "skips",
        "shortfalls",
        "replacements",
    ]
    assert obj["algorithm"] == ALGORITHM
    assert list(obj["strata"][0]) == [
        "name",
        "ratio",
        "count",
        "quota",
        "digest",
        "candidates",
        "selected",
    ]
    assert DrawRecord.from_json(rec.to_json()) == rec


# --- the docs ------------------------------------------------------------------------------


def _docs_verifier() -> str:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (code,) = [str(b) for b in blocks if "sys.argv[1]" in b]
    return code


def test_docs_verifier_accepts_a_record_and_rejects_a_forgery(tmp_path: Path) -> None:
    code = _docs_verifier()
    assert len(code.strip().splitlines()) <= 40
    script = tmp_path / "check.py"
    script.write_text(code, encoding="utf-8")
    cands = [Candidate(f"K{i:03d}", "ABCD "[i % 5].strip(), i % 11 == 0) for i in range(300)]
    rec = draw(cands, _pool(20), seed_hex=SEED)
    good = tmp_path / "good.json"
    good.write_text(rec.to_json(), encoding="utf-8")
    run = subprocess.run([sys.executable, script, good], capture_output=True, text=True)
    assert run.returncode == 0 and "一致" in run.stdout, run.stdout + run.stderr
    stratum = rec.strata[3]
    forged_stratum = replace(stratum, selected=(*stratum.selected[:-1], stratum.candidates[0]))
    strata = tuple(forged_stratum if s is stratum else s for s in rec.strata)
    bad = tmp_path / "bad.json"
    bad.write_text(replace(rec, strata=strata).to_json(), encoding="utf-8")
    run = subprocess.run([sys.executable, script, bad], capture_output=True, text=True)
    assert run.returncode == 1 and "D" in run.stdout


def test_docs_worked_example() -> None:
    """The numbers quoted in docs/draw.md come from this exact call."""
    rec = _worked_example()
    text = DOCS.read_text(encoding="utf-8")
    assert rec.commitment in text
    for s in rec.strata:
        assert s.digest in text
    for k in rec.order:
        assert rank(rec.seed_hex, k) in text
    for g in rec.groups:
        assert ", ".join(f"{p.cert_no} (j={p.j})" for p in g.picks) in text
    assert verify(rec) == []


def _worked_example() -> DrawRecord:
    seed = hashlib.sha256(b"dsr-draw/1 worked example 0").hexdigest()
    cands = [
        Candidate("91330102MA27XA0001", "A"),
        Candidate("91330102MA27XB0002", "B"),
        Candidate("91330102MA27XB0003", "B"),
        *(Candidate(f"91330102MA27XC{n:04d}", "C") for n in range(4, 15)),
        Candidate("91330102MA27XD0015", "D"),
        Candidate("91330102MA27XU0016", ""),
        Candidate("91330102MA27XF0017", "A", flagged=True),
    ]
    pool = [
        Inspector("33010001", "市场监管局", "西湖所", expertise=frozenset({"食品"})),
        Inspector("33010002", "市场监管局", "西湖所"),
        Inspector("33010003", "市场监管局", "城东所", conflicts=frozenset({"91330102MA27XD0015"})),
        Inspector("33010004", "市场监管局", "城东所", expertise=frozenset({"食品"})),
        Inspector("33010005", "市场监管局", "城西所"),
    ]
    params = DrawParams(items={"P330100001": ("食品",)})
    previous = {"91330102MA27XA0001": ["33010001"]}
    return draw(cands, pool, params, previous_groups=previous, seed_hex=seed)


# --- properties ----------------------------------------------------------------------------

KEYS = st.text(alphabet="0123456789ABCDXY中", min_size=1, max_size=6)
RATIO = st.sampled_from([D(0), D("0.01"), D("0.05"), D("0.1"), D("0.25"), D("0.5"), D(1), D(1)])
DEPTS = ("市场监管局", "税务局", "文旅局")
TAGS = ("食品", "药品")
REGIONS = ("西湖区", "上城区", "")
INSPECTOR_REGIONS = ("西湖区", "上城区", "滨江区", "滨江区", "")


Scenario = tuple[list[Candidate], list[Inspector], DrawParams, dict[str, list[str]], list[str]]


@st.composite
def scenarios(draw_: st.DrawFn) -> Scenario:
    """Candidates (some excluded), a small pool, parameters, previous groups."""
    universe = draw_(st.lists(KEYS, min_size=0, max_size=40, unique=True))
    excluded = draw_(st.lists(st.sampled_from(universe), unique=True)) if universe else []
    cands = [
        Candidate(
            k,
            draw_(st.sampled_from(["A", "B", "C", "D", ""])),
            draw_(st.booleans()),
            draw_(st.sampled_from(REGIONS[:2] * 3 + REGIONS[2:])),
        )
        for k in universe
        if k not in excluded
    ]
    keys = [c.key for c in cands]
    n_pool = draw_(st.integers(0, 10) | st.integers(4, 10))
    pool = [
        Inspector(
            f"Z{i:02d}",
            draw_(st.sampled_from(DEPTS[:2] * 3 + DEPTS[2:])),
            f"所{i % 3}",
            draw_(st.sampled_from(INSPECTOR_REGIONS)),
            frozenset(draw_(st.lists(st.sampled_from(TAGS), max_size=1))),
            frozenset(draw_(st.lists(st.sampled_from(keys), max_size=3)) if keys else ()),
        )
        for i in range(n_pool)
    ]
    group_size = draw_(st.integers(2, 3))
    policy = draw_(st.sampled_from(list(Policy)))
    params = DrawParams(
        policy=policy,
        class_ratios={c: draw_(RATIO) for c in "ABCD"},
        flat_ratio=draw_(RATIO) if policy is Policy.FLAT else None,
        group_size=group_size,
        load_cap=draw_(st.one_of(st.none(), st.integers(1, 6))),
        mode=draw_(st.sampled_from([Mode.BUREAU, Mode.BUREAU, Mode.CROSS_REGION])),
        items={"P1": tuple(draw_(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)))},
        departments=tuple(
            draw_(st.lists(st.sampled_from(DEPTS[:2]), max_size=min(group_size, 2), unique=True))
        ),
    )
    certs = [i.cert_no for i in pool]
    previous = (
        {k: draw_(st.lists(st.sampled_from(certs), max_size=2, unique=True)) for k in keys[:10]}
        if certs
        else {}
    )
    return cands, pool, params, previous, excluded


PROPS = settings(
    max_examples=int(os.environ.get("DRAW_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SEEDS = st.binary(min_size=32, max_size=32).map(bytes.hex)


def _eligible(rec: DrawRecord, target: str, loads: Counter[str]) -> list[Inspector]:
    """The spec's eligibility, written out naively."""
    region = rec.target_regions.get(target, "")
    if rec.params.mode is Mode.CROSS_REGION and not region:
        return []  # nobody is provably from elsewhere
    prev = set(rec.previous_groups.get(target, ()))
    return [
        i
        for i in rec.pool
        if (rec.params.mode is not Mode.CROSS_REGION or (i.region and i.region != region))
        and target not in i.conflicts
        and i.cert_no not in prev
        and loads[i.cert_no] < rec.load_cap
    ]


def _covers(rec: DrawRecord, group: list[Inspector]) -> bool:
    return set(rec.params.departments) <= {i.department for i in group} and set(
        rec.params.required_expertise
    ) <= set().union(*(i.expertise for i in group))


@PROPS
@given(scenarios(), SEEDS)
def test_draw_properties(
    scenario: Scenario,
    seed: str,
) -> None:
    cands, pool, params, previous, excluded = scenario
    rec = draw(cands, pool, params, previous_groups=previous, seed_hex=seed)
    ratios = stratum_ratios(params)

    # Quotas are exact, every candidate is in exactly one stratum, only candidates are drawn.
    assert [s.name for s in rec.strata] == list(ratios)
    for s in rec.strata:
        assert s.quota == -(-s.count * Fraction(s.ratio).numerator // Fraction(s.ratio).denominator)
        assert len(s.selected) == s.quota == len(set(s.selected))
        assert set(s.selected) <= set(s.candidates)
    assert sorted(k for s in rec.strata for k in s.candidates) == sorted(c.key for c in cands)
    assert len(rec.order) == len(set(rec.order)) == sum(s.quota for s in rec.strata)
    assert not set(rec.order) & set(excluded)
    if params.policy is Policy.ALL:
        assert set(rec.order) == {c.key for c in cands}

    # Every drawn target has a valid group or a shortfall, never both; shortfalls are real.
    by_cert = {i.cert_no: i for i in rec.pool}
    loads: Counter[str] = Counter()
    groups = {g.target: g for g in rec.groups}
    short = {s.target for s in rec.shortfalls}
    assert set(groups) | short == set(rec.order) and not set(groups) & short
    for target in rec.order:
        eligible = _eligible(rec, target, loads)
        if target in short:
            assert not any(
                _covers(rec, list(c)) for c in combinations(eligible, params.group_size)
            ), f"shortfall for {target} although a valid group exists"
            continue
        members = [by_cert[c] for c in groups[target].members]
        assert len(members) == params.group_size >= 2
        assert len(set(groups[target].members)) == len(members)
        assert all(m in eligible for m in members)  # conflict-free, rotation, cap, region
        assert _covers(rec, members)
        loads.update(groups[target].members)
    assert all(n <= rec.load_cap for n in loads.values())

    assert verify(rec) == []
    assert DrawRecord.from_json(rec.to_json()) == rec
    assert DrawRecord.from_json(rec.to_json()).to_json() == rec.to_json()
    assert _reference_groups(rec) == _coarse(rec)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 3000),
    st.sampled_from([D("0.001"), D("0.01"), D("0.03"), D("0.1"), D("0.2"), D("0.9")]),
    SEEDS,
)
def test_selection_matches_a_plain_sort(n: int, ratio: Decimal, seed: str) -> None:
    """Large strata take the threshold shortcut; it must equal sorting every rank."""
    params = DrawParams(class_ratios={"A": ratio, "B": ratio, "C": ratio, "D": ratio})
    rec = draw([Candidate(f"K{i}", "C") for i in range(n)], [], params, seed_hex=seed)
    (c,) = [s for s in rec.strata if s.name == "C"]
    plain = sorted((rank(seed, k), k) for k in c.candidates)[: c.quota]
    assert list(c.selected) == [k for _, k in plain]


@PROPS
@given(scenarios(), SEEDS, st.data())
def test_tampering_is_detected(
    scenario: Scenario,
    seed: str,
    data: st.DataObject,
) -> None:
    cands, pool, params, previous, _ = scenario
    rec = draw(cands, pool, params, previous_groups=previous, seed_hex=seed)

    other_seed = data.draw(SEEDS.filter(lambda s: s != seed))
    assert verify(replace(rec, seed_hex=other_seed))

    nonempty = [n for n, s in enumerate(rec.strata) if s.candidates]
    if nonempty:
        n = data.draw(st.sampled_from(nonempty))
        s = rec.strata[n]
        victim = data.draw(st.sampled_from(s.candidates))
        changed = tuple(sorted((set(s.candidates) - {victim}) | {victim + "Z"}))
        if changed != s.candidates:
            strata = list(rec.strata)
            strata[n] = replace(s, candidates=changed)
            assert verify(replace(rec, strata=tuple(strata)))

    chosen = [n for n, s in enumerate(rec.strata) if s.selected]
    if chosen:
        n = data.draw(st.sampled_from(chosen))
        s = rec.strata[n]
        i = data.draw(st.integers(0, len(s.selected) - 1))
        outsider = [k for k in s.candidates if k not in s.selected]
        new_key = data.draw(st.sampled_from(outsider)) if outsider else s.selected[i] + "Z"
        selected = (*s.selected[:i], new_key, *s.selected[i + 1 :])
        strata = list(rec.strata)
        strata[n] = replace(s, selected=selected)
        assert verify(replace(rec, strata=tuple(strata)))


@PROPS
@given(scenarios(), SEEDS, st.data())
def test_replacement_properties(
    scenario: Scenario,
    seed: str,
    data: st.DataObject,
) -> None:
    cands, pool, params, previous, _ = scenario
    rec = draw(cands, pool, params, previous_groups=previous, seed_hex=seed)
    for _ in range(data.draw(st.integers(1, 3))):
        full = [g for g in rec.groups if len(current_group(rec, g.target)) == params.group_size]
        if not full:
            return
        target = data.draw(st.sampled_from(full)).target
        before = current_group(rec, target)
        out = data.draw(st.sampled_from(before))
        new, rep = replace_inspector(rec, target, out)
        assert replace_inspector(rec, target, out) == (new, rep)  # deterministic
        after = current_group(new, target)
        if rep.replacement is None:
            assert rep.reason == NO_REPLACEMENT and after == tuple(c for c in before if c != out)
        else:
            assert rep.replacement not in before and out not in after
            assert len(after) == params.group_size
            by_cert = {i.cert_no: i for i in rec.pool}
            inspector = by_cert[rep.replacement]
            assert target not in inspector.conflicts
            assert rep.replacement not in rec.previous_groups.get(target, ())
            assert _covers(new, [by_cert[c] for c in after])
            loads = Counter(c for g in new.groups for c in current_group(new, g.target))
            assert loads[rep.replacement] <= new.load_cap
        assert verify(new) == []
        assert DrawRecord.from_json(new.to_json()) == new
        rec = new


# --- an independent, naive re-implementation of the inspector draw ----------------------------

Coarse = tuple[list[tuple[str, list[tuple[str, int]]]], list[tuple[str, int, str, str]], list[str]]
_COVERAGE = {"department": "coverage", "expertise": "coverage", "coverage": "coverage"}


def _coarse(rec: DrawRecord) -> Coarse:
    """The record's groups, skips and shortfall targets, with coverage reasons merged."""
    return (
        [(g.target, [(p.cert_no, p.j) for p in g.picks]) for g in rec.groups],
        [(s.target, s.j, s.cert_no, _COVERAGE.get(s.reason, s.reason)) for s in rec.skips],
        [s.target for s in rec.shortfalls],
    )


def _reference_groups(rec: DrawRecord) -> Coarse:
    """The spec (docs/draw.md §6) read literally: list.pop working copies, brute force."""
    p, size = rec.params, rec.params.group_size
    cross = p.mode is Mode.CROSS_REGION
    loads: Counter[str] = Counter()
    groups: list[tuple[str, list[tuple[str, int]]]] = []
    skips: list[tuple[str, int, str, str]] = []
    shortfalls: list[str] = []

    def completable(group: list[Inspector], rest: list[Inspector]) -> bool:
        return any(_covers(rec, group + list(c)) for c in combinations(rest, size - len(group)))

    for target in rec.order:
        region = rec.target_regions.get(target, "")
        work = [i for i in rec.pool if not cross or (i.region and i.region != region)]
        rest = _eligible(rec, target, loads)
        if not completable([], rest):
            shortfalls.append(target)
            continue
        picks: list[tuple[Inspector, int]] = []
        j = 0
        while len(picks) < size:
            insp = work.pop(int(_sha(f"{rec.seed_hex}:{target}:{j}"), 16) % len(work))
            if target in insp.conflicts:
                reason = CONFLICT
            elif insp.cert_no in rec.previous_groups.get(target, ()):
                reason = ROTATION
            elif loads[insp.cert_no] >= rec.load_cap:
                reason = LOAD_CAP
            else:
                rest.remove(insp)
                reason = "" if completable([i for i, _ in picks] + [insp], rest) else "coverage"
            if reason:
                skips.append((target, j, insp.cert_no, reason))
            else:
                picks.append((insp, j))
            j += 1
        loads.update(i.cert_no for i, _ in picks)
        groups.append((target, [(i.cert_no, jj) for i, jj in picks]))
    return groups, skips, shortfalls


def test_callers_may_pass_plain_strings_and_lists() -> None:
    params = DrawParams(
        policy="flat",  # type: ignore[arg-type]
        flat_ratio=D("0.5"),
        mode="cross_region",  # type: ignore[arg-type]
        items={"P1": ["食品"]},  # type: ignore[dict-item]
        departments=["市场监管局"],  # type: ignore[arg-type]
    )
    assert params.policy is Policy.FLAT and params.mode is Mode.CROSS_REGION
    assert Mode.CROSS_REGION.label == "异地交叉"
    pool = [
        Inspector(f"Z{i}", "市场监管局", region="上城区", expertise={"食品"})  # type: ignore[arg-type]
        for i in range(3)
    ]
    rec = draw([Candidate("K1", "A", region="西湖区")], pool, params, seed_hex=SEED)
    assert len(rec.groups) == 1
    assert DrawRecord.from_json(rec.to_json()) == rec
    assert verify(rec) == []
