"""kill -9 of the broker mid-stream, then a restart on the same data: nothing lost.

Private brokers (tests/chaos/brokers.py) on free ports: the shared servers of .services.env are never killed.
Kafka: one KRaft node; NATS: nats-server with JetStream file storage. Events are all in the broker before the
runtime starts; the broker dies while the runtime delivers them, and comes back 3 s later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.brokers import PrivateKafka, PrivateNats
from tests.chaos.ledger import Ledger, scaled
from tests.chaos.traffic import (
    DeadLetterWatch,
    KafkaSender,
    create_topics,
    js_send_ids,
    js_stream,
    kafka_trigger,
    nats_trigger,
    settle_all,
)
from tests.integration.support import FunctionServer, RuntimeProcess

DOWN_S = 3.0


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    broker = PrivateKafka(tmp_path / "kafka")
    try:
        yield broker
    finally:
        broker.kill9()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path / "nats")
    try:
        yield server
    finally:
        server.kill9()


async def _kill_and_restart(fn: FunctionServer, proc: RuntimeProcess, broker: PrivateKafka | PrivateNats,
                            at: int) -> int:
    """Kill the broker once `at` events were delivered; returns how many were delivered at the kill."""
    try:
        await fn.wait_for(lambda: len(fn.delivered_ids) >= at, timeout=90, what=f"{at} deliveries")
    except AssertionError:
        raise AssertionError(f"runtime log:\n{proc.log_text()[-3000:]}") from None
    broker.kill9()
    delivered = len(set(fn.delivered_ids))
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(broker.start)
    return delivered


async def test_kafka_broker_kill9_and_restart(private_kafka: PrivateKafka, fn: FunctionServer, unique_name: str,
                                              tmp_path: Path) -> None:
    n = scaled(20_000, 2_000)
    await asyncio.to_thread(private_kafka.start)
    bootstrap = private_kafka.bootstrap
    topic, dlq = unique_name, f"{unique_name}.dlq"
    await create_topics(bootstrap, [topic], partitions=4)
    await create_topics(bootstrap, [dlq])
    ledger = Ledger("kill -9 Kafka broker, restart")
    ledger.send(f"kb-{i}" for i in range(n))
    async with KafkaSender(bootstrap, topic) as sender:
        await sender.send_ids(ledger.sent)
    spec = tmp_path / "broker.yaml"
    spec.write_text(kafka_trigger("broker-kill", topic, dead_letter=dlq, concurrency=32))
    proc = RuntimeProcess(spec, fn.url, bootstrap, tmp_path / "rt.log").start()
    try:
        at_kill = await _kill_and_restart(fn, proc, private_kafka, n // 4)
        async with DeadLetterWatch(bootstrap, dlq) as watch:
            await settle_all(fn, ledger, watch, timeout=scaled(600, 120), quiet=2.0)
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            await proc.aterminate(60)
        proc.close()
    row = ledger.record(f"killed after {at_kill} delivered" + ("; FAIL: lost ids" if ledger.lost_ids() else ""))
    assert at_kill < n, "the broker should die mid-stream"
    assert row.lost == 0, ledger.describe() + f"\nruntime log:\n{proc.log_text()[-3000:]}"


async def test_nats_server_restart_with_file_storage(private_nats: PrivateNats, kafka_bootstrap: str,
                                                     fn: FunctionServer, unique_name: str, tmp_path: Path) -> None:
    n = scaled(20_000, 2_000)
    await asyncio.to_thread(private_nats.start)
    base = unique_name.replace("-", "_")
    stream, subject, dlq = f"S_{base}", f"{base}.ev", f"{unique_name}.dlq"
    await create_topics(kafka_bootstrap, [dlq])
    await js_stream(private_nats.url, stream, [f"{base}.>"])
    ledger = Ledger("kill -9 NATS server (JetStream file storage), restart")
    ledger.send(f"nb-{i}" for i in range(n))
    await js_send_ids(private_nats.url, subject, ledger.sent)
    spec = tmp_path / "nats.yaml"
    spec.write_text(nats_trigger("nats-restart", subject, stream=stream, dead_letter=dlq, concurrency=32,
                                 timeout="1s"))
    proc = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "rt.log", ["--nats", private_nats.url]).start()
    try:
        at_kill = await _kill_and_restart(fn, proc, private_nats, n // 4)
        async with DeadLetterWatch(kafka_bootstrap, dlq) as watch:
            await settle_all(fn, ledger, watch, timeout=scaled(600, 120), quiet=2.0)
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            await proc.aterminate(60)
        proc.close()
    row = ledger.record(f"killed after {at_kill} delivered" + ("; FAIL: lost ids" if ledger.lost_ids() else ""))
    assert at_kill < n, "the broker should die mid-stream"
    assert row.lost == 0, ledger.describe() + f"\nruntime log:\n{proc.log_text()[-3000:]}"
