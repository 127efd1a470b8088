"""The one table of OCI error codes and the one function that renders their bodies.

`RegistryError` carries an `ErrorCode` (the HTTP layer, the auth middleware and the token server raise it;
so do the grammar checks of `secreg.names` and `secreg.digest`). `error_body` writes the spec's
`{"errors": [{"code", "message", "detail"}]}` for all of them; `secreg.api.errors` wraps it in a response
and maps the registry model's errors (`secreg.registry.errors`) onto these codes. No HTTP framework here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


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


def error_body(code: ErrorCode, message: str | None = None, detail: Any = None,
               extra: Mapping[str, Any] | None = None) -> bytes:
    """`{"errors": [{"code", "message", "detail"}]}`; `extra` fields go before `errors` at the top level."""
    entry: dict[str, Any] = {"code": code.name, "message": message or code.message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({**(extra or {}), "errors": [entry]}).encode()
