"""Fixtures shared by the integration tests: a real function server (modules may override `fn`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.support import FunctionServer


@pytest.fixture
async def fn() -> AsyncIterator[FunctionServer]:
    """A real aiohttp server standing in for the gateway and function: answers 204, records requests."""
    server = await FunctionServer().start()
    yield server
    await server.stop()
