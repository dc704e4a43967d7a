"""storage.published: the two real Hainan 2020 lists, then small synthetic sheets."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from python_calamine import CalamineWorkbook

from storage.published import (
    HeaderField,
    ParseReport,
    PublishedItem,
    PublishedListError,
    detect_published_layout,
    parse_published,
    parse_published_rows,
)

DATA = Path(__file__).parent / "data" / "hainan-2020"
RANDOM_LIST = DATA / "75-海南省市场监管领域随机抽查事项清单（2020年版）.xlsx"
JOINT_LIST = DATA / "76-附件1.海南省市场监管领域部门联合抽查事项清单（第二版）.xls"

CODE_RE = re.compile(r"^P[0-9A-F]{10}(-\d+)?$")


def _at(report: ParseReport, row: int) -> PublishedItem:
    (item,) = [i for i in report.items if i.source_row == row]
    return item


@pytest.fixture(scope="module")
def random_list() -> ParseReport:
    return parse_published(RANDOM_LIST)


@pytest.fixture(scope="module")
def joint_list() -> ParseReport:
    return parse_published(JOINT_LIST)


# --- the random-check list (.xlsx) -------------------------------------------------------------


def test_random_list_counts(random_list: ParseReport) -> None:
    r = random_list
    # 390 rows = 3 title/header + 81 blank + 13 continuation + 293 items.
    assert len(r.items) == 293
    assert r.continuation_rows == 13
    assert r.blank_rows == 81
    assert r.repeated_header_rows == 0
    assert r.department_rows == 0
    assert r.sheets_used == ["Sheet1"]
    assert r.notes == []
    assert r.department_names == [
        "省教育厅",
        "省公安厅",
        "省人力资源和社会保障厅",
        "省生态环境厅",
        "省住房和城乡建设厅",
        "省交通运输厅",
        "省农业农村厅",
        "省商务厅",
        "省旅文厅",
        "省卫健委",
        "省应急管理厅",
        "海口海关",
        "国家税务总局海南省税务局",
        "省统计局",
        "省消防救援总队",
        "省市场监管局",
    ]
    assert not any(i.joint for i in r.items)
    assert {i.category for i in r.items} == {"一般", "重点"}
    assert sum(i.category == "重点" for i in r.items) == 30
    assert r.unmapped_categories == {}
    assert r.unmapped_methods == {
        "备案审查": 2,
        "专项检查": 2,
        "采取定期抽查和不定期抽查的方式相结合": 2,
        "采取定期抽查和不定期检查的方式": 1,
        "查阅资料": 5,
        "询问核查": 5,
        "定期监督检查和不定期监督检查相结合的方式": 1,
        "随机检查": 1,
        "非现场检查": 3,
        "技术监测": 1,
        "现场实地稽查": 1,
        "线上稽查": 1,
        "自查": 2,
        "调账检查": 2,
        "统计督查": 1,
        "抽样检测": 11,
        "抽样检验": 1,
    }
    # 税务稽查 ×1, 食品生产监督检查 ×1, 餐饮服务 ×8: same name, other 检查对象.
    assert len(r.code_collisions) == 10


def test_random_list_item_with_basis_over_several_rows(random_list: ParseReport) -> None:
    item = _at(random_list, 11)
    assert item == PublishedItem(
        code=item.code,
        department_name="省教育厅",
        domain="学校招生、办学情况检查",
        name="学校（民办中等职业学校）招生、办学情况检查",
        object_type="民办中等职业学校",
        category="一般",
        methods=["现场", "书面", "网络", "委托专业机构"],
        inspecting_body="县级以上教育行政部门和市场监管部门",
        basis="《中华人民共和国职业教育法》第十一条\n"
        "《中华人民共和国民办教育促进法》第四十条\n"
        "《中华人民共和国民办教育促进法》第四十一条\n"
        "《中华人民共和国民办教育促进法》第四十二条",
        joint=False,
        lead_department=None,
        cooperating_departments=[],
        source_row=11,
        seq="3",
        sheet="Sheet1",
        lead_departments=[],
    )
    # Rows 12-14 were continuations, not items.
    assert {12, 13, 14}.isdisjoint(i.source_row for i in random_list.items)


def test_random_list_method_mapping_and_pinned_code(random_list: ParseReport) -> None:
    item = _at(random_list, 17)
    assert (item.department_name, item.domain, item.name) == (
        "省公安厅",
        "宾馆、旅店监督抽查",
        "宾馆、旅店取得许可证情况的检查",
    )
    # 现场检查、书面检查、网络检查、专业机构核查
    assert item.methods == ["现场", "书面", "网络", "委托专业机构"]
    assert item.category == "一般"
    assert item.object_type == "各类宾馆、旅店"
    assert item.inspecting_body == "县级以上(含县级）公安机关"  # brackets kept as written
    assert item.basis == "《旅馆业治安管理办法》第四条"  # trailing U+3000 gone
    # The code recipe is a contract: changing it would re-key every imported list.
    digest = hashlib.sha256(
        "省公安厅\x1f宾馆、旅店监督抽查\x1f宾馆、旅店取得许可证情况的检查".encode()
    )
    assert item.code == "P" + digest.hexdigest()[:10].upper() == "PA37AAA200B"


def test_random_list_second_inspecting_body_row(random_list: ParseReport) -> None:
    item = _at(random_list, 169)
    assert item.name == "农作物种子监督抽查"
    assert item.domain == "农业生产资料监管"
    assert item.inspecting_body == "省农业农村厅种业管理处\n省种子总站"
    # A run of spaces between two bodies in one cell is a line break.
    assert _at(random_list, 171).inspecting_body == "省农业农村厅种植业管理处\n省土壤肥料总站"


def test_random_list_same_item_other_object_is_its_own_item(random_list: ParseReport) -> None:
    general, key = _at(random_list, 314), _at(random_list, 315)
    assert general.name == key.name == "食品经营许可情况的检查"
    assert (general.object_type, general.category) == ("餐饮服务经营者", "一般")
    assert (key.object_type, key.category) == ("学校、托幼机构、养老机构等食堂", "重点")
    assert key.methods == ["现场", "书面"]
    assert (
        key.basis
        == general.basis
        == "《食品安全法》第一百一十条\n《食品生产经营日常监督检查管理办法》"
    )
    assert key.code != general.code
    assert any(c.startswith("Sheet1!315:") for c in random_list.code_collisions)


def test_random_list_merges_across_items(random_list: ParseReport) -> None:
    # One 检查依据 merge covers 经营（业务）范围… and 住所（经营场所）….
    scope, address = _at(random_list, 244), _at(random_list, 255)
    assert address.name == "住所（经营场所）或驻在场所的检查"
    assert address.basis == scope.basis
    assert address.basis.startswith("《企业法人登记管理条例》第二十九条第一款\n《公司法》")
    # A bare carriage return inside a citation is joined, not a line break.
    assert "《个体工商户条例》第二十三条第一款\n" in _at(random_list, 229).basis
    # Domain cells padded with line breaks; 检查对象 with a stray line break.
    assert _at(random_list, 72).domain == "社会保险"
    assert _at(random_list, 192).object_type == "拍卖企业"


def test_random_list_unmapped_methods_kept(random_list: ParseReport) -> None:
    assert _at(random_list, 219).methods == ["现场实地稽查", "线上稽查"]
    assert _at(random_list, 221).methods == ["自查", "调账检查", "现场"]  # 实地检查相结合
    assert _at(random_list, 199).methods == ["非现场检查"]  # off-site is not 现场


# --- the joint list (.xls) ---------------------------------------------------------------------


def test_joint_list_counts(joint_list: ParseReport) -> None:
    r = joint_list
    assert len(r.items) == 83
    assert r.continuation_rows == 0
    assert r.blank_rows == 0
    assert r.sheets_used == ["Sheet1"]  # Sheet2 and Sheet3 are empty
    assert all(i.joint and i.lead_department for i in r.items)
    assert all(i.category == "" and i.methods == [] for i in r.items)
    assert len(r.department_names) == 19
    assert "市场监管领域相关部门" not in r.department_names
    assert "人社部门" not in r.department_names  # aliased
    assert r.code_collisions == []


def test_joint_item_with_cooperating_departments(joint_list: ParseReport) -> None:
    item = _at(joint_list, 24)
    assert item == PublishedItem(
        code=item.code,
        department_name="公安部门",
        domain="烟花爆竹生产经营企业监管",
        name="烟花爆竹生产经营企业运输、燃放情况的检查",
        object_type="烟花爆竹生产经营企业",
        category="",
        methods=[],
        inspecting_body="",
        basis="",
        joint=True,
        lead_department="公安部门",
        cooperating_departments=["应急管理部门", "市场监管部门"],
        source_row=24,
        seq="5",
        sheet="Sheet1",
        lead_departments=["公安部门"],
    )
    assert CODE_RE.match(item.code)


def test_joint_list_merges_and_names(joint_list: ParseReport) -> None:
    # 发起部门 / 配合部门 merged from row 35 down across 序号 11-13.
    item = _at(joint_list, 40)
    assert (item.seq, item.lead_department) == ("13", "公安部门")
    assert item.cooperating_departments == ["市场监管领域相关部门"]
    # Two initiating departments and five cooperating ones in single cells.
    scrap = _at(joint_list, 70)
    assert scrap.lead_departments == ["商务部门", "市场监管部门"]
    assert scrap.cooperating_departments == [
        "发展改革部门",
        "公安部门",
        "生态环境部门",
        "交通运输部门",
        "工业和信息化部门",
    ]
    assert _at(joint_list, 25).cooperating_departments == ["人力资源社会保障部门", "商务部门"]
    # Blank and not merged: really no cooperating department.
    assert _at(joint_list, 31).cooperating_departments == []


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RANDOM_LIST, JOINT_LIST], ids=["random", "joint"])
def test_importing_twice_gives_the_same_codes(path: Path) -> None:
    first, second = parse_published(path), parse_published(path)
    codes = [i.code for i in first.items]
    assert codes == [i.code for i in second.items]
    assert len(set(codes)) == len(codes)
    assert all(CODE_RE.match(c) for c in codes)
    assert first == second


@pytest.mark.parametrize("path", [RANDOM_LIST, JOINT_LIST], ids=["random", "joint"])
def test_carry_down_without_merges_reproduces_the_merges(path: Path) -> None:
    rows = (
        CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python(skip_empty_area=False)
    )
    guessed, known = parse_published_rows(rows), parse_published(path)
    differing = [g.source_row for g, k in zip(guessed.items, known.items, strict=True) if g != k]
    # Only joint 序号 8's 配合部门 is blank without a merge; carry-down fills it.
    assert differing == ([31] if path == JOINT_LIST else [])


# --- synthetic rows ----------------------------------------------------------------------------

HEADER: list[object] = [
    "编制单位名称",
    "序号",
    "抽查类别",
    "抽查事项",
    "检查对象",
    "事项类别",
    "检查方式",
    "检查主体",
    "检查依据",
]


def test_header_below_a_title_with_variants_and_spaces() -> None:
    rows: list[list[object]] = [
        ["某省抽查事项清单", None, None, None],
        [None, None, None, None],
        ["序 号", "抽查\n事项", "抽查对象", "抽查方式", "抽查主体", "抽查依据（法规）"],
        [1.0, "甲检查", "企业", "现场抽查", "县级以上市场监管部门", "《甲法》第一条"],
    ]
    layout = detect_published_layout(rows)
    assert layout is not None
    assert (layout.header_start, layout.data_start) == (2, 3)
    assert dict(layout.columns) == {
        HeaderField.SEQ: 0,
        HeaderField.NAME: 1,
        HeaderField.OBJECT_TYPE: 2,
        HeaderField.METHODS: 3,
        HeaderField.INSPECTING_BODY: 4,
        HeaderField.BASIS: 5,
    }
    (item,) = parse_published_rows(rows, "S").items
    assert (item.seq, item.name, item.methods, item.basis) == (
        "1",
        "甲检查",
        ["现场"],
        "《甲法》第一条",
    )
    assert item.source_row == 4


def test_two_row_header() -> None:
    rows: list[list[object]] = [
        ["编制单位名称", "序号", "抽查项目", None, "检查对象", "检查依据"],
        [None, None, "抽查类别", "抽查事项", None, None],
        ["省甲厅", 1, "类一", "事项一", "企业", "依据一"],
    ]
    layout = detect_published_layout(rows)
    assert layout is not None
    assert layout.data_start == 2
    assert layout.columns[HeaderField.DOMAIN] == 2
    assert layout.columns[HeaderField.NAME] == 3
    (item,) = parse_published_rows(rows).items
    assert (item.department_name, item.domain, item.name) == ("省甲厅", "类一", "事项一")


def test_our_template_is_not_a_published_list() -> None:
    rows = [["事项编码", "事项名称", "抽查依据", "抽查主体"], ["A1", "x", "y", "z"]]
    assert detect_published_layout(rows) is None
    with pytest.raises(PublishedListError):
        parse_published_rows(rows)
    assert detect_published_layout([["姓名", "电话"], ["a", "b"]]) is None


def test_carry_down_stays_within_a_department_block() -> None:
    rows: list[list[object]] = [
        HEADER,
        ["省甲厅", 1, "类一", "事项一", "企业", "一般检查事项", "现场检查", "主体甲", "依据一"],
        [None, None, None, "事项二", None, None, None, None, None],
        ["省乙厅", 1, None, "事项三", None, "重点", "书面审查", None, None],
    ]
    r = parse_published_rows(rows)
    one, two, three = r.items
    assert (two.department_name, two.seq, two.domain, two.object_type) == (
        "省甲厅",
        "1",
        "类一",
        "企业",
    )
    assert (two.category, two.methods, two.inspecting_body, two.basis) == (
        "一般",
        ["现场"],
        "主体甲",
        "依据一",
    )
    assert two.code != one.code
    # 序号 restarts and nothing of 省甲厅 leaks into 省乙厅.
    assert (three.department_name, three.seq, three.domain, three.object_type) == (
        "省乙厅",
        "1",
        "",
        "",
    )
    assert (three.category, three.methods, three.basis) == ("重点", ["书面"], "")
    assert r.department_names == ["省甲厅", "省乙厅"]


def test_known_merges_replace_guessing() -> None:
    rows: list[list[object]] = [
        ["序号", "抽查领域", "抽查事项", "检查对象", "发起部门", "配合部门"],
        [1, "领域一", "事项一", "对象一", "甲部门", "乙部门、丙部门"],
        [None, None, "事项二", None, "丁部门", None],
        [2, "领域二", "事项三", "对象三", None, None],
    ]
    merges = [((1, 0), (2, 0)), ((1, 1), (2, 1)), ((1, 3), (2, 3)), ((1, 4), (1, 4))]
    with_merges = parse_published_rows(rows, "S", merged_ranges=merges)
    one, two, three = with_merges.items
    assert (one.lead_department, one.cooperating_departments) == ("甲部门", ["乙部门", "丙部门"])
    assert (two.seq, two.domain, two.object_type, two.lead_department) == (
        "1",
        "领域一",
        "对象一",
        "丁部门",
    )
    assert two.cooperating_departments == []  # not merged: blank on purpose
    assert (three.lead_department, three.department_name) == (None, "")
    guessed = parse_published_rows(rows, "S").items
    assert guessed[1].cooperating_departments == ["乙部门", "丙部门"]
    assert guessed[2].lead_department == "丁部门"


def test_continuation_blank_and_repeated_header_rows() -> None:
    rows: list[list[object]] = [
        ["标题", None],
        HEADER,
        ["省甲厅", 1, "类一", "事项一", "企业", "一般", "现场检查", "主体甲", "《甲法》第一条"],
        [None, None, None, None, None, None, None, None, "《乙法》第二条"],
        [None, None, None, None, None, None, None, "主体乙", None],
        ["", "  ", None, None, None, None, None, None, "\u3000"],
        HEADER,
        [None, None, None, None, None, None, None, None, "《甲法》第一条"],
        [None] * 9,
        ["注：本清单自发布之日起施行。", None],
    ]
    r = parse_published_rows(rows)
    (item,) = r.items
    assert item.basis == "《甲法》第一条\n《乙法》第二条"  # the repeated line is not added twice
    assert item.inspecting_body == "主体甲\n主体乙"
    assert r.continuation_rows == 3
    assert r.blank_rows == 2
    assert r.repeated_header_rows == 1
    assert len(r.notes) == 1 and "footnote" in r.notes[0]


def test_unmapped_methods_and_categories_are_listed() -> None:
    rows: list[list[object]] = [
        HEADER,
        [
            "省甲厅",
            1,
            "类一",
            "事项一",
            "企业",
            "特别检查事项",
            "现场检查；网络监测/委托第三方",
            None,
            None,
        ],
        [
            None,
            2,
            "类一",
            "事项二",
            "企业",
            "重点检查事项",
            "飞行检查等、书面检查 现场抽查",
            None,
            None,
        ],
        [
            None,
            3,
            "类一",
            "事项三",
            "企业",
            "一般检查事项\n",
            "非现场检查、专业机构核查等",
            None,
            None,
        ],
    ]
    r = parse_published_rows(rows)
    one, two, three = r.items
    assert (one.category, one.methods) == ("特别检查事项", ["现场", "网络", "委托专业机构"])
    assert (two.category, two.methods) == ("重点", ["飞行检查", "书面", "现场"])
    assert (three.category, three.methods) == ("一般", ["非现场检查", "委托专业机构"])
    assert r.unmapped_categories == {"特别检查事项": 1}
    assert r.unmapped_methods == {"飞行检查": 1, "非现场检查": 1}


def test_text_normalisation() -> None:
    rows: list[list[object]] = [
        HEADER,
        [
            " 省甲厅\u3000",
            1.0,
            "\n\n类一\n\n",
            " 甲单位是否有下列行为：\n （一）乙；\n （二）丙。",
            "拍卖\n企业。",
            "一般",
            "现场检查",
            "主体甲       主体乙",
            "《甲法》\r第一条\r\n《乙法》 第二条                《丙法》第三条\xa0",
        ],
    ]
    (item,) = parse_published_rows(rows).items
    assert item.department_name == "省甲厅"
    assert item.domain == "类一"
    assert item.name == "甲单位是否有下列行为：（一）乙；（二）丙"
    assert item.object_type == "拍卖企业"
    assert item.inspecting_body == "主体甲\n主体乙"
    assert item.basis == "《甲法》第一条\n《乙法》第二条\n《丙法》第三条"


def test_department_heading_rows_in_a_list_without_department_column() -> None:
    rows: list[list[object]] = [
        ["序号", "抽查事项", "检查对象", "检查依据"],
        ["一、省甲厅（2项）", None, None, None],
        [1, "事项一", "企业", "依据一"],
        ["二、省乙厅", None, None, None],
        [1, "事项一", "企业", "依据一"],
    ]
    r = parse_published_rows(rows)
    assert [i.department_name for i in r.items] == ["省甲厅", "省乙厅"]
    assert r.department_rows == 2
    assert r.items[0].code != r.items[1].code  # same name, other department


def test_codes_are_stable_and_collisions_discriminated() -> None:
    def parse(basis: str, body: str) -> ParseReport:
        return parse_published_rows(
            [
                HEADER,
                ["省甲厅", 1, "类一", "事项一", "企业", "一般", "现场检查", body, basis],
                [None, 2, "类一", "事项一", "个体工商户", "重点", "现场检查", None, None],
                [None, 3, "类一", "事项一", "企业", "重点", "书面检查", None, None],
                [None, 4, "类一", "事项 一", "企业", "重点", "书面检查", None, None],
            ]
        )

    before = parse("《甲法》第一条", "主体甲")
    after = parse("《甲法》第一条（2021年修订）", "主体乙")
    assert [i.code for i in before.items] == [i.code for i in after.items]
    base, by_object, second, third = (i.code for i in before.items)
    assert by_object != base and CODE_RE.match(by_object)
    # Same department, domain, name and object as the first: numbered in file order.
    assert (second, third) == (f"{base}-2", f"{base}-3")
    assert len(before.code_collisions) == 3
