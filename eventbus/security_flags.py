"""The security flags of `eventbus run` and `eventbus up`: where the ingress listens, who may publish, the
ingress's limits, and where dispatches may connect (README "Security").

Kept out of cli.py so each subcommand adds them with one call, and everything they name (the publishers
file and its tokens, the `--allow-url` rules) is read and checked before anything starts.
"""

from __future__ import annotations

import argparse
from typing import Any

from connectors.gateway import UrlPolicy
from connectors.http_auth import AuthConfigError, PublisherAuth
from connectors.http_ingress import IngressLimits
from schemas.duration import parse_duration
from schemas.publishers import PublishersFileError

_DEFAULTS = IngressLimits()


class SecurityConfigError(ValueError):
    """A security flag names something unusable (a bad publishers file, a missing token, a bad rule)."""


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return n


def _rate(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number (requests per second; 0 = no limit)") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
    return n


def _timeout(text: str) -> float:
    try:
        s = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if s <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return s


def add_security_flags(p: argparse.ArgumentParser, *, default_host: str) -> None:
    """The flags; `default_host` is where the ingress binds without `--host`."""
    p.add_argument("--host", default=default_host,
                   help=f"address the HTTP ingress binds (default {default_host}); off loopback, /topics needs "
                        "--publishers")
    p.add_argument("--publishers", metavar="FILE",
                   help="publishers file: bearer tokens allowed to POST /topics/<name>, and their topic patterns")
    p.add_argument("--allow-url", action="append", default=[], metavar="RULE",
                   help="where function URLs and HTTP sinks may connect: a host pattern (*.svc.cluster.local) or "
                        "a CIDR (10.0.0.0/8); repeatable. Default: anywhere but link-local and metadata addresses")
    p.add_argument("--max-header-size", type=_positive_int, default=_DEFAULTS.max_header_size,
                   help=f"bytes of one request header line (default {_DEFAULTS.max_header_size}; 400 above)")
    p.add_argument("--max-headers", type=_positive_int, default=_DEFAULTS.max_headers,
                   help=f"header fields per request (default {_DEFAULTS.max_headers}; 400 above)")
    p.add_argument("--body-timeout", type=_timeout, default=_DEFAULTS.body_timeout,
                   help=f"time to receive a request body (default {_DEFAULTS.body_timeout:g}s; 408 after)")
    p.add_argument("--rate-limit", type=_rate, default=_DEFAULTS.rate_limit,
                   help=f"/topics requests per second per publisher token (default {_DEFAULTS.rate_limit:g}; "
                        "429 with Retry-After above; 0 = no limit)")
    p.add_argument("--rate-burst", type=_positive_int, default=None,
                   help="requests a token may send at once (default: the rate limit)")
    p.add_argument("--idle-timeout", type=_timeout, default=_DEFAULTS.idle_timeout,
                   help=f"close a connection idle (or stuck in its headers) this long (default "
                        f"{_DEFAULTS.idle_timeout:g}s)")
    p.add_argument("--max-connections", type=_positive_int, default=_DEFAULTS.max_connections,
                   help=f"open ingress connections (default {_DEFAULTS.max_connections}; a new one above gets 503)")


def security_settings(args: argparse.Namespace) -> dict[str, Any]:
    """RuntimeConfig fields from the flags; reads the publishers file and its tokens now."""
    try:
        publishers = PublisherAuth.from_file(args.publishers) if args.publishers else None
        policy_rules = tuple(args.allow_url)
        UrlPolicy.parse(policy_rules)
    except (AuthConfigError, PublishersFileError, ValueError) as exc:
        raise SecurityConfigError(str(exc)) from None
    limits = IngressLimits(max_header_size=args.max_header_size, max_headers=args.max_headers,
                           body_timeout=args.body_timeout, rate_limit=args.rate_limit,
                           rate_burst=args.rate_burst or 0, max_connections=args.max_connections,
                           idle_timeout=args.idle_timeout)
    return {"http_host": args.host, "publishers": publishers, "ingress_limits": limits, "allow_url": policy_rules}
