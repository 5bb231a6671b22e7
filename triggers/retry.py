"""Which failures are retried and how long to wait: full-jitter backoff, `Retry-After` honoured up to maxDelay."""

from __future__ import annotations

import random

from schemas.trigger import Retry

RETRYABLE_STATUSES = frozenset({0, 408, 429})


def is_retryable(status: int) -> bool:
    """Status 0 (connection error or timeout), 408, 429 and 5xx are retried; anything else is final."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


class Backoff:
    """Delay before retry number `n` (1 = the first retry) for a trigger's retry policy."""

    def __init__(self, policy: Retry, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()

    def ceiling(self, n: int) -> float:
        p = self.policy
        if p.backoff == "linear":
            base = p.delay * n
        else:
            base = p.delay * (2 ** min(n - 1, 62))
        return min(base, p.max_delay)

    def delay(self, n: int, retry_after: float | None = None) -> float:
        """Full jitter (uniform in [0, ceiling]), but never sooner than the server's Retry-After (capped)."""
        d = self._rng.uniform(0.0, self.ceiling(n))
        if retry_after is not None:
            d = max(d, min(retry_after, self.policy.max_delay))
        return d
