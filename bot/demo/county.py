"""青山县: a fictional Hainan county, generated reproducibly for the demo and for training.

Everything goes through the product's own doors where it has them: departments, the 检查对象
名录库 and the 执法检查人员名录库 are written as CSV files and loaded with the real importer
(`bot.directories.import_file`); the check items come from the real published lists of Hainan
(`bot/demo_data/hainan-2020/`, issue #7), imported as they are and then adopted: 40 of them are
moved to the county's departments and given the fields a county sets itself (ratio, frequency,
content, required expertise); the rest of the provincial list and its provisional departments
are deactivated (never deleted). People are bound directly (Person + RoleGrant), as if every
invitation had been redeemed, and the office group and each department group are bound.

The same seed gives the same county, row for row.
"""

from __future__ import annotations

import csv
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import col, select, update

from bot.clock import Clock
from bot.directories import ImportReport, import_file
from bot.uscc import CHARSET, check_char
from storage.audit import record
from storage.db import Database
from storage.directory import SCHEMAS
from storage.models import (
    AppSetting,
    ChatBinding,
    CheckItem,
    Department,
    Inspector,
    Person,
    Role,
    RoleGrant,
)

SEED = 20200318  # the date on the folder the Hainan lists come from
TARGET_COUNT = 20_000
HERE = Path(__file__).resolve().parent
HAINAN_LISTS = HERE.parent / "demo_data" / "hainan-2020"

BOT_USERNAME = "qingshan_dsr_bot"
BOT_NAME = "双随机联合抽查助手"


# --- the county (county.yaml) -------------------------------------------------------------------


@dataclass(frozen=True)
class Town:
    name: str
    station_code: str
    station_name: str
    weight: int  # share of the county's businesses


@dataclass(frozen=True)
class DepartmentSpec:
    code: str
    name: str
    short: str
    unit: str  # where its inspectors sit (the market bureau's stations are added per town)
    hainan_names: tuple[str, ...]  # the names this department has in the provincial lists
    expertise: tuple[str, ...]
    inspectors: int  # for the market bureau: at the bureau itself; stations get more
    positions: tuple[str, ...]


@dataclass(frozen=True)
class ItemPick:
    """One item of the provincial list as the county adopts it."""

    code: str  # the published list's generated code (storage.published)
    department: str
    ratio: str
    frequency: str
    expertise: str
    content: str
    category: str = ""  # only for joint items, whose list has no 事项类别
    methods: str = ""  # idem


@dataclass(frozen=True)
class Sector:
    """A kind of business: what it is called, does and is tagged with."""

    key: str
    weight: int
    industry: str
    scope: str
    tags: str
    company_words: tuple[str, ...]
    shop_words: tuple[str, ...]
    shops: float  # share of 个体工商户
    cooperatives: float  # share of 农民专业合作社 among the rest


@dataclass(frozen=True)
class CountySpec:
    name: str
    province: str
    region_code: str
    office_group: str
    towns: tuple[Town, ...]
    station_staff: int
    departments: tuple[DepartmentSpec, ...]
    items: tuple[ItemPick, ...]
    sectors: tuple[Sector, ...]
    company_forms: tuple[tuple[str, int, str], ...]
    credit_shares: tuple[tuple[str, int], ...]
    status_shares: tuple[tuple[str, int], ...]
    brands: tuple[str, ...]
    streets: tuple[str, ...]
    villages: tuple[str, ...]
    surnames: str
    given: str


def load_spec(path: Path = HERE / "county.yaml") -> CountySpec:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10× faster
    raw = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    default_positions = tuple(raw["default_positions"])
    return CountySpec(
        name=raw["county"],
        province=raw["province"],
        region_code=str(raw["region_code"]),
        office_group=raw["office_group"],
        towns=tuple(Town(n, c, s, int(w)) for n, c, s, w in raw["towns"]),
        station_staff=int(raw["station_staff"]),
        departments=tuple(
            DepartmentSpec(
                code=d["code"],
                name=d["name"],
                short=d["short"],
                unit=d["unit"],
                hainan_names=tuple(d["hainan_names"]),
                expertise=tuple(d["expertise"]),
                inspectors=int(d["inspectors"]),
                positions=tuple(d.get("positions", default_positions)),
            )
            for d in raw["departments"]
        ),
        items=tuple(ItemPick(*(str(v) for v in row)) for row in raw["items"]),
        sectors=tuple(
            Sector(
                key=s["key"],
                weight=int(s["weight"]),
                industry=s["industry"],
                scope=s["scope"],
                tags=s["tags"],
                company_words=tuple(s["company"]),
                shop_words=tuple(s["shop"]),
                shops=float(s["shops"]),
                cooperatives=float(s.get("cooperatives", 0)),
            )
            for s in raw["sectors"]
        ),
        company_forms=tuple((f, int(w), suffix) for f, w, suffix in raw["company_forms"]),
        credit_shares=tuple((c, int(w)) for c, w in raw["credit_shares"]),
        status_shares=tuple((c, int(w)) for c, w in raw["status_shares"]),
        brands=tuple(raw["brands"].split()),
        streets=tuple(raw["streets"].split()),
        villages=tuple(raw["villages"].split()),
        surnames=raw["surnames"],
        given=raw["given"],
    )


SPEC = load_spec()
DEPARTMENTS = SPEC.departments
TOWNS = SPEC.towns


# --- people, chats -----------------------------------------------------------------------------

OFFICE_USER = 710_000_001
LIAISON_BASE = 710_000_100
INSPECTOR_BASE = 710_001_000
OFFICE_GROUP = -1_002_100_000_001
DEPARTMENT_GROUP_BASE = -1_002_100_000_100


def department_group_id(index: int) -> int:
    return DEPARTMENT_GROUP_BASE - index


# --- what generation produced --------------------------------------------------------------------


@dataclass
class Generated:
    """Counts and timings of one generation, kept in AppSetting for `docs/demo.md`'s numbers."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    reports: list[ImportReport] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


class GenerationError(RuntimeError):
    """An import of the generated files did not apply cleanly: a bug in the generator."""


# --- generation ----------------------------------------------------------------------------------


def _name_pool(rng: random.Random, count: int) -> Iterator[str]:
    """Distinct Chinese names (2–3 characters), in a fixed order."""
    seen: set[str] = set()
    while len(seen) < count:
        surname = rng.choice(SPEC.surnames)
        given = "".join(rng.choice(SPEC.given) for _ in range(rng.choice((1, 2, 2))))
        name = surname + given
        if name not in seen:
            seen.add(name)
            yield name


def _uscc(rng: random.Random, kind: str, seen: set[str]) -> str:
    """A valid USCC: 9 (市场监管) + 1/2/3 (企业/个体工商户/农民专业合作社) + the county's code."""
    while True:
        if rng.random() < 0.6:
            body = "MA" + "".join(rng.choice(CHARSET) for _ in range(7))
        else:
            body = "".join(rng.choice("0123456789") for _ in range(8)) + rng.choice(CHARSET)
        first17 = "9" + kind + SPEC.region_code + body
        code = first17 + check_char(first17)
        if code not in seen:
            seen.add(code)
            return code


def _weighted(rng: random.Random, pairs: Sequence[tuple[str, int]]) -> str:
    return rng.choices([k for k, _ in pairs], weights=[w for _, w in pairs])[0]


def _exact_shares(rng: random.Random, shares: Sequence[tuple[str, int]], total: int) -> list[str]:
    """Exactly `share/100 × total` of each value (the remainder to the first), shuffled."""
    out: list[str] = []
    weight = sum(w for _, w in shares)
    for value, share in shares[1:]:
        out += [value] * (total * share // weight)
    out = [shares[0][0]] * (total - len(out)) + out
    rng.shuffle(out)
    return out


def _business_name(
    rng: random.Random, sector: Sector, town: Town, taken: set[str]
) -> tuple[str, str, str]:
    """Name, 主体类型 and the USCC's type digit; a taken name gets a longer 字号."""
    if rng.random() < sector.shops:
        subject, kind = "个体工商户", "2"
    elif rng.random() < sector.cooperatives:
        subject, kind = "农民专业合作社", "3"
    else:
        subject, kind = _weighted(rng, [(f, w) for f, w, _ in SPEC.company_forms]), "1"
    size = 1
    while True:
        if kind == "2" and size == 1 and rng.random() < 0.4:
            surname = rng.choice(SPEC.surnames)
            brand = rng.choice((f"{surname}记", f"老{surname}", f"阿{rng.choice(SPEC.given)}"))
        else:
            brand = "".join(rng.choice(SPEC.brands) for _ in range(size))
        if kind == "2":
            name = f"{SPEC.name}{town.name}{brand}{rng.choice(sector.shop_words)}"
        elif kind == "3":
            name = f"{SPEC.name}{town.name}{brand}种养专业合作社"
        else:
            county, province = SPEC.name, SPEC.province
            prefix = rng.choice((province, f"{province}{county}", county))
            form = next(suffix for f, _, suffix in SPEC.company_forms if f == subject)
            name = f"{prefix}{brand}{rng.choice(sector.company_words)}{form}"
        if name not in taken:
            taken.add(name)
            return name, subject, kind
        size += 1


def target_rows(rng: random.Random, count: int = TARGET_COUNT) -> list[list[str]]:
    """The 检查对象名录库 as the template's columns (`storage.directory.SCHEMAS['targets']`)."""
    credit = _exact_shares(rng, SPEC.credit_shares, count)
    seen: set[str] = set()
    names: set[str] = set()
    rows: list[list[str]] = []
    sector_weights = [s.weight for s in SPEC.sectors]
    town_weights = [t.weight for t in TOWNS]
    for index in range(count):
        sector = rng.choices(SPEC.sectors, weights=sector_weights)[0]
        town = rng.choices(TOWNS, weights=town_weights)[0]
        name, subject, kind = _business_name(rng, sector, town, names)
        if rng.random() < 0.5:
            address = f"{SPEC.name}{town.name}{rng.choice(SPEC.streets)}{rng.randint(1, 300)}号"
        else:
            address = f"{SPEC.name}{town.name}{rng.choice(SPEC.villages)}{rng.randint(1, 120)}号"
        roll = rng.random()
        complaints = 0 if roll < 0.9 else (rng.randint(1, 2) if roll < 0.99 else rng.randint(3, 6))
        rows.append(
            [
                name,
                _uscc(rng, kind, seen),
                "",
                subject,
                sector.scope,
                address,
                town.name,
                sector.industry,
                _weighted(rng, SPEC.status_shares),
                credit[index],
                "是" if rng.random() < 0.008 else "否",
                "是" if rng.random() < 0.001 else "否",
                str(complaints),
                sector.tags,
            ]
        )
    return rows


@dataclass(frozen=True)
class InspectorRow:
    name: str
    department: str
    unit: str
    position: str
    expertise: str
    cert_no: str
    certified: bool
    conflicts: str
    phone: str

    def cells(self) -> list[str]:
        return [
            self.name,
            self.department,
            self.unit,
            self.position,
            self.expertise,
            self.cert_no,
            "是" if self.certified else "否",
            self.conflicts,
            self.phone,
        ]


def inspector_rows(
    rng: random.Random, names: Iterator[str], targets: Sequence[Sequence[str]]
) -> list[InspectorRow]:
    """120 inspectors: the market bureau's 12 + 8 per station, 8–9 in each other department."""
    by_town: dict[str, list[str]] = {}
    for row in targets:
        by_town.setdefault(row[6], []).append(row[1])
    rows: list[InspectorRow] = []
    for number, spec in enumerate(DEPARTMENTS, start=1):
        units = [spec.unit] * spec.inspectors
        if spec.code == "SJJ":
            units += [t.station_name for t in TOWNS for _ in range(SPEC.station_staff)]
        for seq, unit in enumerate(units, start=1):
            tags = rng.sample(spec.expertise, k=min(len(spec.expertise), rng.choice((1, 2, 2, 3))))
            town = next((t.name for t in TOWNS if t.station_name == unit), TOWNS[0].name)
            conflicts = ""
            if rng.random() < 0.12:  # a relative's shop, a former employer: 回避
                conflicts = ";".join(rng.sample(by_town[town], k=rng.choice((1, 1, 2))))
            rows.append(
                InspectorRow(
                    name=next(names),
                    department=spec.code,
                    unit=unit,
                    position=rng.choice(spec.positions),
                    expertise=";".join(sorted(tags, key=spec.expertise.index)),
                    cert_no=f"46{number:02d}{seq:04d}{SPEC.region_code[-2:]}",
                    certified=rng.random() > 0.02,
                    conflicts=conflicts,
                    phone=f"13{rng.randint(0, 9)}{rng.randint(10_000_000, 99_999_999)}",
                )
            )
    return rows


def new_businesses_csv(count: int = 3) -> bytes:
    """A small 检查对象 file, as the office would send it to the bot (`/import`), of businesses
    registered since the county was generated (another seed: other codes)."""
    rows = target_rows(random.Random(SEED + 1), count)
    lines = [",".join(_header("targets"))] + [",".join(row) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def department_rows() -> list[list[str]]:
    rows = [[d.name, d.code, "部门", ""] for d in DEPARTMENTS]
    rows += [[t.station_name, t.station_code, "所", "SJJ"] for t in TOWNS]
    return rows


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _header(kind: str) -> list[str]:
    return [c.header for c in SCHEMAS[kind].columns]


async def _import(
    db: Database, path: Path, kind: str, clock: Clock, workdir: Path, generated: Generated
) -> ImportReport:
    report = await import_file(
        db,
        path,
        kind=kind,
        actor="demo",
        clock=clock,
        max_bytes=64 * 1024 * 1024,
        error_dir=workdir,
        display_name=path.name,
    )
    generated.reports.append(report)
    if not report.applied or report.outcome.rejected_rows:
        raise GenerationError(
            f"{path.name}: applied={report.applied} problem={report.problem} "
            f"errors={[e for e in report.errors()][:5]}"
        )
    return report


async def generate_county(
    db: Database, clock: Clock, workdir: Path, *, targets: int = TARGET_COUNT
) -> Generated:
    """Fill an empty (migrated) database with 青山县. Deterministic for a given SEED."""
    generated = Generated()
    rng = random.Random(SEED)
    started = time.perf_counter()

    def lap(what: str) -> None:
        nonlocal started
        now = time.perf_counter()
        generated.seconds[what] = round(now - started, 3)
        started = now

    departments = _write_csv(workdir / "部门.csv", _header("departments"), department_rows())
    await _import(db, departments, "departments", clock, workdir, generated)
    lap("departments")

    for path in sorted(HAINAN_LISTS.glob("*.xls*")):
        await _import(db, path, "items", clock, workdir, generated)
    await adopt_items(db, clock.now())
    lap("items")

    rows = target_rows(rng, targets)
    target_file = _write_csv(workdir / "检查对象.csv", _header("targets"), rows)
    await _import(db, target_file, "targets", clock, workdir, generated)
    lap("targets")

    names = _name_pool(rng, 1 + len(DEPARTMENTS) + 200)
    inspectors = inspector_rows(rng, names, rows)
    inspector_file = _write_csv(
        workdir / "执法检查人员.csv", _header("inspectors"), [r.cells() for r in inspectors]
    )
    await _import(db, inspector_file, "inspectors", clock, workdir, generated)
    lap("inspectors")

    await bind_everyone(db, clock.now(), names)
    lap("people")

    generated.counts = {
        "departments": len(DEPARTMENTS),
        "stations": len(TOWNS),
        "items": len(SPEC.items),
        "targets": len(rows),
        "inspectors": len(inspectors),
    }
    return generated


async def adopt_items(db: Database, now: datetime) -> None:
    """The county's own list: each picked provincial item under the county's code (SJJ-01 …)
    and department, with what a county sets itself; every provincial item and provisional
    department is then retired (kept, inactive), so the office sees its 40 items only."""
    async with db.session() as session:
        code_of_name = {name: spec.code for spec in DEPARTMENTS for name in spec.hainan_names}
        county_code = {
            d.code: code_of_name[d.name]
            for d in await session.exec(select(Department))
            if d.provisional and d.name in code_of_name
        }
        published = {item.code: item for item in await session.exec(select(CheckItem))}
        missing = sorted({p.code for p in SPEC.items} - set(published))
        if missing:
            raise GenerationError(f"items not in the published lists: {missing}")
        await session.exec(
            update(CheckItem)
            .where(col(CheckItem.active).is_(True))
            .values(active=False, updated_at=now)
        )
        await session.exec(
            update(Department)
            .where(col(Department.provisional).is_(True))
            .values(active=False, updated_at=now)
        )
        numbers: Counter[str] = Counter()
        adopted: dict[str, str] = {}
        for pick in SPEC.items:
            source = published[pick.code]
            numbers[pick.department] += 1
            code = f"{pick.department}-{numbers[pick.department]:02d}"
            adopted[code] = pick.code
            cooperating = [
                county_code[c]
                for c in source.cooperating_codes or []
                if c in county_code and county_code[c] != pick.department
            ]
            session.add(
                CheckItem(
                    code=code,
                    name=source.name,
                    basis=source.basis,
                    department_code=pick.department,
                    object_type=source.object_type,
                    category=pick.category or source.category,
                    methods=pick.methods or source.methods,
                    ratio=pick.ratio,
                    frequency=pick.frequency,
                    content=pick.content,
                    expertise=pick.expertise,
                    domain=source.domain,
                    inspecting_body=source.inspecting_body,
                    joint=source.joint,
                    cooperating_codes=list(dict.fromkeys(cooperating)),
                    # The published list's import brought it in (provenance for the audit).
                    import_id=source.import_id,
                    created_at=now,
                    updated_at=now,
                )
            )
        await record(
            session,
            actor="demo",
            action="demo.adopt_items",
            entity="items",
            at=now,
            detail={"adopted": adopted, "departments": county_code},
        )


async def bind_everyone(db: Database, now: datetime, names: Iterator[str]) -> None:
    """Every invitation redeemed: the office, a liaison per department, every inspector, and
    the office group and department groups bound."""
    async with db.session() as session:

        def person(tg_user_id: int, name: str) -> Person:
            row = Person(tg_user_id=tg_user_id, display_name=name, created_at=now)
            session.add(row)
            return row

        office = person(OFFICE_USER, next(names))
        await session.flush()
        assert office.id is not None
        session.add(RoleGrant(person_id=office.id, role=Role.OFFICE, granted_at=now))
        for index, spec in enumerate(DEPARTMENTS):
            liaison = person(LIAISON_BASE + index + 1, next(names))
            await session.flush()
            assert liaison.id is not None
            session.add(
                RoleGrant(
                    person_id=liaison.id,
                    role=Role.LIAISON,
                    department_code=spec.code,
                    granted_at=now,
                )
            )
            session.add(
                ChatBinding(
                    chat_id=department_group_id(index),
                    kind="department",
                    department_code=spec.code,
                    title=f"{spec.short}双随机工作群",
                    bound_by=OFFICE_USER,
                    bound_at=now,
                )
            )
        session.add(
            ChatBinding(
                chat_id=OFFICE_GROUP,
                kind="office",
                title=SPEC.office_group,
                bound_by=OFFICE_USER,
                bound_at=now,
            )
        )
        inspectors = list(await session.exec(select(Inspector).order_by(col(Inspector.id))))
        for seq, inspector in enumerate(inspectors, start=1):
            row = person(INSPECTOR_BASE + seq, inspector.name)
            await session.flush()
            assert row.id is not None
            session.add(
                RoleGrant(
                    person_id=row.id,
                    role=Role.INSPECTOR,
                    department_code=inspector.department_code,
                    inspector_id=inspector.id,
                    granted_at=now,
                )
            )
        session.add(AppSetting(name="bot_username", value=BOT_USERNAME))
        await record(
            session,
            actor="demo",
            action="demo.bind_everyone",
            entity="person",
            at=now,
            detail={"inspectors": len(inspectors), "liaisons": len(DEPARTMENTS)},
        )


# --- reading the county back (each start of the demo) ---------------------------------------------


@dataclass(frozen=True)
class Persona:
    """Someone the page can act as."""

    tg_user_id: int
    name: str
    role: str  # office | liaison | inspector
    department_code: str = ""
    department_name: str = ""
    unit: str = ""
    expertise: str = ""
    inspector_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.tg_user_id,
            "name": self.name,
            "role": self.role,
            "department_code": self.department_code,
            "department_name": self.department_name,
            "unit": self.unit,
            "expertise": self.expertise,
        }


@dataclass(frozen=True)
class Group:
    chat_id: int
    title: str
    kind: str  # office | department
    department_code: str
    members: tuple[int, ...]


@dataclass(frozen=True)
class People:
    personas: tuple[Persona, ...]
    groups: tuple[Group, ...]

    def first(self, role: str, department_code: str | None = None) -> Persona:
        for persona in self.personas:
            if persona.role == role and (
                department_code is None or persona.department_code == department_code
            ):
                return persona
        raise LookupError(f"no {role} persona for {department_code}")

    def by_id(self, tg_user_id: int) -> Persona:
        for persona in self.personas:
            if persona.tg_user_id == tg_user_id:
                return persona
        raise LookupError(f"no persona {tg_user_id}")

    def inspector(self, inspector_id: int) -> Persona:
        for persona in self.personas:
            if persona.inspector_id == inspector_id:
                return persona
        raise LookupError(f"no persona for inspector {inspector_id}")

    def group_of(self, department_code: str | None) -> Group:
        for group in self.groups:
            if department_code is None and group.kind == "office":
                return group
            if group.kind == "department" and group.department_code == department_code:
                return group
        raise LookupError(f"no group for {department_code}")


_ROLE_ORDER = {Role.OFFICE.value: 0, Role.LIAISON.value: 1, Role.INSPECTOR.value: 2}


async def load_people(db: Database) -> People:
    """Who is bound, and which groups: the fake Telegram is rebuilt from this on every start."""
    async with db.read() as session:
        departments = {d.code: d.name for d in await session.exec(select(Department))}
        rows = await session.exec(
            select(Person, RoleGrant, Inspector)
            .join(RoleGrant, col(RoleGrant.person_id) == col(Person.id))
            .outerjoin(Inspector, col(Inspector.id) == col(RoleGrant.inspector_id))
            .where(col(RoleGrant.active).is_(True))
            .order_by(col(Person.tg_user_id), col(RoleGrant.id))
        )
        personas: dict[int, Persona] = {}
        for person, grant, inspector in rows:
            if person.tg_user_id in personas:
                continue  # one persona per account: its first role names it
            code = grant.department_code or ""
            personas[person.tg_user_id] = Persona(
                tg_user_id=person.tg_user_id,
                name=person.display_name,
                role=grant.role,
                department_code=code,
                department_name=departments.get(code, ""),
                unit=inspector.unit if inspector else "",
                expertise=inspector.expertise if inspector else "",
                inspector_id=inspector.id if inspector else None,
            )
        bindings = list(
            await session.exec(
                select(ChatBinding)
                .where(col(ChatBinding.active).is_(True))
                .order_by(col(ChatBinding.id))
            )
        )
    ordered = sorted(
        personas.values(),
        key=lambda p: (_ROLE_ORDER.get(p.role, 9), _department_rank(p.department_code), p.unit),
    )
    groups: list[Group] = []
    for binding in bindings:
        if binding.kind == "office":
            members = [p.tg_user_id for p in ordered if p.role in ("office", "liaison")]
        else:
            members = [
                p.tg_user_id
                for p in ordered
                if p.department_code == binding.department_code and p.role != "office"
            ]
        groups.append(
            Group(
                chat_id=binding.chat_id,
                title=binding.title,
                kind=binding.kind,
                department_code=binding.department_code or "",
                members=tuple(members),
            )
        )
    groups.sort(key=lambda g: (g.kind != "office", _department_rank(g.department_code)))
    return People(tuple(ordered), tuple(groups))


def _department_rank(code: str) -> int:
    codes = [d.code for d in DEPARTMENTS]
    return codes.index(code) if code in codes else len(codes)
