"""Refresh-token revocation: the list in a real Redis (shared by replicas) and in the auth directory (alone);
two `secreg serve` token servers on one Redis refuse a token revoked through either, or by the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from secreg.auth.redisclient import redis_client
from secreg.auth.revocation import LocalRevocations, RevocationUnavailable
from secreg.auth.revocation_redis import RedisRevocations
from secreg.config import RedisSettings
from tests.redisserver import redis_server
from tests.server import RunningServer, free_port, run_secreg

DAY = 24 * 3600
LOGIN = {"service": "secreg", "account": "admin", "client_id": "docker", "offline_token": "true"}


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield port


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_redis_list_expires_with_the_tokens(redis_port: int) -> None:
    client = redis_client(RedisSettings("127.0.0.1", redis_port, "", 0))
    clock = Clock(float(client.time()[0]))
    a, b = RedisRevocations(client, 30 * DAY, clock), RedisRevocations(client, 30 * DAY, clock)
    a.revoke_token("jti-1", clock.now + 3600)
    assert b.revoked("ann", "jti-1", clock.now - 10) and not b.revoked("ann", "jti-2", clock.now - 10)
    # The key lives as long as the token could still be accepted (its expiry plus the 60 s leeway), no longer.
    assert 3600_000 < client.pttl("secreg:revoked:token:jti-1") <= 3660_000
    a.revoke_token("jti-old", clock.now - 120)  # expired already: nothing to remember
    assert not client.exists("secreg:revoked:token:jti-old")
    a.revoke_user("ann")
    assert b.revoked("ann", "jti-3", clock.now) and b.revoked("ann", "jti-3", clock.now - DAY)
    assert not b.revoked("ann", "jti-4", clock.now + 0.001)  # a login a millisecond later is not
    assert not b.revoked("ben", "jti-3", clock.now - DAY)
    assert 30 * DAY * 1000 < client.pttl("secreg:revoked:user:ann") <= (30 * DAY + 60) * 1000


def test_redis_down_fails_closed() -> None:
    gone = RedisRevocations(redis_client(RedisSettings("127.0.0.1", free_port(), "", 0)), DAY)
    with pytest.raises(RevocationUnavailable):
        gone.revoked("ann", "jti", 0.0)
    with pytest.raises(RevocationUnavailable):
        gone.revoke_user("ann")
    with pytest.raises(RevocationUnavailable):
        gone.revoke_token("jti", 10.0**10)


def test_local_file_is_shared_and_pruned(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "revoked.json"
    writer, reader = LocalRevocations(path, DAY, clock), LocalRevocations(path, DAY, clock)
    writer.revoke_token("jti-1", clock.now + 600)
    writer.revoke_user("ann")
    assert reader.revoked("bob", "jti-1", clock.now) and reader.revoked("ann", "x", clock.now - 5)
    assert not reader.revoked("ann", "x", clock.now + 0.5)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    clock.now += DAY + 120  # the token expired, and every token issued before the cutoff did too
    writer.revoke_user("cat")
    assert set(json.loads(path.read_bytes())["tokens"]) == set()
    assert set(json.loads(path.read_bytes())["users"]) == {"cat"}


def test_unwritable_local_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RevocationUnavailable):
        LocalRevocations(tmp_path / "missing" / "revoked.json", DAY).revoke_user("ann")


# --- two token servers on one Redis -----------------------------------------------------------------------


def _refresh(server: RunningServer, token: str) -> httpx.Response:
    with server.client() as c:
        return c.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                           "client_id": "docker", "service": "secreg",
                                           "scope": "repository:x:pull"})


def _login(server: RunningServer, password: str) -> str:
    with server.client() as c:
        r = c.get("/auth/token", params=LOGIN, auth=("admin", password))
    assert r.status_code == 200, r.text
    return str(r.json()["refresh_token"])


def _cli(workdir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    return subprocess.run([sys.executable, "-m", "secreg", "user", *args, "--config", str(workdir / "config.yml")],
                          cwd=workdir, env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def _replica_pair(tmp_path: Path, config: dict[str, object]) -> Iterator[tuple[RunningServer, RunningServer]]:
    with run_secreg(tmp_path / "a", config) as a:
        (tmp_path / "b").mkdir()
        shutil.copytree(a.workdir / "certs", tmp_path / "b" / "certs")
        shutil.copytree(a.workdir / "auth", tmp_path / "b" / "auth")
        with run_secreg(tmp_path / "b", config) as b:
            yield a, b


def test_token_servers_share_revocations(redis_port: int, tmp_path: Path) -> None:
    config = {"redis": {"addr": f"127.0.0.1:{redis_port}"}}
    with _replica_pair(tmp_path, config) as (a, b):
        password = a.admin_password or ""
        first, second = _login(a, password), _login(a, password)
        assert _refresh(b, first).status_code == 200  # a token one replica issued works on the other
        # The holder revokes it through A (RFC 7009); B refuses it, the other token lives on.
        with a.client() as c:
            assert c.post("/auth/revoke", data={"token": first}).status_code == 200
            assert c.post("/auth/revoke", data={"token": "not-a-token"}).status_code == 200  # RFC 7009 2.2
            assert c.post("/auth/revoke", data={}).status_code == 400
        refused = _refresh(b, first)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_grant"
        assert _refresh(a, first).status_code == 401
        assert _refresh(b, second).status_code == 200
        # `secreg user revoke` with B's config: every token of the user, on A as well, whose files are untouched.
        done = _cli(b.workdir, "revoke", "admin")
        assert done.returncode == 0, done.stderr
        assert _refresh(a, second).status_code == 401
        third = _login(a, password)  # logging in again right away gives a token that works
        assert _refresh(b, third).status_code == 200
        # A password change in B's copy of auth/ only: A still has the old htpasswd, yet refuses the token.
        done = _cli(b.workdir, "passwd", "admin", "--password-stdin", stdin="a-new-password\n")
        assert done.returncode == 0, done.stderr
        assert _refresh(a, third).status_code == 401
        assert '"event": "refresh.revoked"' in a.log() and '"reason": "revoked"' in a.log()


def test_refresh_fails_closed_while_redis_is_down(tmp_path: Path) -> None:
    (tmp_path / "redis-data").mkdir()
    with redis_server(tmp_path / "redis-data") as port:
        with _replica_pair(tmp_path, {"redis": {"addr": f"127.0.0.1:{port}"}}) as (a, b):
            token = _login(a, a.admin_password or "")
            assert _refresh(b, token).status_code == 200
            with contextlib.suppress(redis.ConnectionError):  # it goes away while answering
                redis.Redis(port=port).shutdown(nosave=True)
            down = _refresh(b, token)
            assert down.status_code == 503 and down.json()["error"] == "temporarily_unavailable"
            assert down.headers["Retry-After"]
            _login(b, a.admin_password or "")  # password logins do not depend on the list
            with a.client() as c:
                assert c.post("/auth/revoke", data={"token": token}).status_code == 503
            assert _cli(b.workdir, "revoke", "admin").returncode == 2


def test_alone_the_cli_revokes_through_the_auth_directory(tmp_path: Path) -> None:
    with run_secreg(tmp_path / "a", {"http": {"workers": 2}}) as a:
        token = _login(a, a.admin_password or "")
        assert _refresh(a, token).status_code == 200
        done = _cli(a.workdir, "revoke", "admin")
        assert done.returncode == 0, done.stderr
        assert "must log in again" in done.stdout
        assert (a.workdir / "auth" / "refresh-revocations.json").exists()
        for _ in range(4):  # whichever worker answers
            assert _refresh(a, token).status_code == 401
        assert _cli(a.workdir, "revoke", "nobody").returncode == 2
