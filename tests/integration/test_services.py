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


_PID_MATCHES = Path(__file__).resolve().parents[2] / "scripts" / "pid_matches.sh"


def _pid_matches(pidfile: Path, pattern: str) -> int:
    """The exit status of scripts/pid_matches.sh's `pid_matches PIDFILE PATTERN`, as the scripts call it."""
    return subprocess.run(["bash", "-c", f'. "{_PID_MATCHES}"; pid_matches "$0" "$1"', str(pidfile), pattern],
                          timeout=30).returncode


def test_pid_matches_tells_our_server_from_a_recycled_or_dead_pid(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    assert _pid_matches(pidfile, "sleep") == 1  # no pid file
    pidfile.write_text("12ab\n")
    assert _pid_matches(pidfile, "sleep") == 1  # not a pid
    live = subprocess.Popen(["sleep", "30"])
    zombie = subprocess.Popen(["sleep", "0"])  # exits and stays a zombie: not waited for yet
    try:
        pidfile.write_text(f"{live.pid}\n")
        assert _pid_matches(pidfile, "sleep 30") == 0
        assert _pid_matches(pidfile, "kafka.Kafka") == 1  # a live pid that is someone else's
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "sleep 0 did not exit"
            time.sleep(0.02)
        pidfile.write_text(f"{zombie.pid}\n")
        assert _pid_matches(pidfile, "sleep") == 1  # exited: kill -0 still answers, its command line is empty
    finally:
        live.kill()
        live.wait(10)
        zombie.wait(10)


def test_pid_matches_right_after_spawn(tmp_path: Path) -> None:
    """scripts/kube checks a server the moment its pid file is written, which can be while the process execs
    (the kernel shows an empty command line then; two fresh-clone runs here stopped a starting kube-apiserver
    on that first check). Spawn as scripts/kube does and check at once, 20 times: each must match."""
    for i in range(20):
        pidfile = tmp_path / f"pid{i}"
        child = subprocess.Popen(["setsid", "bash", "-c", 'echo $$ >"$0"; exec "$@"', str(pidfile), "python3", "-c",
                                  "import time; time.sleep(30)", f"--marker-{i}"], stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not (pidfile.is_file() and pidfile.read_text().strip()):
                assert time.monotonic() < deadline, "the pid file was not written"
                time.sleep(0.001)
            assert _pid_matches(pidfile, f"--marker-{i}") == 0
        finally:
            child.kill()
            child.wait(10)
