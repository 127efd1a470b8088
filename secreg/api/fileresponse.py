"""Sending a byte range of a local file (blob GETs): on the event loop while the data is in the page cache,
through a thread when it has to come from the disk."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from secreg.api.headers import API_VERSION

# Blob GETs read and send 1 MiB at a time. Each piece costs a trip through the ASGI middleware, Hypercorn, h11 and
# the TLS transport (~15 Python calls); the reads, the encryption and the socket copies cost the same per byte
# whatever the piece. 256 MiB pulls over HTTP/1.1 (curl, TLS 1.3 AES-128-GCM, one worker), interleaved with the
# Go registry in one run, 20 rounds: 256 KiB pieces 0.95x Go's speed (server CPU 1.18x Go's), 1 MiB 1.07x (1.09x),
# 2 MiB 1.06x (1.09x); 4 MiB was no better and would be mapped afresh per piece (secreg.memory's threshold).
STREAM_CHUNK = 1024 * 1024
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


class _PageCacheProbe:
    """Whether a file offset can be read without waiting for the disk: a one-byte RWF_NOWAIT read of it.

    Uploads are written past the page cache (O_DIRECT), so a freshly pushed blob is read from the disk the first
    time; a pread of it on the event loop would stall every other connection for the duration."""

    supported = bool(_RWF_NOWAIT) and hasattr(os, "preadv")

    def __init__(self) -> None:
        self._byte = bytearray(1)

    def cached(self, fd: int, offset: int) -> bool:
        if not self.supported:
            return True  # no way to ask: read on the loop, as before
        try:
            os.preadv(fd, [self._byte], offset, _RWF_NOWAIT)
        except BlockingIOError:
            return False
        except OSError:
            _PageCacheProbe.supported = False  # e.g. EOPNOTSUPP: this filesystem cannot answer
        return True


class FileRangeResponse(Response):
    """Streams [start, start+length) of a local file in STREAM_CHUNK pieces.

    Reads of page-cached data are short and run on the event loop (a thread hop per piece costs more than it
    saves: Starlette's FileResponse with 64 KiB thread reads moved blobs at a fifth of this speed); a piece that
    is not cached is read in a thread."""

    def __init__(self, path: str, start: int, length: int, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(status_code=status, headers={API_VERSION[0]: API_VERSION[1], **headers})
        self.path = path
        self.start = start
        self.length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope["method"] == "HEAD" or self.length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            probe = _PageCacheProbe()
            loop = asyncio.get_running_loop()
            offset, remaining = self.start, self.length
            while remaining > 0:
                size = min(STREAM_CHUNK, remaining)
                if probe.cached(fd, offset + size - 1):
                    chunk = os.pread(fd, size, offset)
                else:
                    chunk = await loop.run_in_executor(None, os.pread, fd, size, offset)
                if not chunk:
                    break  # file shrank under us: cannot happen to a committed blob
                offset += len(chunk)
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
            if remaining > 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            os.close(fd)

