"""The fixtures reach a real Kafka and a real NATS with JetStream; scripts/services starts them cleanly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import nats
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from nats.js.api import ConsumerConfig

from tests.conftest import KafkaAdmin


async def test_kafka_produce_and_consume(kafka_bootstrap: str, kafka_admin: KafkaAdmin, unique_name: str) -> None:
    topic = await kafka_admin.create_topic(unique_name, partitions=3)
    described = await kafka_admin.client.describe_topics([topic])
    assert len(described[0]["partitions"]) == 3

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello", key=b"k1", partition=2, headers=[("ce-id", b"1")])
    finally:
        await producer.stop()
    assert (meta.partition, meta.offset) == (2, 0)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{unique_name}-g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.subscribe([topic])
        batch = await consumer.getmany(timeout_ms=15000, max_records=10)
        while not batch:  # the first getmany may return before the group is joined
            batch = await consumer.getmany(timeout_ms=15000, max_records=10)
        records = [r for rs in batch.values() for r in rs]
        assert [(r.partition, r.offset, r.key, r.value) for r in records] == [(2, 0, b"k1", b"hello")]
        assert records[0].headers == (("ce-id", b"1"),)
        tp = TopicPartition(topic, 2)
        await consumer.commit({tp: 1})
        assert await consumer.committed(tp) == 1
    finally:
        await consumer.stop()


def test_nats_monitor_reports_jetstream(nats_monitor_url: str) -> None:
    with urllib.request.urlopen(f"{nats_monitor_url}/healthz?js-enabled-only=true", timeout=5) as resp:
        assert json.load(resp)["status"] == "ok"
    with urllib.request.urlopen(f"{nats_monitor_url}/jsz", timeout=5) as resp:
        assert "config" in json.load(resp)


async def test_nats_jetstream_pull(nats_url: str, unique_name: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        stream = unique_name.upper().replace("-", "_")
        await js.add_stream(name=stream, subjects=[f"{unique_name}.>"])
        ack = await js.publish(f"{unique_name}.a", b"hello", headers={"ce-id": "1", "Nats-Msg-Id": "1"})
        assert (ack.stream, ack.seq) == (stream, 1)

        sub = await js.pull_subscribe(
            f"{unique_name}.a", durable="w1", stream=stream, config=ConsumerConfig(ack_wait=30)
        )
        msgs = await sub.fetch(1, timeout=5)
        assert [(m.subject, m.data, (m.headers or {}).get("ce-id")) for m in msgs] == [
            (f"{unique_name}.a", b"hello", "1")
        ]
        await msgs[0].ack_sync()
        info = await sub.consumer_info()
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
        await js.delete_stream(stream)
    finally:
        await nc.close()


def test_spawned_servers_inherit_only_stdio(tmp_path: Path) -> None:
    """scripts/services starts servers through its SPAWN_CHILD snippet: run that very snippet with an extra
    descriptor open (as a test runner's pipe or the services lock would be) and look at what the exec'd
    program holds."""
    script = (Path(__file__).resolve().parents[2] / "scripts" / "services").read_text()
    match = re.search(r"^SPAWN_CHILD='(.*?)'$", script, re.S | re.M)
    assert match, "SPAWN_CHILD not found in scripts/services"
    pidfile = tmp_path / "pid"
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(["bash", "-c", match.group(1), str(pidfile), "sleep", "30"],
                                 stdin=subprocess.DEVNULL, pass_fds=(read_end, write_end))
    finally:
        os.close(read_end)
        os.close(write_end)
    try:
        deadline = time.monotonic() + 10
        while not (pidfile.is_file() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        pid = int(pidfile.read_text())
        assert pid == child.pid  # the snippet execs: the pid it writes is the server's
        while "sleep" not in Path(f"/proc/{pid}/cmdline").read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
    finally:
        child.kill()
        child.wait(10)
