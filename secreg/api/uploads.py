"""Blob uploads: POST (start, monolithic, mount), PATCH, PUT, GET status, DELETE."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from secreg.api import urls
from secreg.api.base import body_stream, content_length, may, model_of, repository, respond
from secreg.api.errors import oci_error
from secreg.api.headers import upload_range
from secreg.digest import Digest
from secreg.errors import ErrorCode, RegistryError
from secreg.names import validate_name
from secreg.numbers import MAX_DIGITS, parse_count
from secreg.registry.errors import RangeMismatch
from secreg.registry.model import ChunkRange, UploadState

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?$")
MIN_CHUNK = 0


def _session_headers(state: UploadState) -> dict[str, str]:
    return {
        "Location": urls.upload(state.name, state.upload_id),
        "Docker-Upload-UUID": state.upload_id,
        "Range": upload_range(state.size),
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
        raise oci_error(RangeMismatch(current or 0, f"malformed Content-Range {header[:100]!r}; expected start-end"))
    start, end = parse_count(match.group(1)), parse_count(match.group(2))
    if start is None or end is None:
        raise oci_error(RangeMismatch(current or 0, f"Content-Range offsets longer than {MAX_DIGITS} digits"))
    return ChunkRange(start, end)


def _digest_param(request: Request) -> Digest:
    value = request.query_params.get("digest")
    if not value:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required to complete an upload")
    return Digest.parse(value)


async def start_upload(request: Request) -> Response:
    name = repository(request)
    model = model_of(request)
    params = request.query_params
    mount = params.get("mount")
    if mount:
        digest = Digest.parse(mount)
        if await _try_mount(request, name, digest, params.get("from")):
            return _created(name, digest)
    elif params.get("digest"):
        digest = Digest.parse(params["digest"])
        await model.put_blob(name, digest, body_stream(request), content_length(request))
        return _created(name, digest)
    headers = _session_headers(await model.start_upload(name))
    if MIN_CHUNK:
        headers["OCI-Chunk-Min-Length"] = str(MIN_CHUNK)
    return respond(202, headers=headers)


async def _try_mount(request: Request, name: str, digest: Digest, source: str | None) -> bool:
    """Link an existing blob into `name`. The caller must be able to pull a repository that already links it;
    otherwise the mount quietly becomes an ordinary upload session, as the spec allows."""
    model = model_of(request)
    if source:
        try:
            validate_name(source)
        except RegistryError:
            return False
        candidates = [source]
    else:
        candidates = await model.repositories_with_blob(digest)
    for candidate in candidates:
        if may(request, "repository", candidate, "pull") and await model.mount_blob(name, digest, candidate):
            return True
    return False


async def upload_status(request: Request) -> Response:
    name = repository(request)
    upload_id = request.path_params["upload_id"]
    state = await model_of(request).upload_status(name, upload_id)
    return respond(204, headers=_session_headers(state))


async def patch_upload(request: Request) -> Response:
    name = repository(request)
    upload_id = request.path_params["upload_id"]
    chunk = _chunk_range(request)
    state = await model_of(request).append_upload(name, upload_id, body_stream(request), chunk,
                                                  content_length(request))
    return respond(202, headers=_session_headers(state))


async def complete_upload(request: Request) -> Response:
    name = repository(request)
    upload_id = request.path_params["upload_id"]
    digest = _digest_param(request)
    length = content_length(request)
    chunk = _chunk_range(request)
    has_body = chunk is not None or bool(length) or "chunked" in request.headers.get("transfer-encoding", "")
    body = body_stream(request) if has_body else None
    await model_of(request).complete_upload(name, upload_id, digest, body, chunk, length if has_body else None)
    return _created(name, digest)


async def cancel_upload(request: Request) -> Response:
    name = repository(request)
    upload_id = request.path_params["upload_id"]
    await model_of(request).cancel_upload(name, upload_id)
    return respond(204, headers={"Content-Length": "0"})
