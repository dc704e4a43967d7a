"""统一社会信用代码 (USCC), GB 32100-2015: 18 characters, the last one a check character."""

from __future__ import annotations

import random

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, Z, S, V
_VALUE = {c: i for i, c in enumerate(CHARSET)}
_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def check_char(first17: str) -> str:
    """The 18th character for the first 17 (raises KeyError on a character outside the set)."""
    total = sum(_VALUE[c] * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return CHARSET[(31 - total % 31) % 31]


def normalize(raw: str) -> str:
    """Codes arrive with spaces, full-width letters and lower case from spreadsheets."""
    return raw.strip().upper().translate(_FULLWIDTH).replace(" ", "")


_FULLWIDTH = {0xFF10 + i: 0x30 + i for i in range(10)} | {0xFF21 + i: 0x41 + i for i in range(26)}


def problem(code: str) -> str | None:
    """None when `code` is a valid USCC, else the error key under `import_error.uscc_*`."""
    if len(code) != 18:
        return "uscc_length"
    if any(c not in _VALUE for c in code):
        return "uscc_charset"
    if check_char(code[:17]) != code[17]:
        return "uscc_check"
    return None


def is_valid(code: str) -> bool:
    return problem(code) is None


def generate(rng: random.Random, region: str = "330102") -> str:
    """A well-formed USCC for samples and benchmarks (企业 under 市场监管: prefix 91)."""
    body = "91" + region + "".join(rng.choice(CHARSET) for _ in range(9))
    return body + check_char(body)
