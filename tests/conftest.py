"""Shared test fixtures: where the real servers are, fresh names, and a Kafka topic helper.

Servers are found, in this order:
1. environment variables EVENTBUS_KAFKA_BOOTSTRAP / EVENTBUS_NATS_URL / EVENTBUS_NATS_MONITOR
   (scripts/test sources .services.env, so this is the usual path);
2. the `.services.env` file that `scripts/services up` writes at the repository root;
3. containers started through testcontainers, when a Docker engine answers;
4. otherwise the test fails (never skips) and says to run `scripts/services up`.

Tests under tests/integration/ get the `integration` marker automatically.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES_ENV = ROOT / ".services.env"
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"

KAFKA_VAR = "EVENTBUS_KAFKA_BOOTSTRAP"
NATS_VAR = "EVENTBUS_NATS_URL"
NATS_MONITOR_VAR = "EVENTBUS_NATS_MONITOR"

# testcontainers' KafkaContainer drives the Confluent image scripts; cp-kafka 8.1 ships Apache Kafka 4.1.
KAFKA_IMAGE = os.environ.get("EVENTBUS_KAFKA_IMAGE", "confluentinc/cp-kafka:8.1.0")
NATS_IMAGE = os.environ.get("EVENTBUS_NATS_IMAGE", "nats:2")

HOW_TO_START = (
    "no {what} to test against: set {var}, or run `scripts/services up` (it writes .services.env), "
    "or make a Docker engine available for testcontainers. `scripts/test` does the first for you."
)


# --------------------------------------------------------------------------------------------- markers
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real servers started by scripts/services up")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------------------------- discovery
def _read_services_env(path: Path = SERVICES_ENV) -> dict[str, str]:
    """Parse the `export KEY=VALUE` lines of .services.env (no shell evaluation)."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep:
            continue
        parts = shlex.split(value) if value else [""]
        values[key.strip()] = parts[0] if parts else ""
    return values


def _configured(var: str) -> tuple[str, str] | None:
    """The value of `var` and where it came from, or None."""
    value = os.environ.get(var)
    if value:
        return value, f"${var}"
    value = _read_services_env().get(var)
    if value:
        return value, str(SERVICES_ENV)
    return None


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    if "://" in address:
        parts = urlsplit(address)
        return parts.hostname or "127.0.0.1", parts.port or default_port
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port) if port else default_port


def _require_reachable(what: str, address: str, origin: str, default_port: int) -> None:
    host, port = _host_port(address.split(",")[0], default_port)
    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as exc:
        pytest.fail(
            f"{what} at {address} (from {origin}) does not answer: {exc}. "
            "Is it running? `scripts/services status` / `scripts/services up`.",
            pytrace=False,
        )


def _docker_available() -> bool:
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker  # type: ignore[import-untyped]  # comes with testcontainers

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def _containers() -> Iterator[ExitStack]:
    """Holds the containers started for this session (if any) and stops them at the end."""
    with ExitStack() as stack:
        yield stack


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def kafka_bootstrap(_containers: ExitStack) -> str:
    """`host:port` of a real Kafka 4.x broker."""
    found = _configured(KAFKA_VAR)
    if found:
        address, origin = found
        _require_reachable("Kafka", address, origin, 9092)
        return address
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        container = _containers.enter_context(KafkaContainer(KAFKA_IMAGE).with_kraft())
        return str(container.get_bootstrap_server())
    pytest.fail(HOW_TO_START.format(what="Kafka", var=KAFKA_VAR), pytrace=False)


@pytest.fixture(scope="session")
def _nats_endpoints(_containers: ExitStack) -> tuple[str, str | None]:
    found = _configured(NATS_VAR)
    if found:
        url, origin = found
        _require_reachable("NATS", url, origin, 4222)
        monitor = _configured(NATS_MONITOR_VAR)
        return url, monitor[0] if monitor else None
    if _docker_available():
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        container = DockerContainer(NATS_IMAGE).with_command("-js -m 8222").with_exposed_ports(4222, 8222)
        _containers.enter_context(container)
        wait_for_logs(container, "Server is ready", timeout=60)
        host = container.get_container_host_ip()
        return (
            f"nats://{host}:{container.get_exposed_port(4222)}",
            f"http://{host}:{container.get_exposed_port(8222)}",
        )
    pytest.fail(HOW_TO_START.format(what="NATS", var=NATS_VAR), pytrace=False)


@pytest.fixture(scope="session")
def nats_url(_nats_endpoints: tuple[str, str | None]) -> str:
    """`nats://host:port` of a real NATS server with JetStream enabled."""
    return _nats_endpoints[0]


@pytest.fixture(scope="session")
def nats_monitor_url(_nats_endpoints: tuple[str, str | None]) -> str:
    """`http://host:port` of that NATS server's monitoring endpoint (/healthz, /varz, /jsz)."""
    monitor = _nats_endpoints[1]
    if not monitor:
        pytest.fail(
            f"{NATS_VAR} is set but {NATS_MONITOR_VAR} is not: set both, or use `scripts/services up`.",
            pytrace=False,
        )
    return monitor


@pytest.fixture
def unique_name() -> str:
    """A fresh name, valid as a Kafka topic, NATS subject token, stream or consumer group: `t-<hex8>`."""
    return f"t-{uuid.uuid4().hex[:8]}"


class KafkaAdmin:
    """Creates topics on the test broker (names are unique per test and data is scratch, so cleanup deletes
    nothing); `delete_topic` is for a test about a topic going away."""

    def __init__(self, client: Any) -> None:
        self.client = client  # aiokafka.admin.AIOKafkaAdminClient, for anything else a test needs

    async def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, str] | None = None, wait_s: float = 30.0
    ) -> str:
        """Create `name` with `partitions` partitions and wait until every partition has a leader."""
        from aiokafka.admin import NewTopic
        from aiokafka.errors import for_code

        response = await self.client.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=config or {})], timeout_ms=int(wait_s * 1000)
        )
        for entry in response.topic_errors:
            code = entry[1]
            if code:
                message = entry[2] if len(entry) > 2 else ""
                raise for_code(code)(f"create topic {entry[0]!r}: {message}")
        await self.wait_for_topic(name, partitions, wait_s)
        return name

    async def wait_for_topic(self, name: str, partitions: int, wait_s: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            topics = await self.client.describe_topics([name])
            ready = [
                t
                for t in topics
                if t["topic"] == name
                and t["error_code"] == 0
                and len(t["partitions"]) == partitions
                and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
            ]
            if ready:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"topic {name!r} not ready with {partitions} partitions: {topics}")
            await asyncio.sleep(0.1)

    async def delete_topic(self, name: str, wait_s: float = 30.0) -> None:
        """Delete `name` and wait until the broker's metadata no longer has it: deletion reaches the broker
        after the controller answers, and a write in between still lands (in the topic being deleted)."""
        from aiokafka.errors import UnknownTopicOrPartitionError

        await self.client.delete_topics([name])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            topics = await self.client.describe_topics([name])
            if all(t["error_code"] == UnknownTopicOrPartitionError.errno for t in topics if t["topic"] == name):
                return
            if loop.time() > deadline:
                raise TimeoutError(f"topic {name!r} still described after deletion: {topics}")
            await asyncio.sleep(0.1)

    async def create_topics(self, names: list[str], partitions: int = 1) -> list[str]:
        return [await self.create_topic(n, partitions) for n in names]


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str) -> AsyncIterator[KafkaAdmin]:
    """`await kafka_admin.create_topic(name, partitions=N)`; `.client` is the AIOKafkaAdminClient."""
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=30000)
    await client.start()
    try:
        yield KafkaAdmin(client)
    finally:
        await client.close()
