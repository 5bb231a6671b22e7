"""The chaos suite: fault injection on the real servers, one table row per scenario (see ledger.py).

Reduced counts by default (CI, through `scripts/test`); EVENTBUS_CHAOS_FULL=1 (`scripts/chaos`) runs the full
counts of issue 7. Every test here gets the `chaos` and `integration` markers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chaos.ledger import SESSION_ROWS, format_table, table_path
from tests.integration.support import FunctionServer

CHAOS_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: fault-injection suite on real servers (EVENTBUS_CHAOS_FULL=1 for the full counts)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CHAOS_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SESSION_ROWS:
        terminalreporter.section("chaos table")
        terminalreporter.write_line(format_table(SESSION_ROWS))
        terminalreporter.write_line(f"(also appended to {table_path()})")


@pytest.fixture
async def fn() -> AsyncIterator[FunctionServer]:
    """A real aiohttp function server answering 204 (scenarios install their own behaviour)."""
    server = await FunctionServer().start()
    yield server
    await server.stop()
