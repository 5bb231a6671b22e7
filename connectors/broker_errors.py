"""Typed errors for a broker that refuses us: rejected credentials, or a TLS certificate that does not verify.

Both name the broker and the address, so the log says which trigger cannot connect and why; both are
ConnectionErrors, so the runtime retries the trigger with backoff instead of giving up on it.
"""

from __future__ import annotations

import ssl


class BrokerAuthError(ConnectionError):
    """The broker rejected our credentials (SASL, NATS user/password, nkey, token): `authentication failed for ...`."""


class BrokerTlsError(ConnectionError):
    """The TLS handshake failed: `TLS: certificate verify failed for <address> (...)` (untrusted CA, expired, wrong
    host name) or `TLS: handshake failed for <address>: ...` (the server refused our certificate, no common cipher)."""


def auth_failed_message(broker: str, address: str, detail: str) -> str:
    return f"authentication failed for {broker} at {address}: {detail}"


def tls_failed_message(address: str, exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed for {address} ({exc.verify_message or exc.reason})"
    return f"TLS: handshake failed for {address}: {exc.reason or exc}"
