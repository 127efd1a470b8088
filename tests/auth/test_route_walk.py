"""Every route the server serves is authorized: the test walks the route table of the whole application (registry
API, token server, health, metrics, the web UI's pages and the pull-through cache's `?ns=` rewriting) as
`create_app` builds it with everything on, and asks a real server each route with no credentials, with a token
granting too little and with one granting enough. A route added without authorization fails here, as does a
route this file has not been told about: add it to `OUTSIDE_AUTH` (saying who may call it and why) or give it a
need in `secreg.api.routes` / `secreg.ui.app.PAGES`.

The scope each method needs is written out here rather than taken from `secreg.auth.access`, so the table and
the middleware are checked against what the product promises (the reference registry's mapping)."""

from __future__ import annotations

import base64
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from secreg.app import create_app
from secreg.config import load_settings
from secreg.ui.app import PAGES
from tests.oci import push_image
from tests.server import RunningServer, run_secreg, token
from tests.ui.conftest import add_user, csrf_of, ui_login

# Routes outside the token check, each with who may call it: a new one is a failure until listed here.
OUTSIDE_AUTH = {
    ("/auth/token", "GET"): "the token server: HTTP Basic credentials or anonymous, downscoped by the policy",
    ("/auth/token", "POST"): "the token server: password or refresh-token grant",
    ("/auth/revoke", "POST"): "RFC 7009: whoever holds a refresh token may revoke it",
    ("/healthz", "GET"): "liveness, no data",
    ("/readyz", "GET"): "readiness, no data",
    ("/metrics", "GET"): "metrics.token (or loopback clients when none is set)",
    ("/v1/_ping", "GET"): "docker's v1 probe, no data",
    ("/", "GET"): "redirect to /ui/",
}
METHOD_ACTIONS = {"GET": "pull", "HEAD": "pull", "POST": "pull,push", "PUT": "pull,push", "PATCH": "pull,push",
                  "DELETE": "delete"}
REPO = "walk/app"
DIGEST = "sha256:" + "0" * 64
PARAMS = {"name": REPO, "reference": "v1", "digest": DIGEST, "upload_id": "0f0e5c3c-5ab2-4c6c-9d1a-9a4a3c2b1a00",
          "tag": "v1", "user": "dev"}
METRICS_TOKEN = "walk-metrics-secret"
POLICY = """\
rules:
  - account: group:admins
    repository: "**"
    actions: ["*"]
    catalog: true
  - account: dev
    repository: "walk/**"
    actions: [pull]
"""
DEV_PASSWORD = "walk-dev-password"
CONFIG = {
    "storage": {"delete": {"enabled": True}},
    "metrics": {"token": METRICS_TOKEN},
    # never reached: the cache's routing is what is checked, not a fetch
    "proxy": {"upstreams": [{"name": "hub", "url": "https://127.0.0.1:9", "prefix": "hub", "hosts": ["docker.io"]}]},
}


@dataclass(frozen=True)
class Walked:
    path: str  # the full template, mounts included
    method: str


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[Walked]:
    for route in routes:
        if isinstance(route, Mount):
            if prefix + route.path == "/ui/static":
                continue  # files of the package: stylesheets and scripts
            yield from _walk(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                yield Walked(prefix + route.path, method)
        else:
            raise AssertionError(f"a route of a kind this walk does not know: {route!r}")


def _concrete(template: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PARAMS[m.group(1)], template)


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, list[Walked]]]:
    workdir = tmp_path_factory.mktemp("walk")
    (workdir / "auth").mkdir(mode=0o700)
    (workdir / "auth" / "policy.yaml").write_text(POLICY)
    with run_secreg(workdir, CONFIG) as server:
        add_user(workdir, "dev", DEV_PASSWORD)
        settings = load_settings(workdir / "config.yml", base_dir=workdir)
        app = create_app(settings, "all")  # the same table the server built from the same file
        yield server, sorted(set(_walk(app.router.routes)), key=lambda w: (w.path, w.method))


def test_every_route_is_known_to_need_authorization(walked: tuple[RunningServer, list[Walked]]) -> None:
    _, routes = walked
    pages = {(f"/ui{p.path}", m) for p in PAGES for m in (*p.methods, *(("HEAD",) if "GET" in p.methods else ()))}
    unknown = [w for w in routes
               if (w.path, "GET" if w.method == "HEAD" else w.method) not in OUTSIDE_AUTH
               and not w.path.startswith(("/v2/", "/v1/search")) and (w.path, w.method) not in pages]
    assert unknown == [], "routes nobody said who may call: add a need (routes.py, PAGES) or list them"
    served = {(w.path, w.method) for w in routes}
    assert {k for k in OUTSIDE_AUTH if k not in served} == set(), "listed routes the server no longer has"
    assert {(p, m) for p, m in pages if m != "HEAD"} <= served
    assert sum(w.path.startswith("/v2/") for w in routes) >= 14  # the walk sees the registry API


def _challenge_scope(response: httpx.Response) -> str | None:
    match = re.search(r'scope="([^"]*)"', response.headers.get("www-authenticate", ""))
    return match.group(1) if match else None


def _needed_scope(walked: Walked) -> str | None:
    """What the product promises a registry route needs: None for "any valid token"."""
    if walked.path == "/v2/_catalog":
        return "registry:catalog:*"
    if "{name:path}" in walked.path:
        return f"repository:{REPO}:{METHOD_ACTIONS[walked.method]}"
    assert walked.path == "/v2/", f"a registry route this test does not know the need of: {walked}"
    return None


def _registry_routes(routes: list[Walked]) -> list[Walked]:
    return [w for w in routes if w.path.startswith("/v2/")]


def test_anonymous_requests_get_the_challenge_for_exactly_the_route_scope(
        walked: tuple[RunningServer, list[Walked]]) -> None:
    server, routes = walked
    with server.client() as client:
        for route in _registry_routes(routes):
            r = client.request(route.method, _concrete(route.path))
            assert r.status_code == 401, (route, r.status_code, r.text[:300])
            assert r.headers["www-authenticate"].startswith("Bearer realm="), route
            assert _challenge_scope(r) == _needed_scope(route), route
        search = client.get("/v1/search", params={"q": "walk"})
        assert search.status_code == 401 and "Basic" in search.headers["www-authenticate"]


@pytest.mark.parametrize("granted", ["pull", "pull,push", "delete"])
def test_a_token_opens_exactly_the_routes_its_actions_allow(walked: tuple[RunningServer, list[Walked]],
                                                            granted: str) -> None:
    server, routes = walked
    assert server.admin_password
    bearer = token(server, "admin", server.admin_password, f"repository:{REPO}:{granted}")
    catalog = token(server, "admin", server.admin_password, "registry:catalog:*")
    with server.client(headers={"Authorization": f"Bearer {bearer}"}) as client:
        for route in _registry_routes(routes):
            needed = _needed_scope(route)
            r = client.request(route.method, _concrete(route.path))
            allowed = needed is None or (needed.startswith("repository:")
                                         and set(needed.rsplit(":", 1)[1].split(",")) <= set(granted.split(",")))
            if allowed:
                assert r.status_code not in (401, 403), (route, granted, r.status_code, r.text[:300])
            else:
                assert r.status_code == 401, (route, granted, r.status_code, r.text[:300])
                assert 'error="insufficient_scope"' in r.headers["www-authenticate"], route
                assert _challenge_scope(r) == needed, route
    with server.client(headers={"Authorization": f"Bearer {catalog}"}) as client:
        assert client.get("/v2/_catalog").status_code == 200
        assert client.get(f"/v2/{REPO}/tags/list").status_code == 401  # the catalog scope is no pull


def test_a_mirror_request_is_authorized_as_the_cache_repository_it_becomes(
        walked: tuple[RunningServer, list[Walked]]) -> None:
    """containerd's `?ns=docker.io` turns `library/alpine` into `hub/library/alpine` before authorization: a token
    for the upstream's name opens nothing, and the challenge names the local one."""
    server, _ = walked
    assert server.admin_password
    upstream_name = token(server, "admin", server.admin_password, "repository:library/alpine:pull")
    with server.client(headers={"Authorization": f"Bearer {upstream_name}"}) as client:
        for path in ("manifests/latest", f"blobs/{DIGEST}", "tags/list"):
            r = client.get(f"/v2/library/alpine/{path}", params={"ns": "docker.io"})
            assert r.status_code == 401, (path, r.text)
            assert _challenge_scope(r) == "repository:hub/library/alpine:pull"
        r = client.post("/v2/library/alpine/blobs/uploads/", params={"ns": "docker.io"})
        assert r.status_code == 401 and _challenge_scope(r) == "repository:hub/library/alpine:pull,push"


def test_the_routes_outside_the_token_check_answer_only_what_they_should(
        walked: tuple[RunningServer, list[Walked]]) -> None:
    server, _ = walked
    with server.client() as client:
        r = client.get("/metrics")
        assert r.status_code == 401 and "secreg_" not in r.text
        assert client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
        anonymous = client.get("/auth/token", params={"service": "secreg", "scope": f"repository:{REPO}:pull"})
        assert anonymous.status_code == 200
        claims = _claims(anonymous.json()["token"])
        assert claims["sub"] == "" and claims["access"] == []  # the policy grants anonymous nothing
        assert client.post("/auth/token", data={"grant_type": "password", "username": "admin",
                                                "password": "wrong", "service": "secreg",
                                                "client_id": "walk"}).status_code == 401
        assert client.post("/auth/revoke", data={"token": "not-a-token"}).status_code == 200
        for path in ("/healthz", "/readyz"):
            assert client.get(path).status_code == 200
        assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"


def _claims(jwt_text: str) -> dict[str, object]:
    import jwt

    claims: dict[str, object] = jwt.decode(jwt_text, options={"verify_signature": False})
    return claims


def _ui_routes(routes: list[Walked]) -> list[Walked]:
    """The UI's pages, logging out last (it ends the session the others are asked with)."""
    pages = [w for w in routes if w.path.startswith("/ui/") and w.method != "HEAD"]
    return sorted(pages, key=lambda w: w.path == "/ui/logout")


def _need_of(route: Walked) -> str:
    """What the product promises a UI page needs (not read from PAGES: the pages are checked against it)."""
    if route.path.startswith("/ui/admin/"):
        return "admin"
    if "{name:path}" in route.path:
        return "delete" if route.path.endswith("/delete") else "pull"
    assert route.path in ("/ui/", "/ui/login", "/ui/logout"), f"a UI page this test does not know the need of: {route}"
    return "anyone"


def test_ui_pages_answer_each_visitor_what_their_need_allows(walked: tuple[RunningServer, list[Walked]]) -> None:
    server, routes = walked
    assert server.admin_password
    admin_token = token(server, "admin", server.admin_password, f"repository:{REPO}:pull,push")
    with server.client(headers={"Authorization": f"Bearer {admin_token}"}) as api:
        digest, _ = push_image(api, REPO, "v1")
    PARAMS["reference"] = digest  # a manifest page by digest; the tag page uses "v1"
    try:
        with server.client() as anonymous, server.client() as dev:
            assert ui_login(dev, "dev", DEV_PASSWORD).status_code == 303
            for route in _ui_routes(routes):
                need, path = _need_of(route), _concrete(route.path)
                for who, client in (("anonymous", anonymous), ("dev", dev)):
                    if route.method == "POST":
                        bare = client.post(path, data={"x": "1"})  # no CSRF token
                        assert bare.status_code == 403, (who, route, bare.status_code)
                        form = {"csrf": csrf_of(client.get("/ui/login").text)}
                        r = client.post(path, data=form, follow_redirects=False)
                    else:
                        r = client.get(path, follow_redirects=False)
                    expected = _expected_ui_status(need, who)
                    if expected is None:
                        assert r.status_code < 400 or route.path == "/ui/login", (who, route, r.status_code)
                    else:
                        assert r.status_code == expected, (who, route, r.status_code, r.text[:300])
    finally:
        PARAMS["reference"] = "v1"
    with server.client(headers={"Authorization": f"Bearer {admin_token}"}) as api:
        assert api.get(f"/v2/{REPO}/manifests/v1").status_code == 200  # nothing above deleted it


def _expected_ui_status(need: str, who: str) -> int | None:
    """None: allowed. Anonymous may pull nothing here (404, as if it did not exist); dev pulls walk/** only."""
    if need == "anyone":
        return None
    if need == "admin":
        return 403
    if who == "anonymous":
        return 404
    return 403 if need == "delete" else None


def test_no_route_accepts_a_websocket(walked: tuple[RunningServer, list[Walked]]) -> None:
    """The auth middlewares let non-HTTP scopes through untouched: nothing may then serve one. A WebSocket
    upgrade to any route, without credentials, is refused before anything is read or sent."""
    server, routes = walked
    context = server.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    for path in sorted({_concrete(w.path) for w in routes} | {"/ui/static/ui.js"}):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 403"), (path, answer[:200])
