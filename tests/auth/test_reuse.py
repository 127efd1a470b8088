"""Reusing a just-issued access token on `GET /auth/token` (secreg.auth.reuse), over a real TLS server: the
same caller asking again gets the same token, with its true issue time and lifetime, and never once anything
that would change a fresh token's answer has changed (password, user, revocation, policy, groups, window)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

from secreg.auth.accounts import Accounts
from secreg.auth.groups import GroupStore
from secreg.auth.reuse import TokenReuse
from secreg.auth.revocation import LOCAL_FILE, LocalRevocations
from secreg.auth.scope import Access
from secreg.auth.server import TokenService
from secreg.auth.tokens import IssuedToken, TokenVerifier
from secreg.auth.users import UserStore

ALICE = ("alice", "alice-password")
PULL = {"service": "secreg", "scope": "repository:alice/app:pull,push"}


@dataclass
class Clock:
    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Server:
    client: httpx.Client
    service: TokenService
    auth_dir: Path
    clock: Clock = field(default_factory=Clock)

    def token(self, auth: tuple[str, str] | None = ALICE, **params: str) -> httpx.Response:
        return self.client.get("/auth/token", params={**PULL, **params}, auth=auth)


@pytest.fixture()
def server(auth_dir: Path, serve_tokens: Callable[..., tuple[str, TokenService, httpx.Client]]) -> Server:
    clock = Clock()
    _, service, client = serve_tokens(clock=clock, reuse=10)
    return Server(client, service, auth_dir, clock)


def token_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def access_of(verifier: TokenVerifier, token: str) -> set[tuple[str, str, frozenset[str]]]:
    return {(a.type, a.name, a.actions) for a in verifier.verify(token).access}


def test_the_same_caller_gets_the_same_token_with_its_true_lifetime(server: Server,
                                                                    verifier: TokenVerifier) -> None:
    first = server.token()
    server.clock.offset = 5  # within the 10 s window
    again = server.token()
    assert token_of(again) == token_of(first)
    assert again.json() == first.json()
    claims = jwt.decode(token_of(again), options={"verify_signature": False})
    body = again.json()
    issued_at = datetime.datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    # token.md: expires_in counts from issued_at; both are the token's own.
    assert issued_at.timestamp() == claims["iat"]
    assert claims["iat"] + body["expires_in"] == claims["exp"]
    assert access_of(verifier, token_of(again)) == {("repository", "alice/app", frozenset({"pull", "push"}))}


def test_past_the_window_a_fresh_token(server: Server) -> None:
    first = token_of(server.token())
    server.clock.offset = 11
    fresh = server.token()
    assert token_of(fresh) != first
    claims = jwt.decode(token_of(fresh), options={"verify_signature": False})
    assert claims["iat"] >= int(time.time()) + 10
    assert token_of(server.token()) == token_of(fresh)  # and that one is reused in turn


def test_another_user_scope_or_anonymous_is_never_given_the_token(server: Server,
                                                                  verifier: TokenVerifier) -> None:
    alice = token_of(server.token())
    other_scope = token_of(server.token(scope="repository:alice/app:pull"))
    assert other_scope != alice
    assert access_of(verifier, other_scope) == {("repository", "alice/app", frozenset({"pull"}))}
    bob = token_of(server.token(auth=("bob", "bob-password")))
    assert bob != alice
    assert access_of(verifier, bob) == set()  # bob may not touch alice/app
    anonymous = token_of(server.token(auth=None))
    assert anonymous not in (alice, bob)
    assert verifier.verify(anonymous).subject == ""


def test_a_wrong_password_is_refused_and_counted_while_a_token_is_reusable(server: Server) -> None:
    token_of(server.token())
    for _ in range(3):
        assert server.token(auth=("alice", "wrong-password")).status_code == 401
    assert server.token().status_code == 429  # the right password too: the lockout holds, reuse or not


def test_a_password_change_gives_a_fresh_token_or_a_refusal(server: Server) -> None:
    before = token_of(server.token())
    # `secreg user passwd alice` from another process: only the file changes.
    UserStore(server.auth_dir / "htpasswd", rounds=4).set_password("alice", "new-alice-password")
    assert server.token().status_code == 401
    after = token_of(server.token(auth=("alice", "new-alice-password")))
    assert after != before


def test_a_deleted_user_is_refused(server: Server) -> None:
    token_of(server.token())
    UserStore(server.auth_dir / "htpasswd", rounds=4).delete("alice")
    assert server.token().status_code == 401


def test_a_revocation_gives_a_fresh_token(server: Server) -> None:
    before = token_of(server.token())
    accounts = Accounts(UserStore(server.auth_dir / "htpasswd", rounds=4), GroupStore(server.auth_dir / "groups"),
                        LocalRevocations(server.auth_dir / LOCAL_FILE, 30 * 24 * 3600))
    accounts.revoke("alice", by="test")  # `secreg user revoke alice`
    after = token_of(server.token())
    assert after != before


def test_a_policy_or_group_change_gives_a_token_with_exactly_the_new_grant(server: Server,
                                                                           verifier: TokenVerifier) -> None:
    policy = server.auth_dir / "policy.yaml"
    shared = {"scope": "repository:shared/x:pull"}
    assert access_of(verifier, token_of(server.token(**shared))) == {
        ("repository", "shared/x", frozenset({"pull"}))}
    policy.write_text(policy.read_text().replace('repository: "shared/*"', 'repository: "elsewhere/*"'))
    assert access_of(verifier, token_of(server.token(**shared))) == set()
    # admins may do everything: joining the group changes the grant at once.
    admin_scope = {"scope": "repository:team/app:pull"}
    assert access_of(verifier, token_of(server.token(**admin_scope))) == set()
    GroupStore(server.auth_dir / "groups").add("alice", "admins")
    assert access_of(verifier, token_of(server.token(**admin_scope))) == {
        ("repository", "team/app", frozenset({"pull"}))}
    GroupStore(server.auth_dir / "groups").remove("alice", "admins")
    assert access_of(verifier, token_of(server.token(**admin_scope))) == set()


def test_docker_login_still_gets_its_own_refresh_token(server: Server) -> None:
    login = {"account": "alice", "client_id": "docker", "offline_token": "true"}
    first, second = server.token(**login).json(), server.token(**login).json()
    assert first["token"] == second["token"]
    assert first["refresh_token"] != second["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": second["refresh_token"], "client_id": "docker",
            "service": "secreg"}
    assert server.client.post("/auth/token", data=form).status_code == 200


def issued(now: float) -> IssuedToken:
    return IssuedToken("t", 300, datetime.datetime.fromtimestamp(int(now), datetime.UTC))


def test_reuse_is_bounded_and_needs_a_known_revocation_list() -> None:
    now = [1_000_000.0]
    reuse = TokenReuse(10, 300, max_entries=4, clock=lambda: now[0])
    generation = object()
    key = reuse.key("alice", "fpr", [Access.repository("alice/app", "pull")])
    reuse.put(key, generation, issued(now[0]), b"{}")
    assert reuse.get(key, generation) is not None
    assert reuse.get(key, object()) is None  # the list changed
    reuse.put(key, None, issued(now[0]), b"{}")
    assert reuse.get(key, None) is None  # with Redis (no cheap generation): never reused
    for n in range(10):
        reuse.put(reuse.key(f"u{n}", None, []), generation, issued(now[0]), b"{}")
    assert len(reuse._entries) <= 4
    # A token must keep 60 s to live (token.md): a 70 s lifetime allows 10 s of reuse, 60 s none.
    assert TokenReuse(30, 70).seconds == 10
    assert TokenReuse(30, 60).seconds == 0
