"""The one table of OCI error codes and the one function that renders them.

Lower layers raise `RegistryError` subclasses that carry an `ErrorCode`; `error_response` turns any of them
into the spec's body `{"errors": [{"code", "message", "detail"}]}` with the code's HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from starlette.responses import Response


@dataclass(frozen=True)
class _Code:
    status: int
    message: str


class ErrorCode(Enum):
    BLOB_UNKNOWN = _Code(404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = _Code(400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = _Code(404, "blob upload unknown to registry")
    DIGEST_INVALID = _Code(400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = _Code(400, "manifest references a manifest or blob unknown to registry")
    MANIFEST_INVALID = _Code(400, "manifest invalid")
    MANIFEST_UNKNOWN = _Code(404, "manifest unknown to registry")
    NAME_INVALID = _Code(400, "invalid repository name")
    NAME_UNKNOWN = _Code(404, "repository name not known to registry")
    SIZE_INVALID = _Code(400, "provided length did not match content length")
    UNAUTHORIZED = _Code(401, "authentication required")
    DENIED = _Code(403, "requested access to the resource is denied")
    UNSUPPORTED = _Code(405, "the operation is unsupported")
    TOOMANYREQUESTS = _Code(429, "too many requests")
    RANGE_INVALID = _Code(416, "invalid content range")
    PAGINATION_NUMBER_INVALID = _Code(400, "invalid number of results requested")
    TAG_INVALID = _Code(400, "manifest tag did not match URI")
    UNKNOWN = _Code(500, "unknown error")
    UNAVAILABLE = _Code(503, "service unavailable")

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def message(self) -> str:
        return self.value.message


class RegistryError(Exception):
    """A failure with an OCI error code; `status` overrides the code's default HTTP status."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status = status or code.status
        self.headers = dict(headers or {})


def error_body(code: ErrorCode, message: str | None = None, detail: Any = None) -> bytes:
    entry: dict[str, Any] = {"code": code.name, "message": message or code.message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


def error_response(error: RegistryError, *, head: bool = False) -> Response:
    body = error_body(error.code, error.message, error.detail)
    headers = {"Docker-Distribution-API-Version": "registry/2.0", **error.headers}
    if head:
        # A HEAD answer carries no body, but says how long the GET body would have been.
        headers["Content-Length"] = str(len(body))
        return Response(status_code=error.status, headers=headers, media_type="application/json")
    return Response(body, status_code=error.status, headers=headers, media_type="application/json")
