"""NATS connections (nats-py): one shared, self-reconnecting client per server list."""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoServersError

from schemas.trigger import NatsSink, NatsSource, SecretRef, Tls

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


class NatsUnreachable(ConnectionError):
    """The first connection to NATS failed (the runtime retries the trigger; the message names the servers)."""


INITIAL_ATTEMPTS = 3


async def connect(servers: list[str], *, name: str = "eventbus", **options: Any) -> Client:
    """Connect with a few quick tries, then reconnect forever once connected (a broker restart loses nothing).

    nats-py applies `max_reconnect_attempts` to the first connection too; -1 there would hang startup on a
    wrong address with no error, so the first connection gets INITIAL_ATTEMPTS and a clear NatsUnreachable.
    """

    async def on_disconnect() -> None:
        log.warning("NATS disconnected", extra={"servers": servers})

    async def on_reconnect() -> None:
        log.info("NATS reconnected", extra={"servers": servers})

    last_error: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        last_error[:] = [exc]
        log.warning("NATS error", extra={"error": repr(exc)})

    try:
        nc = await nats.connect(
            servers=servers,
            name=name,
            max_reconnect_attempts=INITIAL_ATTEMPTS,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
            **options,
        )
    except (NoServersError, OSError, TimeoutError) as exc:
        cause = last_error[0] if last_error else exc
        raise NatsUnreachable(f"cannot reach NATS at {', '.join(servers)}: {cause}") from exc
    nc.options["max_reconnect_attempts"] = -1  # connected: from now on, reconnect forever
    return nc


def _nats_ssl_context(tls: Tls) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise NatsConfigError(f"tls: cannot load certificates: {exc}") from exc
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _secret(ref: SecretRef, field: str) -> str:
    value = os.environ.get(ref.env)
    if value is None:
        raise NatsConfigError(f"{field}.env: environment variable {ref.env} is not set")
    return value


def connect_options(source: NatsSource | NatsSink) -> dict[str, Any]:
    """nats-py `connect()` keyword arguments for a source's auth and TLS; secrets are read from the env here."""
    out: dict[str, Any] = {}
    if source.creds_file is not None:
        if not os.path.isfile(source.creds_file):
            raise NatsConfigError(f"credsFile: {source.creds_file} is not a readable file")
        out["user_credentials"] = source.creds_file
    if source.token_from is not None:
        out["token"] = _secret(source.token_from, "tokenFrom")
    if source.user is not None:
        out["user"] = source.user
        if source.password_from is not None:
            out["password"] = _secret(source.password_from, "passwordFrom")
    if source.tls is not None:
        out["tls"] = _nats_ssl_context(source.tls)
    return out
