from __future__ import annotations

import pytest

from secreg.auth.ratelimit import RateLimiter
from secreg.config import RateLimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lockout_after_attempts_within_window() -> None:
    clock = Clock()
    limiter = RateLimiter(3, window=60, lockout=30, clock=clock)
    assert limiter.failure("user:a") == 0
    assert limiter.failure("user:a") == 0
    assert limiter.retry_after("user:a") == 0
    assert limiter.failure("user:a") == 30
    clock.now += 10.5
    assert limiter.retry_after("user:a") == 20  # rounded up
    clock.now += 19.5
    assert limiter.retry_after("user:a") == 0
    assert limiter.failure("user:a") == 0  # counting starts afresh


def test_failures_outside_the_window_do_not_count() -> None:
    clock = Clock()
    limiter = RateLimiter(3, window=60, lockout=30, clock=clock)
    limiter.failure("k")
    limiter.failure("k")
    clock.now += 61
    assert limiter.failure("k") == 0
    assert limiter.failure("k") == 0
    assert limiter.failure("k") == 30


def test_several_keys_the_longest_wait_wins() -> None:
    clock = Clock()
    limiter = RateLimiter(2, window=60, lockout=30, clock=clock)
    limiter.failure("user:a", "addr:1")
    clock.now += 5
    limiter.failure("user:b", "addr:1")  # the address reaches the limit, neither user does
    assert limiter.retry_after("user:a") == 0
    assert limiter.retry_after("user:a", "addr:1") == 30
    assert limiter.retry_after("user:c", "addr:2") == 0


def test_success_clears_an_unlocked_key_but_not_a_lockout() -> None:
    clock = Clock()
    limiter = RateLimiter(2, window=60, lockout=30, clock=clock)
    limiter.failure("user:a")
    limiter.success("user:a")
    assert limiter.failure("user:a") == 0
    limiter.failure("user:b")
    limiter.failure("user:b")
    limiter.success("user:b")
    assert limiter.retry_after("user:b") == 30


def test_memory_is_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(5, window=60, lockout=30, clock=clock, max_keys=100)
    for i in range(1000):
        limiter.failure(f"addr:{i}")
    assert len(limiter._entries) <= 100


def test_from_settings_and_validation() -> None:
    limiter = RateLimiter.from_settings(RateLimitSettings(attempts=5, window=60, lockout=120))
    assert (limiter.attempts, limiter.window, limiter.lockout) == (5, 60, 120)
    with pytest.raises(ValueError):
        RateLimiter(0, 60, 60)
