"""Quiet when healthy: client-library lines that are normal on a fresh broker are shown at debug only."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from eventbus.logs import setup_logging


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield buf
    root.handlers[:] = handlers
    root.setLevel(level)


def _setup(buf: io.StringIO, level: str) -> None:
    setup_logging("text", level)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buf)


def _emit() -> None:
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: [Error 15] CoordinatorNotAvailableError")
    logging.getLogger("aiokafka.client").error('Unable connect to "127.0.0.1:1": [Errno 111] Connect call failed')
    logging.getLogger("aiokafka.consumer.group_coordinator").error("Heartbeat session expired - marking dead")
    logging.getLogger("eventbus.nats").warning(
        "NATS error", extra={"error": "ConnectionRefusedError(111, \"Connect call failed ('127.0.0.1', 1)\")"})
    logging.getLogger("eventbus.runtime").error("trigger failed; restarting")


def test_normal_client_lines_are_debug_only(stderr: io.StringIO) -> None:
    _setup(stderr, "info")
    _emit()
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "Heartbeat session expired" in lines[0] and "trigger failed" in lines[1]


def test_debug_level_shows_them_as_debug(stderr: io.StringIO) -> None:
    _setup(stderr, "debug")
    _emit()
    text = stderr.getvalue()
    assert "DEBUG   aiokafka.consumer.group_coordinator: Group Coordinator Request failed" in text
    assert "DEBUG   aiokafka.client: Unable connect to" in text
    assert "ERROR   aiokafka.consumer.group_coordinator: Heartbeat session expired" in text
