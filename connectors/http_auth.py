"""Request authentication for the HTTP ingress: webhook auth of HTTP triggers (a bearer token, or an HMAC
signature of the body, optionally timestamped and replay-checked) and the publishers' bearer tokens for
`POST /topics/<name>`.

Secrets are read once, when a trigger or the ingress starts, so a missing variable is a start-up error
rather than a stream of 401s. Comparisons use `hmac.compare_digest` (constant time). Secret bytes are kept
out of `repr` (and so out of logs and tracebacks), and no message built here contains one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from schemas.headers import find_header
from schemas.names import pattern_matches
from schemas.publishers import PublishersFile, TokenFrom, parse_publishers
from schemas.trigger import HttpAuth

BEARER_CHALLENGE = "Bearer"
"""The `WWW-Authenticate` value of a 401 from `/topics` (RFC 6750)."""

DEFAULT_REPLAY_CAPACITY = 100_000
"""Delivery ids remembered per trigger at most: bounded memory; the oldest are forgotten first."""

DELIVERY_ID_HEADERS = ("webhook-id", "x-github-delivery", "x-gitlab-event-uuid", "x-shopify-webhook-id",
                       "idempotency-key", "ce-id")
"""Headers that carry a sender's delivery id, remembered (with the signature) to refuse replays."""


class AuthConfigError(ValueError):
    """The auth spec names a secret whose environment variable (or file) is not set, empty or unreadable."""


class Unauthorized(Exception):
    """The request fails the trigger's auth; `challenge` is the WWW-Authenticate value to send, if any."""

    def __init__(self, reason: str, challenge: str | None = None) -> None:
        super().__init__(reason)
        self.challenge = challenge


class Replayed(Exception):
    """A correctly signed delivery that was already accepted within the tolerance window: answer 409."""


def _secret(env: str, what: str) -> bytes:
    value = os.environ.get(env)
    if not value:
        raise AuthConfigError(f"{what}: environment variable {env} is not set")
    return value.encode()


def read_token(ref: TokenFrom, what: str) -> bytes:
    """A token from an environment variable or a file (trailing whitespace and newline stripped)."""
    if ref.env is not None:
        return _secret(ref.env, f"{what}.env")
    assert ref.file is not None
    try:
        value = Path(ref.file).read_text().strip()
    except OSError as exc:
        raise AuthConfigError(f"{what}.file: cannot read {ref.file}: {exc.strerror or exc}") from None
    if not value:
        raise AuthConfigError(f"{what}.file: {ref.file} is empty")
    return value.encode()


# --- replay memory ---------------------------------------------------------------------------


class ReplayGuard:
    """Keys of accepted deliveries with their expiry; at most `capacity` (oldest forgotten first).

    A key is claimed when a delivery passes auth and released if the delivery is not accepted in the
    end (so a sender's retry after our 5xx is not a "replay")."""

    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[key]

    def claim(self, keys: Iterable[str], until: float, now: float) -> bool:
        """Remember `keys` until `until`; False (and nothing remembered) if one is remembered already."""
        self._expire(now)
        keys = list(keys)
        if any(self._seen.get(k, 0.0) > now for k in keys):
            return False
        for k in keys:
            self._seen[k] = until
            self._seen.move_to_end(k)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def release(self, keys: Iterable[str]) -> None:
        for k in keys:
            self._seen.pop(k, None)


@dataclass(frozen=True)
class Claim:
    """The replay keys a request claimed; `release` them when the request is not accepted."""

    guard: ReplayGuard | None = None
    keys: tuple[str, ...] = ()

    def release(self) -> None:
        if self.guard is not None:
            self.guard.release(self.keys)


# --- webhook auth of HTTP triggers -------------------------------------------------------------


@dataclass(frozen=True)
class Authenticator:
    """Checks requests against one trigger's `auth`; all configured methods must pass."""

    bearer: bytes | None = field(default=None, repr=False)
    hmac_header: str | None = None
    hmac_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    hmac_algorithm: str = "sha256"
    timestamp_header: str | None = None
    tolerance: float = 300.0
    replay: ReplayGuard | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: HttpAuth | None) -> Authenticator:
        if spec is None:
            return cls()
        bearer = None
        if spec.bearer_token_from is not None:
            bearer = _secret(spec.bearer_token_from.env, "auth.bearerTokenFrom")
        h = spec.hmac
        if h is None:
            return cls(bearer)
        if h.secrets_from:
            secrets = tuple(_secret(ref.env, f"auth.hmac.secretsFrom[{i}]") for i, ref in enumerate(h.secrets_from))
        else:
            assert h.secret_from is not None
            secrets = (_secret(h.secret_from.env, "auth.hmac.secretFrom"),)
        ts = h.timestamp_header.lower() if h.timestamp_header else None
        return cls(bearer, h.header.lower(), secrets, h.algorithm, ts, h.tolerance,
                   ReplayGuard() if ts is not None else None)

    @property
    def enabled(self) -> bool:
        return self.bearer is not None or bool(self.hmac_secrets)

    def check(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> Claim:
        """Raise Unauthorized unless the request passes every configured check, Replayed if its delivery
        was accepted before; returns the replay keys claimed (release them if the request fails)."""
        if self.bearer is not None:
            got = find_header(headers, "authorization") or ""
            scheme, _, token = got.strip().partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.bearer):
                raise Unauthorized("missing or wrong bearer token", 'Bearer realm="eventbus"')
        if not self.hmac_secrets:
            return Claim()
        assert self.hmac_header is not None
        now = time.time() if now is None else now
        signed = body
        ts: int | None = None
        if self.timestamp_header is not None:
            ts = self._timestamp(find_header(headers, self.timestamp_header), now)
            signed = f"{ts}.".encode() + body
        signature = self.check_signature(find_header(headers, self.hmac_header), signed)
        if self.replay is None or ts is None:
            return Claim()
        keys = ["sig:" + signature]
        for name in DELIVERY_ID_HEADERS:
            value = (find_header(headers, name) or "").strip()
            if value:
                keys.append(f"id:{value}")
                break
        if not self.replay.claim(keys, max(now, float(ts)) + self.tolerance, now):
            raise Replayed("this delivery was already accepted (replay refused)")
        return Claim(self.replay, tuple(keys))

    def _timestamp(self, value: str | None, now: float) -> int:
        if not value:
            raise Unauthorized(f"missing timestamp header {self.timestamp_header}")
        try:
            ts = int(value.strip())
        except ValueError:
            raise Unauthorized(f"timestamp header {self.timestamp_header} must be Unix seconds") from None
        if abs(now - ts) > self.tolerance:
            raise Unauthorized(f"timestamp is outside the tolerance of {self.tolerance:g}s (stale or future)")
        return ts

    def check_signature(self, value: str | None, signed: bytes) -> str:
        """`<algorithm>=<hex>` over the signed bytes (GitHub's X-Hub-Signature-256 form); any one of the
        configured secrets may match (rotation). Returns the hex digest that matched."""
        if not value:
            raise Unauthorized(f"missing signature header {self.hmac_header}")
        prefix = self.hmac_algorithm + "="
        if not value.lower().startswith(prefix):
            raise Unauthorized(f"signature must look like {prefix}<hex>")
        got = value[len(prefix):].strip().lower().encode()
        digest = getattr(hashlib, self.hmac_algorithm)
        ok = False
        for secret in self.hmac_secrets:  # no early exit: the time taken does not tell which secret matched
            want = hmac.new(secret, signed, digest).hexdigest().encode()
            ok = hmac.compare_digest(got, want) or ok
        if not ok:
            raise Unauthorized("signature does not match the body")
        return got.decode()


def sign(secret: bytes, body: bytes, algorithm: str = "sha256", timestamp: int | None = None) -> str:
    """The signature header value a sender computes: `<algorithm>=<hex>` over the body, or over
    `<timestamp>.<body>` when the trigger has a `timestampHeader` (for clients and tests)."""
    signed = body if timestamp is None else f"{timestamp}.".encode() + body
    return f"{algorithm}=" + hmac.new(secret, signed, getattr(hashlib, algorithm)).hexdigest()


# --- publishers of /topics ---------------------------------------------------------------------


@dataclass(frozen=True)
class PublisherToken:
    """One publisher: its name (for logs), its topic patterns, its token (never shown)."""

    name: str
    patterns: tuple[str, ...]
    token: bytes = field(repr=False)

    def allows(self, topic: str) -> bool:
        return any(pattern_matches(p, topic) for p in self.patterns)


class PublisherAuth:
    """The bearer tokens allowed to `POST /topics/<name>`, and where each may write."""

    def __init__(self, publishers: Iterable[PublisherToken]) -> None:
        self.publishers = tuple(publishers)
        for i, a in enumerate(self.publishers):
            for b in self.publishers[i + 1:]:
                if hmac.compare_digest(a.token, b.token):
                    raise AuthConfigError(f"publishers {a.name!r} and {b.name!r} have the same token: "
                                          "each publisher needs its own")

    def __repr__(self) -> str:
        return f"PublisherAuth({[p.name for p in self.publishers]})"

    @classmethod
    def from_spec(cls, spec: PublishersFile, origin: str = "publishers") -> PublisherAuth:
        return cls(PublisherToken(p.name, tuple(p.topics), read_token(p.token_from, f"{origin}: {p.name}.tokenFrom"))
                   for p in spec.publishers)

    @classmethod
    def from_file(cls, path: str) -> PublisherAuth:
        """Read and check a publishers file and every token it names (at start-up, before serving)."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise AuthConfigError(f"--publishers {path}: {exc.strerror or exc}") from None
        return cls.from_spec(parse_publishers(text, path), path)

    def identify(self, authorization: str | None) -> PublisherToken:
        """The publisher whose token the `Authorization: Bearer` header carries; Unauthorized otherwise.
        Every token is compared (constant time each), so timing does not tell which one nearly matched."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)", BEARER_CHALLENGE)
        got = token.strip().encode()
        found: PublisherToken | None = None
        for p in self.publishers:
            if hmac.compare_digest(got, p.token):
                found = p
        if found is None:
            raise Unauthorized("unknown bearer token", BEARER_CHALLENGE)
        return found
