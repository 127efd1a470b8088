"""What every handler shares: repository/name parsing from the path, bodies with limits, pagination, responses."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from secreg.api.errors import oci_error
from secreg.api.headers import API_VERSION
from secreg.auth.access import allows
from secreg.errors import ErrorCode, RegistryError
from secreg.names import validate_name
from secreg.numbers import MAX_DIGITS, parse_count
from secreg.registry.errors import ModelError
from secreg.registry.model import RegistryModel
from secreg.requestbody import settle_before_error
from secreg.scopekeys import IDENTITY_KEY


def model_of(request: Request) -> RegistryModel:
    """The registry model the app serves (`app.state.registry`)."""
    model: RegistryModel = request.app.state.registry
    return model


def repository(request: Request) -> str:
    return validate_name(request.path_params["name"])


def respond(
    status: int = 200,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    media_type: str | None = None,
) -> Response:
    all_headers = {API_VERSION[0]: API_VERSION[1], **(headers or {})}
    return Response(body, status_code=status, headers=all_headers, media_type=media_type)


API_VERSION_RAW = (API_VERSION[0].lower().encode("latin-1"), API_VERSION[1].encode("latin-1"))


class RawResponse(Response):
    """An answer whose head the handler gives as ASGI header pairs (lower-case names, bytes), first of them
    `API_VERSION_RAW`: for the hot routes, which would otherwise pay Starlette's merge, lower() and encode of
    every header per request. The body goes out as given; `Content-Length` is the caller's to set."""

    def __init__(self, status: int, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = raw_headers


def json_response(document: Any, status: int = 200, headers: Mapping[str, str] | None = None,
                  media_type: str = "application/json") -> Response:
    return respond(status, json.dumps(document).encode(), headers, media_type)


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    length = parse_count(value)
    if length is None:
        raise RegistryError(ErrorCode.SIZE_INVALID, "Content-Length is not a non-negative integer")
    return length


async def body_stream(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that goes away ends the stream with BLOB_UPLOAD_INVALID."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, "client disconnected during upload") from None


@asynccontextmanager
async def settle_body_on_error(request: Request) -> AsyncIterator[None]:
    """Read what is left of the request body before an error answers the request early (see
    `secreg.requestbody`); a model error becomes its OCI error here, so the drain can mark it."""
    try:
        yield
    except RegistryError as error:
        await settle_before_error(request, error)
        raise
    except ModelError as error:
        oci = oci_error(error)
        await settle_before_error(request, oci)
        raise oci from error


def settles_body(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint, reading what is left of the request body when it answers with an error."""

    @functools.wraps(endpoint)
    async def settled(request: Request) -> Response:
        async with settle_body_on_error(request):
            return await endpoint(request)

    return settled


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    declared = content_length(request)
    too_large = RegistryError(
        ErrorCode.SIZE_INVALID, f"{what} is larger than the limit of {limit} bytes", {"limit": limit}, status=413
    )
    if declared is not None and declared > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for chunk in body_stream(request):
        size += len(chunk)
        if size > limit:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


def pagination(request: Request, default: int, maximum: int) -> tuple[int, str]:
    n_text = request.query_params.get("n")
    if n_text is None or n_text == "":
        n = default
    elif (parsed := parse_count(n_text)) is not None:
        n = parsed
    else:
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID,
                            f"n must be a non-negative integer of at most {MAX_DIGITS} digits", {"n": n_text[:20]})
    return min(n, maximum), request.query_params.get("last", "")


def page(items: list[str], n: int, last: str) -> tuple[list[str], bool]:
    """Items after `last` (lexically), at most n; and whether more remain."""
    remaining = [item for item in items if item > last] if last else items
    return remaining[:n], len(remaining) > n


def identity(request: Request) -> Any:
    """What the auth middleware proved about the caller; None when auth is off."""
    return request.scope.get(IDENTITY_KEY)


def may(request: Request, resource_type: str, name: str, action: str) -> bool:
    return allows(identity(request), resource_type, name, action)
