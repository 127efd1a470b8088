"""Authorization derived from the route table, without a server: what each request needs and is asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Match

from secreg.api.routes import REGISTRY_ROUTES, access_table, build_routes
from secreg.app import create_app
from secreg.auth.access import (
    MEMO_ENTRIES,
    SEARCH,
    TOKEN_PATH,
    AccessResolver,
    Need,
    challenge,
    challenge_detail,
)
from secreg.auth.scope import Access
from secreg.config import load_settings
from secreg.scopekeys import ROUTE_MATCH_KEY

RESOLVER = AccessResolver(access_table(build_routes(REGISTRY_ROUTES), REGISTRY_ROUTES))


def scope(method: str, path: str, query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": [],
            "root_path": ""}


def repo(name: str, *actions: str) -> list[Access]:
    return [Access("repository", name, frozenset(actions))]


@pytest.mark.parametrize(("method", "path", "needed"), [
    ("GET", "/v2/team/app/manifests/v1", repo("team/app", "pull")),
    ("HEAD", "/v2/team/app/blobs/sha256:" + "a" * 64, repo("team/app", "pull")),
    ("PUT", "/v2/team/app/manifests/v1", repo("team/app", "pull", "push")),
    ("PATCH", "/v2/a/b/c/blobs/uploads/some-id", repo("a/b/c", "pull", "push")),
    ("DELETE", "/v2/team/app/manifests/v1", repo("team/app", "delete")),
    ("POST", "/v2/team/app/manifests/v1", repo("team/app", "pull", "push")),  # 405 later, auth first
    ("GET", "/v2/_catalog", [Access("registry", "catalog", frozenset({"*"}))]),
    ("GET", "/v1/search", [SEARCH]),
    ("GET", "/v2/", []),
    ("GET", "/v2/no/such/route", []),
    ("GET", "/v2/UPPER/tags/list", []),  # no scope can name it; the handler answers NAME_INVALID
    ("GET", "/v1/_ping", None),
    ("GET", "/healthz", None),
    ("GET", TOKEN_PATH, None),
])
def test_needed(method: str, path: str, needed: list[Access] | None) -> None:
    assert RESOLVER(scope(method, path)) == needed


def test_every_route_names_its_need() -> None:
    assert all(isinstance(spec.need, Need) for spec in REGISTRY_ROUTES)
    assert RESOLVER.accepts_basic(scope("GET", "/v1/search"))
    assert not RESOLVER.accepts_basic(scope("GET", "/v2/_catalog"))


def test_action_labels() -> None:
    assert RESOLVER.action_of("/v2/{name:path}/manifests/{reference}", "PUT") == "push"
    assert RESOLVER.action_of("/v2/{name:path}/blobs/{digest}", "GET") == "pull"
    assert RESOLVER.action_of("/v2/{name:path}/blobs/{digest}", "DELETE") == "delete"
    assert RESOLVER.action_of("/v2/_catalog", "GET") == "catalog"
    assert RESOLVER.action_of("/v1/search", "GET") == "search"
    assert RESOLVER.action_of("/v2/", "GET") == "-"
    assert RESOLVER.action_of(TOKEN_PATH, "GET") == "token"
    assert AccessResolver([]).action_of(TOKEN_PATH, "POST") == "token"


def test_mount_hint_and_challenge() -> None:
    mount = scope("POST", "/v2/team/app/blobs/uploads/", b"mount=sha256:" + b"a" * 64 + b"&from=team/base")
    assert RESOLVER.challenge_hints(mount) == repo("team/base", "pull")
    assert RESOLVER.challenge_hints(scope("POST", "/v2/team/app/blobs/uploads/", b"from=team/base")) == []
    needed = repo("team/app", "pull", "push")
    assert challenge("https://r/auth/token", "svc", needed + repo("team/base", "pull"), "insufficient_scope") == (
        'Bearer realm="https://r/auth/token",service="svc",'
        'scope="repository:team/app:pull,push repository:team/base:pull",error="insufficient_scope"')
    assert challenge_detail(needed) == [
        {"Type": "repository", "Class": "", "Name": "team/app", "Action": "pull"},
        {"Type": "repository", "Class": "", "Name": "team/app", "Action": "push"},
    ]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/"), ("GET", "/v2/team/app/manifests/v1"), ("HEAD", "/v2/team/app/manifests/sha256:" + "a" * 64),
    ("PUT", "/v2/team/app/manifests/v1"), ("DELETE", "/v2/a/b/c/manifests/v1"), ("GET", "/v2/team/app/tags/list"),
    ("GET", "/v2/team/tags/list/tags/list"), ("GET", "/v2/team/app/blobs/sha256:" + "b" * 64),
    ("POST", "/v2/team/app/blobs/uploads/"), ("PATCH", "/v2/team/app/blobs/uploads/some-id"),
    ("GET", "/v2/team/manifests/x/manifests/y"), ("GET", "/v2/_catalog"), ("GET", "/v1/search"),
    ("GET", "/v1/_ping"), ("POST", "/v2/team/app/manifests/v1"), ("GET", "/v2/no/such/route"),
])
def test_the_router_dispatches_to_the_route_the_resolver_matched(tmp_path: Path, method: str, path: str) -> None:
    """`dispatch_matched` skips the router's own search: it must have found the same route (the first full
    match in the whole router, whose other routes come before the registry's)."""
    app = create_app(load_settings(None, {"auth": {"enabled": False}}, base_dir=tmp_path))
    request = scope(method, path)
    app.state.resolver(request)
    full = [r for r in app.router.routes if r.matches(scope(method, path))[0] is Match.FULL]
    if ROUTE_MATCH_KEY in request:
        route, child = request[ROUTE_MATCH_KEY]
        assert full and route is full[0]
        assert child == full[0].matches(scope(method, path))[1]
    else:  # no full match among the registry's routes: the router searches its whole table itself
        assert not any(r in full for r, _ in app.state.resolver._table)


def test_a_repeated_request_is_answered_as_the_first_with_its_own_parameters() -> None:
    """The resolver keeps its answers by (method, path): the second request of a path gets the same needs and
    route, in a child scope of its own (a layer changing one request's path parameters changes no other's), and
    the same path with another method is answered for that method."""
    resolver = AccessResolver(access_table(build_routes(REGISTRY_ROUTES), REGISTRY_ROUTES))
    path = "/v2/team/app/manifests/v1"
    first, second = scope("GET", path), scope("GET", path)
    assert resolver(first) == resolver(second) == repo("team/app", "pull")
    (route1, child1), (route2, child2) = first[ROUTE_MATCH_KEY], second[ROUTE_MATCH_KEY]
    assert route1 is route2 and child1 == child2 == {"endpoint": route1.endpoint,
                                                      "path_params": {"name": "team/app", "reference": "v1"}}
    child1["path_params"]["name"] = "changed"
    answer = resolver(third := scope("GET", path))
    assert answer == repo("team/app", "pull") and third[ROUTE_MATCH_KEY][1]["path_params"]["name"] == "team/app"
    answer.clear()  # a caller's list is its own too
    assert resolver(scope("GET", path)) == repo("team/app", "pull")
    assert resolver(put := scope("PUT", path)) == repo("team/app", "pull", "push") and ROUTE_MATCH_KEY in put
    for _ in range(2):  # a partial match (405 later), kept too
        assert resolver(post := scope("POST", path)) == repo("team/app", "pull", "push")
        assert ROUTE_MATCH_KEY not in post


def test_the_resolvers_memory_is_bounded() -> None:
    resolver = AccessResolver(access_table(build_routes(REGISTRY_ROUTES), REGISTRY_ROUTES))
    for n in range(MEMO_ENTRIES + 100):
        assert resolver(scope("GET", f"/v2/team/app{n}/manifests/v1")) == repo(f"team/app{n}", "pull")
    assert len(resolver._memo) == MEMO_ENTRIES
    assert resolver(scope("GET", "/v2/team/app0/manifests/v1")) == repo("team/app0", "pull")  # matched again
    long = scope("GET", "/v2/" + "a" * 600 + "/manifests/v1")  # past the length kept: matched, never kept
    assert resolver(long) == repo("a" * 600, "pull") and ROUTE_MATCH_KEY in long
    assert ("GET", long["path"]) not in resolver._memo
