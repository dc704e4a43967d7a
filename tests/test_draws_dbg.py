from tests.test_draws import _two_tasks, Database, FrozenClock, Draw, Inspection, Assignment, select

async def test_dbg(db: Database, clock: FrozenClock) -> None:
    draw_a, draw_b, keys_a = await _two_tasks(db, clock, mergeable=True)
    async with db.read() as session:
        d = await session.get(Draw, draw_b)
        print("shortfalls", d.record["shortfalls"][:3], len(d.record["groups"]), len(d.record["order"]))
        print("load_cap", d.record["parameters"]["load_cap"], len(d.record["inspectors"]))
        for i in await session.exec(select(Inspection).order_by(Inspection.id)):
            seats = list(await session.exec(select(Assignment.inspector_id, Assignment.status, Assignment.draw_id).where(Assignment.inspection_id == i.id)))
            print(i.id, i.draw_id, i.status, i.merged_into_id, seats)
        raise AssertionError("show")
