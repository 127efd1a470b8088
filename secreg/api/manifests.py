"""GET / HEAD / PUT / DELETE /v2/<name>/manifests/<reference>."""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response

from secreg.api import urls
from secreg.api.base import API_VERSION_RAW, RawResponse, model_of, read_limited, repository, respond
from secreg.api.errors import oci_error
from secreg.api.headers import CACHE_HEADER
from secreg.digest import Digest, is_digest
from secreg.errors import ErrorCode, RegistryError
from secreg.names import TAG_PATTERN, parse_reference, validate_tag
from secreg.registry.errors import ManifestUnknown
from secreg.registry.manifest_format import INDEXES, MANIFEST_TYPES


def _existing_reference(request: Request) -> str | Digest:
    """The reference of a GET, HEAD or DELETE. Text that is neither a tag nor a digest names nothing that
    exists: 404 MANIFEST_UNKNOWN, as the reference registry's router answers and the conformance suite
    requires (`.INVALID_MANIFEST_NAME`). A malformed digest stays 400 DIGEST_INVALID."""
    text: str = request.path_params["reference"]
    if not is_digest(text) and not TAG_PATTERN.match(text):
        raise oci_error(ManifestUnknown(text))
    return parse_reference(text)


def _accepted(request: Request) -> frozenset[str] | None:
    """Media types the client accepts; None when it accepts anything."""
    values = tuple(value for key, value in request.scope["headers"] if key == b"accept")
    if not values:
        return None
    if sum(map(len, values)) > _ACCEPT_MEMO_LENGTH:
        return _media_types(values)
    return _accepted_memo(values)


_ACCEPT_MEMO_LENGTH = 1024
_CACHE_HEADER_RAW = CACHE_HEADER.lower().encode("latin-1")


def _media_types(values: tuple[bytes, ...]) -> frozenset[str] | None:
    accepted = {part.split(";", 1)[0].strip() for value in values for part in value.decode("latin-1").split(",")}
    accepted.discard("")
    if not accepted or "*/*" in accepted or "application/*" in accepted:
        return None
    return frozenset(accepted)


# A client sends the same Accept on every pull: parsed once per distinct value (up to 1 KiB, 256 of them).
_accepted_memo = functools.lru_cache(maxsize=256)(_media_types)


def _negotiate(request: Request, media_type: str) -> None:
    accepted = _accepted(request)
    if accepted is None or media_type in accepted or media_type not in MANIFEST_TYPES:
        return
    kind = "an image index / manifest list" if media_type in INDEXES else "a manifest"
    raise RegistryError(
        ErrorCode.MANIFEST_UNKNOWN,
        f"{kind} of type {media_type} was found, but the Accept header does not allow it; "
        "update the client or add the type to Accept",
        {"mediaType": media_type, "accepted": sorted(accepted)[:20]},
    )


async def get_manifest(request: Request) -> Response:
    name = repository(request)
    reference = _existing_reference(request)
    manifest = await model_of(request).get_manifest(name, reference)
    _negotiate(request, manifest.media_type)
    digest = str(manifest.digest).encode("latin-1")
    headers = [
        API_VERSION_RAW,
        (b"docker-content-digest", digest),
        (b"content-type", manifest.media_type.encode("latin-1")),
        (b"content-length", b"%d" % len(manifest.content)),
        (b"etag", b'"%s"' % digest),
    ]
    if manifest.cache is not None:
        headers.append((_CACHE_HEADER_RAW, manifest.cache.encode("latin-1")))
    return RawResponse(200, b"" if request.method == "HEAD" else manifest.content, headers)


async def put_manifest(request: Request) -> Response:
    name = repository(request)
    reference = parse_reference(request.path_params["reference"])
    tags = list(dict.fromkeys(validate_tag(t) for t in request.query_params.getlist("tag")))
    content = await read_limited(request, request.app.state.settings.manifest_max_size, "manifest")
    result = await model_of(request).put_manifest(name, reference, content, request.headers.get("content-type"),
                                                  tags)
    headers = {
        "Location": urls.manifest(name, result.digest),
        "Docker-Content-Digest": str(result.digest),
        "Content-Length": "0",
    }
    if result.subject is not None:
        headers["OCI-Subject"] = str(result.subject)
    if tags:
        # `?tag=` parameters (distribution-spec 1.1+dev): name every tag now pointing at the manifest.
        applied = dict.fromkeys(([reference] if isinstance(reference, str) else []) + tags)
        headers["OCI-Tag"] = ", ".join(applied)
    return respond(201, headers=headers)


async def delete_manifest(request: Request) -> Response:
    name = repository(request)
    reference = _existing_reference(request)
    await model_of(request).delete_manifest(name, reference)
    headers = {"Content-Length": "0"}
    if isinstance(reference, Digest):
        headers["Docker-Content-Digest"] = str(reference)
    return respond(202, headers=headers)
