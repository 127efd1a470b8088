"""The token server over a real Hypercorn TLS listener on 127.0.0.1."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from secreg.auth.ratelimit import RateLimiter
from secreg.auth.scope import Access
from secreg.auth.server import TokenService
from secreg.auth.tokens import TokenVerifier
from secreg.auth.users import UserStore
from secreg.tls import CertificateFiles

DOCKER_LOGIN = {"service": "secreg", "account": "alice", "client_id": "docker", "offline_token": "true"}


@dataclass
class Server:
    url: str
    service: TokenService
    client: httpx.Client
    auth_dir: Path


@pytest.fixture()
def server(auth_dir: Path, serve_tokens: Callable[..., tuple[str, TokenService, httpx.Client]]) -> Server:
    url, service, client = serve_tokens()
    return Server(url, service, client, auth_dir)


def access_of(verifier: TokenVerifier, token: str) -> set[tuple[str, str, frozenset[str]]]:
    return {(a.type, a.name, a.actions) for a in verifier.verify(token).access}


def test_docker_login_shape_gets_a_refresh_token(server: Server, verifier: TokenVerifier) -> None:
    response = server.client.get("/auth/token", params=DOCKER_LOGIN, auth=("alice", "alice-password"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at", "refresh_token"}
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    issued = datetime.datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert abs((datetime.datetime.now(datetime.UTC) - issued).total_seconds()) < 60
    claims = verifier.verify(body["token"])
    assert claims.subject == "alice" and claims.access == ()


def test_refresh_grant_with_scope(server: Server, verifier: TokenVerifier) -> None:
    login = server.client.get("/auth/token", params=DOCKER_LOGIN, auth=("alice", "alice-password")).json()
    response = server.client.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": login["refresh_token"],
            "service": "secreg",
            "client_id": "docker",
            "scope": "repository:alice/app:pull,push",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "repository:alice/app:pull,push"
    assert body["refresh_token"] == login["refresh_token"]  # not rotated
    assert body["expires_in"] == 300 and body["issued_at"].endswith("Z")
    assert access_of(verifier, body["access_token"]) == {
        ("repository", "alice/app", frozenset({"pull", "push"}))
    }
    assert verifier.verify(body["access_token"]).subject == "alice"


def test_password_grant(server: Server, verifier: TokenVerifier) -> None:
    form = {
        "grant_type": "password",
        "username": "bob",
        "password": "bob-password",
        "service": "secreg",
        "client_id": "tests",
        "scope": "repository:bob/x:pull repository:shared/y:pull,push",
    }
    online = server.client.post("/auth/token", data=form)
    assert online.status_code == 200, online.text
    assert "refresh_token" not in online.json()
    assert access_of(verifier, online.json()["access_token"]) == {
        ("repository", "bob/x", frozenset({"pull"})),
        ("repository", "shared/y", frozenset({"pull"})),
    }
    assert online.json()["scope"] == "repository:bob/x:pull repository:shared/y:pull"
    offline = server.client.post("/auth/token", data={**form, "access_type": "offline"})
    refresh = offline.json()["refresh_token"]
    again = server.client.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": "tests",
            "scope": "repository:bob/z:push",
        },
    )
    assert access_of(verifier, again.json()["access_token"]) == {("repository", "bob/z", frozenset({"push"}))}


def test_requested_scopes_are_downscoped(
    server: Server, verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "secreg.audit"):
        response = server.client.get(
            "/auth/token",
            params=[
                ("service", "secreg"),
                ("scope", "repository:shared/base:pull,push"),
                ("scope", "repository:bob/secret:pull"),
                ("scope", "repository:alice/app:push repository:alice/app:delete"),
                ("scope", "registry:catalog:*"),
            ],
            auth=("alice", "alice-password"),
        )
    assert response.status_code == 200, response.text
    assert access_of(verifier, response.json()["token"]) == {
        ("repository", "shared/base", frozenset({"pull"})),
        ("repository", "alice/app", frozenset({"push"})),
        ("registry", "catalog", frozenset({"*"})),
    }
    denied = [r.audit for r in caplog.records if getattr(r, "audit", {}).get("event") == "scope.denied"]
    assert denied and "repository:bob/secret:pull" in denied[0]["denied"]
    assert any(getattr(r, "audit", {}) == {"event": "login.ok", "user": "alice", "client": "127.0.0.1",
                                           "via": "basic"} for r in caplog.records)


def test_admin_gets_everything_including_catalog(server: Server, verifier: TokenVerifier) -> None:
    response = server.client.get(
        "/auth/token",
        params=[
            ("service", "secreg"),
            ("scope", "repository:bob/x:pull,push,delete"),
            ("scope", "registry:catalog:*"),
        ],
        auth=("admin", "admin-password"),
    )
    assert access_of(verifier, response.json()["token"]) == {
        ("repository", "bob/x", frozenset({"pull", "push", "delete"})),
        ("registry", "catalog", frozenset({"*"})),
    }


def test_anonymous(server: Server, verifier: TokenVerifier) -> None:
    response = server.client.get(
        "/auth/token",
        params=[
            ("service", "secreg"),
            ("scope", "repository:public/base:pull,push"),
            ("scope", "repository:alice/app:pull"),
            ("offline_token", "true"),
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body  # no password, no refresh token
    claims = verifier.verify(body["token"])
    assert claims.subject == ""
    assert claims.access == (Access.repository("public/base", "pull"),)


@pytest.mark.parametrize("user", ["alice", "nobody"])
def test_wrong_password_is_401(server: Server, user: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "secreg.audit"):
        response = server.client.get(
            "/auth/token", params={**DOCKER_LOGIN, "account": user}, auth=(user, "wrong-password")
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="secreg"'
    assert response.json() == {
        "errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]
    }
    assert any(f"login.failed user={user} " in r.getMessage() for r in caplog.records)
    assert "wrong-password" not in caplog.text


def test_wrong_password_on_the_oauth_endpoint(server: Server) -> None:
    response = server.client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "alice", "password": "nope-nope", "client_id": "x"},
    )
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert body["errors"][0]["code"] == "UNAUTHORIZED"


def test_malformed_basic_and_other_schemes(server: Server) -> None:
    # Bytes past ASCII (latin-1 in the header): base64 refused them with ValueError, which answered 500.
    for header in ("Basic !!!", "Basic " + "YWxpY2U=", "Bearer abc", "Digest x", b"Basic \xff\xfe", b"Basic YW\xe9"):
        response = server.client.get(
            "/auth/token", params={"service": "secreg"}, headers={"Authorization": header}
        )
        assert response.status_code == 401, header
        assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_account_must_match_the_credentials(server: Server) -> None:
    response = server.client.get(
        "/auth/token", params={**DOCKER_LOGIN, "account": "bob"}, auth=("alice", "alice-password")
    )
    assert response.status_code == 401


def test_rate_limit(server: Server) -> None:
    for _ in range(3):
        assert server.client.get("/auth/token", auth=("alice", "bad-password")).status_code == 401
    locked = server.client.get("/auth/token", auth=("alice", "alice-password"))
    assert locked.status_code == 429
    assert 0 < int(locked.headers["retry-after"]) <= 30
    assert locked.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    # The address is locked too: another account from the same client waits as well.
    assert server.client.get("/auth/token", auth=("bob", "bob-password")).status_code == 429
    post = server.client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "bob", "password": "bob-password", "client_id": "x"},
    )
    assert post.status_code == 429 and "retry-after" in post.headers
    # Anonymous requests need no password check and are not throttled.
    assert server.client.get("/auth/token").status_code == 200


def test_account_lockout_expires(server: Server) -> None:
    server.service.limiter = RateLimiter(attempts=2, window=60, lockout=1)
    for _ in range(2):
        server.client.get("/auth/token", auth=("alice", "bad-password"))
    assert server.client.get("/auth/token", auth=("alice", "alice-password")).status_code == 429
    server.service.limiter._clock = lambda: 10**9  # a while later
    assert server.client.get("/auth/token", auth=("alice", "alice-password")).status_code == 200


def test_refresh_token_revoked_by_password_change_and_deletion(server: Server) -> None:
    refresh = server.client.get("/auth/token", params=DOCKER_LOGIN, auth=("alice", "alice-password")).json()[
        "refresh_token"
    ]
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh,
        "client_id": "docker",
        "service": "secreg",
    }
    assert server.client.post("/auth/token", data=form).status_code == 200
    # `secreg user passwd alice` from another process: only the file changes.
    UserStore(server.auth_dir / "htpasswd", rounds=4).set_password("alice", "new-alice-password")
    revoked = server.client.post("/auth/token", data=form)
    assert revoked.status_code == 401
    assert revoked.json()["error"] == "invalid_grant"
    assert "log in again" in revoked.json()["errors"][0]["message"]
    # A fresh login works again, and deleting the user revokes that one too.
    login = server.client.get("/auth/token", params=DOCKER_LOGIN, auth=("alice", "new-alice-password"))
    fresh = {**form, "refresh_token": login.json()["refresh_token"]}
    assert server.client.post("/auth/token", data=fresh).status_code == 200
    UserStore(server.auth_dir / "htpasswd", rounds=4).delete("alice")
    assert server.client.post("/auth/token", data=fresh).status_code == 401


def test_forged_or_access_token_as_refresh_token(server: Server) -> None:
    access = server.client.get("/auth/token", params=DOCKER_LOGIN, auth=("alice", "alice-password")).json()[
        "token"
    ]
    for token in (access, "garbage"):
        response = server.client.post(
            "/auth/token", data={"grant_type": "refresh_token", "refresh_token": token, "client_id": "docker"}
        )
        assert response.status_code == 401


def test_wrong_service_is_400(server: Server) -> None:
    response = server.client.get("/auth/token", params={"service": "other"}, auth=("alice", "alice-password"))
    assert response.status_code == 400
    assert "unknown service 'other'" in response.json()["errors"][0]["message"]
    post = server.client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": "alice-password",
            "client_id": "x",
            "service": "other",
        },
    )
    assert post.status_code == 400 and post.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "scope", ["repository", "repository:alice/app", "repository:alice/app:", "Repo:x:pull", "a:b:PULL"]
)
def test_unparseable_scope_is_400(server: Server, scope: str) -> None:
    response = server.client.get("/auth/token", params={"scope": scope}, auth=("alice", "alice-password"))
    assert response.status_code == 400
    assert "errors" in response.json()


def test_oauth_request_errors(server: Server) -> None:
    missing_client = server.client.post(
        "/auth/token", data={"grant_type": "password", "username": "alice", "password": "alice-password"}
    )
    assert missing_client.status_code == 400 and "client_id" in missing_client.json()["error_description"]
    unsupported = server.client.post(
        "/auth/token", data={"grant_type": "authorization_code", "client_id": "x"}
    )
    assert unsupported.status_code == 400 and unsupported.json()["error"] == "unsupported_grant_type"
    as_json = server.client.post("/auth/token", json={"grant_type": "password", "client_id": "x"})
    assert as_json.status_code == 400
    no_password = server.client.post(
        "/auth/token", data={"grant_type": "password", "username": "alice", "client_id": "x"}
    )
    assert no_password.status_code == 400
    too_big = server.client.post(
        "/auth/token",
        content=b"a=" + b"x" * 70000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert too_big.status_code == 413 and too_big.json()["errors"][0]["code"] == "SIZE_INVALID"


def test_too_many_scopes(server: Server) -> None:
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("scope", f"repository:alice/r{i}:pull") for i in range(65)
    ]
    assert server.client.get("/auth/token", params=params).status_code == 400


def test_from_settings(
    tmp_path: Path, certs: CertificateFiles, auth_dir: Path, verifier: TokenVerifier
) -> None:
    from secreg.config import load_settings

    settings = load_settings(
        None,
        {"auth": {"directory": str(auth_dir)}, "http": {"tls": {"directory": str(certs.directory)}}},
        environ={},
    )
    service = TokenService.from_settings(settings)
    assert service.service == "secreg"
    assert service.policy.path == auth_dir / "policy.yaml"
    assert service.groups.path == auth_dir / "groups"
    assert service.users.path == auth_dir / "htpasswd"
