"""Failed logins lock out the guesser, not the account's owner elsewhere nor everyone behind one address: a real
server, clients on different loopback addresses (127.0.0.2, 127.0.0.3 ... reach 127.0.0.1 on Linux)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.server import RunningServer, run_secreg


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {"auth": {"ratelimit": {"attempts": 3, "window": 60, "lockout": 120}}}
    with run_secreg(tmp_path_factory.mktemp("lockout"), config) as s:
        for name in ("alice", "bob"):  # bcrypt cost 4 (Apache's htpasswd): dozens of failures stay quick
            subprocess.run(["htpasswd", "-b", "-B", "-C", "4", str(s.workdir / "auth" / "htpasswd"), name,
                            f"{name}-password"], check=True, capture_output=True)
        yield s


def _login(server: RunningServer, source: str, user: str, password: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source, verify=server.ssl_context())
    with httpx.Client(base_url=server.url, transport=transport, timeout=60) as c:
        return c.get("/auth/token", params={"service": "secreg"}, auth=(user, password))


def test_a_guesser_locks_only_itself(server: RunningServer) -> None:
    attacker, owner = "127.0.0.2", "127.0.0.3"
    assert [_login(server, attacker, "alice", f"guess-{i}").status_code for i in range(3)] == [401, 401, 401]
    locked = _login(server, attacker, "alice", "alice-password")
    assert locked.status_code == 429
    wait = int(locked.headers["Retry-After"])
    assert 100 < wait <= 120
    message = locked.json()["errors"][0]["message"]
    assert "too many failed logins" in message and "try again in 2 minutes" in message
    # The owner, from another address, is not locked out; nor is a colleague behind the attacker's address.
    assert _login(server, owner, "alice", "alice-password").status_code == 200
    assert _login(server, attacker, "bob", "bob-password").status_code == 200


def test_an_address_trying_many_accounts_is_stopped(server: RunningServer) -> None:
    scanner = "127.0.0.4"
    statuses = [_login(server, scanner, f"user{i}", "password-guess").status_code for i in range(13)]
    assert statuses[:12] == [401] * 12 and statuses[12] == 429  # 4 x attempts per address
    assert _login(server, "127.0.0.5", "bob", "bob-password").status_code == 200


def test_guessing_one_account_from_many_addresses_meets_the_ceiling(server: RunningServer) -> None:
    statuses = []
    for i in range(31):  # 10 x attempts for one account from anywhere; 2 guesses per address stay below 3
        statuses.append(_login(server, f"127.0.1.{10 + i // 2}", "bob", f"guess-{i}").status_code)
    assert statuses[:30] == [401] * 30 and statuses[30] == 429
    assert _login(server, "127.0.2.1", "bob", "bob-password").status_code == 429  # the ceiling holds the account
