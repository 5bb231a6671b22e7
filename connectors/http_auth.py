"""Webhook authentication for HTTP triggers: a bearer token, or a GitHub-style HMAC signature of the body.

Secrets are read from the environment once, when the trigger starts, so a missing variable is a start-up
error rather than a stream of 401s. Comparisons use `hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.headers import find_header
from schemas.trigger import HttpAuth


class AuthConfigError(ValueError):
    """The auth spec names a secret whose environment variable is not set (or is empty)."""


class Unauthorized(Exception):
    """The request fails the trigger's auth; `challenge` is the WWW-Authenticate value to send, if any."""

    def __init__(self, reason: str, challenge: str | None = None) -> None:
        super().__init__(reason)
        self.challenge = challenge


def _secret(env: str, what: str) -> bytes:
    value = os.environ.get(env)
    if not value:
        raise AuthConfigError(f"{what}: environment variable {env} is not set")
    return value.encode()


@dataclass(frozen=True)
class Authenticator:
    """Checks requests against one trigger's `auth`; all configured methods must pass."""

    bearer: bytes | None = None
    hmac_header: str | None = None
    hmac_secret: bytes | None = None
    hmac_algorithm: str = "sha256"

    @classmethod
    def from_spec(cls, spec: HttpAuth | None) -> Authenticator:
        if spec is None:
            return cls()
        bearer = hmac_secret = None
        header = None
        algorithm = "sha256"
        if spec.bearer_token_from is not None:
            bearer = _secret(spec.bearer_token_from.env, "auth.bearerTokenFrom")
        if spec.hmac is not None:
            hmac_secret = _secret(spec.hmac.secret_from.env, "auth.hmac.secretFrom")
            header = spec.hmac.header.lower()
            algorithm = spec.hmac.algorithm
        return cls(bearer, header, hmac_secret, algorithm)

    @property
    def enabled(self) -> bool:
        return self.bearer is not None or self.hmac_secret is not None

    def check(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise Unauthorized unless the request passes every configured check."""
        if self.bearer is not None:
            got = find_header(headers, "authorization") or ""
            scheme, _, token = got.strip().partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.bearer):
                raise Unauthorized("missing or wrong bearer token", 'Bearer realm="eventbus"')
        if self.hmac_secret is not None:
            assert self.hmac_header is not None
            self.check_signature(find_header(headers, self.hmac_header), body)

    def check_signature(self, value: str | None, body: bytes) -> None:
        """`<algorithm>=<hex>` over the raw body (GitHub's X-Hub-Signature-256 form)."""
        assert self.hmac_secret is not None
        if not value:
            raise Unauthorized(f"missing signature header {self.hmac_header}")
        prefix = self.hmac_algorithm + "="
        if not value.lower().startswith(prefix):
            raise Unauthorized(f"signature must look like {prefix}<hex>")
        want = hmac.new(self.hmac_secret, body, getattr(hashlib, self.hmac_algorithm)).hexdigest()
        if not hmac.compare_digest(value[len(prefix):].strip().lower().encode(), want.encode()):
            raise Unauthorized("signature does not match the body")


def sign(secret: bytes, body: bytes, algorithm: str = "sha256") -> str:
    """The signature header value a sender computes: `<algorithm>=<hex>` (for clients and tests)."""
    return f"{algorithm}=" + hmac.new(secret, body, getattr(hashlib, algorithm)).hexdigest()
