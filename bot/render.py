"""Every word a user reads comes from `templates/` through here.

Messages are Jinja2 files (`render("start/bound.j2", ...)`); short phrases (button labels,
command descriptions, import error reasons) live in `templates/texts.yaml` and go through the
same environment (`text("button.cancel")`).
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from bot.clock import to_local

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
        keep_trailing_newline=False,
    )
    env.filters["dt"] = _format_datetime
    env.globals["text"] = text
    return env


def _format_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M", tz: str | None = None) -> str:
    """A moment as people read it: in the office's time zone when one is given."""
    if value is None:
        return ""
    if tz is not None and isinstance(value, datetime) and value.tzinfo is not None:
        value = to_local(value, tz)
    return str(value.strftime(fmt))


def render(name: str, /, **context: Any) -> str:
    """Render a message template; the result is Telegram HTML, stripped."""
    return environment().get_template(name).render(**context).strip()


def render_plain(name: str, /, **context: Any) -> str:
    """Render for a file or terminal: same template, no HTML escaping."""
    out = _plain_environment().get_template(name).render(**context)
    return _TAGS.sub("", out).strip()


# The Telegram HTML tags our templates use; a terminal shows them as noise.
_TAGS = re.compile(r"</?(?:b|i|u|s|code|pre|blockquote|a)(?:\s[^>]*)?>")


@cache
def _plain_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
    )
    env.filters["dt"] = _format_datetime
    env.globals["text"] = text
    return env


# libyaml's parser where PyYAML was built with it: the texts load in a tenth of the time
# (about 90 ms less for every command and the bot's start); the same safe constructor.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def _texts() -> dict[str, str]:
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = str(node)

    # One catalogue per feature (templates/texts/*.yaml) plus the common one; keys must not clash.
    for path in [TEMPLATES / "texts.yaml", *sorted((TEMPLATES / "texts").glob("*.yaml"))]:
        before = len(flat)
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER) or {}
        count = _count_leaves(raw)
        walk("", raw)
        if len(flat) != before + count:
            raise ValueError(f"{path.name} repeats a text key defined elsewhere")
    return flat


def _count_leaves(node: Any) -> int:
    if isinstance(node, dict):
        return sum(_count_leaves(value) for value in node.values())
    return 1


@cache
def _compiled(key: str) -> Template:
    return _plain_environment().from_string(_texts()[key])


def text(key: str, /, **context: Any) -> str:
    """A short phrase by dotted key; `{{ name }}` placeholders are filled from context.
    Most phrases have none: they are returned as written, without compiling a template (the
    CLI's help texts alone were 0.1 s of every `dsr` start)."""
    phrase = _texts()[key]
    if "{" not in phrase:
        return phrase
    return _compiled(key).render(**context)


def has_text(key: str) -> bool:
    return key in _texts()
