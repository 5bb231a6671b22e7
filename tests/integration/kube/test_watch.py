"""The controller's watch connection cut, or silenced, between it and a real kube-apiserver: it relists and
converges (a trigger created meanwhile starts, one deleted meanwhile stops)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from connectors.kube import KubeClient
from eventbus.kube_controller import WATCH_TIMEOUT_ENV
from tests.integration.kube.support import ControllerProcess, create_trigger, delete_trigger, wait_status
from tests.integration.kube.test_controller import cron
from tests.integration.support import FunctionServer

pytestmark = pytest.mark.integration


class TcpProxy:
    """A loopback TCP proxy whose connections a test can cut (RST-free close) or freeze (bytes held back)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.frozen = asyncio.Event()
        self._conns: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                while self.frozen.is_set():
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._conns.difference_update((writer, up_writer))

    def cut(self) -> None:
        for w in list(self._conns):
            w.close()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


def server_of(kubeconfig: str) -> str:
    return str(yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"])


def write_proxied(kubeconfig: str, dest: Path, port: int) -> None:
    """A copy of `kubeconfig` that reaches the API server through the proxy (its certificate names 127.0.0.1)."""
    config = yaml.safe_load(Path(kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dest.write_text(yaml.safe_dump(config))


async def test_watch_cut_and_silent_watch_relist_and_converge(
    kube: KubeClient, namespace: str, fn: FunctionServer, kubeconfig: str, tmp_path: Path
) -> None:
    server = urlsplit(server_of(kubeconfig))
    proxy = await TcpProxy(server.hostname or "127.0.0.1", server.port or 443).start()
    proxied = tmp_path / "kubeconfig"
    write_proxied(kubeconfig, proxied, proxy.port)
    ctl = ControllerProcess(str(proxied), namespace, fn.url, tmp_path / "ctl.log",
                            env={WATCH_TIMEOUT_ENV: "3"}).start()
    try:
        await create_trigger(kube, namespace, cron("a", "a", schedule="0 0 1 1 *"))
        await wait_status(kube, namespace, "a", reason="Running", timeout=30)

        # cut: the controller sees the connection drop and relists
        proxy.cut()
        await create_trigger(kube, namespace, cron("b", "b", schedule="0 0 1 1 *"))
        await wait_status(kube, namespace, "b", reason="Running", timeout=10)

        # silent: the connection stays open and says nothing; after the watch timeout + 5 s the controller
        # gives up on it and relists. Meanwhile a trigger is deleted and one created.
        proxy.frozen.set()
        await delete_trigger(kube, namespace, "a")
        await create_trigger(kube, namespace, cron("c", "c", schedule="0 0 1 1 *"))
        await asyncio.sleep(9)
        proxy.frozen.clear()
        proxy.cut()  # the frozen sockets hold stale bytes: drop them as a broken network would
        await wait_status(kube, namespace, "c", reason="Running", timeout=15)
        log = ctl.log_text()
        assert log.count("watch dropped: relisting") >= 2, log[-3000:]
        await asyncio.sleep(1)
        assert "trigger deleted" in ctl.log_text(), ctl.log_text()[-3000:]
    finally:
        code = await ctl.aterminate()
        ctl.close()
        await proxy.stop()
    assert code == 0, ctl.log_text()[-3000:]
