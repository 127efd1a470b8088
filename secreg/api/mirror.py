"""containerd's mirror requests: `GET /v2/<name>/...?ns=<upstream host>` (a `hosts.toml` host entry sends the
registry it stands in for as `ns`). Pure ASGI, in front of authorization: a request whose `ns` is the host of a
configured upstream continues as a request for the cache repository under that upstream's prefix
(`?ns=docker.io` + `library/alpine` -> `hub/library/alpine`), so policy, routing and logging see the local
name. Any other `ns` (our own host, an unknown registry) leaves the request as it is."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from secreg.names import NAME_PATTERN
from secreg.proxy.routing import Router

_MARKERS = ("/manifests/", "/blobs/", "/tags/list", "/referrers/")


class MirrorNamespaceMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"ns=" in scope.get("query_string", b""):
            scope = self._rewritten(scope)
        await self.app(scope, receive, send)

    def _rewritten(self, scope: Scope) -> Scope:
        path: str = scope["path"]
        if not path.startswith("/v2/"):
            return scope
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        upstream = self.router.upstream_of_host(query.get("ns", ""))
        if upstream is None or not upstream.prefix:
            return scope
        rest = path[len("/v2/"):]
        cut = min((i for i in (rest.find(m) for m in _MARKERS) if i > 0), default=-1)
        if cut < 0 or not NAME_PATTERN.match(rest[:cut]):
            return scope  # not a repository route, or a name the handlers refuse anyway
        local = f"/v2/{upstream.prefix}/{rest}"
        return {**scope, "path": local, "raw_path": local.encode()}
