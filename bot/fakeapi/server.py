"""aiohttp app speaking the Bot API wire protocol over FakeTelegram, plus JSON control routes."""

from __future__ import annotations

import functools
import json
import logging
import mimetypes
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from bot.fakeapi.state import (
    JSON,
    MAX_DOWNLOAD_SIZE,
    MESSAGE_EDIT_WINDOW,
    ApiError,
    CallRecord,
    FakeChat,
    FakeTelegram,
    FakeTelegramError,
    StoredFile,
    StoredMessage,
    bad_request,
    forbidden,
    image_size,
    scope_key,
    strip_none,
    utf16_len,
)

log = logging.getLogger(__name__)

FAKE_KEY = web.AppKey("fake_telegram", FakeTelegram)
MAX_UPLOAD_SIZE = 50 * 1024 * 1024
MAX_PHOTO_SIZE = 10 * 1024 * 1024
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
COMMAND_SCOPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
_dumps = functools.partial(json.dumps, ensure_ascii=False)


# ---------------------------------------------------------------------------- request params


@dataclass
class Upload:
    """A multipart file part, read fully because fake uploads are small."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Params:
    """Typed access to Bot API parameters that may arrive as JSON values or form strings."""

    raw: dict[str, Any]
    uploads: dict[str, Upload] = field(default_factory=dict)
    parsed: dict[str, Any] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        """Telegram treats empty strings like absent parameters."""
        return self.raw.get(name) not in (None, "")

    def get_str(self, name: str, *, missing: str | None = None) -> str | None:
        """String parameter; `missing` turns absence into that 400 message."""
        if not self.has(name):
            if missing is not None:
                raise bad_request(missing)
            return None
        value = self.raw[name]
        text = value if isinstance(value, str) else str(value)
        self.parsed[name] = text
        return text

    def get_int(self, name: str, *, missing: str | None = None) -> int | None:
        """Integer parameter; form bodies carry numbers as decimal strings."""
        if not self.has(name):
            if missing is not None:
                raise bad_request(missing)
            return None
        value = self.raw[name]
        if isinstance(value, bool):
            raise bad_request(f"invalid {name} specified")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None
        self.parsed[name] = number
        return number

    def get_bool(self, name: str) -> bool:
        """Boolean parameter in JSON or form ('true'/'1') spelling."""
        if not self.has(name):
            return False
        value = self.raw[name]
        flag = value.strip().lower() in ("true", "1") if isinstance(value, str) else bool(value)
        self.parsed[name] = flag
        return flag

    def get_json(self, name: str, error: str) -> Any:
        """Object/array parameter; aiogram sends them JSON-encoded inside form fields."""
        if not self.has(name):
            return None
        value = self.raw[name]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise bad_request(error) from None
        value = strip_none(value)
        self.parsed[name] = value
        return value

    def for_log(self) -> JSON:
        """Parsed values where known, uploads summarised, so the log is stable across encodings."""
        data: JSON = {}
        for key, value in self.raw.items():
            data[key] = self.parsed.get(key, value)
        attached = {v.removeprefix("attach://") for v in self.raw.values() if isinstance(v, str)}
        for key, upload in self.uploads.items():
            if key not in attached:
                data[key] = {"filename": upload.filename, "size": len(upload.data)}
        for key, value in self.parsed.items():
            data.setdefault(key, value)
        return data


async def read_params(request: web.Request) -> Params:
    """Accepts every encoding the real Bot API accepts: query, JSON, urlencoded, multipart."""
    raw: dict[str, Any] = dict(request.query)
    uploads: dict[str, Upload] = {}
    if not request.body_exists:
        return Params(raw)
    ctype = request.content_type
    if ctype == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise bad_request("can't parse JSON body") from None
        if not isinstance(body, dict):
            raise bad_request("JSON body must be an object")
        raw.update(body)
    elif ctype == "multipart/form-data":
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.filename is not None:
                data = await _read_part(part)
                uploads[part.name] = Upload(
                    field=part.name,
                    filename=part.filename,
                    content_type=part.headers.get("Content-Type"),
                    data=data,
                )
            else:
                raw[part.name] = await part.text()
    elif ctype == "application/x-www-form-urlencoded":
        form = await request.post()
        raw.update({k: v for k, v in form.items() if isinstance(v, str)})
    return Params(raw, uploads)


async def _read_part(part: BodyPartReader) -> bytes:
    """Reads a file part with the same 50 MB ceiling Telegram enforces for bots."""
    chunks = bytearray()
    while chunk := await part.read_chunk(1 << 16):
        chunks.extend(chunk)
        if len(chunks) > MAX_UPLOAD_SIZE:
            raise ApiError(413, "Request Entity Too Large")
    return bytes(chunks)


# ---------------------------------------------------------------------------- text formatting


_HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_HTML_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "u": "underline",
    "ins": "underline",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}


def _parse_error(message: str) -> ApiError:
    """All formatting failures share Telegram's prefix."""
    return bad_request(f"can't parse entities: {message}")


def _byte_offset(src: str, index: int) -> int:
    """Telegram reports parse errors at UTF-8 byte offsets."""
    return len(src[:index].encode())


def _decode_html_entity(src: str, i: int) -> tuple[str | None, int]:
    """Decodes the four named and any numeric character references; others stay literal."""
    n = len(src)
    j = i + 1
    if j < n and src[j] == "#":
        j += 1
        base = 10
        if j < n and src[j] in "xX":
            base = 16
            j += 1
        start = j
        digits = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
        while j < n and src[j] in digits:
            j += 1
        if j == start:
            return None, i
        code = int(src[start:j], base)
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return None, i
        char = chr(code)
    else:
        start = j
        while j < n and src[j].isalnum():
            j += 1
        name = src[start:j]
        if name not in _NAMED_ENTITIES:
            return None, i
        char = _NAMED_ENTITIES[name]
    if j < n and src[j] == ";":
        j += 1
    return char, j


class _Builder:
    """Accumulates plain text while tracking its UTF-16 length for entity offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.u16 = 0
        self.entities: list[JSON] = []

    def emit(self, text: str) -> None:
        """Appends visible text."""
        self.parts.append(text)
        self.u16 += utf16_len(text)

    def add(self, kind: str, start: int, **extra: Any) -> None:
        """Records an entity ending at the current position; empty ones vanish as in Telegram."""
        if self.u16 > start:
            self.entities.append(
                {"type": kind, "offset": start, "length": self.u16 - start, **extra}
            )

    @property
    def text(self) -> str:
        """Accumulated plain text."""
        return "".join(self.parts)


def parse_html(src: str) -> tuple[str, list[JSON]]:
    """Follows tdlib's HTML parser closely so markup bugs fail here exactly as in production."""
    out = _Builder()
    stack: list[tuple[str, str, int]] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch == "&":
            decoded, end = _decode_html_entity(src, i)
            if decoded is None:
                out.emit("&")
                i += 1
            else:
                out.emit(decoded)
                i = end
            continue
        if ch != "<":
            j = i
            while j < n and src[j] not in "<&":
                j += 1
            out.emit(src[i:j])
            i = j
            continue
        begin = i
        i += 1
        if i < n and src[i] == "/":
            if not stack:
                raise _parse_error(f"Unexpected end tag at byte offset {_byte_offset(src, begin)}")
            j = i + 1
            while j < n and not src[j].isspace() and src[j] != ">":
                j += 1
            end_name = src[i + 1 : j].lower()
            while j < n and src[j].isspace():
                j += 1
            if j >= n or src[j] != ">":
                raise _parse_error(f"Unclosed end tag at byte offset {_byte_offset(src, begin)}")
            tag, arg, start = stack[-1]
            if end_name and end_name != tag:
                raise _parse_error(
                    f"Unmatched end tag at byte offset {_byte_offset(src, begin)}, "
                    f'expected "</{tag}>", found "</{end_name}>"'
                )
            stack.pop()
            _close_html_tag(out, tag, arg, start)
            i = j + 1
            continue
        tag, arg, i = _parse_start_tag(src, begin, i)
        stack.append((tag, arg, out.u16))
    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    for entity in out.entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    return out.text, out.entities


def _parse_start_tag(src: str, begin: int, i: int) -> tuple[str, str, int]:
    """Parses `<tag attr=...>` starting after '<'; returns tag, its argument and next index."""
    n = len(src)
    at = _byte_offset(src, begin)
    j = i
    while j < n and not src[j].isspace() and src[j] != ">":
        j += 1
    if j >= n:
        raise _parse_error(f"Unclosed start tag at byte offset {at}")
    tag = src[i:j].lower()
    if tag not in _HTML_TAGS:
        raise _parse_error(f'Unsupported start tag "{tag}" at byte offset {at}')
    arg = ""
    while True:
        while j < n and src[j].isspace():
            j += 1
        if j >= n:
            raise _parse_error(f"Unclosed start tag at byte offset {at}")
        if src[j] == ">":
            break
        name_start = j
        while j < n and not src[j].isspace() and src[j] not in "=>":
            j += 1
        attr = src[name_start:j].lower()
        if not attr:
            raise _parse_error(f'Empty attribute name in the tag "{tag}" at byte offset {at}')
        while j < n and src[j].isspace():
            j += 1
        if j >= n or src[j] != "=":
            if tag == "blockquote" and attr == "expandable":
                arg = "expandable"
                continue
            raise _parse_error(
                f'Expected equal sign in declaration of an attribute of the tag "{tag}" '
                f"at byte offset {at}"
            )
        j += 1
        while j < n and src[j].isspace():
            j += 1
        if j >= n:
            raise _parse_error(f'Unclosed start tag "{tag}" at byte offset {at}')
        if src[j] in "'\"":
            quote = src[j]
            j += 1
            chars: list[str] = []
            while j < n and src[j] != quote:
                if src[j] == "&":
                    decoded, end = _decode_html_entity(src, j)
                    if decoded is not None:
                        chars.append(decoded)
                        j = end
                        continue
                chars.append(src[j])
                j += 1
            if j < n:
                j += 1
            value = "".join(chars)
        else:
            value_start = j
            while j < n and (src[j].isalnum() or src[j] in ".-"):
                j += 1
            value = src[value_start:j].lower()
            if j < n and not src[j].isspace() and src[j] != ">":
                raise _parse_error(
                    f"Unexpected end of name token at byte offset {_byte_offset(src, value_start)}"
                )
        if j >= n:
            raise _parse_error(f"Unclosed start tag at byte offset {at}")
        if tag == "a" and attr == "href":
            arg = value
        elif tag == "code" and attr == "class" and value.startswith("language-"):
            arg = value.removeprefix("language-")
        elif tag == "span" and attr == "class" and value.startswith("tg-"):
            arg = value.removeprefix("tg-")
        elif tag == "tg-emoji" and attr == "emoji-id":
            arg = value
    if tag == "span" and arg != "spoiler":
        raise _parse_error(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
    return tag, arg, j + 1


def _close_html_tag(out: _Builder, tag: str, arg: str, start: int) -> None:
    """Turns a closed tag into its entity, merging <pre><code class=language-x> like Telegram."""
    if tag == "a":
        if arg:
            out.add("text_link", start, url=arg)
    elif tag == "tg-emoji":
        if arg:
            out.add("custom_emoji", start, custom_emoji_id=arg)
    elif tag == "pre":
        language = ""
        last = out.entities[-1] if out.entities else None
        if (
            last is not None
            and last["type"] == "code"
            and last["offset"] == start
            and last["offset"] + last["length"] == out.u16
        ):
            out.entities.pop()
            language = str(last.get("language", ""))
        if language:
            out.add("pre", start, language=language)
        else:
            out.add("pre", start)
    elif tag == "code":
        if arg:
            out.add("code", start, language=arg)
        else:
            out.add("code", start)
    elif tag == "blockquote":
        out.add("expandable_blockquote" if arg else "blockquote", start)
    else:
        out.add(_HTML_ENTITY_TYPES[tag], start)


def parse_markdown_v2(src: str) -> tuple[str, list[JSON]]:
    """tdlib-style MarkdownV2 parser; unescaped reserved characters fail as in production."""
    out = _Builder()
    stack: list[tuple[str, str, int, int]] = []
    quote_start: int | None = None
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        top = stack[-1][0] if stack else None
        if ch == "\\" and i + 1 < n and 0 < ord(src[i + 1]) <= 126:
            out.emit(src[i + 1])
            i += 2
            continue
        if top in ("code", "pre") and ch != "`":
            out.emit(ch)
            i += 1
            continue
        if ch == ">" and top is None and (i == 0 or src[i - 1] == "\n"):
            if quote_start is None:
                quote_start = out.u16
            i += 1
            continue
        if ch == "\n" and quote_start is not None and not src.startswith(">", i + 1):
            out.add("blockquote", quote_start)
            quote_start = None
        if ch not in _MDV2_RESERVED:
            out.emit(ch)
            i += 1
            continue
        if not _mdv2_closes(top, src, i):
            i = _mdv2_open(src, i, out, stack)
            continue
        kind, arg, start, _ = stack.pop()
        i += 3 if kind == "pre" else 2 if kind in ("underline", "spoiler") else 1
        if kind in ("text_link", "custom_emoji"):
            url = ""
            if i < n and src[i] == "(":
                j = i + 1
                chars: list[str] = []
                while j < n and src[j] != ")":
                    if src[j] == "\\" and j + 1 < n:
                        chars.append(src[j + 1])
                        j += 2
                        continue
                    chars.append(src[j])
                    j += 1
                if j >= n:
                    raise _parse_error(
                        f"Can't find end of a URL at byte offset {_byte_offset(src, i)}"
                    )
                url = "".join(chars)
                i = j + 1
            if url and kind == "text_link":
                out.add("text_link", start, url=url)
            elif url:
                out.add("custom_emoji", start, custom_emoji_id=url.rsplit("=", 1)[-1])
        elif kind == "pre" and arg:
            out.add("pre", start, language=arg)
        else:
            out.add(kind, start)
    if stack:
        kind, _, _, begin = stack[-1]
        raise _parse_error(
            f"Can't find end of {_MDV2_NAMES[kind]} entity at byte offset "
            f"{_byte_offset(src, begin)}"
        )
    if quote_start is not None:
        out.add("blockquote", quote_start)
    return out.text, out.entities


def _mdv2_closes(top: str | None, src: str, i: int) -> bool:
    """Whether the reserved character at i ends the innermost open entity."""
    ch = src[i]
    nxt = src[i + 1] if i + 1 < len(src) else ""
    return {
        "bold": ch == "*",
        "italic": ch == "_" and nxt != "_",
        "underline": ch == "_" and nxt == "_",
        "strikethrough": ch == "~",
        "spoiler": ch == "|" and nxt == "|",
        "code": ch == "`",
        "pre": src.startswith("```", i),
        "text_link": ch == "]",
        "custom_emoji": ch == "]",
    }.get(top or "", False)


def _mdv2_open(src: str, i: int, out: _Builder, stack: list[tuple[str, str, int, int]]) -> int:
    """Opens the entity a reserved character starts, or rejects it as unescaped."""
    ch = src[i]
    begin = i
    arg = ""
    if ch == "_":
        kind, i = ("underline", i + 2) if src.startswith("__", i) else ("italic", i + 1)
    elif ch == "*":
        kind, i = "bold", i + 1
    elif ch == "~":
        kind, i = "strikethrough", i + 1
    elif ch == "|" and src.startswith("||", i):
        kind, i = "spoiler", i + 2
    elif ch == "[":
        kind, i = "text_link", i + 1
    elif ch == "!" and src.startswith("![", i):
        kind, i = "custom_emoji", i + 2
    elif ch == "`" and src.startswith("```", i):
        kind, i = "pre", i + 3
        j = i
        while j < len(src) and not src[j].isspace() and src[j] != "`":
            j += 1
        if j > i and j < len(src) and src[j] != "`":
            arg, i = src[i:j], j
        if src.startswith(("\r\n", "\n\r"), i):
            i += 2
        elif src.startswith(("\n", "\r"), i):
            i += 1
    elif ch == "`":
        kind, i = "code", i + 1
    else:
        raise _parse_error(
            f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
        )
    stack.append((kind, arg, out.u16, begin))
    return i


def parse_markdown(src: str) -> tuple[str, list[JSON]]:
    """Legacy Markdown: flat *bold*, _italic_, `code`, ```pre``` and [text](url)."""
    out = _Builder()
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch == "\\" and i + 1 < n and src[i + 1] in "_*`[":
            out.emit(src[i + 1])
            i += 2
            continue
        if ch not in "_*`[":
            out.emit(ch)
            i += 1
            continue
        error = _parse_error(
            f"Can't find end of the entity starting at byte offset {_byte_offset(src, i)}"
        )
        start = out.u16
        if ch == "[":
            close = src.find("]", i + 1)
            if close < 0:
                raise error
            label = src[i + 1 : close]
            url = ""
            i = close + 1
            if src.startswith("(", i):
                end = src.find(")", i + 1)
                if end < 0:
                    raise error
                url, i = src[i + 1 : end], end + 1
            out.emit(label)
            if url:
                out.add("text_link", start, url=url)
        elif src.startswith("```", i):
            end = src.find("```", i + 3)
            if end < 0:
                raise error
            inner = src[i + 3 : end]
            first, sep, rest = inner.partition("\n")
            language = ""
            if sep and first and not any(c.isspace() for c in first):
                language, inner = first, rest
            out.emit(inner)
            if language:
                out.add("pre", start, language=language)
            else:
                out.add("pre", start)
            i = end + 3
        else:
            end = src.find(ch, i + 1)
            if end < 0:
                raise error
            out.emit(src[i + 1 : end])
            out.add({"*": "bold", "_": "italic", "`": "code"}[ch], start)
            i = end + 1
    return out.text, out.entities


def _trim(text: str, entities: list[JSON]) -> tuple[str, list[JSON]]:
    """Telegram strips surrounding whitespace and clips entities to what remains."""
    body = text.strip()
    shift = utf16_len(text[: len(text) - len(text.lstrip())])
    total = utf16_len(body)
    result: list[JSON] = []
    for entity in entities:
        start = max(int(entity["offset"]) - shift, 0)
        end = min(int(entity["offset"]) + int(entity["length"]) - shift, total)
        if end > start:
            result.append({**entity, "offset": start, "length": end - start})
    result.sort(key=lambda e: (e["offset"], -e["length"]))
    return body, result


def format_text(text: str, parse_mode: str | None, explicit: Any) -> tuple[str, list[JSON]]:
    """Applies parse_mode or explicit entities, then Telegram's trimming."""
    if explicit is not None:
        if not isinstance(explicit, list) or not all(
            isinstance(e, dict)
            and isinstance(e.get("type"), str)
            and isinstance(e.get("offset"), int)
            and isinstance(e.get("length"), int)
            for e in explicit
        ):
            raise bad_request("can't parse entities JSON object")
        return _trim(text, list(explicit))
    mode = (parse_mode or "").lower()
    if not mode:
        return _trim(text, [])
    if mode == "html":
        return _trim(*parse_html(text))
    if mode == "markdownv2":
        return _trim(*parse_markdown_v2(text))
    if mode == "markdown":
        return _trim(*parse_markdown(text))
    raise bad_request("unsupported parse_mode")


# ---------------------------------------------------------------------------- validators


_URL_OK = re.compile(r"^(https?|tg)://\S+$", re.IGNORECASE)
_BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


def parse_reply_markup(p: Params, *, inline_only: bool = False) -> JSON | None:
    """Validates keyboards like Telegram, normalising an empty inline keyboard to none."""
    markup = p.get_json("reply_markup", "can't parse reply keyboard markup JSON object")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request(
                'can\'t parse inline keyboard button: field "inline_keyboard" '
                "must be an Array of Arrays"
            )
        for row in rows:
            for button in row:
                _validate_inline_button(button)
        rows = [row for row in rows if row]
        return {"inline_keyboard": rows} if rows else None
    if inline_only:
        raise bad_request("inline keyboard expected")
    if "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request("can't parse reply keyboard markup JSON object")
        for row in rows:
            for button in row:
                label = button.get("text") if isinstance(button, dict) else button
                if not isinstance(label, str) or not label:
                    raise bad_request("keyboard button text is empty")
        return dict(markup)
    if markup.get("remove_keyboard") or markup.get("force_reply"):
        return dict(markup)
    raise bad_request("can't parse reply keyboard markup JSON object")


def _validate_inline_button(button: Any) -> None:
    """Rejects the inline buttons Telegram rejects, most importantly oversized callback_data."""
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise bad_request(
            'can\'t parse inline keyboard button: Field "text" must be of type String'
        )
    actions = [a for a in _BUTTON_ACTIONS if a in button]
    if not actions:
        raise bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in button:
        url = button["url"]
        if not isinstance(url, str) or not _URL_OK.match(url):
            raise bad_request(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")


def _inline_part(markup: JSON | None) -> JSON | None:
    """The part of stored markup an edit can change or compare against."""
    if markup and "inline_keyboard" in markup:
        return markup
    return None


# ---------------------------------------------------------------------------- method table


Handler = Callable[[FakeTelegram, Params], Awaitable[Any]]
METHODS: dict[str, tuple[str, Handler]] = {}


def api_method(name: str) -> Callable[[Handler], Handler]:
    """Registers a handler; Telegram matches method names case-insensitively."""

    def register(func: Handler) -> Handler:
        METHODS[name.lower()] = (name, func)
        return func

    return register


def _chat_ref(p: Params) -> int | str:
    """chat_id is a number or an @username."""
    if not p.has("chat_id"):
        raise bad_request("chat_id is empty")
    value = p.raw["chat_id"]
    if isinstance(value, int) and not isinstance(value, bool):
        p.parsed["chat_id"] = value
        return value
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        p.parsed["chat_id"] = int(text)
        return int(text)
    if text.startswith("@"):
        return text
    raise bad_request("chat not found")


def _writable_chat(fake: FakeTelegram, p: Params) -> FakeChat:
    """Resolves chat_id and applies the 403/migration rules for posting."""
    chat = fake.resolve_chat(_chat_ref(p))
    fake.check_can_write(chat)
    return chat


def _reply_target(fake: FakeTelegram, chat: FakeChat, p: Params) -> StoredMessage | None:
    """Supports reply_parameters and the legacy reply_to_message_id."""
    params = p.get_json("reply_parameters", "can't parse reply parameters JSON object")
    allow_missing = p.get_bool("allow_sending_without_reply")
    message_id: int | None
    if isinstance(params, dict):
        message_id = params.get("message_id")
        allow_missing = bool(params.get("allow_sending_without_reply", allow_missing))
        if not isinstance(message_id, int):
            raise bad_request("message to be replied not found")
    else:
        message_id = p.get_int("reply_to_message_id")
    if message_id is None:
        return None
    target = chat.messages.get(message_id)
    if target is None or target.deleted:
        if allow_missing:
            return None
        raise bad_request("message to be replied not found")
    return target


def _caption(p: Params) -> tuple[str | None, list[JSON]]:
    """Captions follow text formatting rules with a 1024-character ceiling."""
    raw = p.get_str("caption")
    if raw is None:
        return None, []
    text, entities = format_text(
        raw,
        p.get_str("parse_mode"),
        p.get_json("caption_entities", "can't parse entities JSON object"),
    )
    if len(text) > CAPTION_LIMIT:
        raise bad_request("message caption is too long")
    return (text or None), entities


def _input_file(fake: FakeTelegram, p: Params, name: str) -> StoredFile:
    """Resolves an upload (direct or attach://) or a reusable file_id, as Telegram does."""
    kind: Any = "photo" if name == "photo" else "document"
    upload = p.uploads.get(name)
    value = p.raw.get(name)
    if upload is None and isinstance(value, str) and value.startswith("attach://"):
        upload = p.uploads.get(value.removeprefix("attach://"))
        if upload is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
    if upload is not None:
        p.parsed[name] = {"filename": upload.filename, "size": len(upload.data)}
        data = upload.data
        if not data:
            raise bad_request("file must be non-empty")
        if kind == "photo":
            if len(data) > MAX_PHOTO_SIZE:
                raise bad_request("PHOTO_SAVE_FILE_INVALID")
            size = image_size(data)
            if size is None:
                raise bad_request("IMAGE_PROCESS_FAILED")
            width, height = size
            if width + height > 10000 or max(width, height) > 20 * max(1, min(width, height)):
                raise bad_request("PHOTO_INVALID_DIMENSIONS")
            return fake.store_file(data, "photo")
        mime = upload.content_type
        if mime and mime.split(";")[0].strip() == "application/octet-stream":
            mime = None
        guessed = mimetypes.guess_type(upload.filename or "")[0]
        return fake.store_file(
            data, "document", file_name=upload.filename, mime_type=guessed or mime
        )
    if not isinstance(value, str) or not value:
        raise bad_request(f"there is no {name} in the request")
    p.parsed[name] = value
    if value.lower().startswith(("http://", "https://")):
        raise bad_request("failed to get HTTP URL content")
    stored = fake.files.get(value)
    if stored is None:
        raise bad_request("wrong file identifier/HTTP URL specified")
    if stored.kind != kind:
        raise bad_request(f"can't use file of type {stored.kind.title()} as {kind.title()}")
    return stored


@api_method("getMe")
async def get_me(fake: FakeTelegram, p: Params) -> Any:
    """Identity check aiogram and bot start-up code perform."""
    return {
        **fake.bot_user,
        "can_join_groups": True,
        "can_read_all_group_messages": True,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


@api_method("getUpdates")
async def get_updates(fake: FakeTelegram, p: Params) -> Any:
    """Long polling: offset confirms, timeout waits for the next update."""
    offset = p.get_int("offset")
    limit = p.get_int("limit") or 100
    timeout = p.get_int("timeout") or 0
    p.get_json("allowed_updates", "can't parse allowed updates")
    return await fake.get_updates(offset, max(1, min(limit, 100)), max(0, timeout))


@api_method("deleteWebhook")
async def delete_webhook(fake: FakeTelegram, p: Params) -> Any:
    """No webhook is ever set; dropping pending updates is the observable effect."""
    if p.get_bool("drop_pending_updates"):
        fake.drop_pending_updates()
    return True


@api_method("getWebhookInfo")
async def get_webhook_info(fake: FakeTelegram, p: Params) -> Any:
    """Reports polling mode, which is all the fake supports."""
    return {
        "url": "",
        "has_custom_certificate": False,
        "pending_update_count": len(fake.pending_updates()),
    }


def _commands_scope(fake: FakeTelegram, p: Params) -> tuple[JSON | None, str]:
    """Validates a BotCommandScope and language code into a storage key's parts."""
    scope = p.get_json("scope", "can't parse BotCommandScope JSON object")
    if scope is not None:
        if not isinstance(scope, dict) or scope.get("type") not in COMMAND_SCOPES:
            raise bad_request("can't parse BotCommandScope JSON object")
        if scope["type"].startswith("chat"):
            ref = scope.get("chat_id")
            if not isinstance(ref, int | str):
                raise bad_request("chat not found")
            scope = {**scope, "chat_id": fake.resolve_chat(ref).id}
    language = p.get_str("language_code") or ""
    if language and not re.fullmatch(r"[a-z]{2}", language):
        raise bad_request("invalid language code specified")
    return scope, language


@api_method("setMyCommands")
async def set_my_commands(fake: FakeTelegram, p: Params) -> Any:
    """Stores commands per scope and language, validated like Telegram."""
    commands = p.get_json("commands", "can't parse commands JSON object")
    if commands is None:
        commands = []
    if not isinstance(commands, list):
        raise bad_request("can't parse commands JSON object")
    if len(commands) > 100:
        raise bad_request("BOT_COMMANDS_TOO_MUCH")
    for command in commands:
        if not isinstance(command, dict):
            raise bad_request("can't parse BotCommand JSON object")
        name = command.get("command")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", name):
            raise bad_request("BOT_COMMAND_INVALID")
        description = command.get("description")
        if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
    scope, language = _commands_scope(fake, p)
    key = scope_key(scope, language)
    cleaned = [{"command": c["command"], "description": c["description"]} for c in commands]
    if cleaned:
        fake.commands[key] = cleaned
    else:
        fake.commands.pop(key, None)
    return True


@api_method("getMyCommands")
async def get_my_commands(fake: FakeTelegram, p: Params) -> Any:
    """Returns exactly what was stored for the scope; Telegram does not fall back here."""
    scope, language = _commands_scope(fake, p)
    return fake.my_commands(scope, language)


@api_method("deleteMyCommands")
async def delete_my_commands(fake: FakeTelegram, p: Params) -> Any:
    """Clears one scope's commands."""
    scope, language = _commands_scope(fake, p)
    fake.commands.pop(scope_key(scope, language), None)
    return True


def _store_setting(name: str) -> Handler:
    """Profile setters only need to be accepted and remembered."""

    async def handler(fake: FakeTelegram, p: Params) -> Any:
        fake.bot_settings[name] = dict(p.raw)
        return True

    handler.__doc__ = f"Remembers {name} so tests can assert bot profile setup."
    return handler


for _setting in ("setMyDescription", "setMyShortDescription", "setMyName", "setChatMenuButton"):
    api_method(_setting)(_store_setting(_setting))


@api_method("sendMessage")
async def send_message(fake: FakeTelegram, p: Params) -> Any:
    """The workhorse: validates formatting, markup, permissions and flood limits."""
    chat = _writable_chat(fake, p)
    raw = p.get_str("text", missing="message text is empty")
    assert raw is not None
    text, entities = format_text(
        raw, p.get_str("parse_mode"), p.get_json("entities", "can't parse entities JSON object")
    )
    if not text:
        raise bad_request("message text is empty")
    if len(text) > TEXT_LIMIT:
        raise bad_request("message is too long")
    markup = parse_reply_markup(p)
    reply_to = _reply_target(fake, chat, p)
    fake.admit_send(chat)
    msg = fake.bot_message(
        chat, reply_to=reply_to, text=text, entities=entities, reply_markup=markup
    )
    return msg.to_api()


async def _send_media(fake: FakeTelegram, p: Params, name: str) -> Any:
    """Shared body of sendDocument/sendPhoto."""
    chat = _writable_chat(fake, p)
    stored = _input_file(fake, p, name)
    caption, caption_entities = _caption(p)
    markup = parse_reply_markup(p)
    reply_to = _reply_target(fake, chat, p)
    fake.admit_send(chat)
    media: JSON = (
        {"photo": stored.photo_api()} if name == "photo" else {"document": stored.document_api()}
    )
    msg = fake.bot_message(
        chat,
        reply_to=reply_to,
        caption=caption,
        caption_entities=caption_entities,
        reply_markup=markup,
        **media,
    )
    return msg.to_api()


@api_method("sendDocument")
async def send_document(fake: FakeTelegram, p: Params) -> Any:
    """Uploads or re-sends a document."""
    return await _send_media(fake, p, "document")


@api_method("sendPhoto")
async def send_photo(fake: FakeTelegram, p: Params) -> Any:
    """Uploads or re-sends a photo; non-image bytes fail like on Telegram."""
    return await _send_media(fake, p, "photo")


def _editable(fake: FakeTelegram, p: Params) -> StoredMessage:
    """Finds a message the bot may edit, with Telegram's error wording."""
    if p.has("inline_message_id") and not p.has("chat_id"):
        raise bad_request("MESSAGE_ID_INVALID")
    chat = _writable_chat(fake, p)
    message_id = p.get_int("message_id", missing="message identifier is not specified")
    msg = chat.messages.get(message_id or 0)
    if msg is None or msg.deleted:
        raise bad_request("message to edit not found")
    if not msg.from_bot or msg.is_service:
        raise bad_request("message can't be edited")
    return msg


def _new_markup(msg: StoredMessage, p: Params) -> JSON | None:
    """Omitting reply_markup on an edit removes the inline keyboard, as on Telegram."""
    markup = parse_reply_markup(p, inline_only=True)
    if markup is None and msg.reply_markup is not None and _inline_part(msg.reply_markup) is None:
        return msg.reply_markup
    return markup


@api_method("editMessageText")
async def edit_message_text(fake: FakeTelegram, p: Params) -> Any:
    """Edits text; identical content and markup is Telegram's 'message is not modified'."""
    msg = _editable(fake, p)
    raw = p.get_str("text", missing="message text is empty")
    assert raw is not None
    text, entities = format_text(
        raw, p.get_str("parse_mode"), p.get_json("entities", "can't parse entities JSON object")
    )
    if not text:
        raise bad_request("message text is empty")
    if len(text) > TEXT_LIMIT:
        raise bad_request("MESSAGE_TOO_LONG")
    if msg.text is None:
        raise bad_request("there is no text in the message to edit")
    markup = _new_markup(msg, p)
    if text == msg.text and entities == msg.entities and markup == msg.reply_markup:
        raise bad_request(NOT_MODIFIED)
    fake.edit_message(msg, text=text, entities=entities, reply_markup=markup)
    return msg.to_api()


@api_method("editMessageCaption")
async def edit_message_caption(fake: FakeTelegram, p: Params) -> Any:
    """Edits a media caption with the same not-modified rule as text."""
    msg = _editable(fake, p)
    if msg.document is None and msg.photo is None:
        raise bad_request("there is no caption in the message to edit")
    caption, caption_entities = _caption(p)
    markup = _new_markup(msg, p)
    if (
        caption == msg.caption
        and caption_entities == msg.caption_entities
        and markup == msg.reply_markup
    ):
        raise bad_request(NOT_MODIFIED)
    fake.edit_message(msg, caption=caption, caption_entities=caption_entities, reply_markup=markup)
    return msg.to_api()


@api_method("editMessageReplyMarkup")
async def edit_message_reply_markup(fake: FakeTelegram, p: Params) -> Any:
    """Swaps or removes the inline keyboard; an identical one is 'not modified'."""
    msg = _editable(fake, p)
    markup = _new_markup(msg, p)
    if markup == msg.reply_markup:
        raise bad_request(NOT_MODIFIED)
    fake.edit_message(msg, reply_markup=markup)
    return msg.to_api()


def _delete_one(fake: FakeTelegram, chat: FakeChat, message_id: int) -> None:
    """Telegram's deletion rules: 48 hours, and others' group messages need admin rights."""
    msg = chat.messages.get(message_id)
    if msg is None or msg.deleted:
        raise bad_request("message to delete not found")
    if chat.is_group and not msg.from_bot and not chat.bot_admin:
        raise bad_request("message can't be deleted")
    if fake.now() - msg.date > MESSAGE_EDIT_WINDOW and not (chat.is_group and chat.bot_admin):
        raise bad_request("message can't be deleted for everyone")
    fake.delete_message(msg)


@api_method("deleteMessage")
async def delete_message(fake: FakeTelegram, p: Params) -> Any:
    """Deletes one message (kept in state with deleted=True)."""
    chat = fake.resolve_chat(_chat_ref(p))
    fake.check_migrated(chat)
    message_id = p.get_int("message_id", missing="message identifier is not specified")
    assert message_id is not None
    _delete_one(fake, chat, message_id)
    return True


@api_method("deleteMessages")
async def delete_messages(fake: FakeTelegram, p: Params) -> Any:
    """Bulk delete skips messages that cannot be deleted, as Telegram does."""
    chat = fake.resolve_chat(_chat_ref(p))
    fake.check_migrated(chat)
    ids = p.get_json("message_ids", "can't parse message identifiers JSON object")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        raise bad_request("message identifiers are not specified")
    for message_id in ids:
        if isinstance(message_id, int):
            try:
                _delete_one(fake, chat, message_id)
            except ApiError:
                continue
    return True


@api_method("answerCallbackQuery")
async def answer_callback_query(fake: FakeTelegram, p: Params) -> Any:
    """Records the answer; each query can be answered once."""
    query_id = p.get_str("callback_query_id", missing="QUERY_ID_INVALID")
    assert query_id is not None
    text = p.get_str("text")
    if text is not None and len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    answer: JSON = {"show_alert": p.get_bool("show_alert")}
    if text is not None:
        answer["text"] = text
    url = p.get_str("url")
    if url is not None:
        answer["url"] = url
    cache_time = p.get_int("cache_time")
    if cache_time is not None:
        answer["cache_time"] = cache_time
    fake.answer_callback(query_id, answer)
    return True


@api_method("getFile")
async def get_file(fake: FakeTelegram, p: Params) -> Any:
    """Maps a file_id to a downloadable path."""
    file_id = p.get_str("file_id", missing="file_id is empty")
    stored = fake.files.get(file_id or "")
    if stored is None:
        raise bad_request("invalid file_id")
    if stored.file_size > MAX_DOWNLOAD_SIZE:
        raise bad_request("file is too big")
    return stored.file_api()


@api_method("pinChatMessage")
async def pin_chat_message(fake: FakeTelegram, p: Params) -> Any:
    """Pins and emits the pinned_message service message; groups need admin rights."""
    chat = _writable_chat(fake, p)
    message_id = p.get_int("message_id", missing="message identifier is not specified")
    p.get_bool("disable_notification")
    msg = chat.messages.get(message_id or 0)
    if msg is None or msg.deleted or msg.is_service:
        raise bad_request("message to pin not found")
    if chat.is_group and not chat.bot_admin:
        raise bad_request("not enough rights to manage pinned messages in the chat")
    chat.pinned_message_id = msg.message_id
    fake.bot_message(chat, service={"pinned_message": msg.to_api(with_reply=False)})
    return True


@api_method("unpinChatMessage")
async def unpin_chat_message(fake: FakeTelegram, p: Params) -> Any:
    """Unpins the given or most recent pinned message."""
    chat = _writable_chat(fake, p)
    if chat.is_group and not chat.bot_admin:
        raise bad_request("not enough rights to manage pinned messages in the chat")
    message_id = p.get_int("message_id")
    if message_id is None or message_id == chat.pinned_message_id:
        chat.pinned_message_id = None
    return True


@api_method("unpinAllChatMessages")
async def unpin_all_chat_messages(fake: FakeTelegram, p: Params) -> Any:
    """Clears the pin."""
    chat = _writable_chat(fake, p)
    if chat.is_group and not chat.bot_admin:
        raise bad_request("not enough rights to manage pinned messages in the chat")
    chat.pinned_message_id = None
    return True


@api_method("getChat")
async def get_chat(fake: FakeTelegram, p: Params) -> Any:
    """ChatFullInfo with the fields aiogram requires."""
    chat = fake.resolve_chat(_chat_ref(p))
    fake.check_can_read(chat)
    data: JSON = {
        **fake.chat_api(chat),
        "accent_color_id": chat.id % 7,
        "max_reaction_count": 11,
        "accepted_gift_types": {
            "unlimited_gifts": False,
            "limited_gifts": False,
            "unique_gifts": False,
            "premium_subscription": False,
            "gifts_from_channels": False,
        },
    }
    if chat.pinned_message_id is not None:
        pinned = chat.messages.get(chat.pinned_message_id)
        if pinned is not None and not pinned.deleted:
            data["pinned_message"] = pinned.to_api(with_reply=False)
    return data


def _bot_member(fake: FakeTelegram, chat: FakeChat) -> JSON:
    """The bot's ChatMember object; administrators need every rights flag aiogram requires."""
    if chat.bot_kicked:
        return {"status": "kicked", "user": fake.bot_user, "until_date": 0}
    if not chat.bot_member:
        return {"status": "left", "user": fake.bot_user}
    if chat.is_group and chat.bot_admin:
        return {
            "status": "administrator",
            "user": fake.bot_user,
            "can_be_edited": False,
            "is_anonymous": False,
            "can_manage_chat": True,
            "can_delete_messages": True,
            "can_manage_video_chats": True,
            "can_restrict_members": True,
            "can_promote_members": False,
            "can_change_info": True,
            "can_invite_users": True,
            "can_post_stories": False,
            "can_edit_stories": False,
            "can_delete_stories": False,
            "can_send_welcome_messages": False,
            "can_pin_messages": True,
        }
    return {"status": "member", "user": fake.bot_user}


@api_method("getChatMember")
async def get_chat_member(fake: FakeTelegram, p: Params) -> Any:
    """Membership lookups bots use for access control."""
    chat = fake.resolve_chat(_chat_ref(p))
    fake.check_can_read(chat)
    user_id = p.get_int("user_id", missing="user_id is empty")
    if user_id == fake.bot_id:
        return _bot_member(fake, chat)
    user = fake.users.get(user_id or 0)
    if user is None:
        raise bad_request("PARTICIPANT_ID_INVALID")
    status = "member" if (chat.id == user.id or user.id in chat.members) else "left"
    return {"status": status, "user": user.to_api()}


@api_method("sendChatAction")
async def send_chat_action(fake: FakeTelegram, p: Params) -> Any:
    """Typing indicators; not flood-limited but subject to chat access rules."""
    chat = _writable_chat(fake, p)
    action = p.get_str("action", missing="action is empty")
    if action not in CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    chat.last_action = action
    chat.last_action_at = fake.rate_clock()
    chat.last_action_seq = fake.seq
    fake.notify_changed()
    return True


@api_method("leaveChat")
async def leave_chat(fake: FakeTelegram, p: Params) -> Any:
    """Bot leaves a group and, as on Telegram, receives my_chat_member about it."""
    chat = fake.resolve_chat(_chat_ref(p))
    if not chat.is_group:
        raise bad_request("chat member status can't be changed in private chats")
    fake.check_migrated(chat)
    if chat.bot_kicked:
        raise forbidden(f"bot was kicked from the {chat.type} chat")
    if not chat.bot_member:
        raise forbidden(f"bot is not a member of the {chat.type} chat")
    old = _bot_member(fake, chat)
    chat.bot_member = False
    chat.bot_admin = False
    fake.bot_membership_changed(chat, fake.bot_user, old, {"status": "left", "user": fake.bot_user})
    return True


# ---------------------------------------------------------------------------- HTTP handlers


def _json(body: Any, status: int = 200) -> web.Response:
    """JSON with readable non-ASCII, which matters for the Chinese UI texts."""
    return web.json_response(body, status=status, dumps=_dumps)


def _error(error: ApiError) -> web.Response:
    """HTTP status mirrors error_code, as Telegram does."""
    return _json(error.to_json(), status=error.error_code)


async def api_handler(request: web.Request) -> web.Response:
    """Entry point for /bot{token}/{method}."""
    fake = request.app[FAKE_KEY]
    method = request.match_info["method"]
    entry = METHODS.get(method.lower())
    name = entry[0] if entry else method
    params = Params({})
    started = fake.clock()
    try:
        if request.match_info["token"] != fake.token:
            raise ApiError(401, "Unauthorized")
        if entry is None:
            raise ApiError(404, "Not Found: method not found")
        params = await read_params(request)
        result = await entry[1](fake, params)
    except ApiError as exc:
        fake.log_call(
            CallRecord(
                name, params.for_log(), False, exc.error_code, None, exc.description, started
            )
        )
        return _error(exc)
    except FakeTelegramError as exc:
        error = bad_request(str(exc))
        fake.log_call(
            CallRecord(name, params.for_log(), False, 400, None, error.description, started)
        )
        return _error(error)
    except Exception as exc:
        log.exception("fake Bot API failed on %s", name)
        error = ApiError(500, f"Internal Server Error: {type(exc).__name__}: {exc}")
        fake.log_call(
            CallRecord(name, params.for_log(), False, 500, None, error.description, started)
        )
        return _error(error)
    fake.log_call(CallRecord(name, params.for_log(), True, 200, result, None, started))
    return _json({"ok": True, "result": result})


async def file_handler(request: web.Request) -> web.Response:
    """Serves /file/bot{token}/{path} like Telegram's file CDN."""
    fake = request.app[FAKE_KEY]
    if request.match_info["token"] != fake.token:
        return _error(ApiError(401, "Unauthorized"))
    stored = fake.files_by_path.get(request.match_info["path"])
    if stored is None:
        return _error(ApiError(404, "Not Found"))
    return web.Response(
        body=stored.data, content_type=stored.mime_type or "application/octet-stream"
    )


# ---------------------------------------------------------------------------- control routes


def _control(
    func: Callable[[FakeTelegram, Params], Awaitable[Any]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wraps a control action in the same {ok, result} envelope the Bot API uses."""

    async def handler(request: web.Request) -> web.StreamResponse:
        fake = request.app[FAKE_KEY]
        try:
            params = await read_params(request)
            result = await func(fake, params)
        except ApiError as exc:
            return _error(exc)
        except FakeTelegramError as exc:
            return _error(bad_request(str(exc)))
        if isinstance(result, web.StreamResponse):
            return result
        return _json({"ok": True, "result": result})

    handler.__doc__ = func.__doc__
    return handler


def _required_int(p: Params, name: str) -> int:
    """Control routes need explicit ids."""
    value = p.get_int(name, missing=f"{name} is required")
    assert value is not None
    return value


def _chat_json(fake: FakeTelegram, chat: FakeChat, viewer: int | None) -> JSON:
    """Chat summary for the front end; a private chat is titled with the bot's name."""
    title = chat.title
    if chat.type == "private":
        title = fake.bot_first_name if viewer == chat.id else fake.user(chat.id).full_name
    last = next(reversed(chat.messages.values()), None)
    return {
        "id": chat.id,
        "type": chat.type,
        "title": title,
        "members": list(chat.members),
        "bot_member": chat.bot_member,
        "bot_admin": chat.bot_admin,
        "migrated_to": chat.migrated_to,
        "pinned_message_id": chat.pinned_message_id,
        "last_action": chat.last_action,
        "action": fake.current_action(chat),
        "seq": last.seq if last else 0,
    }


async def control_chats(fake: FakeTelegram, p: Params) -> Any:
    """Chats visible to a user, or all chats."""
    user_id = p.get_int("user_id")
    chats = fake.chats_of(user_id) if user_id is not None else list(fake.chats.values())
    return [_chat_json(fake, c, user_id) for c in chats]


async def control_users(fake: FakeTelegram, p: Params) -> Any:
    """Registered users, so the demo can offer a persona picker."""
    return [{**u.to_api(), "started": u.started, "blocked": u.blocked} for u in fake.users.values()]


async def control_register_user(fake: FakeTelegram, p: Params) -> Any:
    """Lets the demo create personas on the fly."""
    user = fake.register_user(
        _required_int(p, "user_id"),
        p.get_str("first_name", missing="first_name is required") or "",
        last_name=p.get_str("last_name"),
        username=p.get_str("username"),
        language_code=p.get_str("language_code"),
        started=p.get_bool("started"),
    )
    return user.to_api()


async def control_messages(fake: FakeTelegram, p: Params) -> Any:
    """Messages changed after the `after` cursor (a seq), long-polling up to `timeout` s."""
    chat_id = _required_int(p, "chat_id")
    after = p.get_int("after") or 0
    timeout = min(max(p.get_int("timeout") or 0, 0), 60)

    def changed() -> list[StoredMessage]:
        return [m for m in fake.messages(chat_id) if m.seq > after]

    if timeout and not changed():
        await fake.wait_until(lambda: bool(changed()), timeout)
    return {"messages": [m.to_json() for m in changed()], "seq": fake.seq}


async def control_send(fake: FakeTelegram, p: Params) -> Any:
    """User sends text (chat_id defaults to the private chat)."""
    user_id = _required_int(p, "user_id")
    return fake.user_message(
        user_id,
        p.get_int("chat_id") or user_id,
        p.get_str("text", missing="text is required") or "",
        reply_to_message_id=p.get_int("reply_to_message_id"),
    )


async def control_press(fake: FakeTelegram, p: Params) -> Any:
    """User presses an inline button."""
    user_id = _required_int(p, "user_id")
    chat_id = p.get_int("chat_id") or user_id
    message_id = _required_int(p, "message_id")
    data = p.get_str("callback_data", missing="callback_data is required") or ""
    return fake.press_button(user_id, (chat_id, message_id), data)


async def control_upload(fake: FakeTelegram, p: Params) -> Any:
    """User sends a file (multipart field `file`) as a document or photo."""
    user_id = _required_int(p, "user_id")
    chat_id = p.get_int("chat_id") or user_id
    upload = p.uploads.get("file")
    if upload is None or not upload.data:
        raise bad_request("file is required")
    kind = p.get_str("kind") or "document"
    caption = p.get_str("caption")
    if kind == "photo":
        return fake.user_photo(user_id, chat_id, upload.data, caption=caption)
    if kind != "document":
        raise bad_request("kind must be document or photo")
    mime = upload.content_type
    if mime and mime.startswith("application/octet-stream"):
        mime = None
    return fake.user_document(
        user_id,
        chat_id,
        upload.data,
        upload.filename or "file",
        mime_type=mime,
        caption=caption,
    )


async def control_commands(fake: FakeTelegram, p: Params) -> Any:
    """The command menu a user sees in a chat (chat_id defaults to the private chat)."""
    user_id = _required_int(p, "user_id")
    return fake.menu_commands(p.get_int("chat_id") or user_id, user_id)


async def control_callback(fake: FakeTelegram, p: Params) -> Any:
    """Waits (up to `timeout` s) for the bot's answer to a button press, for toasts/alerts."""
    query_id = p.get_str("id", missing="id is required") or ""
    record = fake.callbacks.get(query_id)
    if record is None:
        raise bad_request("unknown callback query")
    timeout = min(max(p.get_int("timeout") or 0, 0), 60)
    if timeout and not record.answered:
        await fake.wait_until(lambda: record.answered, timeout)
    return {"answered": record.answered, "answer": record.answer}


async def control_file(fake: FakeTelegram, p: Params) -> Any:
    """Downloads a file by file_id without exposing the bot token to the browser."""
    file_id = p.get_str("file_id", missing="file_id is required") or ""
    stored = fake.files.get(file_id)
    if stored is None:
        raise ApiError(404, "Not Found")
    response = web.Response(
        body=stored.data, content_type=stored.mime_type or "application/octet-stream"
    )
    if stored.file_name:
        response.headers["Content-Disposition"] = (
            f"inline; filename*=UTF-8''{_quote(stored.file_name)}"
        )
    return response


def _quote(name: str) -> str:
    """RFC 5987 encoding so Chinese file names survive the header."""
    return quote(name, safe="")


# ---------------------------------------------------------------------------- app & runner


def create_app(fake: FakeTelegram) -> web.Application:
    """Builds the aiohttp app; shutdown releases long polls so cleanup never hangs."""
    app = web.Application(client_max_size=MAX_UPLOAD_SIZE + 1024 * 1024)
    app[FAKE_KEY] = fake

    async def on_shutdown(app: web.Application) -> None:
        app[FAKE_KEY].release_waiters()

    app.on_shutdown.append(on_shutdown)
    app.router.add_route("*", "/bot{token}/{method}", api_handler)
    app.router.add_get("/file/bot{token}/{path:.+}", file_handler)
    app.router.add_get("/_fake/chats", _control(control_chats))
    app.router.add_get("/_fake/users", _control(control_users))
    app.router.add_post("/_fake/users", _control(control_register_user))
    app.router.add_get("/_fake/messages", _control(control_messages))
    app.router.add_post("/_fake/send", _control(control_send))
    app.router.add_post("/_fake/press", _control(control_press))
    app.router.add_post("/_fake/upload", _control(control_upload))
    app.router.add_get("/_fake/callback", _control(control_callback))
    app.router.add_get("/_fake/commands", _control(control_commands))
    app.router.add_get("/_fake/file", _control(control_file))
    return app


@asynccontextmanager
async def run_fake_server(
    fake: FakeTelegram, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serves the fake on a (by default random free) port and yields its base URL."""
    runner = web.AppRunner(create_app(fake), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}"
    finally:
        await runner.cleanup()
