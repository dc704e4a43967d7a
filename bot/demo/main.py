"""What `dsr demo` runs: serve the demo until Ctrl-C, or run the scenario headless and exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import typer

from bot.demo.runtime import DEMO_DATABASE, Demo, DemoOptions, run_demo
from bot.render import text

log = logging.getLogger(__name__)


def _quiet_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per update is noise on a trainer's screen; problems still show.
    for name in (
        "aiogram.event",
        "aiogram.dispatcher",
        "alembic",
        "apscheduler",
        "bot.directories",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def _announce(demo: Demo) -> None:
    if demo.generated is not None:
        typer.echo(
            text(
                "demo.cli.generated",
                seconds=f"{demo.generated.total_seconds:.1f}",
                **demo.generated.counts,
            )
        )
    now = demo.clock.now().astimezone(ZoneInfo(demo.timezone))
    typer.echo(text("demo.cli.clock", now=now.strftime("%Y-%m-%d %H:%M")))
    typer.echo(text("demo.cli.ready", seconds=f"{demo.startup_seconds:.1f}", url=demo.base_url))


async def _serve(options: DemoOptions) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Ctrl-C and `kill` end the same way: leave `run_demo`, which stops everything in order.
    # (Explicit, because a shell starting us in the background makes SIGINT ignored.)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no add_signal_handler
            loop.add_signal_handler(sig, stop.set)
    async with run_demo(options) as demo:
        _announce(demo)
        await stop.wait()


def serve(*, reset: bool, speed: float, port: int, host: str = "127.0.0.1") -> int:
    """Run until Ctrl-C (SIGINT cancels the main task; `run_demo` stops everything in order)."""
    if speed < 0:
        typer.echo(text("demo.cli.bad_speed"), err=True)
        return 2
    _quiet_logging()
    options = DemoOptions(
        database_url=os.environ.get("DEMO_DATABASE_URL", DEMO_DATABASE),
        redis_url=os.environ.get("DEMO_REDIS_URL") or None,
        host=host,
        port=port,
        speed=speed,
        reset=reset,
    )
    if reset or not _has_database(options.database_url):
        typer.echo(text("demo.cli.generating"))
    try:
        asyncio.run(_serve(options))
    except KeyboardInterrupt:
        pass
    except OSError as error:
        if error.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            typer.echo(text("demo.cli.port_busy", port=port), err=True)
            return 2
        raise
    typer.echo(text("demo.cli.stopped"))
    return 0


def _has_database(url: str) -> bool:
    if not url.startswith("sqlite"):
        return True
    path = url.split(":///", 1)[-1]
    return Path(path).exists()


def headless_check() -> int:
    """The scenario without a browser, on a throwaway database; 0 only if every step passed."""
    from bot.demo.scenario import HeadlessDriver, run_scenario

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    started = time.perf_counter()

    async def main() -> int:
        with tempfile.TemporaryDirectory(prefix="dsr-demo-check-") as folder:
            options = DemoOptions(
                database_url=f"sqlite+aiosqlite:///{Path(folder) / 'demo.sqlite3'}",
                port=0,
                reset=True,
            )
            async with run_demo(options) as demo:
                typer.echo(text("demo.cli.check_start"))
                report = await run_scenario(HeadlessDriver(demo), echo=typer.echo)
        if report.failed is not None:
            typer.echo(
                text(
                    "demo.cli.check_failed_summary",
                    index=report.failed.index,
                    step=report.failed.title,
                ),
                err=True,
            )
            return 1
        typer.echo(
            text(
                "demo.cli.check_passed",
                count=len(report.passed),
                seconds=f"{time.perf_counter() - started:.1f}",
            )
        )
        return 0

    return asyncio.run(main())
