"""GET / HEAD / DELETE /v2/<name>/blobs/<digest>."""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from secreg.api.base import model_of, repository, respond
from secreg.api.fileresponse import FileRangeResponse
from secreg.api.headers import API_VERSION, CACHE_HEADER
from secreg.digest import Digest
from secreg.errors import ErrorCode, RegistryError
from secreg.numbers import MAX_DIGITS, parse_count
from secreg.registry.errors import BlobInterrupted
from secreg.registry.model import BlobInfo, BlobReader

log = logging.getLogger("secreg")

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
_HUGE = 10**MAX_DIGITS  # an offset with more digits: past the end of any blob
# Pieces read from an object store, each in a thread: one hop per MiB.
OBJECT_CHUNK = 1024 * 1024


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
        suffix = _offset(last)
        if suffix == 0:
            raise _unsatisfiable(size)
        start = max(size - suffix, 0)
        return start, size - start
    start = _offset(first)
    end = _offset(last) if last else size - 1
    if start >= size or end < start:
        raise _unsatisfiable(size)
    end = min(end, size - 1)
    return start, end - start + 1


def _offset(digits: str) -> int:
    number = parse_count(digits)
    return _HUGE if number is None else number


def _unsatisfiable(size: int) -> RegistryError:
    return RegistryError(
        ErrorCode.RANGE_INVALID, "requested range not satisfiable", {"size": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


async def get_blob(request: Request) -> Response:
    name = repository(request)
    digest = Digest.parse(request.path_params["digest"])
    model = model_of(request)
    # A HEAD only needs the size: a pull-through cache answers it without downloading the blob.
    blob: BlobInfo | BlobReader = (await model.stat_blob(name, digest) if request.method == "HEAD"
                                   else await model.open_blob(name, digest))
    if not isinstance(blob, BlobInfo) and blob.local_path is None:
        url = await blob.redirect_url()
        if url is not None:
            # The client fetches (with its Range header) straight from the object store; the URL expires soon.
            return respond(307, headers={"Location": url, "Docker-Content-Digest": str(digest),
                                         "Content-Length": "0"})
    headers = {
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
    }
    if blob.cache is not None:
        headers[CACHE_HEADER] = blob.cache
    requested = byte_range(request.headers.get("range"), blob.size)
    status = 200 if requested is None else 206
    start, length = (0, blob.size) if requested is None else requested
    headers["Content-Length"] = str(length)
    if requested is not None:
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{blob.size}"
    if isinstance(blob, BlobInfo):
        return respond(status, headers=headers)
    if blob.local_path is not None:
        return FileRangeResponse(blob.local_path, start, length, status, headers)
    return _BlobStream(blob.chunks(start, length, OBJECT_CHUNK), status_code=status,
                       headers={API_VERSION[0]: API_VERSION[1], **headers},
                       http2=request.scope.get("http_version") == "2")


class _BlobStream(StreamingResponse):
    """A streamed blob that may stop short (BlobInterrupted). Over HTTP/1.1 the answer then simply ends without
    its last message, so Hypercorn closes the connection with the body incomplete; over HTTP/2 (where that
    would leave the stream open, the client waiting until its timeout) the stream is ended at once, short of
    its Content-Length, which clients refuse. The cause is logged where it happened; an exception here would
    only add a traceback ("Error in ASGI Framework") to the log."""

    def __init__(self, *args: Any, http2: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http2 = http2

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except BlobInterrupted as exc:
            log.info("blob answer cut off: %s", exc)
            if self._http2:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def delete_blob(request: Request) -> Response:
    name = repository(request)
    digest = Digest.parse(request.path_params["digest"])
    await model_of(request).unlink_blob(name, digest)
    return respond(202, headers={"Docker-Content-Digest": str(digest), "Content-Length": "0"})
