"""AuthMiddleware around a small registry-shaped Starlette app, served by Hypercorn over TLS."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import Scope

from secreg.auth.middleware import IDENTITY_KEY, AuthMiddleware, Identity
from secreg.auth.scope import Access
from secreg.auth.server import TokenService, token_routes
from secreg.auth.tokens import TokenIssuer, TokenVerifier
from secreg.tls import CertificateFiles

CATALOG = Access("registry", "catalog", frozenset({"*"}))
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$")
_UPLOAD = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/$")


def resolve(scope: Scope) -> list[Access] | None:
    """What a registry route table would answer (method -> action mapping as in distribution's app.go)."""
    path, method = scope["path"], scope["method"]
    if path in ("/auth/token", "/healthz"):
        return None
    if path == "/v2/":
        return []
    if path == "/v2/_catalog":
        return [CATALOG]
    if match := _UPLOAD.match(path):
        needed = [Access.repository(match["name"], "pull", "push")]
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        if "from" in query:
            needed.append(Access.repository(query["from"], "pull"))
        return needed
    if match := _BLOB.match(path):
        action = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "push")
        return [Access.repository(match["name"], action)]
    return [Access("registry", "unknown", frozenset({"*"}))]


async def whoami(request: Request) -> JSONResponse:
    identity: Identity | None = request.scope.get(IDENTITY_KEY)
    return JSONResponse({"subject": identity.subject if identity else None, "path": request.url.path})


async def upload(request: Request) -> PlainTextResponse:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return PlainTextResponse(str(size), status_code=201)


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def registry_app(service: TokenService, verifier: TokenVerifier, realm: str = "") -> AuthMiddleware:
    app = Starlette(
        routes=[
            *token_routes(service),
            Route("/healthz", healthz),
            Route("/v2/", whoami),
            Route("/v2/_catalog", whoami),
            Route("/v2/{name:path}/blobs/uploads/", upload, methods=["POST"]),
            Route("/v2/{name:path}/blobs/{digest}", whoami, methods=["GET", "HEAD", "DELETE"]),
        ]
    )
    return AuthMiddleware(app, verifier=verifier, resolve=resolve, realm=realm, service="secreg")


@dataclass
class Registry:
    url: str
    client: httpx.Client
    issuer: TokenIssuer

    @property
    def realm(self) -> str:
        return f"{self.url}/auth/token"

    def bearer(self, *access: Access, subject: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.issue(subject, list(access)).token}"}


@pytest.fixture()
def registry(
    auth_dir: Path,
    certs: CertificateFiles,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    new_service: Callable[..., TokenService],
    tls_server: Callable[[Any], str],
    https_client: Callable[[str], httpx.Client],
) -> Iterator[Registry]:
    url = tls_server(registry_app(new_service(auth_dir, certs), verifier))
    with https_client(url) as client:
        yield Registry(url, client, issuer)


def test_base_route_without_token(registry: Registry) -> None:
    response = registry.client.get("/v2/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer realm="{registry.realm}",service="secreg"'
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}


def test_repository_route_without_token_names_the_scope(registry: Registry) -> None:
    response = registry.client.get("/v2/alice/app/blobs/sha256:abc")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="{registry.realm}",service="secreg",scope="repository:alice/app:pull"'
    )
    assert response.json() == {
        "errors": [
            {
                "code": "UNAUTHORIZED",
                "message": "authentication required",
                "detail": [{"Type": "repository", "Class": "", "Name": "alice/app", "Action": "pull"}],
            }
        ]
    }


def test_several_accesses_are_space_separated(registry: Registry) -> None:
    response = registry.client.post("/v2/alice/app/blobs/uploads/?mount=sha256:abc&from=library/base")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="{registry.realm}",service="secreg",'
        'scope="repository:alice/app:pull,push repository:library/base:pull"'
    )


def test_public_routes_need_no_token(registry: Registry) -> None:
    assert registry.client.get("/healthz").text == "ok"
    assert registry.client.get("/auth/token").status_code == 200


def test_invalid_token(
    registry: Registry, certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer]
) -> None:
    expired = new_issuer(certs, clock=lambda: time.time() - 3600).issue(
        "alice", [Access.repository("alice/app", "pull")]
    )
    for token in ("garbage", "a.b.c", expired.token):
        response = registry.client.get(
            "/v2/alice/app/blobs/sha256:abc", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            f'Bearer realm="{registry.realm}",service="secreg",'
            'scope="repository:alice/app:pull",error="invalid_token"'
        )
    base = registry.client.get("/v2/", headers={"Authorization": "Bearer garbage"})
    assert (
        base.headers["www-authenticate"]
        == f'Bearer realm="{registry.realm}",service="secreg",error="invalid_token"'
    )


def test_other_schemes_are_no_token(registry: Registry) -> None:
    response = registry.client.get("/v2/", auth=("alice", "alice-password"))
    assert response.status_code == 401
    assert "error=" not in response.headers["www-authenticate"]


def test_valid_token(registry: Registry) -> None:
    response = registry.client.get("/v2/", headers=registry.bearer())
    assert response.status_code == 200
    assert response.json() == {"subject": "alice", "path": "/v2/"}
    blob = registry.client.get(
        "/v2/alice/app/blobs/sha256:abc", headers=registry.bearer(Access.repository("alice/app", "pull"))
    )
    assert blob.status_code == 200 and blob.json()["subject"] == "alice"
    anonymous = registry.client.get("/v2/", headers=registry.bearer(subject=""))
    assert anonymous.status_code == 200 and anonymous.json()["subject"] == ""


def insufficient(registry: Registry, response: httpx.Response, scope: str) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="{registry.realm}",service="secreg",scope="{scope}",error="insufficient_scope"'
    )
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_token_for_repository_a_used_on_b(registry: Registry) -> None:
    headers = registry.bearer(Access.repository("alice/a", "pull", "push", "delete"))
    response = registry.client.get("/v2/alice/b/blobs/sha256:abc", headers=headers)
    insufficient(registry, response, "repository:alice/b:pull")
    # A prefix of the name is not the name.
    response = registry.client.get("/v2/alice/a/x/blobs/sha256:abc", headers=headers)
    insufficient(registry, response, "repository:alice/a/x:pull")


def test_push_with_a_pull_only_token(registry: Registry) -> None:
    headers = registry.bearer(Access.repository("alice/app", "pull"))
    insufficient(
        registry,
        registry.client.post("/v2/alice/app/blobs/uploads/", headers=headers),
        "repository:alice/app:pull,push",
    )
    insufficient(
        registry,
        registry.client.delete("/v2/alice/app/blobs/sha256:abc", headers=headers),
        "repository:alice/app:delete",
    )


def test_catalog_needs_the_catalog_scope(registry: Registry) -> None:
    headers = registry.bearer(Access.repository("alice/app", "pull", "push", "delete"))
    insufficient(registry, registry.client.get("/v2/_catalog", headers=headers), "registry:catalog:*")
    allowed = registry.client.get(
        "/v2/_catalog", headers=registry.bearer(Access("registry", "catalog", frozenset({"*"})))
    )
    assert allowed.status_code == 200


def test_mount_needs_pull_on_the_source(registry: Registry) -> None:
    path = "/v2/alice/app/blobs/uploads/?mount=sha256:abc&from=bob/base"
    headers = registry.bearer(Access.repository("alice/app", "pull", "push"))
    insufficient(
        registry,
        registry.client.post(path, headers=headers),
        "repository:alice/app:pull,push repository:bob/base:pull",
    )
    both = registry.bearer(
        Access.repository("alice/app", "pull", "push"), Access.repository("bob/base", "pull")
    )
    assert registry.client.post(path, headers=both).status_code == 201


def test_head_challenge_has_no_body(registry: Registry) -> None:
    response = registry.client.head("/v2/alice/app/blobs/sha256:abc")
    assert response.status_code == 401
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0
    assert "scope=" in response.headers["www-authenticate"]


def test_large_body_streams_through(registry: Registry) -> None:
    headers = registry.bearer(Access.repository("alice/app", "pull", "push"))
    size = 8 * 1024 * 1024

    def chunks() -> Iterator[bytes]:
        for _ in range(size // 65536):
            yield b"x" * 65536

    response = registry.client.post("/v2/alice/app/blobs/uploads/", headers=headers, content=chunks())
    assert response.status_code == 201 and response.text == str(size)


def test_full_flow_challenge_token_retry(registry: Registry) -> None:
    """What docker does: follow the challenge to the realm with credentials, retry with the token."""
    challenge = registry.client.post("/v2/alice/app/blobs/uploads/").headers["www-authenticate"]
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    token = registry.client.get(
        params["realm"],
        params={"service": params["service"], "scope": params["scope"]},
        auth=("alice", "alice-password"),
    ).json()["token"]
    retry = registry.client.post(
        "/v2/alice/app/blobs/uploads/", headers={"Authorization": f"Bearer {token}"}, content=b"abc"
    )
    assert retry.status_code == 201
    # bob asks the same and gets a token without push: the registry then says insufficient_scope.
    bob = registry.client.get(
        "/auth/token", params={"service": "secreg", "scope": params["scope"]}, auth=("bob", "bob-password")
    ).json()["token"]
    denied = registry.client.post("/v2/alice/app/blobs/uploads/", headers={"Authorization": f"Bearer {bob}"})
    assert denied.status_code == 401 and 'error="insufficient_scope"' in denied.headers["www-authenticate"]


# --- without a server ---------------------------------------------------------------------------------


def fake_scope(
    headers: list[tuple[bytes, bytes]],
    scheme: str = "https",
    server: tuple[str, int] | None = ("10.0.0.1", 5000),
) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/v2/",
        "scheme": scheme,
        "headers": headers,
        "server": server,
    }


def test_realm_from_host_header(verifier: TokenVerifier) -> None:
    middleware = AuthMiddleware(
        PlainTextResponse("x"), verifier=verifier, resolve=resolve, realm="", service="svc"
    )
    assert middleware.challenge(fake_scope([(b"host", b"reg.example:5000")]), [], None) == (
        'Bearer realm="https://reg.example:5000/auth/token",service="svc"'
    )
    assert middleware.challenge(fake_scope([(b"host", b"reg.example")], scheme="http"), [], None) == (
        'Bearer realm="http://reg.example/auth/token",service="svc"'
    )
    assert middleware.challenge(fake_scope([(b"host", b"[::1]:5000")]), [], None).startswith(
        'Bearer realm="https://[::1]:5000/auth/token"'
    )
    # A Host header that could break out of the quoted string is not used.
    evil = middleware.challenge(fake_scope([(b"host", b'x",error="evil')]), [], None)
    assert evil == 'Bearer realm="https://10.0.0.1:5000/auth/token",service="svc"'
    assert middleware.challenge(fake_scope([], server=("::1", 443)), [], None).startswith(
        'Bearer realm="https://[::1]/auth/token"'
    )


def test_configured_realm_wins(verifier: TokenVerifier) -> None:
    middleware = AuthMiddleware(
        PlainTextResponse("x"),
        verifier=verifier,
        resolve=resolve,
        realm="https://auth.example/token",
        service="svc",
    )
    challenge = middleware.challenge(
        fake_scope([(b"host", b"reg.example")]), [Access.repository("a", "pull")], "insufficient_scope"
    )
    assert (
        challenge == 'Bearer realm="https://auth.example/token",service="svc",'
        'scope="repository:a:pull",error="insufficient_scope"'
    )


def test_identity_allows() -> None:
    identity = Identity(
        "alice", (Access.repository("a", "pull"), Access("registry", "catalog", frozenset({"*"})))
    )
    assert identity.allows("repository", "a", "pull")
    assert not identity.allows("repository", "a", "push")
    assert not identity.allows("repository", "b", "pull")
    assert identity.allows("registry", "catalog", "*")
    assert not identity.allows("repository(plugin)", "a", "pull")
