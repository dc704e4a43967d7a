"""aiogram routers, grouped by audience."""

from __future__ import annotations

from aiogram import Router


def setup_routers() -> Router:
    from handlers import fallback, groups, imports, invites, start

    root = Router(name="root")
    root.include_routers(
        start.router, groups.router, imports.router, invites.router, fallback.router
    )
    return root
