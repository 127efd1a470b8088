from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from secreg import workers
from secreg.auth.ratelimit import LoginLimiter, RateLimiter, SharedRateLimiter, limiter_from_settings
from secreg.config import RateLimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Factory = Callable[..., LoginLimiter]


@pytest.fixture(params=["memory", "shared"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Both implementations must follow the same rules."""
    if request.param == "memory":
        return RateLimiter

    def shared(attempts: int, window: float, lockout: float, *, clock: Clock) -> LoginLimiter:
        return SharedRateLimiter(tmp_path / "ratelimit.sqlite", attempts, window, lockout, clock=clock)

    return shared


def test_lockout_after_attempts_within_window(make: Factory) -> None:
    clock = Clock()
    limiter = make(3, window=60, lockout=30, clock=clock)
    assert limiter.failure("user:a") == 0
    assert limiter.failure("user:a") == 0
    assert limiter.retry_after("user:a") == 0
    assert limiter.failure("user:a") == 30
    clock.now += 10.5
    assert limiter.retry_after("user:a") == 20  # rounded up
    clock.now += 19.5
    assert limiter.retry_after("user:a") == 0
    assert limiter.failure("user:a") == 0  # counting starts afresh


def test_failures_outside_the_window_do_not_count(make: Factory) -> None:
    clock = Clock()
    limiter = make(3, window=60, lockout=30, clock=clock)
    limiter.failure("k")
    limiter.failure("k")
    clock.now += 61
    assert limiter.failure("k") == 0
    assert limiter.failure("k") == 0
    assert limiter.failure("k") == 30


def test_several_keys_the_longest_wait_wins(make: Factory) -> None:
    clock = Clock()
    limiter = make(2, window=60, lockout=30, clock=clock)
    limiter.failure("user:a", "addr:1")
    clock.now += 5
    limiter.failure("user:b", "addr:1")  # the address reaches the limit, neither user does
    assert limiter.retry_after("user:a") == 0
    assert limiter.retry_after("user:a", "addr:1") == 30
    assert limiter.retry_after("user:c", "addr:2") == 0


def test_success_clears_an_unlocked_key_but_not_a_lockout(make: Factory) -> None:
    clock = Clock()
    limiter = make(2, window=60, lockout=30, clock=clock)
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


def test_shared_file_is_one_count_for_every_process(tmp_path: Path) -> None:
    """Two limiters on one file stand for two workers: failures seen by either add up."""
    clock = Clock()
    path = tmp_path / "ratelimit.sqlite"
    first = SharedRateLimiter(path, 3, 60, 30, clock=clock)
    second = SharedRateLimiter(path, 3, 60, 30, clock=clock)
    assert first.failure("user:a", "addr:1") == 0
    assert second.failure("user:a", "addr:1") == 0
    assert first.failure("user:a", "addr:2") == 30
    assert second.retry_after("user:a") == 30 and second.retry_after("addr:1") == 0
    clock.now += 31
    assert first.retry_after("user:a") == 0


def test_shared_file_is_bounded(tmp_path: Path) -> None:
    clock = Clock()
    limiter = SharedRateLimiter(tmp_path / "ratelimit.sqlite", 5, 60, 30, clock=clock, max_rows=100)
    for i in range(1000):
        limiter.failure(f"addr:{i}")
    with sqlite3.connect(tmp_path / "ratelimit.sqlite") as db:
        assert db.execute("SELECT count(*) FROM failures").fetchone()[0] <= 100


def test_limiter_from_settings_follows_the_worker_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RateLimitSettings(attempts=5, window=60, lockout=120)
    monkeypatch.delenv(workers.ENV, raising=False)
    assert isinstance(limiter_from_settings(settings), RateLimiter)
    monkeypatch.setenv(workers.ENV, str(tmp_path))
    shared = limiter_from_settings(settings)
    assert isinstance(shared, SharedRateLimiter) and shared.path == tmp_path / "ratelimit.sqlite"
    with pytest.raises(ValueError):
        SharedRateLimiter(tmp_path / "x.sqlite", 1, 0, 60)
