"""Blob upload sessions. State lives in storage (`_uploads/<id>/data`), so any worker can continue an upload;
the running hash is an in-process cache that is only trusted when it covers exactly the bytes on disk,
otherwise the data is hashed again at commit.

A request writes its bytes into the data as they arrive, so the data's size is not what the session holds for
certain: a request still writing may yet cut its chunk off again (a body shorter than its Content-Range). What
the session holds is `committed` (`_uploads/<id>/committed`): the size the last request that ended left,
recorded while it still held the data's lock. The status reports only that, and a request that begins cuts off
whatever lies past it (what a worker killed mid-body had written: no request ended with it).

Bytes are received on the event loop and batched; hashing and writing run in one thread per upload, batch after
batch (order matters for the hash), while the next batches are being received.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime

from secreg import memory
from secreg.digest import Digest, Hasher
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import BlobUnknown, DigestMismatch, RangeMismatch, SizeMismatch, UploadUnknown
from secreg.registry.model import ChunkRange
from secreg.registry.offload import Offload
from secreg.storage import layout
from secreg.storage.driver import (
    AppendWriter,
    IncompleteWrite,
    PathNotFound,
    StagedWriter,
    StorageDriver,
    StorageError,
)

UPLOAD_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# The event loop hands the writer thread 2 MiB at a time: each hand-over costs the loop a future, a wake-up and
# a GIL exchange with the writer. The bytes in flight set a worker's peak RSS during a push: the socket reads
# held in batches come from glibc's heap, which keeps its top until uploads pause (secreg/memory.py), and with
# the reads' mixed sizes the heap grew by about twice what was in flight. Interleaved 1 GiB pushes (2 workers,
# 6 rounds, summed RSS): batches of 4 MiB peaked at 141 MiB, 2 MiB at 128, 1 MiB at 120; server CPU per GiB
# 2.40 / 2.51 / 2.90 s.
BATCH_BYTES = 2 * 1024 * 1024
# Batches queued for the upload's writer thread while the next one is received: a writer that stalls for a
# moment (page-cache pressure, a busy CPU) does not stop the socket at once. Memory per upload stays below
# (PIPELINE_DEPTH + 1) * BATCH_BYTES.
PIPELINE_DEPTH = 2
_HASHER_CACHE_SIZE = 4096
# A write no session owns (a monolithic push written at its blob key, a server-side copy into blobs/, a cache
# fill) has no lock that says a request is still writing it: only the age of its last byte does. An hour is
# far longer than a live request goes without completing a part, so nothing in flight is ever aborted, even
# with `secreg gc --upload-age 0`.
INCOMPLETE_MIN_IDLE = 3600.0


class _UploadThreads:
    """Single-thread executors (one per receiving request: its batches in order), kept for the next request: a
    thread started and joined per request cost ~0.3 ms of CPU and ~1 ms of the request's time (a chunked push
    pays it per PATCH). At most `limit` idle; none inherited over a fork."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._idle: list[ThreadPoolExecutor] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return ThreadPoolExecutor(1, thread_name_prefix="secreg-upload")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < self._limit:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)


_upload_threads = _UploadThreads(8)


def _close(writer: AppendWriter) -> None:
    try:
        writer.close()
    finally:
        memory.trim_soon()  # the request's buffers are free: their pages go back once uploads pause (secreg/memory.py)


@dataclass(frozen=True)
class IdleSession:
    repository: str
    upload_id: str
    idle: float  # seconds since the last data arrived (or the session started)
    size: int


class UploadStore:
    def __init__(self, driver: StorageDriver, blobs: BlobStore, offload: Offload | None = None) -> None:
        self.driver = driver
        self.blobs = blobs
        self.offload = offload or Offload(driver)
        self._hashers: OrderedDict[tuple[str, str], Hasher] = OrderedDict()

    # --- session lifecycle -------------------------------------------------------------------------

    def start(self, name: str) -> str:
        upload_id = str(uuid.uuid4())
        started = datetime.now(UTC).isoformat().encode()
        # Not durable (two fsyncs less per push): a start time a crash lost or emptied reads as unreadable, and
        # `started_at` then goes by the data file's age.
        self.driver.write_bytes(layout.upload_started_at(name, upload_id), started, durable=False)
        self.driver.open_append(layout.upload_data(name, upload_id)).close()
        return upload_id

    def _check(self, name: str, upload_id: str) -> str:
        if not UPLOAD_ID.match(upload_id):
            raise UploadUnknown(upload_id)
        data = layout.upload_data(name, upload_id)
        if not self.driver.exists(data):
            raise UploadUnknown(upload_id)
        return data

    def size(self, name: str, upload_id: str) -> int:
        """The bytes the session holds for certain (`committed`), not counting what a request is writing now."""
        data = self._check(name, upload_id)
        try:
            # Before the record is read: a session without one (begun by registry:2, or the record is from before
            # the machine restarted) gets it from the first request that locks the data (`_settle`), before that
            # request writes a byte; so a data size taken while the record was still missing holds no such byte.
            stored = self.driver.stat(data).size
        except PathNotFound:
            raise UploadUnknown(upload_id) from None
        committed = self._read_committed(name, upload_id)
        return stored if committed is None else committed

    def _read_committed(self, name: str, upload_id: str) -> int | None:
        try:
            value = int(self.driver.read_transient(layout.upload_committed(name, upload_id)))
        except (PathNotFound, ValueError):
            return None
        return value if value >= 0 else None

    def _write_committed(self, name: str, upload_id: str, size: int) -> None:
        # Transient: a record lost in a crash of the machine reads as missing, and the data's size stands in.
        self.driver.write_transient(layout.upload_committed(name, upload_id), b"%d" % size)

    def _settle(self, name: str, upload_id: str, writer: AppendWriter) -> int:
        """Under the data's lock, before a request writes: the data cut back to the committed size when bytes lie
        past it that no request that ended kept (a worker killed mid-body), and the record written where it is
        missing or disagrees. Returns the size the request continues from."""
        committed = self._read_committed(name, upload_id)
        if committed is not None and committed < writer.size:
            try:
                writer.truncate(committed)
            except StorageError:
                pass  # an object store that sent those bytes as parts already: they count
        if committed != writer.size:
            self._write_committed(name, upload_id, writer.size)
        return writer.size

    def _end_failed(self, name: str, upload_id: str, writer: AppendWriter, data_path: str) -> None:
        """In a thread, after a body that broke off (the client went away) or failed to be stored: what reached
        storage stays and is committed, so the session continues where it stands; then the writer is closed."""
        try:
            try:
                writer.flush()
            except Exception:  # noqa: BLE001 - the request fails with its own error; the record says what is stored
                pass
            self._commit_stored(name, upload_id, data_path)
        finally:
            _close(writer)

    def _commit_stored(self, name: str, upload_id: str, data_path: str) -> None:
        """Under the data's lock: commit whatever the data holds now."""
        try:
            self._write_committed(name, upload_id, self.driver.stat(data_path).size)
        except PathNotFound:
            pass  # the session is gone (cancelled meanwhile)
        except Exception:  # noqa: BLE001 - unrecorded, those bytes are cut off by the next request (`_settle`)
            pass

    def cancel(self, name: str, upload_id: str) -> None:
        self._check(name, upload_id)
        self._hashers.pop((name, upload_id), None)
        try:
            self.driver.delete(layout.upload_dir(name, upload_id))
        except PathNotFound:
            raise UploadUnknown(upload_id) from None

    def started_at(self, name: str, upload_id: str) -> float:
        try:
            text = self.driver.read_bytes(layout.upload_started_at(name, upload_id)).decode()
            return datetime.fromisoformat(text.strip()).timestamp()
        except (PathNotFound, ValueError):
            # No readable start time: judge by the data file's age instead.
            try:
                return self.driver.stat(layout.upload_data(name, upload_id)).mtime
            except PathNotFound:
                return time.time()  # neither file yet: a session being created this instant

    # --- receiving bytes ---------------------------------------------------------------------------

    async def append(
        self,
        name: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        chunk_range: ChunkRange | None = None,
        content_length: int | None = None,
        *,
        save_hash: bool = True,
    ) -> int:
        """Append a request body to the session; returns the new size. With `save_hash`, the running hash
        state is stored beside the data afterwards, so the next request may land on any worker or replica."""
        run, thread = self.offload.run, self.offload.thread
        data_path = await run(self._check, name, upload_id)
        # Opening, locking, closing and saving the hash are requests to an object store: off the event loop, one
        # thread hop before the body and one after (each hop is a future, a wake-up and a GIL exchange: under
        # load, a wait for a CPU). On a local driver they are an open, an flock, a stat and a small file write
        # (tens of microseconds): inline, no hop (`Offload.run`), which a 16-PATCH push pays 32 times.
        writer, hasher = await run(self._begin, name, upload_id, data_path, None, chunk_range, content_length)
        try:
            await self._append_body(writer, hasher, body, chunk_range, content_length)
        except BaseException:
            # Shielded: a request cancelled mid-body still leaves its bytes stored and the writer closed.
            await asyncio.shield(thread(self._end_failed, name, upload_id, writer, data_path))
            raise
        size = writer.size
        if self.offload.inline:
            self._end_append(name, upload_id, writer, hasher, save_hash)
        else:
            await asyncio.shield(thread(self._end_append, name, upload_id, writer, hasher, save_hash))
        return size

    def _begin(self, name: str, upload_id: str, data_path: str, algorithm: str | None,
               chunk_range: ChunkRange | None = None,
               content_length: int | None = None) -> tuple[AppendWriter, Hasher | None]:
        """In a thread: the session's data opened and locked, a chunk's range checked against it, and the running
        hash of what it holds (`_take_hasher`). The writer is closed again when any of it fails."""
        writer = self.driver.open_append(data_path)
        try:
            if not writer.try_lock():
                committed = self._read_committed(name, upload_id)
                raise RangeMismatch(writer.size if committed is None else committed,
                                    "another request is writing to this upload")
            start = self._settle(name, upload_id, writer)
            if chunk_range is not None:
                if chunk_range.start != start:
                    raise RangeMismatch(start, f"chunk starts at {chunk_range.start}, upload is at {start}")
                if chunk_range.end < chunk_range.start:
                    raise RangeMismatch(start, "chunk range ends before it starts")
                if content_length is not None and content_length != chunk_range.length:
                    raise RangeMismatch(start, "Content-Range and Content-Length disagree")
            return writer, self._take_hasher(name, upload_id, start, algorithm)
        except BaseException:
            writer.close()
            raise

    async def _append_body(self, writer: AppendWriter, hasher: Hasher | None, body: AsyncIterator[bytes],
                           chunk_range: ChunkRange | None, content_length: int | None) -> None:
        """Receive `body` into the open, locked `writer`; a body shorter or longer than announced is cut off
        again (SizeMismatch)."""
        start = writer.size
        expected = chunk_range.length if chunk_range is not None else content_length
        received = await self._receive(body, writer, hasher, expected)
        if expected is not None and received != expected:
            await self.offload.thread(writer.truncate, start)
            raise SizeMismatch(f"received {received} bytes, expected {expected}; chunk discarded")

    def _end_append(self, name: str, upload_id: str, writer: AppendWriter, hasher: Hasher | None,
                    save_hash: bool) -> None:
        """In a thread, after a body was stored: the new size committed (before the lock goes: the next request
        must find it), the writer closed, the running hash kept (and its state saved)."""
        try:
            writer.flush()
            self._write_committed(name, upload_id, writer.size)
            if hasher is not None and save_hash:
                self._save_hash_state(name, upload_id, hasher)  # under the lock: its one file has one writer
        finally:
            _close(writer)
        if hasher is not None:
            self._remember_hasher(name, upload_id, hasher)

    async def _receive(self, body: AsyncIterator[bytes], writer: AppendWriter | StagedWriter,
                       hasher: Hasher | None, expected: int | None = None) -> int:
        """Receive `body` into `writer` through the upload's thread. With the body's `expected` length, the
        last BATCH_BYTES go to the thread read by read and the read that completes it carries the flush, so
        what is left to do once the last byte arrived is that read's hashing and writing, not a whole batch's
        (a chunked push waits for that tail once per PATCH)."""
        executor: ThreadPoolExecutor | None = None  # one thread per upload keeps the batches in order
        pending: deque[asyncio.Future[None]] = deque()
        submitted: list[Future[None]] = []  # what the thread may still run
        failed = False
        batch: list[bytes] = []
        batch_size = 0
        received = 0

        observe = hasher.update if hasher is not None else None

        tail = expected - BATCH_BYTES if expected is not None else None  # from here on, read by read
        flushed = False  # whether the last thing submitted ends with a flush

        def write(pieces: list[bytes], flush: bool) -> None:
            """One batch, in the upload's thread; `flush`: then put the staged tail in the file (the body is over,
            or should be)."""
            nonlocal failed
            if failed:
                return  # never write past a failed write: the hash and the file would disagree
            try:
                if pieces:
                    writer.write_pieces(pieces, observe)
                if flush:
                    writer.flush()
            except BaseException:
                failed = True
                raise

        def submit(pieces: list[bytes], flush: bool = False) -> None:
            nonlocal executor, flushed
            if executor is None:
                executor = _upload_threads.take()
            if submitted and submitted[0].done():
                submitted[:] = [future for future in submitted if not future.done()]
            future = executor.submit(write, pieces, flush)
            submitted.append(future)
            pending.append(asyncio.wrap_future(future))
            flushed = flush

        try:
            try:
                async for chunk in body:
                    if not chunk:
                        continue
                    batch.append(chunk)
                    batch_size += len(chunk)
                    received += len(chunk)
                    if batch_size >= BATCH_BYTES or (tail is not None and received > tail):
                        while len(pending) >= PIPELINE_DEPTH:
                            await pending.popleft()
                        submit(batch, received == expected)
                        batch, batch_size = [], 0
            finally:
                # Whatever arrived is written, even when the client went away: the session can be resumed.
                if batch or (executor is not None and not flushed):
                    submit(batch, True)
                outcomes = await asyncio.gather(*pending, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:
            if executor is not None:
                # Normally instant (every batch is done); after a cancellation it waits for the batch that is
                # being written, so nothing touches the file once the caller closes it.
                wait(submitted)
                _upload_threads.give_back(executor)
        return received

    def _take_hasher(self, name: str, upload_id: str, size: int, algorithm: str | None) -> Hasher | None:
        """The running hash of exactly the `size` bytes stored: this process's, or one a previous request (on
        any replica) saved; None when neither exists (the data is hashed again at commit). `algorithm` None:
        whichever is running (a new one is sha256, what clients name)."""
        hasher = self._hashers.pop((name, upload_id), None)
        if hasher is not None and hasher.size == size and algorithm in (None, hasher.algorithm):
            return hasher
        algorithm = algorithm or "sha256"
        if size == 0:
            return Hasher(algorithm)
        try:
            record = self.driver.read_transient(layout.upload_hash_state(name, upload_id, algorithm))
            offset, newline, state = record.partition(b"\n")
            if not newline or not offset.isdigit() or int(offset) != size:
                return None  # the state of other bytes (a request that ended before its state was saved)
            return Hasher.restore(algorithm, size, state)
        except (PathNotFound, ValueError):
            return None

    def _save_hash_state(self, name: str, upload_id: str, hasher: Hasher) -> None:
        state = hasher.export()
        if state is not None:
            path = layout.upload_hash_state(name, upload_id, hasher.algorithm)
            # Transient: a state lost in a crash (or one from before it, which the driver refuses) only costs
            # hashing the data again at commit; a committed blob is fsynced and verified either way.
            self.driver.write_transient(path, b"%d\n%s" % (hasher.size, state))

    def _remember_hasher(self, name: str, upload_id: str, hasher: Hasher) -> None:
        self._hashers[(name, upload_id)] = hasher
        while len(self._hashers) > _HASHER_CACHE_SIZE:
            self._hashers.popitem(last=False)

    # --- completing --------------------------------------------------------------------------------

    async def complete(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes] | None = None,
        chunk_range: ChunkRange | None = None,
        content_length: int | None = None,
    ) -> int:
        """Append the final chunk (if any), verify the digest, commit and link. Returns the blob size.
        On a digest mismatch the session is discarded and nothing is stored. The final chunk is written
        through the same open, locked writer the commit uses."""
        run, thread = self.offload.run, self.offload.thread
        data_path = await run(self._check, name, upload_id)
        writer, hasher = await run(self._begin, name, upload_id, data_path, digest.algorithm,
                                      chunk_range if body is not None else None,
                                      content_length if body is not None else None)
        try:
            if body is not None:
                await self._append_body(writer, hasher, body, chunk_range, content_length)
            size = writer.size
            if hasher is not None:
                actual = hasher.digest()
            else:
                # No running hash (a session continued where no state was saved): finish the data, hash it.
                await thread(writer.sync)
                actual = await thread(self._hash_file, data_path, digest.algorithm)
            if actual != digest:
                await thread(self.cancel, name, upload_id)
                raise DigestMismatch(digest, actual)
        except DigestMismatch:
            await asyncio.shield(thread(_close, writer))
            raise
        except BaseException:
            await asyncio.shield(thread(self._end_failed, name, upload_id, writer, data_path))
            raise
        # Shielded: a request cancelled now still finishes (or undoes) what it started.
        await asyncio.shield(self._commit_and_link(name, upload_id, writer, data_path, digest))
        return size

    async def _commit_and_link(self, name: str, upload_id: str, writer: AppendWriter, data_path: str,
                               digest: Digest) -> None:
        """The verified data fsynced and moved into place, and the repository's link written, in two threads at
        once: each is a chain of fsyncs (data, its directory / link file, its directory, the linker mark, its
        directory) and neither needs the other first, since a link whose blob is missing reads as an unknown blob
        (`BlobStore.stat`). When the data does not make it, a link written for it is taken back."""
        thread = self.offload.thread
        linking = asyncio.ensure_future(thread(self.blobs.link, name, digest))
        try:
            await thread(self._store_data, name, upload_id, writer, data_path, digest)
        except BaseException:
            await asyncio.gather(linking, return_exceptions=True)
            await thread(self._unlink_unless_stored, name, digest)
            raise
        await linking

    def _store_data(self, name: str, upload_id: str, writer: AppendWriter, data_path: str, digest: Digest) -> None:
        try:
            try:
                writer.sync()
                self.blobs.commit(data_path, digest)
            except BaseException:
                # The verified body is in the session, the blob is not: committed there, a retried PUT finds it.
                self._commit_stored(name, upload_id, data_path)
                raise
        finally:
            _close(writer)  # only now: whoever locks the data next finds it committed or gone
        self._discard(name, upload_id)
        memory.trim()  # the upload is over: its buffers go back now, not a quiet second later (secreg/memory.py)

    def _unlink_unless_stored(self, name: str, digest: Digest) -> None:
        if not self.blobs.exists_global(digest):
            try:
                self.blobs.unlink(name, digest)
            except BlobUnknown:
                pass

    def _hash_file(self, path: str, algorithm: str) -> Digest:
        hasher = hashlib.new(algorithm)
        with self.driver.open_read(path) as handle:
            while chunk := handle.read(BATCH_BYTES):
                hasher.update(chunk)
        return Digest(algorithm, hasher.hexdigest())

    def _discard(self, name: str, upload_id: str) -> None:
        try:
            self.driver.delete(layout.upload_dir(name, upload_id))
        except PathNotFound:
            pass

    async def monolithic(
        self, name: str, digest: Digest, body: AsyncIterator[bytes], content_length: int | None
    ) -> int:
        """`POST ?digest=` with the whole blob in the body. Where the driver can publish a file atomically at its
        final path (an object store), the bytes go straight to the blob's place, verified before they appear:
        no session, no copy. Otherwise (or when the blob exists already) through a session like any upload."""
        thread = self.offload.thread
        if not await thread(self.blobs.exists_global, digest):
            staged = await thread(self.driver.open_staged, layout.blob_data(digest))
            if staged is not None:
                return await self._monolithic_staged(name, digest, body, content_length, staged)
        upload_id = await thread(self.start, name)
        hasher = Hasher(digest.algorithm)
        self._remember_hasher(name, upload_id, hasher)
        try:
            return await self.complete(name, upload_id, digest, body, None, content_length)
        except BaseException:
            self._hashers.pop((name, upload_id), None)
            await asyncio.shield(self.offload.run(self._discard, name, upload_id))
            raise

    async def _monolithic_staged(self, name: str, digest: Digest, body: AsyncIterator[bytes],
                                 content_length: int | None, staged: StagedWriter) -> int:
        thread = self.offload.thread
        hasher = Hasher(digest.algorithm)
        try:
            received = await self._receive(body, staged, hasher)
            if content_length is not None and received != content_length:
                raise SizeMismatch(f"received {received} bytes, expected {content_length}")
            if hasher.digest() != digest:
                raise DigestMismatch(digest, hasher.digest())
            await thread(staged.sync)
        except BaseException:
            await asyncio.shield(thread(staged.abort))
            memory.trim_soon()
            raise
        await thread(memory.trim)  # the upload is over: its buffers go back now (secreg/memory.py)
        await thread(self.blobs.link, name, digest)
        return received

    def purge_stale(self, max_age: float, now: float | None = None) -> list[tuple[str, str]]:
        """Delete upload sessions idle for more than `max_age` seconds; returns what was removed."""
        return [(s.repository, s.upload_id) for s in self.purge_idle(max_age, now)]

    def idle_sessions(self, max_idle: float, now: float | None = None,
                      sessions: Iterable[tuple[str, str]] | None = None) -> list[IdleSession]:
        """Sessions that received no data for more than `max_idle` seconds (since their start, or the last byte
        written: the data file's mtime). `sessions`: the (repository, upload id) pairs to judge, when the
        caller has listed them already (a collection's scan); otherwise every repository's are listed."""
        now = time.time() if now is None else now
        found: list[IdleSession] = []
        for name, upload_id in self.all_sessions() if sessions is None else sorted(sessions):
            if UPLOAD_ID.match(upload_id):
                last, size = self.started_at(name, upload_id), 0
                try:
                    info = self.driver.stat(layout.upload_data(name, upload_id))
                    last, size = max(last, info.mtime), info.size
                except PathNotFound:
                    pass
                if now - last > max_idle:
                    found.append(IdleSession(name, upload_id, now - last, size))
        return found

    def purge_idle(self, max_idle: float, now: float | None = None,
                   sessions: Iterable[tuple[str, str]] | None = None) -> list[IdleSession]:
        """Delete the `idle_sessions`, except one a request is writing right now (it holds the data file's lock)."""
        removed: list[IdleSession] = []
        for session in self.idle_sessions(max_idle, now, sessions):
            data_path = layout.upload_data(session.repository, session.upload_id)
            try:
                writer = self.driver.open_append(data_path) if self.driver.exists(data_path) else None
            except (PathNotFound, OSError):
                continue  # completed or cancelled meanwhile
            try:
                if writer is not None and not writer.try_lock():
                    continue  # in use: a PATCH or PUT is writing it
                self._hashers.pop((session.repository, session.upload_id), None)
                self._discard(session.repository, session.upload_id)
                removed.append(session)
            finally:
                if writer is not None:
                    writer.close()
        return removed

    def stale_writes(self, max_idle: float, now: float | None = None,
                     sessions: Iterable[tuple[str, str]] | None = None) -> list[IncompleteWrite]:
        """Incomplete writes (an object store's multipart uploads) that no upload session owns and that received
        nothing for more than `max_idle` seconds (and at least INCOMPLETE_MIN_IDLE): what an interrupted push
        or copy left behind. A session's own writes go with the session (`purge_idle`). `sessions` as for
        `idle_sessions`, listed after `now`: a session begun later writes only after `now`, so none of its
        writes is old enough to be a candidate."""
        now = time.time() if now is None else now
        # Listed before the sessions (unless given): a write begun after this listing is too young to be a
        # candidate anyway.
        candidates = self.driver.stale_writes(layout.V2, now - max(max_idle, INCOMPLETE_MIN_IDLE))
        if not candidates:
            return []
        live = tuple(f"{layout.upload_dir(name, upload_id)}/"
                     for name, upload_id in (self.all_sessions() if sessions is None else sessions))
        return [write for write in candidates if not write.path.startswith(live)]

    def abort_stale_writes(self, max_idle: float, now: float | None = None,
                           sessions: Iterable[tuple[str, str]] | None = None) -> list[IncompleteWrite]:
        """Abort the `stale_writes`; returns them."""
        writes = self.stale_writes(max_idle, now, sessions)
        for write in writes:
            self.driver.abort_write(write)
        return writes

    def all_sessions(self) -> list[tuple[str, str]]:
        """(repository, upload id) of every session with a file, repositories that hold nothing else included:
        one walk of repositories/ that enters no `_` directory but `_uploads` (on S3 one listing of the keys,
        not two delimited listings per repository). A session directory without a file is no session: its
        age could not be told (`started_at` takes it for one being created)."""
        found: dict[tuple[str, str], None] = {}
        for path in self.driver.walk_paths(layout.REPOSITORIES, _not_uploads):
            parsed = layout.parse_repository_path(path)
            if parsed is not None and parsed.upload_id is not None and UPLOAD_ID.match(parsed.upload_id):
                found[(parsed.repository, parsed.upload_id)] = None
        return sorted(found)

    def list_sessions(self, name: str) -> list[str]:
        try:
            return [u for u in self.driver.list(layout.uploads_dir(name)) if UPLOAD_ID.match(u)]
        except PathNotFound:
            return []


def _not_uploads(directory: str) -> bool:
    """A repository's directory of anything but upload sessions (`_layers`, `_manifests`, ...), or not a
    repository's at all (a `.`-directory): what the walk for sessions need not enter."""
    name = directory.rpartition("/")[2]
    return (name.startswith("_") and name != layout.UPLOADS_MARKER) or name.startswith(".")
