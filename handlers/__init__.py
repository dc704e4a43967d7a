"""aiogram routers, grouped by audience; built fresh for every dispatcher."""

from __future__ import annotations

from aiogram import Router


def setup_routers() -> Router:
    from handlers import fallback, groups, imports, invites, start

    root = Router(name="root")
    root.include_routers(
        start.create_router(),
        groups.create_router(),
        imports.create_router(),
        invites.create_router(),
        fallback.create_router(),
    )
    return root
