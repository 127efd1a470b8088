"""The whole HTTP surface in one table; each route names the access it needs (a `Need`). (The token
endpoint belongs to the token server, `secreg.auth.server.token_routes`, which authenticates by password.)

`secreg.auth.access` turns the table into authorization (which scopes a request needs, what its challenge
asks for); the router serves the same `Route` objects, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from secreg.api import blobs, health, listing, manifests, metrics, search, uploads
from secreg.api.base import API_VERSION_RAW, RawResponse, settles_body
from secreg.auth.access import Need
from secreg.scopekeys import ROUTE_MATCH_KEY

__all__ = ["HEALTH_ROUTES", "METRICS_ROUTES", "REGISTRY_ROUTES", "RouteSpec", "access_table", "build_routes",
           "dispatch_matched"]

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class RouteSpec:
    path: str
    endpoint: Endpoint
    methods: tuple[str, ...]
    need: Need


_API_VERSION_HEAD = (API_VERSION_RAW, (b"content-length", b"2"), (b"content-type", b"application/json"))


async def api_version(request: Request) -> Response:
    return RawResponse(200, b"{}", list(_API_VERSION_HEAD))  # json_response({}), its head and body made once


NAME = "{name:path}"
PUBLIC, AUTHENTICATED, REPOSITORY, CATALOG, SEARCH = (
    Need.PUBLIC, Need.AUTHENTICATED, Need.REPOSITORY, Need.CATALOG, Need.SEARCH)
REGISTRY_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/v2/", api_version, ("GET",), AUTHENTICATED),
    RouteSpec("/v2/_catalog", listing.catalog, ("GET",), CATALOG),
    RouteSpec(f"/v2/{NAME}/tags/list", listing.list_tags, ("GET",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/referrers/{{digest}}", listing.referrers, ("GET",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/manifests/{{reference}}", manifests.get_manifest, ("GET",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/manifests/{{reference}}", manifests.put_manifest, ("PUT",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/manifests/{{reference}}", manifests.delete_manifest, ("DELETE",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/", uploads.start_upload, ("POST",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.upload_status, ("GET",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.patch_upload, ("PATCH",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.complete_upload, ("PUT",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/blobs/uploads/{{upload_id}}", uploads.cancel_upload, ("DELETE",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/blobs/{{digest}}", blobs.get_blob, ("GET",), REPOSITORY),
    RouteSpec(f"/v2/{NAME}/blobs/{{digest}}", blobs.delete_blob, ("DELETE",), REPOSITORY),
    RouteSpec("/v1/_ping", search.ping, ("GET",), PUBLIC),
    RouteSpec("/v1/search", search.search, ("GET",), SEARCH),
)
# Served by every role; no token (`/metrics` checks its own: loopback or `metrics.token`).
HEALTH_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/healthz", health.healthz, ("GET",), PUBLIC),
    RouteSpec("/readyz", health.readyz, ("GET",), PUBLIC),
)
METRICS_ROUTES: tuple[RouteSpec, ...] = (RouteSpec("/metrics", metrics.metrics_endpoint, ("GET",), PUBLIC),)

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def _direct(endpoint: Endpoint) -> ASGIApp:
    """`endpoint` as an ASGI app without Starlette's per-route exception wrapper (`request_response`): its errors
    reach the app's exception layer, which has the same handlers. Only for routes that read no body: the
    `Request` that layer hands a handler then sees the same unread stream as the endpoint's."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


def build_routes(specs: tuple[RouteSpec, ...]) -> list[Route]:
    """The Starlette routes of `specs`; an endpoint that takes a body reads what is left of it on an error."""
    routes = []
    for spec in specs:
        if _BODY_METHODS & set(spec.methods):
            routes.append(Route(spec.path, settles_body(spec.endpoint), methods=list(spec.methods)))
        else:
            route = Route(spec.path, spec.endpoint, methods=list(spec.methods))
            route.app = _direct(spec.endpoint)
            routes.append(route)
    return routes


def access_table(routes: list[Route], specs: tuple[RouteSpec, ...]) -> list[tuple[Route, Need]]:
    """Each built route with the need its spec names: what `secreg.auth.access.AccessResolver` matches."""
    return [(route, spec.need) for route, spec in zip(routes, specs, strict=True)]


def dispatch_matched(router: Router) -> ASGIApp:
    """`router`'s dispatch, going straight to the route the auth middleware's resolver matched (`access_table`'s
    routes are the router's own `Route` objects, and every route before them in the router serves a path outside
    `/v2/`, so the router's first full match is the same one); else the router's own search. Saves matching the
    path against the table twice per request."""
    search = router.app

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        matched = scope.pop(ROUTE_MATCH_KEY, None)
        if matched is None:
            await search(scope, receive, send)
            return
        route, child = matched
        scope.setdefault("router", router)
        scope["route"] = route
        scope.update(child)
        await route.app(scope, receive, send)  # a full match: the method is the route's

    return dispatch
