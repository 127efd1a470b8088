"""`docker search HOST/TERM`: the two registry-v1 endpoints the Docker engine calls.

What dockerd 20.10 does (registry/service.go `Search`, endpoint_v1.go, session.go, auth.go):

1. `GET /v1/_ping` without credentials. The status is not checked; the engine reads `standalone` from the
   JSON body or the `X-Docker-Registry-Standalone` header (absent = true).
2. `GET /v1/search?q=TERM&n=LIMIT` with `X-Docker-Token: true`, authenticated one of two ways:
   - `docker login` stored an identity token (secreg's refresh token): the engine pings `GET /v2/`, takes
     the Bearer challenge, POSTs `grant_type=refresh_token&scope=registry:catalog:search` to the token
     endpoint, and sends `Authorization: Bearer <token>`. The auth middleware checks that token.
   - a password only (no identity token stored): `Authorization: Basic` on the search request itself,
     checked here through the auth wiring's gate (the token endpoint's rate limiter and audit).
   - not logged in: no `Authorization` at all; the policy decides what an anonymous caller may see.
   Anything but 200 is shown as "Unexpected status code N".

The answer lists only repositories whose name contains `q` (case-insensitive) and that the caller may pull.
`n` is 1-100 (default 25), `page` counts from 1.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from secreg.api.base import identity, json_response, model_of
from secreg.api.listing import CatalogFilter
from secreg.errors import ErrorCode, RegistryError
from secreg.numbers import parse_count
from secreg.scopekeys import IDENTITY_KEY

DEFAULT_N = 25
MAX_N = 100
MAX_QUERY = 255


class SearchGate(Protocol):
    """Set by the auth wiring on `app.state.search_gate`: who is searching without a bearer token."""

    async def authenticate(self, request: Request) -> Any:
        """An Identity (subject "" = anonymous) allowed to search, or RegistryError (401, 403, 429)."""
        ...


async def ping(request: Request) -> Response:
    return json_response({"standalone": True}, headers={"X-Docker-Registry-Standalone": "true"})


def _number(request: Request, name: str, default: int, maximum: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    number = parse_count(text)
    if number is None or not 1 <= number <= maximum:
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, f"{name} must be an integer from 1 to {maximum}",
                            {name: text[:20]})
    return number


async def search(request: Request) -> Response:
    query = request.query_params.get("q", "")[:MAX_QUERY]
    n = _number(request, "n", DEFAULT_N, MAX_N)
    page = _number(request, "page", 1, 1_000_000)
    who = identity(request)
    gate: SearchGate | None = getattr(request.app.state, "search_gate", None)
    if who is None and gate is not None:
        who = await gate.authenticate(request)
        request.scope[IDENTITY_KEY] = who
    visible: CatalogFilter | None = getattr(request.app.state, "catalog_filter", None)
    model = model_of(request)
    needle = query.lower()
    names = [name for name in await model.catalog() if needle in name.lower()]
    if visible is not None:
        names = visible(who, names)
    shown = names[(page - 1) * n : page * n]
    total = len(names)
    results: list[dict[str, Any]] = [
        {"name": name, "description": await model.description(name), "star_count": 0, "is_official": False,
         "is_automated": False}
        for name in shown
    ]
    return json_response({
        "query": query,
        "num_results": total,
        "num_pages": math.ceil(total / n),
        "page": page,
        "page_size": n,
        "results": results,
    })
