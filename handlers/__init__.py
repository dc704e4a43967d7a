"""aiogram routers, grouped by audience; built fresh for every dispatcher."""

from __future__ import annotations

from aiogram import Router


def setup_routers() -> Router:
    from handlers import (
        assignments,
        draws,
        fallback,
        followups,
        groups,
        imports,
        invites,
        notices,
        results,
        review,
        start,
        tasks,
        worklist,
    )

    root = Router(name="root")
    root.include_routers(
        start.create_router(),
        groups.create_router(),
        imports.create_router(),
        invites.create_router(),
        # issue 3: /task dialog, /tasks in the office group, /draw, /void, /verify, /merge
        tasks.create_router(),
        draws.create_router(),
        # issue 4: assignments, result dialog, co-signature, review, follow-up, /tasks, /review
        worklist.create_router(),
        assignments.create_router(),
        results.create_router(),
        review.create_router(),
        followups.create_router(),
        # issue 5: /notices, 问责/免责 decisions, /holidays
        notices.create_router(),
        fallback.create_router(),
    )
    return root
