"""Single-flight blob fetches: one upstream GET per missing blob and server, however many clients want it at once.

The first request for a missing blob starts a `BlobFetch`: a task that streams the upstream's body into a
staging file (`<staging>/<id>/data`), hashing every byte as it arrives. Every request for that blob, the first
included, reads the *growing file*: it sends what has been written so far and waits for more, so a slow
client never slows the download and the download never waits for a client. The body arrives in the one
ring holding the newest `SPOOL_BYTES` (decrypted into it by `secreg.proxy.download`), is hashed there and
written from the ring with O_DIRECT (`_Spool`: not through the page cache); this process's readers are served
from the ring, a reader further behind (or one in another worker) from the file, and the readers wake every
`download.PROGRESS_BYTES`: memory per fetch is the ring, whatever the blob's size. A reader of this process
about to fall out of the ring holds the download back (`_Spool.room`), for at most PACE_BUDGET seconds per
fetch: a reader behind the ring reads the file, from the disk in a thread (a first read of those pages costs
here what the page-cache write did, see `_Spool`), and one that fell behind once stayed behind (256 MiB cold
pulls: the loop's download outran curl by the whole blob, 1.06-1.39 s of CPU per pull instead of 0.72).

The last byte is held back from every reader until the digest is verified. When it does not match (or the
upstream breaks off, or sends more or less than it announced) the staging file is deleted, nothing is
committed, and each reader's stream ends with an error: the client sees a broken response, never a complete
body of wrong bytes. When it matches, the readers get the rest at once while the blob is committed: on the
filesystem the data is fsynced and moved into place like an upload commit; on an object store (no local
path) the staging directory is a local spool and the verified bytes are then written through the driver's
staged writer (published whole, or not at all), after which the spool file goes. Then the blob is linked into
the caching repository. A client that goes away does not stop the fetch.

Across the worker processes of one server the staging directory is shared, and a fetch is claimed with a
lock file, `<staging>/<key>.claim` (`_Claim`): the process holding its flock fetches; the others follow the
lines it appends (where the data is, its size, verified/committed/failed) and serve their clients from the
same growing file. The kernel drops a dead process's flock, so a claim nobody holds without an outcome is a
dead owner's: a follower that sees this before the body started takes the fetch over; after, its readers end
with an error (as when the upstream breaks off) and the next request fetches again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from secreg.digest import Digest, Hasher
from secreg.proxy.claim import Claim as _Claim
from secreg.proxy.upstream import UpstreamClient, UpstreamError, UpstreamNotFound
from secreg.registry.blobs import BlobStore
from secreg.storage import layout
from secreg.storage.appendfile import ALIGNMENT, BufferPool, open_direct, pwrite_all
from secreg.storage.driver import StagedWriter, StorageDriver

log = logging.getLogger("secreg.proxy")

READ_CHUNK = 1024 * 1024  # a reader's piece (as `secreg.api.fileresponse.STREAM_CHUNK`: 256 KiB cost more CPU)
SPOOL_BYTES = 8 * 1024 * 1024  # the newest bytes of a fetch, kept in memory for this process's readers
SPOOL_WRITE_BYTES = 1024 * 1024  # the ring goes to the file in writes of about this size (httpx: 16 KiB pieces)
# A piece goes into the ring in slices of at most half of it (`buffer`): what a slice overwrites is in the file.
assert SPOOL_BYTES // 2 + SPOOL_WRITE_BYTES + ALIGNMENT <= SPOOL_BYTES and SPOOL_BYTES % ALIGNMENT == 0
_spool_buffers = BufferPool(SPOOL_BYTES, 2)  # idle rings kept per process
PACE_BUDGET = 1.0  # seconds this process's readers may hold a fetch back in all (`_Spool.room`)
PACE_MINIMUM = 64 * 1024  # less room than this: the download waits
FOLLOW_POLL = 0.01  # seconds between a follower's looks at the claim and the growing file
STALE_AGE = 3600.0  # a staging directory whose data did not grow for this long is a crashed fetch's
_UPLOAD_CHUNK = 4 * 1024 * 1024  # spool → object store
_TAKEOVERS = 5  # a follower whose owner died before the body started claims again at most this often
_CLAIM = ".claim"


class FetchFailed(Exception):
    """The fetch ended without a verified blob; `upstream_error` says why when the upstream was the cause."""

    def __init__(self, reason: str, upstream_error: UpstreamError | None = None, not_found: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.upstream_error = upstream_error
        self.not_found = not_found


class FetchOver(Exception):
    """The fetch finished and closed its file before this reader started: read the blob from storage."""


@dataclass
class _State:
    written: int = 0
    done: bool = False
    error: FetchFailed | None = None


class BlobFetch:
    """One blob on its way into storage, readable while it grows: fetched by this process, or followed while
    another worker of the server fetches it. Its readers share one descriptor of the growing file, closed once
    the fetch is over and the last reader is done."""

    def __init__(self, digest: Digest, data_path: str, size: int | None = None) -> None:
        self.digest = digest
        self.data_path = data_path
        self.size = size  # what the upstream announced
        self.headers_known = asyncio.Event()
        self.state = _State()
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._fd: int | None = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
        self.spool: _Spool | None = None  # this process fetches: the newest bytes are in memory
        self._readers = 0
        self.positions: dict[object, int] = {}  # the next offset each of this process's readers wants
        self._over = False

    def advance(self, written: int) -> None:
        """`written` bytes of the blob are in the file (called on the event loop)."""
        self.state.written = written
        self.notify()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def over(self) -> None:
        """The fetch has settled (done or failed): the file closes when its last reader is done."""
        self._over = True
        self.notify()
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        if self._over and self._readers == 0 and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def read(self, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, start + length) as they arrive; the last byte only once the digest is verified.
        Raises FetchFailed when the fetch fails before everything asked for was sent, FetchOver (before any
        byte) when the fetch is over and its file closed already."""
        fd = self._fd
        if fd is None:
            if self.state.error is not None:
                raise self.state.error
            raise FetchOver()
        self._readers += 1
        token = object()
        try:
            offset = start
            end = (start + length) if length is not None else None
            while True:
                self.positions[token] = offset
                state = self.state
                if state.error is not None:
                    raise state.error
                available = state.written if state.done else max(state.written - 1, 0)  # held back until verified
                if end is not None:
                    available = min(available, end)
                if offset < available:
                    count = min(READ_CHUNK, available - offset)
                    spool = self.spool
                    chunk = spool.copy(offset, count) if spool is not None else None
                    if chunk is None:  # older than the ring holds (or read by a follower): from the disk
                        if spool is not None:
                            count = min(count, spool.in_file - offset)
                        chunk = await asyncio.to_thread(os.pread, fd, count, offset)
                    if not chunk:
                        raise FetchFailed("staging file shorter than written")
                    offset += len(chunk)
                    self.positions[token] = offset
                    yield chunk
                    continue
                if state.done or (end is not None and offset >= end):
                    return
                await self._changed.wait()
        finally:
            self.positions.pop(token, None)
            self._readers -= 1
            self._close_if_unused()


def _failure(lines: dict[str, str]) -> FetchFailed | None:
    if "failed" not in lines:
        return None
    flag, _, reason = lines["failed"].partition(" ")
    return FetchFailed(reason or "the fetch failed", not_found=flag == "1")


class BlobFetcher:
    """The fetches of this process, by (cache repository, digest): a fetch proves only that *its* repository
    has the blob upstream."""

    def __init__(self, driver: StorageDriver, blobs: BlobStore, spool_key: str) -> None:
        self.driver = driver
        self.blobs = blobs
        local = driver.local_path(layout.PROXY_DIR)
        # In the storage (the commit is a rename), or a local spool shared by the workers of this server.
        self.in_storage = local is not None
        # Staging data goes to the disk with O_DIRECT where allowed (the filesystem driver's `directio` setting).
        self.direct_io = bool(getattr(driver, "direct_io", True))
        self.directory = local if local is not None else spool_directory(spool_key)
        self._inflight: dict[tuple[str, Digest], BlobFetch] = {}
        self._starting: dict[tuple[str, Digest], asyncio.Future[BlobFetch | None]] = {}

    def inflight(self, local: str, digest: Digest) -> BlobFetch | None:
        return self._inflight.get((local, digest))

    async def start(self, client: UpstreamClient, remote: str, local: str, digest: Digest) -> BlobFetch | None:
        """The running fetch of `digest` (this process's or another worker's), started if there is none, once
        the upstream's headers are in; None when another worker has committed the blob meanwhile (read it from
        storage). Raises FetchFailed when the upstream refuses at once (404, unreachable, 5xx)."""
        key = (local, digest)
        fetch = self._inflight.get(key)
        if fetch is None:
            starting = self._starting.get(key)
            if starting is None:
                starting = asyncio.ensure_future(self._begin(client, remote, local, digest))
                self._starting[key] = starting
                starting.add_done_callback(lambda _: self._starting.pop(key, None))
            fetch = await asyncio.shield(starting)
            if fetch is None:
                return None
        await fetch.headers_known.wait()
        if fetch.state.error is not None:
            raise fetch.state.error
        return fetch

    async def _begin(self, client: UpstreamClient, remote: str, local: str, digest: Digest) -> BlobFetch | None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = os.path.join(self.directory, _claim_name(local, digest))
        for _ in range(_TAKEOVERS):
            claim = _Claim.take(path)
            if claim.owned:
                return await self._own(claim, client, remote, local, digest)
            followed = await self._follow(claim, local, digest)
            if not isinstance(followed, str):
                return followed
        raise FetchFailed("the workers fetching this blob keep stopping")

    # --- this process fetches -------------------------------------------------------------------

    async def _own(self, claim: _Claim, client: UpstreamClient, remote: str, local: str, digest: Digest
                   ) -> BlobFetch | None:
        previous = claim.lines().get("fetch", "").split(" ")[0]
        if previous:
            self._drop_directory(previous)  # a dead owner's staging directory
            claim.restart()
        try:
            if await asyncio.to_thread(self.blobs.is_linked, local, digest):
                claim.release()  # committed by another worker since the caller looked
                return None
            fetch_id = str(uuid.uuid4())
            data = os.path.join(self.directory, fetch_id, "data")
            os.makedirs(os.path.dirname(data), mode=0o700)
            fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                spool = _Spool(data, fd, Hasher(digest.algorithm), self.direct_io)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            claim.release()
            raise
        claim.append("fetch", f"{fetch_id} {os.getpid()}")
        fetch = BlobFetch(digest, data)
        fetch.spool = spool
        spool.readers = fetch.positions
        self._inflight[(local, digest)] = fetch
        fetch.task = asyncio.create_task(self._run(fetch, fd, claim, client, remote, local, fetch_id))
        return fetch

    async def _run(self, fetch: BlobFetch, fd: int, claim: _Claim, client: UpstreamClient, remote: str, local: str,
                   fetch_id: str) -> None:
        spool = fetch.spool
        assert spool is not None
        committed = False
        try:
            try:
                async with client.open_blob(remote, fetch.digest) as body:
                    size = body.size
                    fetch.size = spool.size = size
                    claim.append("size", str(size) if size is not None else "-")
                    fetch.headers_known.set()
                    received = await body.copy(spool, fetch.advance)
                if size is not None and received != size:
                    raise FetchFailed(f"upstream sent {received} of the {size} bytes it announced")
                spool.finish()  # the whole body in the file before any other worker's reader hears "verified"
                actual = spool.hasher.digest()
                if actual != fetch.digest:
                    raise FetchFailed(f"upstream sent bytes whose digest is {actual}, not {fetch.digest}; discarded")
                # Verified: every reader may have the last byte now; making it durable happens meanwhile.
                claim.append("verified")
                fetch.state.done = True
                fetch.notify()
                await asyncio.to_thread(self._commit, fd, fetch, fetch_id, local)
                committed = True
                claim.append("committed")
            except UpstreamNotFound:
                raise FetchFailed("the upstream does not have this blob", not_found=True) from None
            except UpstreamError as exc:
                raise FetchFailed(exc.reason, upstream_error=exc) from None
        except FetchFailed as exc:
            if exc.upstream_error is None and not exc.not_found:
                log.warning("proxy: blob %s from %s: %s", fetch.digest, client.upstream.name, exc.reason)
            self._fail(fetch, claim, exc)
        except asyncio.CancelledError:
            self._fail(fetch, claim, FetchFailed("the server is shutting down"))
            raise
        except Exception as exc:  # noqa: BLE001 - a fetch task must always settle its readers
            log.exception("proxy: blob %s from %s failed", fetch.digest, client.upstream.name)
            self._fail(fetch, claim, FetchFailed(f"internal error: {type(exc).__name__}"))
        finally:
            self._inflight.pop((local, fetch.digest), None)
            fetch.headers_known.set()
            fetch.spool = None  # from now on this process's readers read the file (complete, or failed)
            spool.close()
            if not committed:
                with contextlib.suppress(OSError):
                    os.close(fd)
            # Failed: the unverified bytes go. Committed: the directory is empty (filesystem) or a spool copy.
            self._drop_directory(fetch_id)
            claim.release()
            fetch.over()

    def _fail(self, fetch: BlobFetch, claim: _Claim, exc: FetchFailed) -> None:
        if fetch.state.done:
            log.error("proxy: blob %s verified but not committed: %s", fetch.digest, exc.reason)
            return  # the readers have every byte; only storage failed (the next pull fetches again)
        fetch.state.error = exc
        with contextlib.suppress(OSError):
            claim.append("failed", f"{int(exc.not_found)} {exc.reason}")

    def _commit(self, fd: int, fetch: BlobFetch, fetch_id: str, local: str) -> None:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.in_storage:
            self.blobs.commit(layout.proxy_fetch_data(fetch_id), fetch.digest)
        else:
            _upload(self.driver, fetch.data_path, fetch.digest)
        self.blobs.link(local, fetch.digest)

    def _drop_directory(self, fetch_id: str) -> None:
        if fetch_id and "/" not in fetch_id and not fetch_id.startswith("."):
            shutil.rmtree(os.path.join(self.directory, fetch_id), ignore_errors=True)

    # --- another worker fetches -------------------------------------------------------------------

    async def _follow(self, claim: _Claim, local: str, digest: Digest) -> BlobFetch | None | str:
        """A fetch that follows the claim's owner, None when the blob is committed already, "again" when the
        owner died before its body started."""
        while True:
            alive = claim.owner_alive()  # asked before reading: the lines read then are all it wrote
            lines = claim.lines()
            failure = _failure(lines)
            if "committed" in lines or failure is not None or ("size" not in lines and not alive):
                claim.release()
                if failure is not None:
                    raise failure
                return None if "committed" in lines else "again"
            if "size" in lines:
                fetch_id = lines["fetch"].split(" ")[0]
                try:
                    fetch = BlobFetch(digest, os.path.join(self.directory, fetch_id, "data"),
                                      int(lines["size"]) if lines["size"].isdigit() else None)
                except FileNotFoundError:
                    if not alive:
                        claim.release()
                        return "again"
                    await asyncio.sleep(FOLLOW_POLL)  # gone with a commit: its line comes next
                    continue
                fetch.headers_known.set()
                self._inflight[(local, digest)] = fetch
                fetch.task = asyncio.create_task(self._watch(fetch, claim, local))
                return fetch
            await asyncio.sleep(FOLLOW_POLL)

    async def _watch(self, fetch: BlobFetch, claim: _Claim, local: str) -> None:
        try:
            while True:
                alive = claim.owner_alive()
                lines = claim.lines()
                if "verified" in lines or "committed" in lines:
                    if not fetch.state.done:
                        fetch.state.done = True
                        fetch.advance(fetch.size if fetch.size is not None else os.fstat(_fd(fetch)).st_size)
                    if "committed" in lines or not alive:
                        return  # until then this process's new requests keep reading the file too
                    await asyncio.sleep(FOLLOW_POLL)
                    continue
                failure = _failure(lines)
                if failure is None and not alive:
                    failure = FetchFailed("the worker fetching this blob stopped")
                if failure is not None:
                    fetch.state.error = failure
                    return
                written = os.fstat(_fd(fetch)).st_size
                if written != fetch.state.written:
                    fetch.advance(written)
                await asyncio.sleep(FOLLOW_POLL)
        except asyncio.CancelledError:
            fetch.state.error = FetchFailed("the server is shutting down")
            raise
        except Exception as exc:  # noqa: BLE001 - a fetch task must always settle its readers
            log.exception("proxy: following the fetch of blob %s failed", fetch.digest)
            fetch.state.error = FetchFailed(f"internal error: {type(exc).__name__}")
        finally:
            self._inflight.pop((local, fetch.digest), None)
            claim.release()
            fetch.over()

    # --- housekeeping ---------------------------------------------------------------------------

    def drop_stale(self) -> None:
        """Remove what crashed fetches left: claims nobody holds, data that did not grow for STALE_AGE."""
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for entry in entries:
            path = os.path.join(self.directory, entry)
            with contextlib.suppress(OSError):
                if entry.endswith(_CLAIM):
                    claim = _Claim.take(path)
                    if claim.owned:
                        self._drop_directory(claim.lines().get("fetch", "").split(" ")[0])
                    claim.release()
                elif time.time() - _newest_mtime(path) > STALE_AGE:
                    self._drop_directory(entry)

    async def aclose(self) -> None:
        tasks = [f.task for f in self._inflight.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Spool:
    """The sink of a fetch this process owns: a ring holding the newest SPOOL_BYTES, into which the download
    decrypts (`buffer`, `received`), from which this process's readers are served (`copy`); each received piece
    is hashed there, and the ring's whole blocks are written to the staging file with O_DIRECT; the partial last
    block goes through the page cache (`finish`). Refuses more than the announced size.

    Why not through the page cache, the readers reading those pages back: on this kind of virtual machine (a
    balloon with free page reporting) a page-cache page is often memory the host has taken back, and its first
    touch is a fault in the host. A buffered write of 256 MiB cost 0.06 s of CPU with pages the guest had just
    freed and 1.4-1.7 s once those ran out (the 1.7-4.3 s cold pulls); O_DIRECT from a reused buffer 0.02 s.
    Readers further behind than the ring read the file (from the disk, not the page cache)."""

    def __init__(self, path: str, fd: int, hasher: Hasher, direct: bool) -> None:
        self.fd = fd  # buffered: the partial last block, and everything where O_DIRECT is refused
        self.direct_fd = open_direct(path) if direct else -1
        self.hasher = hasher
        self.size: int | None = None  # what the upstream announced, once known
        self._buffer = _spool_buffers.take()
        self._view: memoryview | None = memoryview(self._buffer)
        self.total = 0  # bytes received: the newest SPOOL_BYTES of them are in the ring
        self.readers: dict[object, int] = {}  # the next offset each ring reader wants (`BlobFetch.positions`)
        self._budget = PACE_BUDGET
        self._held: float | None = None
        self.in_file = 0  # bytes in the staging file

    def buffer(self) -> memoryview:
        """Where the next received bytes go: the ring from the newest byte on, at most half of it. What this
        overwrites is in the file already (all but the last SPOOL_WRITE_BYTES + 1 block are)."""
        view = self._view
        assert view is not None
        at = self.total % SPOOL_BYTES
        return view[at:at + min(SPOOL_BYTES - at, SPOOL_BYTES // 2)]

    def room(self) -> int:
        """How many bytes may come in now without overwriting what a reader of this process still wants from the
        ring; 0: wait a moment (`PACE_POLL`). Readers hold the download back for at most PACE_BUDGET seconds per
        fetch in all, so a slow client delays it that long at most (then it reads the file)."""
        oldest = self.total - SPOOL_BYTES
        wanted = [p for p in self.readers.values() if oldest <= p < self.total]
        if not wanted or self._budget <= 0:
            return SPOOL_BYTES
        room = min(wanted) + SPOOL_BYTES - SPOOL_WRITE_BYTES - self.total
        now = time.monotonic()
        if room >= PACE_MINIMUM:
            self._held = None
            return room
        if self._held is not None:
            self._budget -= now - self._held
        self._held = now
        return 0 if self._budget > 0 else SPOOL_BYTES

    def received(self, count: int) -> None:
        """The first `count` bytes of the last `buffer()` are in: hashed, and the ring's whole blocks written."""
        if self.size is not None and self.total + count > self.size:
            raise FetchFailed(f"upstream sent more than the {self.size} bytes it announced")
        view = self._view
        assert view is not None
        at = self.total % SPOOL_BYTES
        self.hasher.update(view[at:at + count])
        self.total += count
        if self.total - self.in_file >= SPOOL_WRITE_BYTES:
            self._write(self.total - self.total % ALIGNMENT)

    def finish(self) -> None:
        """Everything received into the file (the last partial block through the page cache)."""
        self._write(self.total)

    def _write(self, end: int) -> None:
        view = self._view
        assert view is not None
        try:
            while self.in_file < end:
                at = self.in_file % SPOOL_BYTES
                count = min(end - self.in_file, SPOOL_BYTES - at)
                direct = self.direct_fd >= 0 and count % ALIGNMENT == 0 and self.in_file % ALIGNMENT == 0
                try:
                    pwrite_all(self.direct_fd if direct else self.fd, view[at:at + count], self.in_file)
                except OSError as exc:
                    if not (direct and exc.errno == errno.EINVAL):
                        raise
                    os.close(self.direct_fd)  # opened but refused: through the page cache from now on
                    self.direct_fd = -1
                    continue
                self.in_file += count
        except OSError as exc:
            raise FetchFailed(f"cannot write the blob to storage: {exc.strerror or exc}") from None

    def copy(self, offset: int, count: int) -> bytes | None:
        """Up to `count` received bytes from `offset` on, from the ring; None when they are older than it holds."""
        view = self._view
        if view is None or offset < self.total - SPOOL_BYTES:
            return None
        at = offset % SPOOL_BYTES
        return bytes(view[at:at + min(count, SPOOL_BYTES - at, self.total - offset)])

    def close(self) -> None:
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1
        if self._view is not None:
            self._view.release()
            self._view = None
            _spool_buffers.give_back(self._buffer)


def _upload(driver: StorageDriver, spool: str, digest: Digest) -> None:
    """The verified spool file into the blob's place through the driver's staged writer: published whole by
    `sync`, never partly (a failure aborts)."""
    staged: StagedWriter | None = driver.open_staged(layout.blob_data(digest))
    if staged is None:
        raise FetchFailed("this storage driver can neither stage nor publish a blob")
    try:
        with open(spool, "rb", buffering=0) as source:
            while piece := source.read(_UPLOAD_CHUNK):
                staged.write_pieces([piece])
        staged.sync()
    except BaseException:
        with contextlib.suppress(Exception):
            staged.abort()
        raise


def _fd(fetch: BlobFetch) -> int:
    assert fetch._fd is not None  # the watcher runs before `over`
    return fetch._fd


def _claim_name(local: str, digest: Digest) -> str:
    return hashlib.sha256(f"{local}\n{digest}".encode()).hexdigest()[:40] + _CLAIM


def spool_directory(key: str) -> str:
    """A local directory for the fetches of a storage without local paths, the same for every worker of one
    server (same storage settings) and private to this user: under $TMPDIR, else /var/tmp (a disk, where /tmp
    is often memory), else the system's temp directory."""
    base = os.environ.get("TMPDIR") or ("/var/tmp" if os.access("/var/tmp", os.W_OK) else tempfile.gettempdir())
    return os.path.join(base, f"secreg-proxy-{os.getuid()}", hashlib.sha256(key.encode()).hexdigest()[:24])


def _newest_mtime(path: str) -> float:
    newest = os.stat(path).st_mtime
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest
