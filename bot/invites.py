"""Invite requests as the office types them, and the invite list as a spreadsheet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font

from bot.clock import to_local
from bot.people import IssuedInvite, invite_link
from bot.render import text
from storage.models import Role


@dataclass(frozen=True)
class InviteRequest:
    role: Role
    department_code: str | None = None
    name: str = ""


_ROLE_WORDS = {
    "liaison": Role.LIAISON,
    "联络员": Role.LIAISON,
    "office": Role.OFFICE,
    "协调办": Role.OFFICE,
    "inspectors": Role.INSPECTOR,
    "人员": Role.INSPECTOR,
}


def parse_invite_args(args: str) -> InviteRequest | None:
    """'' | CODE | liaison CODE [name] | office [name]; None when not understood."""
    parts = args.split()
    if not parts:
        return InviteRequest(Role.INSPECTOR)
    role = _ROLE_WORDS.get(parts[0].lower())
    if role is None:
        return InviteRequest(Role.INSPECTOR, parts[0]) if len(parts) == 1 else None
    rest = parts[1:]
    if role is Role.LIAISON:
        if not rest:
            return None
        return InviteRequest(role, rest[0], " ".join(rest[1:]))
    if role is Role.OFFICE:
        return InviteRequest(role, None, " ".join(rest))
    return InviteRequest(role, rest[0] if rest else None)


def write_invites(issued: list[IssuedInvite], bot_username: str, out: Path, tz: str) -> Path:
    """The invite list as .xlsx; expiry in the office's time zone."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = text("invite.sheet")
    headers = [text(f"invite.col.{c}") for c in ("name", "role", "department", "link", "expires")]
    sheet.append(headers)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for invite in issued:
        sheet.append(
            [
                invite.name,
                text(f"role.{invite.role}"),
                invite.department_name or "",
                invite_link(bot_username, invite.code),
                to_local(invite.expires_at, tz).strftime("%Y-%m-%d %H:%M"),
            ]
        )
    for letter, width in zip("ABCDE", (14, 14, 24, 60, 18), strict=True):
        sheet.column_dimensions[letter].width = width
    out.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(out)
    return out
