"""NATS connections (nats-py): one shared, self-reconnecting client per server list."""

from __future__ import annotations

import logging
import os
from typing import Any

import nats
from nats.aio.client import Client

log = logging.getLogger("eventbus.nats")

NATS_URL_ENV = "EVENTBUS_NATS_URL"


class NatsConfigError(ValueError):
    """No NATS servers configured, or an auth setting that cannot work."""


def resolve_servers(servers: list[str], default: str | None) -> list[str]:
    """The spec's servers, else the runtime default (`--nats`, the embedded server, or EVENTBUS_NATS_URL)."""
    if servers:
        return servers
    fallback = default or os.environ.get(NATS_URL_ENV)
    if not fallback:
        raise NatsConfigError(f"no NATS servers: set servers in the trigger, pass --nats, or set {NATS_URL_ENV}")
    return [s.strip() for s in fallback.split(",") if s.strip()]


async def connect(servers: list[str], *, name: str = "eventbus", **options: Any) -> Client:
    """Connect, retrying the first connection and reconnecting forever afterwards (a restart loses nothing)."""

    async def on_disconnect() -> None:
        log.warning("NATS disconnected", extra={"servers": servers})

    async def on_reconnect() -> None:
        log.info("NATS reconnected", extra={"servers": servers})

    async def on_error(exc: Exception) -> None:
        log.warning("NATS error", extra={"error": repr(exc)})

    return await nats.connect(
        servers=servers,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        **options,
    )
