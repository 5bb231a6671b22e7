"""triggers.sinks.GuardedSink with a scripted sink: the retry, kind and too-large rules (pure logic)."""

from __future__ import annotations

import asyncio

import pytest

from schemas.cloudevent import CloudEvent
from triggers import sinks
from triggers.sinks import GuardedSink, SinkError, SinkTooLarge


class Scripted:
    """Fails with the scripted errors in turn, then accepts; records what it was given."""

    name = "kafka:dlq"

    def __init__(self, errors: list[SinkError]) -> None:
        self.errors = errors
        self.sent: list[CloudEvent] = []

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        self.sent.append(event)
        if self.errors:
            raise self.errors.pop(0)


EVENT = CloudEvent({"specversion": "1.0", "id": "e1", "source": "/s", "type": "t",
                    "datacontenttype": "text/plain"}, b"x" * 1000)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "RETRY_MAX_DELAY", 0.01)


def guarded(sink: Scripted, kinds: list[str], *, dead_letter: bool = True) -> GuardedSink:
    return GuardedSink(sink, trigger="ns/t", role="dead-letter", count_error=kinds.append,
                       omit_data_if_too_large=dead_letter)


async def test_too_large_dead_letter_goes_again_without_its_data() -> None:
    sink, kinds = Scripted([SinkTooLarge("too big")]), []
    await guarded(sink, kinds).send(EVENT)
    assert kinds == ["permanent"]
    last = sink.sent[-1]
    assert last.data is None and last.attributes["deadletterdataomitted"] == 1000
    assert {k: v for k, v in last.attributes.items() if k != "deadletterdataomitted"} == dict(EVENT.attributes)


async def test_too_large_reply_is_not_cut_it_stalls() -> None:
    sink, kinds = Scripted([SinkTooLarge("too big")] * 3), []
    g = guarded(sink, kinds, dead_letter=False)
    await asyncio.wait_for(g.send(EVENT), 5)
    assert kinds == ["permanent"] * 3 and all(e.data == EVENT.data for e in sink.sent)


async def test_permanent_then_transient_then_ok_degrades_then_recovers() -> None:
    sink, kinds = Scripted([SinkError("gone", permanent=True), SinkError("timeout")]), []
    g = guarded(sink, kinds)
    task = asyncio.create_task(g.send(EVENT))
    await asyncio.sleep(0)
    assert g.degraded is not None and "permanent" in g.degraded and "kafka:dlq" in g.degraded
    await asyncio.wait_for(task, 5)
    assert kinds == ["permanent", "transient"] and g.degraded is None and len(sink.sent) == 3
