"""Single-flight blob fetches: one upstream GET per missing blob, however many clients want it at once.

The first request for a missing blob starts a `BlobFetch`: a task that streams the upstream's body into a
staging file (`_proxy/<id>/data`), hashing every byte as it arrives. Every request for that blob, the first
included, reads the *growing file*: it sends what has been written so far and waits for more, so a slow
client never slows the download and the download never waits for a client. The body arrives in the one
receive buffer of the download (`secreg.proxy.download`), is hashed and written from there (through the page
cache: the readers read those pages right back), and the readers wake every `download.PROGRESS_BYTES`: memory
per fetch is that buffer, whatever the blob's size.

The last byte is held back from every reader until the digest is verified. When it does not match (or the
upstream breaks off, or sends more or less than it announced) the staging file is deleted, nothing is
committed, and each reader's stream ends with an error: the client sees a broken response, never a complete
body of wrong bytes. When it matches, the readers get the rest at once while the data is fsynced, moved into
place like an upload commit, and linked into the caching repository. A client that goes away does not stop the fetch.

One process keeps one fetch per digest; workers of a multi-worker server each fetch on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from secreg.digest import Digest, Hasher
from secreg.proxy.upstream import UpstreamClient, UpstreamError, UpstreamNotFound
from secreg.registry.blobs import BlobStore
from secreg.storage import layout
from secreg.storage.driver import PathNotFound, StorageDriver

log = logging.getLogger("secreg.proxy")

READ_CHUNK = 256 * 1024


class FetchFailed(Exception):
    """The fetch ended without a verified blob; `upstream_error` says why when the upstream was the cause."""

    def __init__(self, reason: str, upstream_error: UpstreamError | None = None, not_found: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.upstream_error = upstream_error
        self.not_found = not_found


@dataclass
class _State:
    written: int = 0
    done: bool = False
    error: FetchFailed | None = None


class BlobFetch:
    """One blob on its way from the upstream into storage, readable while it grows."""

    def __init__(self, digest: Digest, staging: str, local_staging: str) -> None:
        self.digest = digest
        self.staging = staging
        self.local_staging = local_staging
        self.size: int | None = None  # what the upstream announced
        self.headers_known = asyncio.Event()
        self.state = _State()
        self._changed = asyncio.Event()
        self.final_local: str | None = None
        self.task: asyncio.Task[None] | None = None

    def _open(self) -> int:
        # The commit renames the staging file into place: an open descriptor keeps reading the same inode,
        # and a reader arriving just after the rename opens the committed blob.
        try:
            return os.open(self.local_staging, os.O_RDONLY)
        except FileNotFoundError:
            if self.state.error is not None:
                raise self.state.error from None
            if self.final_local is None:
                raise FetchFailed("staging file vanished") from None
            return os.open(self.final_local, os.O_RDONLY)

    def advance(self, written: int) -> None:
        """`written` bytes of the blob are in the staging file (called on the event loop)."""
        self.state.written = written
        self.notify()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    async def read(self, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, start + length) as they arrive; the last byte only once the digest is verified.
        Raises FetchFailed when the fetch fails before everything asked for was sent."""
        fd = self._open()
        try:
            offset = start
            while True:
                state = self.state
                end = (start + length) if length is not None else None
                if state.error is not None:
                    raise state.error
                if state.done:
                    available = state.written
                else:
                    available = max(state.written - 1, 0)  # held back until verified
                if end is not None:
                    available = min(available, end)
                if offset < available:
                    size = min(READ_CHUNK, available - offset)
                    chunk = os.pread(fd, size, offset)
                    if not chunk:
                        raise FetchFailed("staging file shorter than written")
                    offset += len(chunk)
                    yield chunk
                    continue
                if state.done or (end is not None and offset >= end):
                    return
                await self.changed()
        finally:
            os.close(fd)


class BlobFetcher:
    """The fetches of this process, by digest."""

    def __init__(self, driver: StorageDriver, blobs: BlobStore) -> None:
        self.driver = driver
        self.blobs = blobs
        # By (cache repository, digest): a fetch proves only that *its* repository has the blob upstream.
        self._inflight: dict[tuple[str, Digest], BlobFetch] = {}

    def inflight(self, local: str, digest: Digest) -> BlobFetch | None:
        return self._inflight.get((local, digest))

    async def start(self, client: UpstreamClient, remote: str, local: str, digest: Digest) -> BlobFetch:
        """The running fetch of `digest`, started if there is none, once the upstream's headers are in.
        Raises FetchFailed when the upstream refuses at once (404, unreachable, 5xx)."""
        fetch = self._inflight.get((local, digest))
        if fetch is None:
            fetch_id = str(uuid.uuid4())
            staging = layout.proxy_fetch_data(fetch_id)
            local_staging = self.driver.local_path(staging)
            if local_staging is None:
                raise FetchFailed("this storage driver cannot stage proxied blobs")
            # Created now, so readers can open it at once. Written through the page cache (no O_DIRECT, unlike
            # uploads): the clients waiting for the blob read these pages right back.
            os.makedirs(os.path.dirname(local_staging), exist_ok=True)
            fd = os.open(local_staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            fetch = BlobFetch(digest, staging, local_staging)
            self._inflight[(local, digest)] = fetch
            fetch.task = asyncio.create_task(self._run(fetch, fd, client, remote, local, fetch_id))
        await fetch.headers_known.wait()
        if fetch.state.error is not None:
            raise fetch.state.error
        return fetch

    async def _run(self, fetch: BlobFetch, fd: int, client: UpstreamClient, remote: str, local: str,
                   fetch_id: str) -> None:
        hasher = Hasher(fetch.digest.algorithm)
        committed = False
        try:
            async with client.open_blob(remote, fetch.digest) as body:
                size = body.size
                fetch.size = size
                fetch.headers_known.set()
                received = await body.copy(_Sink(fd, hasher, size), fetch.advance)
            if size is not None and received != size:
                raise FetchFailed(f"upstream sent {received} of the {size} bytes it announced")
            actual = hasher.digest()
            if actual != fetch.digest:
                raise FetchFailed(f"upstream sent bytes whose digest is {actual}, not {fetch.digest}; discarded")
            # Verified: every reader may have the last byte now; making it durable happens meanwhile.
            fetch.final_local = self.driver.local_path(layout.blob_data(fetch.digest))
            fetch.state.done = True
            fetch.notify()
            await asyncio.to_thread(_commit, fd, self.blobs, fetch.staging, fetch.digest, local)
            committed = True
        except UpstreamNotFound:
            fetch.state.error = FetchFailed("the upstream does not have this blob", not_found=True)
        except UpstreamError as exc:
            fetch.state.error = FetchFailed(exc.reason, upstream_error=exc)
        except FetchFailed as exc:
            log.warning("proxy: blob %s from %s: %s", fetch.digest, client.upstream.name, exc.reason)
            fetch.state.error = exc
        except asyncio.CancelledError:
            fetch.state.error = FetchFailed("the server is shutting down")
            raise
        except Exception as exc:  # noqa: BLE001 - a fetch task must always settle its readers
            log.exception("proxy: blob %s from %s failed", fetch.digest, client.upstream.name)
            if not fetch.state.done:
                fetch.state.error = FetchFailed(f"internal error: {type(exc).__name__}")
        finally:
            self._inflight.pop((local, fetch.digest), None)
            fetch.headers_known.set()
            fetch.notify()
            if not committed:
                with contextlib.suppress(OSError):
                    os.close(fd)
            # Failed: the unverified bytes go. Committed: only the empty directory is left.
            with contextlib.suppress(PathNotFound, OSError):
                self.driver.delete(layout.proxy_fetch_dir(fetch_id))

    async def aclose(self) -> None:
        tasks = [f.task for f in self._inflight.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Sink:
    """Hashes and writes each received piece, in the receiving thread; refuses more than the announced size."""

    def __init__(self, fd: int, hasher: Hasher, size: int | None) -> None:
        self.fd = fd
        self.hasher = hasher
        self.size = size
        self.total = 0

    def __call__(self, piece: memoryview) -> None:
        self.total += len(piece)
        if self.size is not None and self.total > self.size:
            raise FetchFailed(f"upstream sent more than the {self.size} bytes it announced")
        self.hasher.update(piece)
        try:
            while piece:
                done = os.write(self.fd, piece)
                piece = piece[done:]
        except OSError as exc:
            raise FetchFailed(f"cannot write the blob to storage: {exc.strerror or exc}") from None


def _commit(fd: int, blobs: BlobStore, staging: str, digest: Digest, local: str) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    blobs.commit(staging, digest)
    blobs.link(local, digest)
