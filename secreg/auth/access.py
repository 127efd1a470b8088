"""Authorization derived from the route table: (route, method, query) -> the scopes a request needs, and the
`WWW-Authenticate` challenge that asks for exactly them.

Each route of `secreg.api.routes` names a `Need`:

    PUBLIC          nothing (`/v1/_ping`)
    AUTHENTICATED   any valid token (`GET /v2/`)
    REPOSITORY      on the route's {name}: GET/HEAD pull; POST/PUT/PATCH pull+push; DELETE delete
    CATALOG         registry:catalog:*
    SEARCH          registry:catalog:search, or HTTP Basic credentials the route checks itself (`docker search`
                    sends a password unless `docker login` stored an identity token)

`AccessResolver` matches a request against the same routes the router uses (and leaves the route it found in
the scope, so the router need not search again: `secreg.api.routes.dispatch_matched`); the auth middleware asks
it what to demand and builds its challenge with `challenge`; the observer labels requests with `action_of`. As the
reference registry (registry/auth/token/accesscontroller.go): `error="invalid_token"` for a bad token,
`error="insufficient_scope"` for a good one that grants too little, so the client fetches a new token.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any
from urllib.parse import parse_qs

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from secreg.auth.scope import DELETE, PULL, PUSH, Access, format_challenge_scope
from secreg.names import HOST_PATTERN, NAME_PATTERN
from secreg.scopekeys import ROUTE_MATCH_KEY

__all__ = ["SEARCH", "TOKEN_PATH", "AccessResolver", "Need", "action_of", "actions_for", "allows", "challenge",
           "challenge_detail", "mount_hints", "realm_from_request"]

TOKEN_PATH = "/auth/token"
SEARCH = Access("registry", "catalog", frozenset({"search"}))
CATALOG = Access("registry", "catalog", frozenset({"*"}))


class Need(Enum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    REPOSITORY = "repository"
    CATALOG = "catalog"
    SEARCH = "search"


def actions_for(method: str) -> frozenset[str]:
    if method in ("GET", "HEAD"):
        return frozenset({PULL})
    if method == "DELETE":
        return frozenset({DELETE})
    return frozenset({PULL, PUSH})


def needed(need: Need, params: dict[str, Any], method: str) -> list[Access] | None:
    """The accesses a request on a route with `need` requires; None: none at all (not even a token)."""
    if need is Need.PUBLIC:
        return None
    if need is Need.AUTHENTICATED:
        return []
    if need is Need.CATALOG:
        return [CATALOG]
    if need is Need.SEARCH:
        return [SEARCH]
    name = str(params.get("name", ""))
    if not NAME_PATTERN.match(name):
        return []  # the handler answers NAME_INVALID; no scope can be formed from such a name
    return [Access("repository", name, actions_for(method))]


def action_of(need: Need | None, method: str, route: str = "") -> str:
    """What a request does, for the access log: pull / push / delete on a repository route, catalog, search,
    token (the token endpoint), or "-"."""
    if need is Need.REPOSITORY:
        actions = actions_for(method)
        return DELETE if DELETE in actions else PUSH if PUSH in actions else PULL
    if need is Need.CATALOG or need is Need.SEARCH:
        return str(need.value)
    return "token" if need is None and route == TOKEN_PATH else "-"


def allows(identity: Any, resource_type: str, name: str, action: str) -> bool:
    """Whether a request's identity (None: auth is off) grants `action` on a resource other than the route's
    own: the source repository of a cross-repository mount."""
    return True if identity is None else bool(identity.allows(resource_type, name, action))


def mount_hints(scope: Scope) -> list[Access]:
    """Scopes a challenge names besides the required ones. A cross-repository mount (`POST
    .../blobs/uploads/?mount=D&from=R`) needs pull on R, as the reference registry asks; a token without it
    still may upload (the mount quietly becomes an ordinary upload session)."""
    query: bytes = scope.get("query_string", b"")
    if scope["method"] != "POST" or b"from=" not in query or not scope["path"].endswith("/blobs/uploads/"):
        return []
    params = parse_qs(query.decode("latin-1"))
    source = params.get("from", [""])[0]
    if params.get("mount") and NAME_PATTERN.match(source):
        return [Access("repository", source, frozenset({PULL}))]
    return []


# (method, path) answers a resolver keeps: a pull is the same few paths requested again and again. Any client
# can fill them (the resolver runs before the token is checked): at most ~2 MiB per worker.
MEMO_ENTRIES = 1024
_MEMO_PATH = 512  # longer paths are matched every time (names are at most 255 characters)


class AccessResolver:
    """What a request needs, found by matching it against the routes the router serves, each with its `Need`.

    The answer depends only on the method and the path (route matching and `needed` are pure), so the last
    `MEMO_ENTRIES` answers are kept: a repeated request costs one dictionary lookup instead of a regular
    expression per route before its own."""

    def __init__(self, table: Sequence[tuple[BaseRoute, Need]]) -> None:
        self._table = list(table)
        self._by_path = {route.path: need for route, need in self._table if isinstance(route, Route)}
        # (method, path) -> (the full match: route and its child scope, or None; what the request needs)
        self._memo: dict[tuple[str, str], tuple[tuple[BaseRoute, dict[str, Any]] | None, list[Access] | None]] = {}

    def _match(self, scope: Scope) -> tuple[Need, dict[str, Any]] | None:
        partial: tuple[Need, dict[str, Any]] | None = None
        for route, need in self._table:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope[ROUTE_MATCH_KEY] = (route, child)
                return need, child.get("path_params", {})
            if match is Match.PARTIAL and partial is None:
                partial = need, child.get("path_params", {})
        return partial  # wrong method: still authenticate before saying so

    def __call__(self, scope: Scope) -> list[Access] | None:
        path: str = scope["path"]
        if not path.startswith(("/v2", "/v1/")):
            return None
        if scope.get("root_path") or "path_params" in scope or len(path) > _MEMO_PATH:
            return self._resolve(scope)  # what the routes match then is not a function of the path alone
        key = (scope["method"], path)
        memo = self._memo.get(key)
        if memo is None:
            scope.pop(ROUTE_MATCH_KEY, None)
            answer = self._resolve(scope)
            matched = scope.get(ROUTE_MATCH_KEY)
            if len(self._memo) >= MEMO_ENTRIES:
                del self._memo[next(iter(self._memo))]  # the oldest
            self._memo[key] = memo = (matched, answer)
            if matched is None:
                return answer
        matched, answer = memo
        if matched is not None:
            # Each request gets its own child scope and parameters: handlers and layers may change theirs.
            route, child = matched
            scope[ROUTE_MATCH_KEY] = (route, {**child, "path_params": dict(child["path_params"])})
        return None if answer is None else list(answer)

    def _resolve(self, scope: Scope) -> list[Access] | None:
        found = self._match(scope)
        if found is None:
            return [] if scope["path"].startswith("/v2") else None
        return needed(found[0], found[1], scope["method"])

    def accepts_basic(self, scope: Scope) -> bool:
        """Routes that check HTTP Basic credentials themselves (the search)."""
        found = self._match(scope) if scope["path"].startswith("/v1/") else None
        return found is not None and found[0] is Need.SEARCH

    @staticmethod
    def challenge_hints(scope: Scope) -> list[Access]:
        return mount_hints(scope)

    def action_of(self, route: str, method: str) -> str:
        """`action_of` for a matched route template (the observer knows the template, not the Need)."""
        return action_of(self._by_path.get(route), method, route)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(realm: str, service: str, asked: list[Access], error: str | None) -> str:
    """The `WWW-Authenticate` value asking for `asked` (what the route needs, then any hints)."""
    value = f"Bearer realm={_quote(realm)},service={_quote(service)}"
    if asked:
        value += f",scope={_quote(format_challenge_scope(asked))}"
    if error:
        value += f",error={_quote(error)}"
    return value


def challenge_detail(needed: list[Access]) -> list[dict[str, str]]:
    """The 401 body's detail: every (type, name, action) the route needs, shaped as the reference registry's."""
    return [
        {"Type": a.base_type, "Class": a.type[len(a.base_type) + 1 : -1], "Name": a.name, "Action": action}
        for a in needed
        for action in sorted(a.actions)
    ]


def realm_from_request(scope: Scope) -> str:
    """The token endpoint on the host the client reached, when no realm is configured."""
    scheme = "http" if scope.get("scheme") == "http" else "https"
    host = ""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
            break
    if not HOST_PATTERN.match(host):  # it goes into the realm URL inside a quoted challenge
        server = scope.get("server")
        if not server:
            host = "localhost"
        else:
            addr, port = server[0], server[1]
            addr = f"[{addr}]" if ":" in addr else addr
            default = 80 if scheme == "http" else 443
            host = addr if port in (None, default) else f"{addr}:{port}"
    return f"{scheme}://{host}{TOKEN_PATH}"
