"""Listings: tags of a repository, the catalog, referrers of a manifest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from secreg.api import urls
from secreg.api.base import identity, json_response, model_of, page, pagination, repository
from secreg.digest import Digest
from secreg.registry.manifest_format import OCI_INDEX

DEFAULT_PAGE = 1000
MAX_PAGE = 10000

# Set by the auth wiring: which of these repositories may this caller pull? (None: auth is off)
CatalogFilter = Callable[[Any, list[str]], list[str]]


async def list_tags(request: Request) -> Response:
    name = repository(request)
    n, last = pagination(request, MAX_PAGE, MAX_PAGE)
    tags, more = page(await model_of(request).list_tags(name), n, last)
    headers = {}
    if more and tags:
        headers["Link"] = urls.next_link(urls.tags_page(name, n, tags[-1]))
    return json_response({"name": name, "tags": tags}, headers=headers)


async def catalog(request: Request) -> Response:
    n, last = pagination(request, DEFAULT_PAGE, MAX_PAGE)
    names = await model_of(request).catalog()
    visible: CatalogFilter | None = getattr(request.app.state, "catalog_filter", None)
    if visible is not None:
        names = visible(identity(request), names)
    model = model_of(request)
    repositories, more = page(names, n, last)
    headers = {}
    if more and repositories:
        headers["Link"] = urls.next_link(urls.catalog_page(n, repositories[-1]))
    document: dict[str, Any] = {"repositories": repositories}
    cached = await model.cached_repositories(repositories)
    if cached:
        # secreg's addition (clients ignore unknown keys): which listed repositories are pull-through caches.
        document["cached"] = cached
    return json_response(document, headers=headers)


async def referrers(request: Request) -> Response:
    name = repository(request)
    subject = Digest.parse(request.path_params["digest"])
    artifact_type = request.query_params.get("artifactType") or None
    found = await model_of(request).referrers(name, subject, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}
    return json_response(index, headers=headers, media_type=OCI_INDEX)
