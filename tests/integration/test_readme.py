"""The README's command blocks, run as a user runs them, so the README cannot drift from what works.

Blocks are marked with `<!-- test: NAME -->` just above a ```bash fence. They run with bash in the
repository folder, in a clean environment (no EVENTBUS_* variables: the README sets what it needs).
What the test changes, and why:
- the ports 8080, 9000 and 9100 become free ports (other tests share this machine);
- `scripts/up` also gets `--http-port` and `--data-dir` (a fresh embedded bus in a temporary folder);
- `source .services.env` reads a file naming the servers the test session uses, and the
  `kafka-services` block (`scripts/services up`, which writes that file) is not run: they are up already;
- the Kafka `publish` gets an `--id`, so the test knows its event among earlier runs' events.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.embedded_nats import pick_port
from tests.integration.support import REPO

pytestmark = pytest.mark.integration

README = REPO / "README.md"
_BLOCK = re.compile(r"<!-- test: ([a-z-]+) -->\n```bash\n(.*?)```", re.S)


def blocks(name: str) -> list[str]:
    found = [body for tag, body in _BLOCK.findall(README.read_text(encoding="utf-8")) if tag == name]
    assert found, f"README has no block marked <!-- test: {name} -->"
    return found


class Shell:
    """Runs README blocks with the substitutions of the module doc."""

    def __init__(self, tmp: Path, services: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.ports = {"8080": pick_port(preferred=18180), "9000": pick_port(preferred=19000),
                      "9100": pick_port(preferred=19100)}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.services_env = tmp / "services.env"
        self.services_env.write_text("".join(f"export {k}={v}\n" for k, v in (services or {}).items()))
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def text(self, block: str) -> str:
        for port, free in self.ports.items():
            block = re.sub(rf"\b{port}\b", str(free), block)
        block = block.replace("source .services.env", f"source {self.services_env}")
        return re.sub(r"^scripts/up$", f"scripts/up --http-port {self.ports['8080']} --data-dir {self.tmp}/.eventbus",
                      block, flags=re.M)

    def run(self, block: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", self.text(block)], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"README block failed:\n{block}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def start(self, block: str, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            lines = self.text(block).strip().splitlines()
            lines[-1] = "exec " + lines[-1]  # the server gets Ctrl-C itself, as in a terminal
            proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", "\n".join(lines)], cwd=REPO, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((proc, log))
        return proc, log

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def wait_for(log: Path, proc: subprocess.Popen[bytes], *needles: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if all(n in text for n in needles):
            return text
        assert proc.poll() is None, f"exited {proc.returncode}:\n{text}"
        time.sleep(0.2)
    raise AssertionError(f"waited for {needles} in {log.name}:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """Ctrl-C, as the README says."""
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout)


@pytest.fixture
def shell(tmp_path: Path, kafka_bootstrap: str, nats_url: str) -> Iterator[Shell]:
    sh = Shell(tmp_path, {"EVENTBUS_KAFKA_BOOTSTRAP": kafka_bootstrap, "EVENTBUS_NATS_URL": nats_url})
    try:
        yield sh
    finally:
        sh.close()


def test_quick_start_and_publishing(shell: Shell) -> None:
    [up_block] = blocks("quickstart-up")
    up, log = shell.start(up_block, "up")
    banner = wait_for(log, up, "eventbus is up", "Ctrl-C stops", timeout=120).splitlines()
    suggested = banner[banner.index("Publish to a topic:") + 1].strip()  # the banner's own example works as shown
    assert "/cli" in suggested and "--http http://localhost:" in suggested
    shell.run(suggested + "\n")
    for block in blocks("quickstart"):
        shell.run(block)
    wait_for(log, up, "hello: got com.example.webhook", "hello: got com.example.hello", "source=/cli")
    for block in blocks("publishing"):
        shell.run(block)
    text = wait_for(log, up, 'source=/cli data={"hello":"cli"}', "source=/file", "source=/curl",
                    "source=/python")
    assert "Traceback" not in text
    assert stop(up) == 0
    assert "eventbus up stopped" in log.read_text()


def test_kafka_section(shell: Shell) -> None:
    assert "scripts/services up" in blocks("kafka-services")[0]  # the servers it starts are the session's
    setup, publish = blocks("kafka")
    shell.run(setup)
    [fn_block] = blocks("kafka-function")
    fn, fn_log = shell.start(fn_block, "function")
    [run_block] = blocks("kafka-run")
    runtime, run_log = shell.start(run_block, "run")
    wait_for(run_log, runtime, "trigger started")
    event_id = f"readme-{uuid.uuid4().hex[:12]}"
    done = shell.run(publish.rstrip() + f" --id {event_id}\n")
    assert event_id in done.stdout
    text = wait_for(fn_log, fn, event_id)
    line = next(ln for ln in text.splitlines() if event_id in ln)
    assert line.startswith("/shop/hello: ") and "'source': '/shop'" in line and 'data={"total":42}' in line
    assert stop(runtime) == 0
    out = run_log.read_text()
    assert "Traceback" not in out
    # quiet when healthy: a fresh group's coordinator lookup and metadata retries are not errors
    assert [ln for ln in out.splitlines() if " ERROR " in ln or " WARNING " in ln] == [], out
