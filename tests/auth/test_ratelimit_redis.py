"""The login rate limit shared through a real Redis: failures counted on one replica lock the account out on
another; without Redis a replica still limits on its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from secreg.auth.ratelimit import LOGIN_FACTORS
from secreg.auth.ratelimit_redis import RedisRateLimiter
from secreg.config import RateLimitSettings, RedisSettings
from tests.redisserver import redis_server
from tests.server import run_secreg


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield port


def limiter(port: int, attempts: int = 3) -> RedisRateLimiter:
    return RedisRateLimiter.from_settings(RateLimitSettings(attempts, 60, 30),
                                          RedisSettings("127.0.0.1", port, "", 0), LOGIN_FACTORS)


def test_two_replicas_count_the_same_failures(redis_port: int) -> None:
    a, b = limiter(redis_port), limiter(redis_port)
    assert a.failure("pair:eve@1", "addr:1") == 0
    assert b.failure("pair:eve@1", "addr:1") == 0
    assert a.retry_after("pair:eve@1") == 0
    waited = b.failure("pair:eve@1", "addr:1")  # the third failure, on whichever replica
    assert 29 <= waited <= 30
    # The address's limit is four times higher (LOGIN_FACTORS): not locked yet.
    assert 29 <= a.retry_after("pair:eve@1") <= 30 and a.retry_after("addr:1") == 0


def test_success_clears_unlocked_failures_only(redis_port: int) -> None:
    a, b = limiter(redis_port), limiter(redis_port)
    a.failure("pair:sam@1")
    a.failure("pair:sam@1")
    b.success("pair:sam@1")
    assert a.failure("pair:sam@1") == 0  # the count started again


def test_redis_down_falls_back_to_counting_locally() -> None:
    from tests.server import free_port

    alone = limiter(free_port(), attempts=2)  # nothing listens there
    assert alone.failure("pair:x@1") == 0
    assert alone.failure("pair:x@1") > 0 and alone.retry_after("pair:x@1") > 0


def test_token_servers_share_the_lockout(redis_port: int, tmp_path: Path) -> None:
    config = {"redis": {"addr": f"127.0.0.1:{redis_port}"}, "auth": {"ratelimit": {"attempts": 2}}}
    with run_secreg(tmp_path / "a", config) as a:
        (tmp_path / "b").mkdir()
        import shutil

        shutil.copytree(a.workdir / "certs", tmp_path / "b" / "certs")
        shutil.copytree(a.workdir / "auth", tmp_path / "b" / "auth")
        with run_secreg(tmp_path / "b", config) as b:
            params = {"service": "secreg", "scope": "repository:x:pull"}
            for server in (a, b):
                with server.client() as c:
                    assert c.get("/auth/token", params=params, auth=("admin", "wrong")).status_code == 401
            with b.client() as c:
                r = c.get("/auth/token", params=params, auth=("admin", a.admin_password or ""))
            assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
            with httpx.Client(verify=a.ssl_context()) as c:
                r = c.get(f"{a.url}/auth/token", params=params, auth=("admin", a.admin_password or ""))
            assert r.status_code == 429
