"""NATS connections (nats-py): one shared, self-reconnecting client per server list."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any

from nats.aio.client import Client
from nats.errors import AuthorizationError, NoServersError
from nats.errors import Error as NatsError

from connectors.broker_errors import BrokerAuthError, BrokerTlsError, auth_failed_message, tls_failed_message
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


class NatsAuthError(BrokerAuthError, NatsUnreachable):
    """`authentication failed for NATS at <servers>: ...`: the server rejected the user/password, token or nkey."""


class NatsTlsError(BrokerTlsError, NatsUnreachable):
    """`TLS: certificate verify failed for <servers> (...)`, or the server refused our TLS handshake."""


INITIAL_ATTEMPTS = 3
_AUTH_REFUSALS = ("authorization violation", "authentication", "user authentication")


def _is_refusal(exc: BaseException) -> bool:
    """A TLS failure or an auth rejection: trying the same server again at once cannot help."""
    if isinstance(exc, ssl.SSLError) or isinstance(exc, AuthorizationError):
        return True
    return isinstance(exc, NatsError) and any(k in str(exc).lower() for k in _AUTH_REFUSALS)


def named_refusal(servers: list[str], cause: BaseException) -> NatsUnreachable:
    """The error a failed first connection raises: auth and TLS refusals get their own type and sentence."""
    address = ", ".join(servers)
    if isinstance(cause, ssl.SSLError):
        return NatsTlsError(tls_failed_message(address, cause))
    if _is_refusal(cause):
        detail = str(cause).removeprefix("nats: ").strip("'") or "authorization violation"
        return NatsAuthError(auth_failed_message("NATS", address, detail))
    return NatsUnreachable(f"cannot reach NATS at {address}: {cause}")


CANCEL_TIMEOUT = 2.0


class StrictHeadersClient(Client):
    """nats-py 2.16 decodes header values with errors="replace": invalid UTF-8 arrives as U+FFFD and would pass
    as a valid CloudEvent. Keep the bytes (surrogateescape) so the binding rejects them as it does on Kafka."""

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not line or not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue  # as nats-py: a non-ASCII name is skipped
            if any(c.isspace() for c in key):
                continue
            out[key] = value.strip().decode("utf-8", "surrogateescape")
        return out


async def connect(servers: list[str], *, name: str = "eventbus", **options: Any) -> Client:
    """Connect with a few quick tries, then reconnect forever once connected (a broker restart loses nothing).

    nats-py applies `max_reconnect_attempts` to the first connection too; -1 there would hang startup on a
    wrong address with no error, so the first connection gets INITIAL_ATTEMPTS and a clear NatsUnreachable.
    A TLS failure or an auth rejection ends the first connection at once with NatsTlsError / NatsAuthError:
    retrying cannot help, and after a failed TLS handshake nats-py hangs in its own cleanup (nats.py#718).
    """

    async def on_disconnect() -> None:
        log.warning("NATS disconnected", extra={"servers": servers})

    async def on_reconnect() -> None:
        log.info("NATS reconnected", extra={"servers": servers})

    last_error: list[Exception] = []
    refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        last_error[:] = [exc]
        if not refused.done() and _is_refusal(exc):
            refused.set_result(exc)
            return  # said once, by the error raised below
        log.warning("NATS error", extra={"error": repr(exc)})

    settings: dict[str, Any] = dict(
        servers=servers,
        name=name,
        max_reconnect_attempts=INITIAL_ATTEMPTS,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )
    nc = StrictHeadersClient()
    connecting: asyncio.Future[None] = asyncio.ensure_future(nc.connect(**settings, **options))
    either: set[asyncio.Future[Any]] = {connecting, refused}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not connecting.done():
            connecting.cancel()
            await asyncio.wait({connecting}, timeout=CANCEL_TIMEOUT)
    if refused.done():
        if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
            await nc.close()  # connected after all (another server of the list): not a connection we keep
        raise named_refusal(servers, refused.result())
    refused.cancel()
    try:
        connecting.result()
    except (NoServersError, OSError, TimeoutError, NatsError) as exc:
        cause = last_error[0] if last_error else exc
        raise named_refusal(servers, cause) from exc
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
    if source.nkey_seed_file is not None:
        if not os.path.isfile(source.nkey_seed_file):
            raise NatsConfigError(f"nkeySeedFile: {source.nkey_seed_file} is not a readable file")
        out["nkeys_seed"] = source.nkey_seed_file
    if source.token_from is not None:
        out["token"] = _secret(source.token_from, "tokenFrom")
    if source.user is not None:
        out["user"] = source.user
        if source.password_from is not None:
            out["password"] = _secret(source.password_from, "passwordFrom")
    if source.tls is not None:
        out["tls"] = _nats_ssl_context(source.tls)
    return out
