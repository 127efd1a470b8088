"""GET / HEAD / DELETE /v2/<name>/blobs/<digest>."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from secreg.api.base import repository, respond
from secreg.api.fileresponse import FileRangeResponse
from secreg.digest import Digest
from secreg.errors import ErrorCode, RegistryError
from secreg.registry.local import registry_of

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) for a single satisfiable range; None to send the whole blob; 416 when unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None  # multiple or malformed ranges: RFC 9110 lets us ignore Range and send everything
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable(size)
        start = max(size - suffix, 0)
        return start, size - start
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise _unsatisfiable(size)
    end = min(end, size - 1)
    return start, end - start + 1


def _unsatisfiable(size: int) -> RegistryError:
    return RegistryError(
        ErrorCode.RANGE_INVALID, "requested range not satisfiable", {"size": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


async def get_blob(request: Request) -> Response:
    name = repository(request)
    digest = Digest.parse(request.path_params["digest"])
    registry = registry_of(request)
    info = registry.blobs.stat(name, digest)
    local = registry.driver.local_path(info.path)
    if local is None:
        raise RegistryError(ErrorCode.UNSUPPORTED, "this storage driver cannot serve blobs directly")
    headers = {
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
    }
    requested = byte_range(request.headers.get("range"), info.size)
    if requested is None:
        headers["Content-Length"] = str(info.size)
        return FileRangeResponse(local, 0, info.size, 200, headers)
    start, length = requested
    headers["Content-Length"] = str(length)
    headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{info.size}"
    return FileRangeResponse(local, start, length, 206, headers)


async def delete_blob(request: Request) -> Response:
    name = repository(request)
    digest = Digest.parse(request.path_params["digest"])
    registry = registry_of(request)
    registry.require_delete()
    registry.require_writable()
    registry.blobs.stat(name, digest)
    registry.blobs.unlink(name, digest)
    return respond(202, headers={"Docker-Content-Digest": str(digest), "Content-Length": "0"})
