"""No way to tell an account that exists from one that does not: on every path a password arrives by (the token
endpoint's Basic and password grant, HTTP Basic on the registry API, `docker search`, the UI's login form), a
wrong password for an existing user and any password for an unknown one get the same answer, and both are
rate limited the same way. (That both cost one bcrypt check is tests/auth/test_users.py's, without timings.)"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.server import RunningServer, run_secreg
from tests.ui.conftest import csrf_of

ATTEMPTS = 5
Attempt = Callable[[httpx.Client, str, str], httpx.Response]


def _token_basic(client: httpx.Client, user: str, password: str) -> httpx.Response:
    return client.get("/auth/token", params={"service": "secreg", "account": user, "client_id": "docker",
                                             "offline_token": "true"}, auth=(user, password))


def _token_password_grant(client: httpx.Client, user: str, password: str) -> httpx.Response:
    return client.post("/auth/token", data={"grant_type": "password", "username": user, "password": password,
                                            "service": "secreg", "client_id": "test",
                                            "scope": "repository:team/app:pull"})


def _api_basic(client: httpx.Client, user: str, password: str) -> httpx.Response:
    return client.get("/v2/team/app/tags/list", auth=(user, password))


def _search_basic(client: httpx.Client, user: str, password: str) -> httpx.Response:
    return client.get("/v1/search", params={"q": "app"}, auth=(user, password))


def _ui_login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    csrf = csrf_of(client.get("/ui/login").text)
    return client.post("/ui/login", data={"csrf": csrf, "username": user, "password": password, "next": "/ui/"})


PATHS: dict[str, Attempt] = {"token-basic": _token_basic, "token-password": _token_password_grant,
                             "api-basic": _api_basic, "search": _search_basic, "ui": _ui_login}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("enumeration")
    config = {"http": {"workers": 1}, "auth": {"ratelimit": {"attempts": ATTEMPTS, "window": 600, "lockout": 600}}}
    with run_secreg(workdir, config) as running:
        for path in PATHS:  # bcrypt cost 4 (Apache's htpasswd -C 4): the many failures stay quick
            subprocess.run(["htpasswd", "-b", "-B", "-C", "4", str(workdir / "auth" / "htpasswd"), f"real-{path}",
                            "the-right-password"], check=True, capture_output=True)
        yield running


def _answer(response: httpx.Response, user: str) -> tuple[int, str, str, str]:
    """What a client sees, the user name it typed (echoed by the login form) and the request id aside."""
    body = re.sub(r'name="csrf" value="[^"]*"', "", response.text.replace(user, "USER"))
    return (response.status_code, body, response.headers.get("www-authenticate", ""),
            response.headers.get("content-type", ""))


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_user_and_a_wrong_password_look_the_same(server: RunningServer, path: str) -> None:
    attempt = PATHS[path]
    # From an address of its own (127.0.0.0/8 all reaches the server): the per-address limit is each path's.
    source = f"127.0.3.{list(PATHS).index(path) + 1}"
    transport = httpx.HTTPTransport(local_address=source, verify=server.ssl_context())
    with httpx.Client(base_url=server.url, transport=transport, timeout=60) as client:
        known = attempt(client, f"real-{path}", "a-wrong-password")
        unknown = attempt(client, f"ghost-{path}", "a-wrong-password")
        assert known.status_code == 401, known.text[:300]
        assert _answer(known, f"real-{path}") == _answer(unknown, f"ghost-{path}")
        # Further failures lock both out alike: the lockout tells nothing either.
        for user in (f"real-{path}", f"ghost-{path}"):
            statuses = [attempt(client, user, "a-wrong-password").status_code for _ in range(ATTEMPTS)]
            assert statuses == [401] * (ATTEMPTS - 1) + [429], (user, statuses)
        locked = [attempt(client, user, "a-wrong-password") for user in (f"real-{path}", f"ghost-{path}")]
        assert [r.status_code for r in locked] == [429, 429]
        assert all(int(r.headers["retry-after"]) > 0 for r in locked)
        # ... and while locked out, even the right password is refused the same way.
        assert attempt(client, f"real-{path}", "the-right-password").status_code == 429
