"""The whole HTTP surface in one table, and the access each route needs (the one authorization point).

GET/HEAD need pull; POST/PUT/PATCH need pull+push; DELETE needs delete; the catalog needs registry:catalog:*;
`docker search` (`/v1/search`) needs registry:catalog:search, or HTTP Basic credentials the route checks
itself (`accepts_basic`); `/v2/` needs any valid token; `public` routes need nothing. The auth middleware
asks the `AccessResolver`; the observer labels requests with `action_of`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from secreg.api import blobs, listing, manifests, search, uploads
from secreg.api.base import json_response, settles_body
from secreg.auth.scope import DELETE, PULL, PUSH, Access
from secreg.auth.server import TOKEN_PATH
from secreg.names import NAME_PATTERN

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class RouteSpec:
    path: str
    endpoint: Endpoint
    methods: tuple[str, ...]
    kind: str  # "public" | "authenticated" | "repository" | "catalog" | "search"


async def api_version(request: Request) -> Response:
    return json_response({})


NAME = "{name:path}"
REGISTRY_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/v2/", api_version, ("GET",), "authenticated"),
    RouteSpec("/v2/_catalog", listing.catalog, ("GET",), "catalog"),
    RouteSpec(f"/v2/{NAME}/tags/list", listing.list_tags, ("GET",), "repository"),
    RouteSpec(f"/v2/{NAME}/referrers/{{digest}}", listing.referrers, ("GET",), "repository"),
    RouteSpec(f"/v2/{NAME}/manifests/{{reference}}", manifests.get_manifest, ("GET",), "repository"),
    RouteSpec(f"/v2/{NAME}/manifests/{{reference}}", manifests.put_manifest, ("PUT",), "repository"),
    RouteSpec(f"/v2/{NAME}/manifests/{{reference}}", manifests.delete_manifest, ("DELETE",), "repository"),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/", uploads.start_upload, ("POST",), "repository"),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.upload_status, ("GET",), "repository"),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.patch_upload, ("PATCH",), "repository"),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.complete_upload, ("PUT",), "repository"),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.cancel_upload, ("DELETE",), "repository"),
    RouteSpec(f"/v2/{NAME}/blobs/{{digest}}", blobs.get_blob, ("GET",), "repository"),
    RouteSpec(f"/v2/{NAME}/blobs/{{digest}}", blobs.delete_blob, ("DELETE",), "repository"),
    RouteSpec("/v1/_ping", search.ping, ("GET",), "public"),
    RouteSpec("/v1/search", search.search, ("GET",), "search"),
)
SEARCH = Access("registry", "catalog", frozenset({"search"}))
_KIND_OF = {spec.path: spec.kind for spec in REGISTRY_ROUTES}
_OTHER_ACTIONS = {"catalog": "catalog", "search": "search"}


def actions_for(method: str) -> frozenset[str]:
    if method in ("GET", "HEAD"):
        return frozenset({PULL})
    if method == "DELETE":
        return frozenset({DELETE})
    return frozenset({PULL, PUSH})


def action_of(route: str, method: str) -> str:
    """What a request does, for the access log: pull / push / delete on a repository route, catalog,
    search, token (the token endpoint), or "-"."""
    kind = _KIND_OF.get(route)
    if kind == "repository":
        actions = actions_for(method)
        return DELETE if DELETE in actions else PUSH if PUSH in actions else PULL
    if kind is not None:
        return _OTHER_ACTIONS.get(kind, "-")
    return "token" if route == TOKEN_PATH else "-"


_BODY_METHODS = {"POST", "PUT", "PATCH"}


def build_routes(specs: tuple[RouteSpec, ...]) -> list[Route]:
    return [
        Route(spec.path, settles_body(spec.endpoint) if _BODY_METHODS & set(spec.methods) else spec.endpoint,
              methods=list(spec.methods))
        for spec in specs
    ]


class AccessResolver:
    """Maps a request to the access it needs, by matching it against the same table the router uses."""

    def __init__(self, routes: list[Route], specs: tuple[RouteSpec, ...]) -> None:
        self._pairs = list(zip(routes, specs, strict=True))

    def __call__(self, scope: Scope) -> list[Access] | None:
        path: str = scope["path"]
        if not path.startswith(("/v2", "/v1/")):
            return None
        method = scope["method"]
        partial: RouteSpec | None = None
        params: dict[str, str] = {}
        for route, spec in self._pairs:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return _needed(spec, child.get("path_params", {}), method)
            if match is Match.PARTIAL and partial is None:
                partial, params = spec, child.get("path_params", {})
        if partial is not None:  # wrong method: still authenticate before saying so
            return _needed(partial, params, method)
        return [] if path.startswith("/v2") else None

    @staticmethod
    def challenge_hints(scope: Scope) -> list[Access]:
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

    @staticmethod
    def accepts_basic(scope: Scope) -> bool:
        """Routes that check HTTP Basic credentials themselves: the Docker engine's search sends a
        password unless `docker login` stored an identity token."""
        return bool(scope["path"] == "/v1/search")


def _needed(spec: RouteSpec, params: dict[str, str], method: str) -> list[Access] | None:
    if spec.kind == "public":
        return None
    if spec.kind == "authenticated":
        return []
    if spec.kind == "catalog":
        return [Access("registry", "catalog", frozenset({"*"}))]
    if spec.kind == "search":
        return [SEARCH]
    name = params.get("name", "")
    if not NAME_PATTERN.match(name):
        return []  # the handler answers NAME_INVALID; no scope can be formed from such a name
    return [Access("repository", name, actions_for(method))]
