"""The Kubernetes API, as eventbus uses it: Triggers (list, watch, status), Secrets, Leases, Events.

The `kubernetes` client is synchronous; every call runs on a small private thread pool so the event loop
never blocks, and a watch reads its stream on a thread of its own, handing events to the loop through a
queue. Objects travel as plain dicts (the JSON the API server sends): the Trigger models validate them,
and nothing here depends on the client's generated classes.

Configuration: `--kubeconfig` / `$KUBECONFIG` when given, else the in-cluster service account.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

log = logging.getLogger("eventbus.kube")

T = TypeVar("T")

GROUP = "eventbus.dev"
VERSION = "v1alpha1"
PLURAL = "triggers"
MERGE_PATCH = "application/merge-patch+json"


class KubeConfigError(RuntimeError):
    """No usable cluster configuration (kubeconfig unreadable, not in a cluster)."""


class KubeApiError(RuntimeError):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404


class WatchGone(KubeApiError):
    """The watch's resourceVersion is too old (410 Gone): relist."""


def _api_error(exc: ApiException) -> KubeApiError:
    message = ""
    reason = str(exc.reason or "")
    body = exc.body
    if body:
        try:
            status = json.loads(body)
            message = str(status.get("message", ""))
            reason = str(status.get("reason", reason))
        except (ValueError, AttributeError):
            message = str(body)[:500]
    return KubeApiError(int(exc.status or 0), reason, message)


def load_configuration(kubeconfig: str | None = None) -> kclient.Configuration:
    """`kubeconfig` (or `$KUBECONFIG`) if set, else the in-cluster service account."""
    cfg = kclient.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if path:
            kconfig.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            kconfig.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        where = f"kubeconfig {path}" if path else "in-cluster config (no --kubeconfig / KUBECONFIG given)"
        raise KubeConfigError(f"cannot load {where}: {exc}") from None
    cfg.connection_pool_maxsize = 64
    cfg.retries = 0  # we retry ourselves, with backoff, and never block a thread for long
    return cfg


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


class KubeClient:
    """Async methods over the synchronous `kubernetes` client (see the module doc)."""

    def __init__(self, configuration: kclient.Configuration, *, threads: int = 48) -> None:
        self.api = kclient.ApiClient(configuration)
        self.custom = kclient.CustomObjectsApi(self.api)
        self.core = kclient.CoreV1Api(self.api)
        self.coordination = kclient.CoordinationV1Api(self.api)
        self.events = kclient.EventsV1Api(self.api)
        self.api_extensions = kclient.ApiextensionsV1Api(self.api)
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="eventbus-kube")
        self.timeout = 10.0

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None) -> KubeClient:
        return cls(load_configuration(kubeconfig))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()  # type: ignore[no-untyped-call]

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call on the pool; JSON body as dicts; errors as KubeApiError."""

        def call() -> Any:
            try:
                resp = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            except ApiException as exc:
                raise _api_error(exc) from None
            except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, timed out
                raise KubeApiError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from None
            try:
                data = resp.data
            finally:
                resp.release_conn()
            return json.loads(data) if data else {}

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    # --- Triggers -------------------------------------------------------------------------------

    async def list_triggers(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every Trigger in `namespace` (None: all namespaces) and the list's resourceVersion."""
        if namespace is None:
            body = await self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            body = await self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
        items: list[dict[str, Any]] = list(body.get("items") or [])
        return items, str(body.get("metadata", {}).get("resourceVersion", ""))

    async def watch_triggers(self, namespace: str | None, resource_version: str,
                             timeout_seconds: int = 60) -> AsyncIterator[WatchEvent]:
        """Trigger events after `resource_version`, until the server ends the watch (after
        `timeout_seconds`), the connection drops, or nothing arrives for `timeout_seconds + 5` s (a silent
        watch: the read times out). Raises WatchGone on 410 and KubeApiError on other errors."""
        kwargs: dict[str, Any] = {"watch": True, "resource_version": resource_version,
                                  "allow_watch_bookmarks": True, "timeout_seconds": timeout_seconds}
        if namespace is None:
            fn: Callable[..., Any] = self.custom.list_cluster_custom_object
            args: tuple[Any, ...] = (GROUP, VERSION, PLURAL)
        else:
            fn = self.custom.list_namespaced_custom_object
            args = (GROUP, VERSION, namespace, PLURAL)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[WatchEvent | BaseException | None] = asyncio.Queue()
        holder: dict[str, Any] = {}
        stopped = threading.Event()

        def put(item: WatchEvent | BaseException | None) -> None:
            if not stopped.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def reader() -> None:
            try:
                try:
                    resp = fn(*args, _preload_content=False, _request_timeout=(5, timeout_seconds + 5), **kwargs)
                except ApiException as exc:
                    err = _api_error(exc)
                    put(WatchGone(err.status, err.reason, err.message) if err.gone else err)
                    return
                holder["resp"] = resp
                if stopped.is_set():
                    return
                for line in _lines(resp):
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        status = int(obj.get("code", 0))
                        cls = WatchGone if status == 410 else KubeApiError
                        put(cls(status, str(obj.get("reason", "")), str(obj.get("message", ""))))
                        return
                    put(WatchEvent(str(event.get("type")), obj))
                put(None)
            except Exception as exc:  # dropped connection, read timeout (silent watch), bad JSON
                put(KubeApiError(0, "WatchDropped", f"{type(exc).__name__}: {exc}"))
            finally:
                resp = holder.get("resp")
                if resp is not None:
                    resp.release_conn()

        thread = threading.Thread(target=reader, name="eventbus-kube-watch", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stopped.set()
            resp = holder.get("resp")
            if resp is not None:
                try:  # unblocks the reader thread's read
                    await asyncio.to_thread(resp.shutdown if hasattr(resp, "shutdown") else resp.close)
                except Exception:
                    pass

    async def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of the status subresource."""
        result: dict[str, Any] = await self._call(
            self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, PLURAL, name,
            {"status": status}, _content_type=MERGE_PATCH)
        return result

    # --- Secrets, Events ---------------------------------------------------------------------------

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret (as JSON, `data` values base64), or None if it does not exist."""
        try:
            secret: dict[str, Any] = await self._call(self.core.read_namespaced_secret, name, namespace)
            return secret
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    async def create_event(self, regarding: dict[str, Any], *, type_: str, reason: str, note: str,
                           action: str, controller: str, instance: str) -> None:
        """An `events.k8s.io/v1` Event about `regarding` (a Trigger object)."""
        meta = regarding.get("metadata", {})
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": f"{str(meta.get('name', 'trigger'))[:230]}.{uuid.uuid4().hex[:16]}",
                         "namespace": meta.get("namespace")},
            "eventTime": _micro_time(),
            "reportingController": controller,
            "reportingInstance": instance[:128],
            "action": action,
            "reason": reason,
            "note": note[:1024],
            "type": type_,
            "regarding": {"apiVersion": regarding.get("apiVersion"), "kind": regarding.get("kind"),
                          "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                          "resourceVersion": meta.get("resourceVersion")},
        }
        await self._call(self.events.create_namespaced_event, meta.get("namespace"), body)

    # --- Leases ------------------------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = await self._call(self.coordination.read_namespaced_lease, name, namespace)
            return lease
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The created Lease, or None if one of that name exists (409)."""
        try:
            lease: dict[str, Any] = await self._call(self.coordination.create_namespaced_lease, namespace, body)
            return lease
        except KubeApiError as exc:
            if exc.conflict:
                return None
            raise

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The replaced Lease, or None if `body`'s resourceVersion is stale (409) or it is gone (404)."""
        try:
            lease: dict[str, Any] = await self._call(self.coordination.replace_namespaced_lease, name, namespace,
                                                     body)
            return lease
        except KubeApiError as exc:
            if exc.conflict or exc.not_found:
                return None
            raise


def _lines(resp: Any) -> Iterator[str]:
    """The lines of a streamed watch response (JSON objects separated by newlines)."""
    buffer = bytearray()
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer.extend(chunk)
        while True:
            i = buffer.find(b"\n")
            if i < 0:
                break
            line = bytes(buffer[:i]).decode("utf-8", errors="replace")
            del buffer[: i + 1]
            yield line
    if buffer.strip():
        yield bytes(buffer).decode("utf-8", errors="replace")
