"""/record and `dsr draw record`: the record is encoded off the event loop, unchanged."""

from __future__ import annotations

import json
import threading

import pytest

import bot.draws as draws_module
from bot.clock import FrozenClock
from bot.draws import DrawProblem, record_json
from storage.db import Database
from storage.models import Draw
from tests.test_draws import new_task, run_draw, seeded


async def test_the_record_is_encoded_in_a_worker_thread(
    db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seeded(db, clock, targets=40)
    async with db.session() as session:
        task_id = await new_task(session, clock.now())
    draw_id = await run_draw(db, clock.now(), task_id)
    threads: list[threading.Thread] = []
    encode = draws_module._readable_json

    def spy(raw: str) -> str:
        threads.append(threading.current_thread())
        return encode(raw)

    monkeypatch.setattr(draws_module, "_readable_json", spy)
    async with db.read() as session:
        exported = await record_json(session, draw_id=draw_id)
        stored = await session.get(Draw, draw_id)
    assert stored is not None
    assert threads and threads[0] is not threading.main_thread()
    assert json.loads(exported) == stored.record  # the record exactly as stored
    assert "\\u" not in exported  # Chinese as characters, as before
    with pytest.raises(DrawProblem) as unknown:
        async with db.read() as session:
            await record_json(session, draw_id=draw_id + 1)
    assert unknown.value.key == "unknown_draw"
