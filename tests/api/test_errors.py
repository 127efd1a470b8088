"""The one table from model errors to OCI codes, and the app's one layer that answers errors with it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from secreg.api.errors import MODEL_ERRORS, oci_error
from secreg.api.routes import RouteSpec, build_routes
from secreg.app import _HandledErrors, _registry_error, create_app
from secreg.auth.access import Need
from secreg.config import load_settings
from secreg.digest import Digest
from secreg.errors import ErrorCode, RegistryError
from secreg.httperrors import error_response
from secreg.registry import errors


def test_every_model_error_is_mapped() -> None:
    kinds = {getattr(errors, name) for name in errors.__all__} - {errors.ModelError}
    assert kinds == set(MODEL_ERRORS)


def test_mapping_keeps_message_detail_and_headers() -> None:
    mismatch = oci_error(errors.RangeMismatch(10, "chunk starts at 3, upload is at 10"))
    assert (mismatch.code, mismatch.status, mismatch.message) == (
        ErrorCode.RANGE_INVALID, 416, "chunk starts at 3, upload is at 10")
    assert mismatch.headers == {"Range": "0-9"}
    assert oci_error(errors.RangeMismatch(0, "empty")).headers == {"Range": "0-0"}

    unknown = oci_error(errors.BlobUnknown(Digest.of(b"x")))
    assert (unknown.code, unknown.status) == (ErrorCode.BLOB_UNKNOWN, 404)
    assert unknown.message == ErrorCode.BLOB_UNKNOWN.message
    assert unknown.detail == {"digest": str(Digest.of(b"x"))}

    readonly = oci_error(errors.Unsupported("read-only"))
    assert (readonly.code, readonly.status, readonly.message) == (ErrorCode.UNSUPPORTED, 405, "read-only")


def test_error_response_renders_the_spec_body() -> None:
    response = error_response(oci_error(errors.ManifestBlobsUnknown(["sha256:" + "a" * 64])))
    assert response.status_code == 400
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    entry = json.loads(response.body)["errors"][0]
    assert entry["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert entry["detail"] == {"digests": ["sha256:" + "a" * 64]}
    head = error_response(oci_error(errors.NameUnknown("team/x")), head=True)
    assert head.body == b"" and int(head.headers["Content-Length"]) > 0


# --- the app's exception layer: every error of a route, the router's and the storage's, answered once ------------


def _app(root: Path) -> Starlette:
    settings = load_settings(None, {"auth": {"enabled": False},
                                    "storage": {"filesystem": {"rootdirectory": str(root)}}}, environ={})
    return create_app(settings)


async def _requests(app: Starlette, *requests: tuple[str, str]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="https://registry.test") as client:
        return [await client.request(method, path) for method, path in requests]


def _code(response: httpx.Response) -> str:
    return str(json.loads(response.content)["errors"][0]["code"])


def test_errors_of_routes_and_router_get_the_spec_body(tmp_path: Path) -> None:
    get, head, bad_name, bad_method, no_route, v2 = anyio.run(
        _requests, _app(tmp_path), ("GET", "/v2/team/app/manifests/1.0"), ("HEAD", "/v2/team/app/manifests/1.0"),
        ("GET", "/v2/Team/app/manifests/1.0"), ("PUT", "/v2/"), ("GET", "/v3/nothing"), ("GET", "/v2/"))
    assert (get.status_code, _code(get)) == (404, "MANIFEST_UNKNOWN")
    assert head.status_code == 404 and head.content == b"" and int(head.headers["Content-Length"]) > 0
    assert (bad_name.status_code, _code(bad_name)) == (400, "NAME_INVALID")
    assert (bad_method.status_code, _code(bad_method)) == (405, "UNSUPPORTED")
    assert (no_route.status_code, _code(no_route)) == (404, "UNSUPPORTED")
    for response in (get, head, bad_name, bad_method, no_route):
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert "X-Request-Id" in response.headers  # answered inside the observer: logged with its status
    assert (v2.status_code, v2.content, v2.headers["Content-Type"]) == (200, b"{}", "application/json")


def test_an_unexpected_error_of_a_route_is_a_json_500_logged_once(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: Request) -> Response:
        raise ValueError("a bug")

    app = _app(tmp_path)
    # Served as the registry's bodyless routes are (no exception layer of its own), first in the router.
    app.router.routes[0:0] = build_routes((RouteSpec("/v2/broken", broken, ("GET",), Need.PUBLIC),))
    with caplog.at_level(logging.ERROR, logger="secreg"):
        [response] = anyio.run(_requests, app, ("GET", "/v2/broken"))
    assert response.status_code == 500
    assert _code(response) == "UNKNOWN" and "internal error" in response.text
    assert [r.getMessage() for r in caplog.records if r.name == "secreg"] == ["unhandled error on GET /v2/broken"]


def test_an_error_after_the_answer_started_is_not_answered_again() -> None:
    sent: list[Message] = []

    async def started_then_failed(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RegistryError(ErrorCode.UNKNOWN, "too late")

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def failed(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("a bug")

    scope = {"type": "http", "method": "GET", "path": "/v2/", "headers": []}
    with pytest.raises(RuntimeError, match="response already started"):
        anyio.run(_HandledErrors(started_then_failed, {RegistryError: _registry_error}), scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start"]
    with pytest.raises(ValueError, match="a bug"):  # no handler: on to the outermost layer, which answers 500
        anyio.run(_HandledErrors(failed, {RegistryError: _registry_error}), dict(scope), receive, send)
