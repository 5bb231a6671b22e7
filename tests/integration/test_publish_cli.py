"""`eventbus publish` to a real Kafka: the record on the wire, and the error for a missing topic."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.integration.support import REPO, create_topic, read_all

pytestmark = pytest.mark.integration


def _publish(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventbus", "publish", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


async def test_publish_writes_a_binary_cloudevent_with_the_key(kafka_bootstrap: str, unique_name: str) -> None:
    await create_topic(kafka_bootstrap, unique_name)
    done = await asyncio.to_thread(_publish, "--kafka", kafka_bootstrap, "--topic", unique_name, "--type",
                                   "com.example.order.created", "--source", "/shop", "--id", "o-1", "--key",
                                   "cust-7", "--data", '{"total": 42}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"published": "o-1", "topic": unique_name, "stored": True}
    [rec] = await read_all(kafka_bootstrap, unique_name, 1)
    headers = {k: v.decode() for k, v in rec.headers}
    assert rec.key == b"cust-7"
    assert (headers["ce_id"], headers["ce_type"], headers["ce_source"]) == ("o-1", "com.example.order.created",
                                                                             "/shop")
    assert headers["ce_specversion"] == "1.0" and headers["content-type"] == "application/json"
    assert "ce_partitionkey" not in headers  # a configured key adds no attribute (Kafka binding)
    assert json.loads(rec.value) == {"total": 42}


async def test_publish_to_a_missing_topic_names_it(kafka_bootstrap: str, unique_name: str) -> None:
    done = await asyncio.to_thread(_publish, "--kafka", kafka_bootstrap, "--topic", unique_name, "--type", "t",
                                   "--source", "/s")
    assert done.returncode == 1
    assert f"topic '{unique_name}' does not exist" in done.stderr
    assert kafka_bootstrap in done.stderr
