"""Retry policy: which statuses retry, and full-jitter delays within their ceilings."""

from __future__ import annotations

import random

import pytest

from schemas.trigger import Retry
from triggers.retry import Backoff, is_retryable


@pytest.mark.parametrize("status,retry", [(0, True), (408, True), (429, True), (500, True), (503, True),
                                          (599, True), (400, False), (401, False), (404, False),
                                          (410, False), (422, False), (301, False)])
def test_retryable_statuses(status: int, retry: bool) -> None:
    assert is_retryable(status) is retry


def test_exponential_ceiling_caps_at_max_delay() -> None:
    b = Backoff(Retry.model_validate({"delay": "200ms", "maxDelay": "1s"}))
    assert [b.ceiling(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_linear_ceiling() -> None:
    b = Backoff(Retry.model_validate({"backoff": "linear", "delay": "100ms", "maxDelay": "250ms"}))
    assert [b.ceiling(n) for n in range(1, 4)] == [0.1, 0.2, 0.25]


def test_full_jitter_stays_within_ceiling() -> None:
    b = Backoff(Retry.model_validate({"delay": "100ms"}), rng=random.Random(1))
    delays = [b.delay(3) for _ in range(500)]
    assert all(0 <= d <= 0.4 for d in delays)
    assert max(delays) > 0.3 and min(delays) < 0.1  # spread over the whole range


def test_retry_after_is_honoured_up_to_max_delay() -> None:
    b = Backoff(Retry.model_validate({"delay": "10ms", "maxDelay": "2s"}), rng=random.Random(1))
    assert b.delay(1, retry_after=1.5) == 1.5
    assert b.delay(1, retry_after=60) == 2.0
