"""dsr-draw/1: the reproducible, verifiable target and inspector draw (DOMAIN §4).

Pure domain code: no database, no Telegram. Everything a third party needs to re-run the draw
is in the `DrawRecord`, which serialises to JSON; `verify` re-runs it. The algorithm is
specified in docs/draw.md; change nothing here without bumping `ALGORITHM`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import multiprocessing
import operator
import re
import secrets
from bisect import insort
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from functools import partial
from itertools import chain, islice, repeat
from multiprocessing.connection import Connection
from typing import Any, ClassVar, NamedTuple, TypeVar, cast, overload

ALGORITHM = "dsr-draw/1"

T = TypeVar("T")

CLASSES = ("A", "B", "C", "D")
DEFAULT_CLASS_RATIOS: Mapping[str, Decimal] = {
    "A": Decimal("0.01"),
    "B": Decimal("0.03"),
    "C": Decimal("0.1"),
    "D": Decimal("0.2"),
}
GENERAL_MIN_RATIO = Decimal("0.05")  # 一般事项 ratio floor (DOMAIN §2)
DEFAULT_FLAG_THRESHOLD = 3
DEFAULT_GROUP_SIZE = 2
UNCLASSIFIED = "unclassified"
FLAGGED = "flagged"
FLAT = "flat"
ALL = "all"

# Skip and shortfall reasons, as written into the record.
CONFLICT = "conflict"
ROTATION = "rotation"
LOAD_CAP = "load_cap"
DEPARTMENT = "department"
EXPERTISE = "expertise"
COVERAGE = "coverage"  # departments and expertise each coverable, but not both together
POOL_TOO_SMALL = "pool_too_small"
DEPARTMENT_UNCOVERED = "department_uncovered"
EXPERTISE_UNCOVERED = "expertise_uncovered"
COVERAGE_INFEASIBLE = "coverage_infeasible"
TARGET_REGION_UNKNOWN = "target_region_unknown"
NO_REPLACEMENT = "no_replacement"

_SEED_RE = re.compile(r"[0-9a-f]{64}")
_CLASS_SET = frozenset((*CLASSES, ""))
_CODE_CLASSES = ("", *CLASSES)  # CandidateGroups: a code is the index here (+ FLAGGED)
_CODE_PAIRS = tuple((c, f) for f in (False, True) for c in _CODE_CLASSES)  # by code


class Policy(StrEnum):
    """How many targets a task draws (DOMAIN §4)."""

    CREDIT = "credit"  # 信用风险分类差异化抽查: per-class ratios
    FLAT = "flat"  # one ratio for everyone
    ALL = "all"  # 重点事项: every candidate, batch order randomised


class Mode(StrEnum):
    """Inspector selection mode (004 §七); only CROSS_REGION changes the pool per target here."""

    BUREAU = "bureau"
    BUREAU_STATIONS = "bureau_stations"
    STATIONS = "stations"
    STATION = "station"
    CROSS_REGION = "cross_region"

    @property
    def label(self) -> str:
        """The name the office uses, for messages and exports."""
        return _MODE_LABELS[self]


_MODE_LABELS = {
    Mode.BUREAU: "全局内随机",
    Mode.BUREAU_STATIONS: "局机关与市场监管所随机",
    Mode.STATIONS: "若干所内随机",
    Mode.STATION: "单一所内随机",
    Mode.CROSS_REGION: "异地交叉",
}


class Candidate(NamedTuple):
    """One drawable target, already filtered by the caller (a tuple: cheap at a million)."""

    key: str  # USCC or 其他标识
    credit_class: str = ""  # "A".."D", "" when unclassified
    flagged: bool = False  # see is_flagged
    region: str = ""  # only used in cross-region mode


class CandidateGroups(Sequence[Candidate]):
    """Candidates the way the database hands a big draw its keys most cheaply: per (credit
    class, flagged) pair, by its code (`code()`), that pair's keys in ascending order. A million
    candidates cost the reader a few long strings instead of a million rows, and the draw finds
    each stratum's keys already apart. As a sequence: `(key, credit_class, flagged)` tuples,
    group after group (not in key order)."""

    CLASS_CODES: ClassVar[Mapping[str, int]] = {c: n for n, c in enumerate(_CODE_CLASSES)}
    FLAGGED: ClassVar[int] = len(_CODE_CLASSES)  # added to the class's code
    CODES: ClassVar[range] = range(len(_CODE_PAIRS))

    def __init__(self, groups: Mapping[int, Sequence[str]]) -> None:
        if not set(groups) <= set(self.CODES):
            raise ValueError(f"unknown candidate codes: {sorted(set(groups) - set(self.CODES))}")
        self.groups = {code: keys for code, keys in sorted(groups.items()) if keys}
        self._count = sum(map(len, self.groups.values()))

    @classmethod
    def code(cls, credit_class: str, flagged: bool) -> int:
        """A (credit class, flagged) pair's code (the database computes the same in SQL)."""
        return cls.CLASS_CODES[credit_class] + (cls.FLAGGED if flagged else 0)

    def keys(self) -> Iterator[str]:
        """Every key, group after group."""
        return chain.from_iterable(self.groups.values())

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Candidate: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Candidate]: ...

    def __getitem__(self, index: int | slice) -> Candidate | Sequence[Candidate]:
        if isinstance(index, slice):
            return list(self)[index]
        n = index + self._count if index < 0 else index
        for code, keys in self.groups.items():
            if 0 <= n < len(keys):
                return cast(Candidate, (keys[n], *_CODE_PAIRS[code]))  # as __iter__ gives it
            n -= len(keys)
        raise IndexError("candidate index out of range")

    def __iter__(self) -> Iterator[Candidate]:
        rows = chain.from_iterable(
            zip(keys, repeat(_CODE_PAIRS[code][0]), repeat(_CODE_PAIRS[code][1]))
            for code, keys in self.groups.items()
        )
        return cast(Iterator[Candidate], rows)  # plain tuples, read by index like rows


@dataclass(frozen=True, slots=True)
class Inspector:
    """One eligible inspector as the draw sees them (the caller applies the mode's filter)."""

    cert_no: str
    department: str
    unit: str = ""
    region: str = ""
    expertise: frozenset[str] = frozenset()
    conflicts: frozenset[str] = frozenset()  # target keys this inspector must recuse from

    def __post_init__(self) -> None:
        """Callers hand in lists or sets; the record needs one canonical form."""
        object.__setattr__(self, "expertise", frozenset(self.expertise))
        object.__setattr__(self, "conflicts", frozenset(self.conflicts))


@dataclass(frozen=True)
class DrawParams:
    """The task's draw settings; all of them are written into the record."""

    policy: Policy = Policy.CREDIT
    class_ratios: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_CLASS_RATIOS))
    flat_ratio: Decimal | None = None  # required for Policy.FLAT
    unclassified_as: str = "C"  # blank credit class draws at this class's ratio
    flag_threshold: int = DEFAULT_FLAG_THRESHOLD
    group_size: int = DEFAULT_GROUP_SIZE
    load_cap: int | None = None  # None: ceil(targets × group_size / pool) + 1
    mode: Mode = Mode.BUREAU
    stations: tuple[str, ...] = ()  # for the record only: the caller filtered the pool
    items: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # item → expertise tags
    departments: tuple[str, ...] = ()  # each must have a member in every group

    def __post_init__(self) -> None:
        """Accept plain strings and lists from callers; keep one canonical, comparable form."""
        fix = partial(object.__setattr__, self)
        fix("policy", Policy(self.policy))
        fix("mode", Mode(self.mode))
        fix("class_ratios", dict(self.class_ratios))
        fix("stations", tuple(self.stations))
        fix("items", {k: tuple(v) for k, v in self.items.items()})
        fix("departments", tuple(self.departments))

    @property
    def required_expertise(self) -> tuple[str, ...]:
        """Every tag some item needs: a group must cover them all."""
        return tuple(sorted({t for tags in self.items.values() for t in tags}))


@dataclass(frozen=True)
class Stratum:
    """One stratum's inputs and result; `candidates` sorted, `selected` in rank order."""

    name: str
    ratio: Decimal
    count: int
    quota: int
    digest: str
    candidates: tuple[str, ...]
    selected: tuple[str, ...]


class Pick(NamedTuple):
    """An accepted pick: `j` lets anyone recompute which index it came from (a tuple, like
    Candidate: a big draw makes ~100,000 of them, and read back, verify makes them again)."""

    cert_no: str
    j: int


class Group(NamedTuple):
    """The inspectors drawn for one target, in pick order (a tuple, as Pick)."""

    target: str
    picks: tuple[Pick, ...]

    @property
    def members(self) -> tuple[str, ...]:
        """Certificate numbers, in pick order."""
        return tuple(p.cert_no for p in self.picks)


@dataclass(frozen=True)
class Skip:
    """A picked inspector that could not serve: kept so the sequence can be replayed."""

    target: str
    j: int
    cert_no: str
    reason: str


@dataclass(frozen=True)
class Shortfall:
    """A target left without a group: the office decides, never a silent group of one."""

    target: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Replacement:
    """An approved recusal: the same target's pick sequence continued (or why it could not)."""

    target: str
    replaced: str
    replacement: str | None
    j: int | None
    skips: tuple[Skip, ...] = ()
    reason: str = ""  # NO_REPLACEMENT when replacement is None
    detail: str = ""


@dataclass(frozen=True)
class DrawRecord:
    """Everything needed to re-run and check one draw; published (一公开) as JSON."""

    algorithm: str
    seed_hex: str
    commitment: str
    params: DrawParams
    load_cap: int
    candidate_count: int
    candidate_digest: str
    strata: tuple[Stratum, ...]
    order: tuple[str, ...]  # every selected key, ascending rank: batch and inspector-draw order
    target_regions: Mapping[str, str]
    pool: tuple[Inspector, ...]
    previous_groups: Mapping[str, tuple[str, ...]]
    groups: tuple[Group, ...]
    skips: tuple[Skip, ...]
    shortfalls: tuple[Shortfall, ...]
    replacements: tuple[Replacement, ...] = ()

    def to_json(self, indent: int | None = None) -> str:
        """The published form; field names are documented in docs/draw.md."""
        return json.dumps(_record_to_obj(self), ensure_ascii=False, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> DrawRecord:
        """Read a published record back (exact inverse of to_json)."""
        with _no_gc():
            return _record_from_obj(json.loads(text))


# --- primitives (each a line of docs/draw.md) --------------------------------------------------


def new_seed() -> str:
    """32 bytes from the OS CSPRNG: nobody, including the office, can steer the draw."""
    return secrets.token_hex(32)


def commitment(seed_hex: str) -> str:
    """Publishable before the seed itself, so the seed cannot be swapped afterwards."""
    return hashlib.sha256(seed_hex.encode("utf-8")).hexdigest()


def keys_digest(keys: Iterable[str]) -> str:
    """Fingerprint of a candidate set: sorted by code point, joined with newlines."""
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()


def rank(seed_hex: str, key: str) -> str:
    """A target's lottery number: the lowest ranks in a stratum are drawn."""
    return hashlib.sha256((seed_hex + ":" + key).encode("utf-8")).hexdigest()


def pick_index(seed_hex: str, target: str, j: int, remaining: int) -> int:
    """Which inspector of the working copy pick j of a target takes."""
    h = hashlib.sha256((seed_hex + ":" + target + ":" + str(j)).encode("utf-8")).digest()
    return int.from_bytes(h, "big") % remaining


def quota(count: int, ratio: Decimal) -> int:
    """ceil(count × ratio), exact (binary floats would give 100 × 0.07 → 8)."""
    n, d = Fraction(ratio).as_integer_ratio()
    return -((-count * n) // d)


def is_flagged(
    *,
    abnormal: bool,
    serious_illegal: bool,
    complaints: int,
    threshold: int = DEFAULT_FLAG_THRESHOLD,
) -> bool:
    """Listed or much-complained-about targets get a higher frequency (000, 003)."""
    return abnormal or serious_illegal or complaints >= threshold


def below_general_minimum(ratio: Decimal, *, key_item: bool) -> bool:
    """Whether the caller must warn: a 一般 item's ratio may not go below 5% (000_3f1c…)."""
    return not key_item and ratio < GENERAL_MIN_RATIO


def default_load_cap(targets: int, group_size: int, pool_size: int) -> int:
    """Fair share of the seats plus one: spreads work without making draws infeasible."""
    slots = targets * group_size
    pool = max(pool_size, 1)
    return -(-slots // pool) + 1


def stratum_ratios(params: DrawParams) -> dict[str, Decimal]:
    """The strata a policy draws from, in record order, with their ratios."""
    if params.policy is Policy.ALL:
        return {ALL: Decimal(1)}
    d = params.class_ratios["D"]
    if params.policy is Policy.FLAT:
        assert params.flat_ratio is not None
        return {FLAT: params.flat_ratio, FLAGGED: max(params.flat_ratio, d)}
    ratios = {c: params.class_ratios[c] for c in CLASSES}
    ratios[UNCLASSIFIED] = params.class_ratios[params.unclassified_as]
    ratios[FLAGGED] = max(*ratios.values(), d)
    return ratios


def stratum_of(candidate: Candidate, policy: Policy) -> str:
    """Flags put a target in its own stratum so the class-D floor applies to it."""
    if policy is Policy.ALL:
        return ALL
    if candidate.flagged:
        return FLAGGED
    if policy is Policy.FLAT:
        return FLAT
    return candidate.credit_class or UNCLASSIFIED


def current_group(record: DrawRecord, target: str) -> tuple[str, ...]:
    """A target's inspectors after every recorded replacement."""
    members = _current_groups(record).get(target)
    if members is None:
        raise ValueError(f"target {target!r} has no inspector group in this draw")
    return tuple(members)


# --- the draw ----------------------------------------------------------------------------------


def draw(
    candidates: Iterable[Candidate],
    pool: Iterable[Inspector],
    params: DrawParams | None = None,
    *,
    previous_groups: Mapping[str, Iterable[str]] | None = None,
    seed_hex: str | None = None,
) -> DrawRecord:
    """Draw targets, then inspectors for each, and return the complete verifiable record."""
    with _no_gc():
        targets = _draw_targets(candidates, params, seed_hex)
        return _draw_inspectors(targets, pool, previous_groups)


def draw_targets(
    candidates: Iterable[Candidate],
    params: DrawParams | None = None,
    *,
    seed_hex: str | None = None,
) -> DrawRecord:
    """The first half of `draw`: strata, quotas and the drawn targets; no inspectors yet."""
    with _no_gc():
        return _draw_targets(candidates, params, seed_hex)


def draw_inspectors(
    targets: DrawRecord,
    pool: Iterable[Inspector],
    *,
    previous_groups: Mapping[str, Iterable[str]] | None = None,
) -> DrawRecord:
    """The second half of `draw`: a group for every target of `draw_targets`' record."""
    with _no_gc():
        return _draw_inspectors(targets, pool, previous_groups)


def _draw_targets(
    candidates: Iterable[Candidate], params: DrawParams | None, seed_hex: str | None
) -> DrawRecord:
    """draw_targets() without the GC guard."""
    params = params or DrawParams()
    _check_params(params)
    seed_hex = new_seed() if seed_hex is None else seed_hex
    _check_seed(seed_hex)

    ratios = stratum_ratios(params)
    if not isinstance(candidates, Sequence):
        candidates = list(candidates)
    strata_in: list[_Stratum] = []
    for name, keys in _strata_keys(candidates, params.policy, ratios).items():
        if keys and not keys[0]:
            raise ValueError("a candidate key is empty")
        strata_in.append(_stratum(keys, quota(len(keys), ratios[name]), name))
        if strata_in[-1].newline:
            raise ValueError("a candidate key contains a newline")
    selections, every = _ranked(seed_hex, strata_in, [s.keys for s in strata_in])
    if every.repeated:
        raise ValueError("duplicate candidate keys")
    strata: list[Stratum] = []
    chosen: list[tuple[bytes, str]] = []
    for s, picked in zip(strata_in, selections, strict=True):
        chosen.extend(picked)
        selected = tuple(k for _, k in picked)
        strata.append(
            Stratum(s.name, ratios[s.name], len(s.keys), s.k, s.digest, tuple(s.keys), selected)
        )
    chosen.sort()
    order = tuple(k for _, k in chosen)
    target_regions: dict[str, str] = {}
    if params.mode is Mode.CROSS_REGION:
        regions = {c[0]: c[3] for c in candidates if c[3]}
        target_regions = {k: regions[k] for k in sorted(order) if k in regions}
    return DrawRecord(
        algorithm=ALGORITHM,
        seed_hex=seed_hex,
        commitment=commitment(seed_hex),
        params=params,
        load_cap=0,
        candidate_count=every.size,
        candidate_digest=every.digest,
        strata=tuple(strata),
        order=order,
        target_regions=target_regions,
        pool=(),
        previous_groups={},
        groups=(),
        skips=(),
        shortfalls=(),
    )


def _draw_inspectors(
    targets: DrawRecord,
    pool: Iterable[Inspector],
    previous_groups: Mapping[str, Iterable[str]] | None,
) -> DrawRecord:
    """draw_inspectors() without the GC guard."""
    inspectors = sorted(pool, key=lambda i: i.cert_no)
    certs = [i.cert_no for i in inspectors]
    if len(set(certs)) != len(certs) or "" in certs:
        raise ValueError("inspector certificate numbers must be unique and non-empty")
    order = targets.order
    drawn = set(order)
    # Only the conflicts and previous groups that touch drawn targets matter (and get published).
    inspectors = [replace(i, conflicts=i.conflicts & drawn) for i in inspectors]
    previous = {k: tuple(sorted(v)) for k, v in (previous_groups or {}).items() if k in drawn}
    params = targets.params
    load_cap = params.load_cap
    if load_cap is None:
        load_cap = default_load_cap(len(order), params.group_size, len(inspectors))
    record = replace(
        targets,
        load_cap=load_cap,
        pool=tuple(inspectors),
        previous_groups=previous,
        groups=(),
        skips=(),
        shortfalls=(),
        replacements=(),
    )
    groups, skips, shortfalls = _Board(record).draw_groups()
    return replace(record, groups=groups, skips=skips, shortfalls=shortfalls)


def replace_inspector(
    record: DrawRecord, target: str, cert_no: str
) -> tuple[DrawRecord, Replacement]:
    """Continue the target's pick sequence after an approved recusal; append it to the record."""
    replacement = _Board(record).replacement(target, cert_no)
    return replace(record, replacements=(*record.replacements, replacement)), replacement


# --- verification ------------------------------------------------------------------------------


def verify(record: DrawRecord) -> list[str]:
    """Re-run the draw from the record's own inputs; [] means 一致, else the differences."""
    with _no_gc():
        return _verify(record)


def _verify(record: DrawRecord) -> list[str]:
    """verify() without the GC guard."""
    problems: list[str] = []
    if record.algorithm != ALGORITHM:
        return [f"algorithm is {record.algorithm!r}, this verifier checks {ALGORITHM!r}"]
    if not _SEED_RE.fullmatch(record.seed_hex):
        return ["seed_hex is not 64 lowercase hex digits"]
    if commitment(record.seed_hex) != record.commitment:
        problems.append("commitment does not equal sha256(seed_hex): the seed was changed")
    try:
        _check_params(record.params)
    except ValueError as e:
        return [*problems, f"parameters are invalid: {e}"]

    ratios = stratum_ratios(record.params)
    names = [s.name for s in record.strata]
    if names != list(ratios):
        problems.append(f"strata are {names}, policy {record.params.policy} needs {list(ratios)}")
    checked: list[_Stratum] = []
    for s in record.strata:
        found_problems, stratum = _check_stratum(s, ratios.get(s.name))
        problems.extend(found_problems)
        if stratum is not None:
            checked.append(stratum)
    selections, every = _ranked(record.seed_hex, checked, [s.candidates for s in record.strata])
    chosen: list[tuple[bytes, str]] = []
    for c, picked in zip(checked, selections, strict=True):
        chosen.extend(picked)
        selected = tuple(k for _, k in picked)
        if selected != c.selected:
            problems.append(
                f"stratum {c.name}: selected keys are not the {c.k} lowest ranks"
                + _first_difference(c.selected, selected)
            )
    if every.repeated:
        problems.append("a candidate key appears in more than one stratum")
    if every.size != record.candidate_count:
        problems.append(
            f"candidate count is {record.candidate_count}, the strata hold {every.size}"
        )
    if every.digest != record.candidate_digest:
        problems.append("overall candidate digest does not match the strata's candidate keys")
    chosen.sort()
    order = tuple(k for _, k in chosen)
    if order != record.order:
        problems.append(
            "batch order differs from ascending rank" + _first_difference(record.order, order)
        )

    expected_cap = record.params.load_cap
    if expected_cap is None:
        expected_cap = default_load_cap(
            len(record.order), record.params.group_size, len(record.pool)
        )
    if record.load_cap != expected_cap:
        problems.append(f"load cap is {record.load_cap}, expected {expected_cap}")
    certs = [i.cert_no for i in record.pool]
    if certs != sorted(set(certs)):
        problems.append("the inspector pool is not sorted by unique certificate number")
        return problems

    fresh = replace(
        record, load_cap=expected_cap, groups=(), skips=(), shortfalls=(), replacements=()
    )
    groups, skips, shortfalls = _Board(fresh).draw_groups()
    problems.extend(_compare("group", record.groups, groups, lambda g: g.target))
    problems.extend(_compare("skip", record.skips, skips, lambda s: f"{s.target} j={s.j}"))
    problems.extend(_compare("shortfall", record.shortfalls, shortfalls, lambda s: s.target))

    replay = replace(fresh, groups=groups, skips=skips, shortfalls=shortfalls)
    for n, recorded in enumerate(record.replacements, 1):
        try:
            redone = _Board(replay).replacement(recorded.target, recorded.replaced)
        except (ValueError, KeyError) as e:
            problems.append(f"replacement #{n} ({recorded.target}): cannot be replayed: {e}")
            break
        if redone != recorded:
            problems.append(
                f"replacement #{n} ({recorded.target}, replacing {recorded.replaced}): recorded "
                f"{recorded.replacement} at j={recorded.j}, recomputed {redone.replacement} at "
                f"j={redone.j}" + ("" if redone.skips == recorded.skips else " (skips differ)")
            )
        replay = replace(replay, replacements=(*replay.replacements, recorded))
    return problems


def _check_stratum(s: Stratum, ratio: Decimal | None) -> tuple[list[str], _Stratum | None]:
    """One stratum's checks but the selection; what to rank for it (None: nothing can be)."""
    out: list[str] = []
    where = f"stratum {s.name}"
    if ratio is not None and ratio != s.ratio:
        out.append(f"{where}: ratio is {s.ratio}, the parameters give {ratio}")
    keys = s.candidates
    if not all(map(operator.lt, keys, islice(keys, 1, None))):
        out.append(f"{where}: candidate keys are not sorted and unique")
        keys = tuple(sorted(set(keys)))
    if len(keys) != s.count:
        out.append(f"{where}: count is {s.count}, it lists {len(keys)} candidates")
    q = quota(len(keys), s.ratio)
    checked = _stratum(keys, q, s.name, s.selected)
    if checked.digest != s.digest:
        out.append(f"{where}: candidate digest does not match its candidate keys")
    if checked.newline or (keys and not keys[0]):
        out.append(f"{where}: a candidate key is empty or contains a newline")
        return out, None
    if q != s.quota:
        out.append(f"{where}: quota is {s.quota}, ceil({len(keys)} × {s.ratio}) = {q}")
    return out, checked


def _compare(what: str, recorded: Sequence[Any], computed: Sequence[Any], label: Any) -> list[str]:
    """Readable differences between two result lists (first few only)."""
    if tuple(recorded) == tuple(computed):
        return []
    out = [f"{what}s differ: {len(recorded)} recorded, {len(computed)} recomputed"]
    for a, b in zip(recorded, computed, strict=False):
        if a != b:
            out.append(f"first differing {what}: recorded {a}, recomputed {b}")
            break
    else:
        longer = recorded if len(recorded) > len(computed) else computed
        extra = longer[min(len(recorded), len(computed))]
        side = "recorded" if longer is recorded else "recomputed"
        out.append(f"extra {side} {what}: {label(extra)}")
    return out


def _first_difference(recorded: Sequence[str], computed: Sequence[str]) -> str:
    """Where two key lists part ways, for a message a person can act on."""
    for n, (a, b) in enumerate(zip(recorded, computed, strict=False)):
        if a != b:
            return f" (position {n}: recorded {a!r}, recomputed {b!r})"
    return f" ({len(recorded)} recorded, {len(computed)} recomputed)"


# --- internals ---------------------------------------------------------------------------------


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC: a million live tuples make each collection rescan them (≈30%)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_seed(seed_hex: str) -> None:
    """A malformed seed would make the published record impossible to check."""
    if not _SEED_RE.fullmatch(seed_hex):
        raise ValueError("seed_hex must be 64 lowercase hex digits")


def _check_ratio(name: str, ratio: Decimal) -> None:
    """Ratios are shares: a NaN or 150% is a typo, not a policy."""
    if not isinstance(ratio, Decimal) or not ratio.is_finite() or not 0 <= ratio <= 1:
        raise ValueError(f"ratio {name} must be a Decimal between 0 and 1, got {ratio!r}")


def _check_params(p: DrawParams) -> None:
    """Reject settings that would make a draw meaningless before drawing anything."""
    if set(p.class_ratios) != set(CLASSES):
        raise ValueError("class_ratios must give exactly A, B, C and D")
    for c in CLASSES:
        _check_ratio(c, p.class_ratios[c])
    if p.policy is Policy.FLAT:
        if p.flat_ratio is None:
            raise ValueError("policy flat needs flat_ratio")
        _check_ratio("flat", p.flat_ratio)
    if p.unclassified_as not in CLASSES:
        raise ValueError("unclassified_as must be one of A, B, C, D")
    if p.flag_threshold < 1:
        raise ValueError("flag_threshold must be at least 1")
    if p.group_size < 2:
        raise ValueError("group_size must be at least 2 (DOMAIN §4)")
    if p.load_cap is not None and p.load_cap < 1:
        raise ValueError("load_cap must be at least 1")
    if len(set(p.departments)) != len(p.departments):
        raise ValueError("departments must be distinct")
    if len(p.departments) > p.group_size:
        raise ValueError(
            f"{len(p.departments)} departments cannot all sit in a group of {p.group_size}"
        )


def _strata_keys(
    candidates: Sequence[Candidate], policy: Policy, names: Iterable[str]
) -> dict[str, Sequence[str]]:
    """Each stratum's keys, sorted (repeated keys are left for `_whole` to find)."""
    buckets: dict[str, list[Sequence[str]]] = {name: [] for name in names}
    if isinstance(candidates, CandidateGroups):
        for code, keys in candidates.groups.items():
            buckets[stratum_of(Candidate("", *_CODE_PAIRS[code]), policy)].append(keys)
    else:
        rows: dict[str, list[str]] = {name: [] for name in buckets}
        # One dict lookup per candidate instead of branching: this loop runs a million times.
        append = {
            (cls, flagged): rows[stratum_of(Candidate("", cls, flagged), policy)].append
            for cls in _CLASS_SET
            for flagged in (False, True)
        }
        try:
            for c in candidates:
                append[c[1], c[2]](c[0])
        except KeyError:
            bad = next(c for c in candidates if (c[1], c[2]) not in append)
            raise ValueError(
                f"candidate {bad[0]!r}: credit class {bad[1]!r} is not A, B, C, D or blank"
            ) from None
        for name, keys in rows.items():
            buckets[name].append(keys)
    # Keys read in key order (the database's ORDER BY) are not sorted again: checking that
    # they ascend is one pass; several runs of a stratum are merged (a sort of sorted runs).
    return {
        name: runs[0] if len(runs) == 1 and _ascending(runs[0]) else sorted(chain(*runs))
        for name, runs in buckets.items()
    }


def _ascending(keys: Sequence[str]) -> bool:
    """Strictly ascending: sorted, and no key twice."""
    return all(map(operator.lt, keys, islice(keys, 1, None)))


def _digest(sorted_keys: Sequence[str]) -> str:
    """keys_digest for keys already sorted (a million-key sort is not free)."""
    return hashlib.sha256("\n".join(sorted_keys).encode("utf-8")).hexdigest()


class _Stratum(NamedTuple):
    """One stratum being drawn or checked: its sorted keys joined as the digest hashes them,
    how many to draw; for verify, its name and recorded selection."""

    keys: Sequence[str]
    data: bytes  # "\n".join(keys) in UTF-8: one join serves the digest and the ranks
    digest: str
    newline: bool  # a key contains one: the digest would no longer tell the keys apart
    k: int
    name: str
    selected: tuple[str, ...] = ()


def _stratum(keys: Sequence[str], k: int, name: str, selected: tuple[str, ...] = ()) -> _Stratum:
    """One join, one hash of it, one count of its newlines."""
    data = "\n".join(keys).encode("utf-8")
    newline = bool(keys) and data.count(b"\n") != len(keys) - 1
    return _Stratum(keys, data, hashlib.sha256(data).hexdigest(), newline, k, name, selected)


class _Whole(NamedTuple):
    """What the draw and verify need of all the candidates together."""

    size: int
    digest: str  # of every key, sorted
    repeated: bool  # some key is in the candidates twice


def _whole(keys: Sequence[Sequence[str]]) -> _Whole:
    """Every key of these sorted runs (strata), merged: their count, digest and repeats."""
    every = sorted(chain.from_iterable(keys))
    repeated = any(map(operator.eq, every, islice(every, 1, None)))
    return _Whole(len(every), _digest(every), repeated)


CHILD_FROM = 200_000
"""Candidates from which a forked child process does part of the hashing (`_ranked`). One
SHA-256 per key is most of a big draw's time and holds the interpreter lock (hashlib lets it
go only for long inputs), so threads cannot share it; a forked child starts with the keys
already in memory and sends back only the few ranks that can be drawn. Forking a big process
costs tens of milliseconds: small draws (tests, a real county's strata) stay in-process."""

CHILD_SHARE = 0.3
"""The share of every stratum's keys the child ranks; it also merges every key for the overall
digest. The child pays for the pages it touches (copy-on-write): measured with bench/draw.py,
the two then finish together."""


def _ranked(
    seed_hex: str, strata: Sequence[_Stratum], whole: Sequence[Sequence[str]]
) -> tuple[list[list[tuple[bytes, str]]], _Whole]:
    """Per stratum, the k lowest (rank, key) pairs in order (one hash per key, then a sort of
    about k), and `_whole(whole)`. Big draws share the work with a forked child (`CHILD_FROM`)."""
    prefix = (seed_hex + ":").encode("utf-8")
    # Ranks are uniform, so the k lowest lie below k/n of the range plus a margin of ~6σ;
    # only those are kept and sorted. Exactness does not depend on it: too few → all of them.
    cuts = [_cut(len(s.keys), s.k) for s in strata]
    datas = [s.data if s.k > 0 else b"" for s in strata]  # no ranks for a stratum drawing none
    if sum(map(len, whole)) < CHILD_FROM:
        found = [_ranks_below(prefix, d, 0, c) for d, c in zip(datas, cuts, strict=True)]
        every = _whole(whole)
    else:
        # Each stratum's bytes are cut at a newline: the parent ranks the keys before it, the
        # child those after it. Every key once, by one of the two: the same pairs, the same
        # selection; and neither splits the other's share.
        ends = [_newline_after(d, 1 - CHILD_SHARE) for d in datas]

        def theirs() -> tuple[list[list[tuple[bytes, int]]], _Whole]:
            ranks = [
                _ranks_below(prefix, d[e + 1 :], d.count(b"\n", 0, e) + 1, c)
                for d, e, c in zip(datas, ends, cuts, strict=True)
            ]
            return ranks, _whole(whole)

        with _forked(theirs) as result:
            mine = [
                _ranks_below(prefix, d[:e], 0, c) for d, e, c in zip(datas, ends, cuts, strict=True)
            ]
            rest, every = result()
            found = [a + b for a, b in zip(mine, rest, strict=True)]
    selections: list[list[tuple[bytes, str]]] = []
    for s, below in zip(strata, found, strict=True):
        if len(below) < s.k:  # never seen
            below = _ranks_below(prefix, s.data, 0, 2**256)
        # The keys are sorted, so equal ranks (never seen) fall back to the key by the index.
        selections.append([(rank, s.keys[i]) for rank, i in sorted(below)[: s.k]])
    return selections, every


def _cut(n: int, k: int) -> int:
    """The rank (as a 256-bit number) below which the k lowest of n ranks lie, but for a
    chance of about 10^-9: ranks are uniform, so k/n of the range plus ~6σ."""
    if k <= 0:
        return 0
    share = (k + 6 * math.isqrt(k) + 16) / n
    return int(share * 2**256) if share < 1 else 2**256


def _newline_after(data: bytes, share: float) -> int:
    """The offset of the first newline after `share` of `data` (len(data) when none)."""
    found = data.find(b"\n", int(len(data) * share))
    return len(data) if found < 0 else found


def _ranks_below(prefix: bytes, data: bytes, first: int, cut: int) -> list[tuple[bytes, int]]:
    """(rank, index) of the newline-separated keys in `data`, numbered from `first`, whose
    rank as a 256-bit number is below `cut`."""
    if not data or cut <= 0:
        return []
    # Copying a hash that already holds the prefix is ~30% cheaper than hashing prefix + key;
    # digests compare as bytes in the same order as their hex forms and numbers.
    new = hashlib.sha256(prefix).copy
    limit = cut.to_bytes(32, "big") if cut < 2**256 else b"\xff" * 33  # above every digest
    below: list[tuple[bytes, int]] = []
    keep = below.append
    for i, b in enumerate(data.split(b"\n"), first):  # the hot loop: a million times, big draws
        h = new()
        h.update(b)
        rank = h.digest()
        if rank < limit:
            keep((rank, i))
    return below


@contextmanager
def _forked(work: Callable[[], T]) -> Iterator[Callable[[], T]]:
    """Run `work` in a forked child while the caller does its own share; the callable yielded
    waits for the child's result (or raises what stopped it)."""
    # fork: the child starts at once with every key already in memory (copy-on-write).
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_send_result, args=(work, send), daemon=True)
    child.start()
    send.close()

    def result() -> T:
        try:
            sent = receive.recv()
        except EOFError:
            raise RuntimeError("the ranking child process ended without a result") from None
        if isinstance(sent, BaseException):
            raise sent
        return cast(T, sent)

    try:
        yield result
    finally:
        child.kill()  # nothing once it has sent its result: it is exiting
        child.join()
        receive.close()


def _send_result(work: Callable[[], Any], out: Connection) -> None:
    """The child's whole life: one result, or what stopped it."""
    try:
        out.send(work())
    except Exception as error:  # the parent raises it
        out.send(error)


def _cover(dneed: int, tneed: int, seats: int, profiles: dict[tuple[int, int], int]) -> bool:
    """Whether `seats` more inspectors of these (department bit, tag mask) profiles can cover."""
    # Branches only on profiles covering the first missing department or tag: the search
    # stays tiny for real groups (2–5 seats, a few departments and tags).
    if not dneed and not tneed:
        return True
    if seats <= 0 or dneed.bit_count() > seats:
        return False
    if dneed:
        bit = dneed & -dneed
        options = [p for p, n in profiles.items() if n > 0 and p[0] == bit]
    else:
        bit = tneed & -tneed
        options = [p for p, n in profiles.items() if n > 0 and p[1] & bit]
    for p in options:
        profiles[p] -= 1
        ok = _cover(dneed & ~p[0], tneed & ~p[1], seats - 1, profiles)
        profiles[p] += 1
        if ok:
            return True
    return False


class _Variant:
    """The mode-filtered pool for one kind of target, with live counts of uncapped inspectors."""

    __slots__ = ("members", "profiles", "uncapped")

    def __init__(self, members: list[int]) -> None:
        self.members = members
        self.uncapped = 0
        self.profiles: dict[tuple[int, int], int] = {}


class _Board:
    """The inspector draw's working state; shared by draw, replacement and verify."""

    def __init__(self, record: DrawRecord) -> None:
        self.seed = record.seed_hex
        self.params = record.params
        self.cap = record.load_cap
        self.size = record.params.group_size
        self.pool = record.pool
        self.index = {i.cert_no: n for n, i in enumerate(self.pool)}
        depts = list(record.params.departments)
        tags = list(record.params.required_expertise)
        self.dept_names, self.tag_names = depts, tags
        self.dneed = (1 << len(depts)) - 1
        self.tneed = (1 << len(tags)) - 1
        dbit = {d: 1 << n for n, d in enumerate(depts)}
        tbit = {t: 1 << n for n, t in enumerate(tags)}
        self.profile = [
            (dbit.get(i.department, 0), sum(tbit.get(t, 0) for t in i.expertise)) for i in self.pool
        ]
        self.conflicts: dict[str, set[int]] = {}
        for n, insp in enumerate(self.pool):
            for key in insp.conflicts:
                self.conflicts.setdefault(key, set()).add(n)
        self.previous = {
            k: {self.index[c] for c in v if c in self.index}
            for k, v in record.previous_groups.items()
        }
        self.cross = record.params.mode is Mode.CROSS_REGION
        self.regions = record.target_regions
        self.order = record.order
        self.loads = [0] * len(self.pool)
        self.variants: dict[str, _Variant] = {}
        self.record = record

    # -- pool bookkeeping --

    def _in_variant(self, n: int, region: str) -> bool:
        """Cross-region: only inspectors from a known, different region (异地)."""
        if not self.cross:
            return True
        r = self.pool[n].region
        return bool(r) and r != region

    def variant(self, region: str) -> _Variant:
        """The working-copy base for targets in `region` (one shared base unless cross-region)."""
        v = self.variants.get(region)
        if v is None:
            v = _Variant([n for n in range(len(self.pool)) if self._in_variant(n, region)])
            for n in v.members:
                if self.loads[n] < self.cap:
                    self._count(v, n, 1)
            self.variants[region] = v
        return v

    def _count(self, v: _Variant, n: int, delta: int) -> None:
        """Only profiles that cover a department or tag matter to the coverage search."""
        v.uncapped += delta
        p = self.profile[n]
        if p != (0, 0):
            v.profiles[p] = v.profiles.get(p, 0) + delta

    def _load(self, n: int, delta: int) -> None:
        """Keep every variant's uncapped counts in step as inspectors reach or leave the cap."""
        before = self.loads[n] < self.cap
        self.loads[n] += delta
        after = self.loads[n] < self.cap
        if before != after:
            for region, v in self.variants.items():
                if self._in_variant(n, region):
                    self._count(v, n, 1 if after else -1)

    def _ineligible(self, n: int, target: str) -> str:
        """Why inspector n cannot serve this target at all, or ""."""
        if n in self.conflicts.get(target, ()):
            return CONFLICT
        if n in self.previous.get(target, ()):
            return ROTATION
        if self.loads[n] >= self.cap:
            return LOAD_CAP
        return ""

    def _eligible(self, target: str, v: _Variant) -> tuple[int, dict[tuple[int, int], int]]:
        """Count and profiles of the inspectors who could serve this target (set E)."""
        count, profiles = v.uncapped, dict(v.profiles)
        out = self.conflicts.get(target, set()) | self.previous.get(target, set())
        region = self.regions.get(target, "")
        for n in out:
            if self._in_variant(n, region) and self.loads[n] < self.cap:
                count -= 1
                p = self.profile[n]
                if p != (0, 0):
                    profiles[p] -= 1
        return count, profiles

    def _coverage_reason(
        self, dneed: int, tneed: int, seats: int, profiles: dict[tuple[int, int], int]
    ) -> str:
        """Empty when the group can still be completed, else which requirement fails."""
        if not dneed and not tneed:
            return ""
        if _cover(dneed, tneed, seats, profiles):
            return ""
        if not _cover(dneed, 0, seats, profiles):
            return DEPARTMENT
        if not _cover(0, tneed, seats, profiles):
            return EXPERTISE
        return COVERAGE

    def _names(self, mask: int, names: list[str]) -> str:
        """Bit masks back to names, for shortfall details a person can read."""
        return ", ".join(n for b, n in enumerate(names) if mask >> b & 1)

    def _infeasible(
        self, count: int, seats: int, dneed: int, tneed: int, profiles: dict[tuple[int, int], int]
    ) -> tuple[str, str] | None:
        """Why no group can be completed from these inspectors (None: it can)."""
        if count < seats:
            return POOL_TOO_SMALL, f"{count} eligible inspector(s), {seats} needed"
        have_d = have_t = 0
        for (d, t), n in profiles.items():
            if n > 0:
                have_d |= d
                have_t |= t
        if dneed & ~have_d:
            missing = self._names(dneed & ~have_d, self.dept_names)
            return DEPARTMENT_UNCOVERED, f"no eligible inspector from department(s): {missing}"
        if tneed & ~have_t:
            missing = self._names(tneed & ~have_t, self.tag_names)
            return EXPERTISE_UNCOVERED, f"no eligible inspector with expertise: {missing}"
        if not _cover(dneed, tneed, seats, profiles):
            return COVERAGE_INFEASIBLE, (
                f"departments and expertise cannot all be covered by {seats} inspector(s)"
            )
        return None

    def _base(self, target: str) -> list[int] | None:
        """The target's base list (None: cross-region target without a region)."""
        region = self.regions.get(target, "")
        if self.cross and not region:
            return None
        return self.variant(region).members

    # -- the two operations --

    def draw_groups(self) -> tuple[tuple[Group, ...], tuple[Skip, ...], tuple[Shortfall, ...]]:
        """Groups for every drawn target, in ascending target rank (docs/draw.md §6)."""
        # The hot loop of a large draw (a hash per pick): names are bound locally on purpose.
        groups: list[Group] = []
        skips: list[Skip] = []
        shortfalls: list[Shortfall] = []
        g, cap, loads, profile, pool = self.size, self.cap, self.loads, self.profile, self.pool
        dneed, tneed = self.dneed, self.tneed
        needs = bool(dneed or tneed)
        sha = hashlib.sha256
        from_bytes = int.from_bytes
        seed_colon = self.seed + ":"
        cert = [i.cert_no for i in pool]
        suffix = [str(j).encode() for j in range(64)]
        no_set: set[int] = set()
        shared = None if self.cross else self.variant("")
        for target in self.order:
            if shared is None:
                region = self.regions.get(target, "")
                if not region:
                    detail = "cross-region mode needs the target's region"
                    shortfalls.append(Shortfall(target, TARGET_REGION_UNKNOWN, detail))
                    continue
                v = self.variant(region)
            else:
                v = shared
            conflicts = self.conflicts.get(target, no_set)
            previous = self.previous.get(target, no_set)
            if conflicts or previous:
                count, profiles = self._eligible(target, v)
            else:
                count, profiles = v.uncapped, (dict(v.profiles) if needs else {})
            if count < g or needs:
                why = self._infeasible(count, g, dneed, tneed, profiles)
                if why:
                    shortfalls.append(Shortfall(target, *why))
                    continue
            base = v.members
            remaining = len(base)
            prefix = (seed_colon + target + ":").encode("utf-8")
            removed: list[int] = []
            picks: list[Pick] = []
            members: list[int] = []
            dmask = tmask = 0
            j = 0
            while len(picks) < g:
                jb = suffix[j] if j < 64 else str(j).encode()
                idx = from_bytes(sha(prefix + jb).digest(), "big") % remaining
                remaining -= 1
                if removed:
                    n = base[_take(removed, idx)]
                else:
                    removed.append(idx)
                    n = base[idx]
                if n in conflicts:
                    reason = CONFLICT
                elif n in previous:
                    reason = ROTATION
                elif loads[n] >= cap:
                    reason = LOAD_CAP
                elif needs:
                    d, t = profile[n]
                    if d or t:
                        profiles[(d, t)] -= 1  # n leaves the working copy, accepted or not
                    nd, nt = dneed & ~(dmask | d), tneed & ~(tmask | t)
                    seats = g - len(picks) - 1
                    if not (nd or nt):
                        reason = ""
                    elif not seats:  # the last seat: _coverage_reason's answer, without search
                        reason = DEPARTMENT if nd else EXPERTISE
                    else:
                        reason = self._coverage_reason(nd, nt, seats, profiles)
                    if not reason:
                        dmask |= d
                        tmask |= t
                else:
                    reason = ""
                if reason:
                    skips.append(Skip(target, j, cert[n], reason))
                else:
                    picks.append(Pick(cert[n], j))
                    members.append(n)
                j += 1
            for n in members:
                if loads[n] + 1 >= cap:
                    self._load(n, 1)
                else:
                    loads[n] += 1
            groups.append(Group(target, tuple(picks)))
        return tuple(groups), tuple(skips), tuple(shortfalls)

    def replacement(self, target: str, cert_no: str) -> Replacement:
        """Replay the record's groups and replacements, then continue this target's sequence."""
        rec = self.record
        current = _current_groups(rec)
        if target not in current:
            raise ValueError(f"target {target!r} has no inspector group in this draw")
        members = current[target]
        if cert_no not in members:
            raise ValueError(f"{cert_no!r} is not in the group of {target!r}")
        if len(members) < self.size:
            raise ValueError(f"the group of {target!r} is short: the office decides")
        for group in current.values():
            for c in group:
                self.loads[self.index[c]] += 1
        self.loads[self.index[cert_no]] -= 1
        base = self._base(target)
        assert base is not None
        position = {n: p for p, n in enumerate(base)}
        used = [(p.j, p.cert_no) for grp in rec.groups if grp.target == target for p in grp.picks]
        used += [(s.j, s.cert_no) for s in rec.skips if s.target == target]
        for r in rec.replacements:
            if r.target == target:
                used += [(s.j, s.cert_no) for s in r.skips]
                if r.replacement is not None and r.j is not None:
                    used.append((r.j, r.replacement))
        removed = sorted(position[self.index[c]] for _, c in used)
        j = max(j for j, _ in used) + 1
        stay = [self.index[c] for c in members if c != cert_no]
        dmask = tmask = 0
        for n in stay:
            dmask |= self.profile[n][0]
            tmask |= self.profile[n][1]
        gone = set(removed)

        def fits(n: int) -> str:
            """Why n cannot take the freed seat, or ""."""
            reason = self._ineligible(n, target)
            if reason:
                return reason
            d, t = self.profile[n]
            return self._coverage_reason(
                self.dneed & ~(dmask | d), self.tneed & ~(tmask | t), 0, {}
            )

        if not any(not fits(n) for p, n in enumerate(base) if p not in gone):
            detail = "no inspector left in this target's sequence meets every constraint"
            return Replacement(target, cert_no, None, None, (), NO_REPLACEMENT, detail)
        skips: list[Skip] = []
        while True:
            n = base[_take(removed, pick_index(self.seed, target, j, len(base) - len(removed)))]
            reason = fits(n)
            if not reason:
                return Replacement(target, cert_no, self.pool[n].cert_no, j, tuple(skips))
            skips.append(Skip(target, j, self.pool[n].cert_no, reason))
            j += 1


def _take(removed: list[int], idx: int) -> int:
    """`working_copy.pop(idx)` as a base position, without copying the pool per target."""
    pos = idx
    for r in removed:  # ascending base positions already taken out
        if r <= pos:
            pos += 1
        else:
            break
    insort(removed, pos)
    return pos


def _current_groups(record: DrawRecord) -> dict[str, list[str]]:
    """Target → members after applying the replacements in order."""
    groups = {g.target: list(g.members) for g in record.groups}
    for r in record.replacements:
        members = groups.get(r.target)
        if members is None or r.replaced not in members:
            raise ValueError(f"replacement of {r.replaced!r} for {r.target!r} matches no group")
        if r.replacement is None:
            members.remove(r.replaced)
        else:
            members[members.index(r.replaced)] = r.replacement
    return groups


# --- JSON --------------------------------------------------------------------------------------


def _record_to_obj(r: DrawRecord) -> dict[str, Any]:
    """Field names and order are part of the published format (docs/draw.md §8)."""
    p = r.params
    return {
        "algorithm": r.algorithm,
        "seed_hex": r.seed_hex,
        "commitment": r.commitment,
        "parameters": {
            "policy": p.policy.value,
            "class_ratios": {c: str(p.class_ratios[c]) for c in CLASSES},
            "flat_ratio": None if p.flat_ratio is None else str(p.flat_ratio),
            "unclassified_as": p.unclassified_as,
            "flag_threshold": p.flag_threshold,
            "group_size": p.group_size,
            "load_cap": r.load_cap,
            "load_cap_rule": "default" if p.load_cap is None else "explicit",
            "mode": p.mode.value,
            "stations": list(p.stations),
            "items": {k: list(v) for k, v in p.items.items()},
            "departments": list(p.departments),
        },
        "candidates": {"count": r.candidate_count, "digest": r.candidate_digest},
        "strata": [
            {
                "name": s.name,
                "ratio": str(s.ratio),
                "count": s.count,
                "quota": s.quota,
                "digest": s.digest,
                "candidates": list(s.candidates),
                "selected": list(s.selected),
            }
            for s in r.strata
        ],
        "order": list(r.order),
        "target_regions": dict(r.target_regions),
        "inspectors": [
            {
                "cert_no": i.cert_no,
                "department": i.department,
                "unit": i.unit,
                "region": i.region,
                "expertise": sorted(i.expertise),
                "conflicts": sorted(i.conflicts),
            }
            for i in r.pool
        ],
        "previous_groups": {k: list(v) for k, v in r.previous_groups.items()},
        "groups": [
            {"target": g.target, "picks": [{"j": p.j, "cert_no": p.cert_no} for p in g.picks]}
            for g in r.groups
        ],
        "skips": [_skip_to_obj(s) for s in r.skips],
        "shortfalls": [
            {"target": s.target, "reason": s.reason, "detail": s.detail} for s in r.shortfalls
        ],
        "replacements": [
            {
                "target": x.target,
                "replaced": x.replaced,
                "replacement": x.replacement,
                "j": x.j,
                "skips": [_skip_to_obj(s) for s in x.skips],
                "reason": x.reason,
                "detail": x.detail,
            }
            for x in r.replacements
        ],
    }


def _skip_to_obj(s: Skip) -> dict[str, Any]:
    """Skips appear in two places of the record."""
    return {"target": s.target, "j": s.j, "cert_no": s.cert_no, "reason": s.reason}


def _skip_from_obj(o: Mapping[str, Any]) -> Skip:
    """Inverse of _skip_to_obj."""
    return Skip(o["target"], o["j"], o["cert_no"], o["reason"])


def _decimal(text: str) -> Decimal:
    """Ratios travel as strings so that no float ever touches them."""
    try:
        return Decimal(text)
    except InvalidOperation as e:
        raise ValueError(f"not a decimal ratio: {text!r}") from e


def _record_from_obj(o: Mapping[str, Any]) -> DrawRecord:
    """Inverse of _record_to_obj."""
    p = o["parameters"]
    params = DrawParams(
        policy=Policy(p["policy"]),
        class_ratios={c: _decimal(v) for c, v in p["class_ratios"].items()},
        flat_ratio=None if p["flat_ratio"] is None else _decimal(p["flat_ratio"]),
        unclassified_as=p["unclassified_as"],
        flag_threshold=p["flag_threshold"],
        group_size=p["group_size"],
        load_cap=None if p["load_cap_rule"] == "default" else p["load_cap"],
        mode=Mode(p["mode"]),
        stations=tuple(p["stations"]),
        items={k: tuple(v) for k, v in p["items"].items()},
        departments=tuple(p["departments"]),
    )
    return DrawRecord(
        algorithm=o["algorithm"],
        seed_hex=o["seed_hex"],
        commitment=o["commitment"],
        params=params,
        load_cap=p["load_cap"],
        candidate_count=o["candidates"]["count"],
        candidate_digest=o["candidates"]["digest"],
        strata=tuple(
            Stratum(
                s["name"],
                _decimal(s["ratio"]),
                s["count"],
                s["quota"],
                s["digest"],
                tuple(s["candidates"]),
                tuple(s["selected"]),
            )
            for s in o["strata"]
        ),
        order=tuple(o["order"]),
        target_regions=dict(o["target_regions"]),
        pool=tuple(
            Inspector(
                i["cert_no"],
                i["department"],
                i["unit"],
                i["region"],
                frozenset(i["expertise"]),
                frozenset(i["conflicts"]),
            )
            for i in o["inspectors"]
        ),
        previous_groups={k: tuple(v) for k, v in o["previous_groups"].items()},
        groups=tuple(
            Group(g["target"], tuple(Pick(p["cert_no"], p["j"]) for p in g["picks"]))
            for g in o["groups"]
        ),
        skips=tuple(_skip_from_obj(s) for s in o["skips"]),
        shortfalls=tuple(Shortfall(s["target"], s["reason"], s["detail"]) for s in o["shortfalls"]),
        replacements=tuple(
            Replacement(
                x["target"],
                x["replaced"],
                x["replacement"],
                x["j"],
                tuple(_skip_from_obj(s) for s in x["skips"]),
                x["reason"],
                x["detail"],
            )
            for x in o["replacements"]
        ),
    )
