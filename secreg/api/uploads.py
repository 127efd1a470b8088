"""Blob uploads: POST (start, monolithic, mount), PATCH, PUT, GET status, DELETE."""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.responses import Response

from secreg.api import urls
from secreg.api.base import body_stream, content_length, may, repository, respond
from secreg.digest import Digest
from secreg.errors import ErrorCode, RegistryError
from secreg.names import validate_name
from secreg.registry.local import registry_of
from secreg.registry.uploads import ChunkRange, range_error

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
MIN_CHUNK = 0


def _range_header(size: int) -> str:
    # The Docker convention: an empty session reports 0-0, otherwise 0-<last byte>.
    return f"0-{max(size - 1, 0)}"


def _session_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": urls.upload(name, upload_id),
        "Docker-Upload-UUID": upload_id,
        "Range": _range_header(size),
        "Content-Length": "0",
    }


def _created(name: str, digest: Digest) -> Response:
    return respond(201, headers={
        "Location": urls.blob(name, digest),
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    })


def _chunk_range(request: Request, current: int | None = None) -> ChunkRange | None:
    header = request.headers.get("content-range")
    if not header:
        return None
    match = _CONTENT_RANGE.match(header.strip())
    if not match:
        raise range_error(current or 0, f"malformed Content-Range {header[:100]!r}; expected start-end")
    return ChunkRange(int(match.group(1)), int(match.group(2)))


def _digest_param(request: Request) -> Digest:
    value = request.query_params.get("digest")
    if not value:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required to complete an upload")
    return Digest.parse(value)


async def start_upload(request: Request) -> Response:
    name = repository(request)
    registry = registry_of(request)
    registry.require_writable()
    params = request.query_params
    mount = params.get("mount")
    if mount:
        digest = Digest.parse(mount)
        if _try_mount(request, name, digest, params.get("from")):
            return _created(name, digest)
    elif params.get("digest"):
        digest = Digest.parse(params["digest"])
        await registry.uploads.monolithic(name, digest, body_stream(request), content_length(request))
        return _created(name, digest)
    upload_id = await asyncio.to_thread(registry.uploads.start, name)  # fsyncs: off the event loop
    headers = _session_headers(name, upload_id, 0)
    if MIN_CHUNK:
        headers["OCI-Chunk-Min-Length"] = str(MIN_CHUNK)
    return respond(202, headers=headers)


def _try_mount(request: Request, name: str, digest: Digest, source: str | None) -> bool:
    """Link an existing blob into `name`. The caller must be able to pull a repository that already links it;
    otherwise the mount quietly becomes an ordinary upload session, as the spec allows."""
    registry = registry_of(request)
    if source:
        try:
            validate_name(source)
        except RegistryError:
            return False
        candidates = [source]
    else:
        candidates = list(registry.blobs.repositories_linking(digest))
    for candidate in candidates:
        if may(request, "repository", candidate, "pull") and registry.blobs.is_linked(candidate, digest):
            registry.blobs.link(name, digest)
            return True
    return False


async def upload_status(request: Request) -> Response:
    name = repository(request)
    upload_id = request.path_params["upload_id"]
    size = registry_of(request).uploads.size(name, upload_id)
    return respond(204, headers=_session_headers(name, upload_id, size))


async def patch_upload(request: Request) -> Response:
    name = repository(request)
    upload_id = request.path_params["upload_id"]
    registry = registry_of(request)
    registry.require_writable()
    chunk = _chunk_range(request)
    size = await registry.uploads.append(name, upload_id, body_stream(request), chunk, content_length(request))
    return respond(202, headers=_session_headers(name, upload_id, size))


async def complete_upload(request: Request) -> Response:
    name = repository(request)
    upload_id = request.path_params["upload_id"]
    registry = registry_of(request)
    registry.require_writable()
    digest = _digest_param(request)
    length = content_length(request)
    chunk = _chunk_range(request)
    has_body = chunk is not None or bool(length) or "chunked" in request.headers.get("transfer-encoding", "")
    body = body_stream(request) if has_body else None
    await registry.uploads.complete(name, upload_id, digest, body, chunk, length if has_body else None)
    return _created(name, digest)


async def cancel_upload(request: Request) -> Response:
    name = repository(request)
    upload_id = request.path_params["upload_id"]
    registry = registry_of(request)
    registry.uploads.cancel(name, upload_id)
    return respond(204, headers={"Content-Length": "0"})
