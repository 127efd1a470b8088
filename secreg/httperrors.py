"""The one error response: `RegistryError` -> the spec's JSON body (`secreg.errors.error_body`) with its status
and headers. The registry's handlers, the auth middleware (pure ASGI: a Response is an ASGI app) and the token
server all answer errors through it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from secreg.errors import RegistryError, error_body

__all__ = ["API_VERSION", "error_response"]

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


def error_response(error: RegistryError, *, head: bool = False, api_version: bool = True,
                   extra: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Response:
    """`extra`: top-level body fields beside `errors` (the token server's OAuth `error`); `headers`: added to
    the error's own. Without `api_version` the registry's version header is left out (the token endpoint)."""
    body = error_body(error.code, error.message, error.detail, extra)
    all_headers = {**({API_VERSION[0]: API_VERSION[1]} if api_version else {}), **(headers or {}), **error.headers}
    if head:
        # A HEAD answer carries no body, but says how long the GET body would have been.
        all_headers["Content-Length"] = str(len(body))
        return Response(status_code=error.status, headers=all_headers, media_type="application/json")
    return Response(body, status_code=error.status, headers=all_headers, media_type="application/json")
