"""Small builders for import files and directory rows, shared by tests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from openpyxl import Workbook

from bot.uscc import generate

DEPARTMENT_HEADER = ["名称", "代码", "类型", "上级代码"]
TARGET_HEADER = [
    "名称",
    "统一社会信用代码",
    "主体类型",
    "经营范围",
    "地址",
    "所属区域",
    "行业",
    "登记状态",
    "信用风险等级",
    "经营异常名录",
    "严重违法失信",
    "投诉举报次数",
    "标签",
]
INSPECTOR_HEADER = [
    "姓名",
    "部门代码",
    "单位/所",
    "职务",
    "业务专长",
    "执法证号",
    "是否持证",
    "回避对象",
    "手机",
]
ITEM_HEADER = [
    "事项编码",
    "事项名称",
    "抽查依据",
    "抽查主体(部门代码)",
    "抽查对象类型",
    "事项类别",
    "抽查方式",
    "抽查比例",
    "抽查频次",
    "检查内容",
    "所需专长",
]

DEPARTMENTS = [
    ["县市场监督管理局", "SJJ", "部门", ""],
    ["城关市场监管所", "SJJ-CG", "所", "SJJ"],
    ["县税务局", "SWJ", "部门", ""],
]


def write_csv(
    path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], encoding: str = "utf-8"
) -> Path:
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def write_xlsx(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return path


def target_rows(count: int, seed: int = 7) -> list[list[object]]:
    rng = random.Random(seed)
    rows: list[list[object]] = []
    for i in range(count):
        rows.append(
            [
                f"测试企业{i}有限公司",
                generate(rng),
                "有限责任公司",
                "食品销售",
                f"城关路{i}号",
                "城关镇",
                "零售业",
                "存续",
                "ABCD"[i % 4],
                "否",
                "否",
                0,
                "",
            ]
        )
    return rows


def inspector_rows(count: int, department: str = "SJJ") -> list[list[object]]:
    return [
        [
            f"检查员{i}",
            department,
            "城关市场监管所",
            "科员",
            "食品安全",
            f"ZF{i:05d}",
            "是",
            "",
            f"1380000{i:04d}",
        ]
        for i in range(count)
    ]
