"""Appending to an object that cannot be appended: a file being written is a multipart upload plus a state
object, so any process that reaches the bucket continues it.

    <path>                              the finished object (after `sync`)
    <path>.append/state                 JSON: multipart upload id, parts so far (number, ETag, size), the tail
    <path>.append/tail-<offset>-<rand>  bytes past the last full part (smaller than a part; S3 wants >= 5 MiB)
    <path>.append/lock/<owner>          who is writing now (see `BucketLock`)

Bytes are buffered until a part of `chunksize` is full, and that part is sent at once from the buffer itself
(`PartBuffer`: one allocation per writer, refilled in place): memory per writer stays below one part plus one
batch. `flush` stores the partial tail as its own small object and the state after it,
so a crash loses nothing that `flush` returned for, and a state always names parts and a tail that exist.
A part sent after the last state was written is simply not named, and is sent again under the same number.
`sync` sends the tail as the last part and completes the upload into `<path>`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from secreg.storage.driver import StorageError
from secreg.storage.s3errors import is_missing, storage_errors

if TYPE_CHECKING:
    from secreg.storage.s3 import S3Driver

log = logging.getLogger("secreg.storage.s3")

LOCK_TTL = 120.0  # a lock not refreshed for this long belongs to a dead process
_LOCK_REFRESH = LOCK_TTL / 4


@dataclass(frozen=True)
class AppendState:
    size: int = 0
    upload_id: str | None = None
    parts: tuple[tuple[int, str, int], ...] = ()  # (number, ETag, size), numbered from 1
    tail: str | None = None  # key of the tail object
    tail_size: int = 0
    modified: float = field(default=0.0, compare=False)

    @property
    def parts_size(self) -> int:
        return sum(size for _number, _etag, size in self.parts)

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, "size": self.size, "upload": self.upload_id,
                           "parts": [list(p) for p in self.parts], "tail": self.tail,
                           "tailsize": self.tail_size}).encode()

    @classmethod
    def from_json(cls, data: bytes, modified: float) -> AppendState:
        tree = json.loads(data)
        return cls(int(tree["size"]), tree.get("upload"), tuple((int(n), str(e), int(s)) for n, e, s in tree["parts"]),
                   tree.get("tail"), int(tree.get("tailsize", 0)), modified)


def sidecar(driver: S3Driver, path: str) -> str:
    from secreg.storage.s3 import APPEND_SUFFIX

    return f"{driver.key(path)}{APPEND_SUFFIX}"


def read_state(driver: S3Driver, path: str) -> AppendState | None:
    with storage_errors(f"reading append state of {path}"):
        try:
            answer = driver.client.get_object(Bucket=driver.bucket, Key=f"{sidecar(driver, path)}/state")
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        with answer["Body"] as body:
            data = body.read()
    return AppendState.from_json(data, answer["LastModified"].timestamp())


def _server_now(answer: dict[str, Any]) -> float:
    """The object store's clock (the `Date` of its answer): lock ages are judged on the clock that stamped them."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date).timestamp() if date else time.time()


class BucketLock:
    """Mutual exclusion through the bucket alone, without conditional writes (Swift's s3api refuses them):
    write `<prefix>/<owner>`, then list the prefix; the lock is held only when no OTHER live entry is listed.
    Two contenders that write at the same moment both see each other and both give up (safe; the caller
    retries). Safety needs a listing that shows every object written before it began: true of AWS S3 since
    2020 and of a Swift whose container updates are not deferred; see README "Scaling out". A holder refreshes
    its entry every LOCK_TTL/4; an entry older than LOCK_TTL is a dead holder's and is ignored and removed."""

    def __init__(self, driver: S3Driver, prefix: str) -> None:
        self._driver = driver
        self._prefix = prefix.rstrip("/") + "/"
        self._key = f"{self._prefix}{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self.held = False

    def acquire(self) -> bool:
        client, bucket = self._driver.client, self._driver.bucket
        with storage_errors(f"taking lock {self._key}"):
            # An entry left behind by a failure here is ignored by others once it is older than LOCK_TTL.
            client.put_object(Bucket=bucket, Key=self._key, Body=b"")
            answer = client.list_objects_v2(Bucket=bucket, Prefix=self._prefix)
            now = _server_now(answer)
            rivals = []
            for item in answer.get("Contents", []):
                if item["Key"] == self._key:
                    continue
                if now - item["LastModified"].timestamp() > LOCK_TTL:
                    client.delete_object(Bucket=bucket, Key=item["Key"])
                else:
                    rivals.append(item["Key"])
            if rivals:
                client.delete_object(Bucket=bucket, Key=self._key)
                return False
        self.held = True
        self._refresher = threading.Thread(target=self._refresh, name="secreg-s3-lock", daemon=True)
        self._refresher.start()
        return True

    def _refresh(self) -> None:
        while not self._stop.wait(_LOCK_REFRESH):
            try:
                with storage_errors(f"refreshing lock {self._key}"):
                    self._driver.client.put_object(Bucket=self._driver.bucket, Key=self._key, Body=b"")
            except StorageError as exc:
                log.warning("%s", exc)

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        self.held = False
        try:
            with storage_errors(f"releasing lock {self._key}"):
                self._driver.client.delete_object(Bucket=self._driver.bucket, Key=self._key)
        except StorageError as exc:
            log.warning("%s (it expires in %d s)", exc, LOCK_TTL)


class PartBuffer:
    """The bytes not yet sent as a part: one allocation that grows to the part size with the first part and is
    then refilled in place, part after part, and sent as it is (a full part is the buffer itself, no copy).
    Growing a fresh bytearray for every part and freeing it after was 10 MiB of heap churn per part, which glibc
    kept after load (see secreg/memory.py)."""

    def __init__(self, capacity: int, initial: bytes = b"") -> None:
        self.capacity = capacity
        self._data = bytearray(initial)
        self.size = len(initial)

    def __len__(self) -> int:
        return self.size

    @property
    def full(self) -> bool:
        return self.size >= self.capacity

    def fill(self, view: memoryview) -> memoryview:
        """Copy as much of `view` as fits into the part; returns what did not fit."""
        count = min(self.capacity - self.size, len(view))
        in_place = min(count, len(self._data) - self.size)
        if in_place:
            # Through a memoryview: `bytearray[a:b] = view` would first copy `view` into a temporary bytearray.
            with memoryview(self._data) as target:
                target[self.size:self.size + in_place] = view[:in_place]
        if count > in_place:  # the first part only: the buffer grows (realloc) to the part size, then never again
            self._data += view[in_place:count]
        self.size += count
        return view[count:]

    def body(self) -> bytes | bytearray:
        """The bytes as a request body: the buffer itself when it is exactly full, else a copy of what it holds
        (only the last part and a tail are partial)."""
        if self.size == len(self._data):
            return self._data
        return bytes(memoryview(self._data)[: self.size])

    def take_front(self, count: int) -> bytes:
        """Remove and return the first `count` bytes (a tail loaded larger than a part: rare)."""
        front = bytes(memoryview(self._data)[:count])
        del self._data[:count]
        self.size -= count
        return front

    def truncate(self, size: int) -> None:
        self.size = min(size, self.size)

    def clear(self) -> None:
        self.size = 0


class S3AppendWriter:
    """The driver's AppendWriter over a multipart upload (see the module docstring)."""

    def __init__(self, driver: S3Driver, path: str, *, staged: bool = False) -> None:
        """`staged`: a StagedWriter (a whole file in one go, e.g. a blob whose digest came with the upload):
        no state object and no tail are ever stored; the bytes appear at `sync` or never (`abort`, a crash:
        the incomplete multipart upload is invisible; the upload purge aborts it once it is old enough,
        `UploadStore.abort_stale_writes`)."""
        self._driver = driver
        self._path = path
        self._staged = staged
        self._sidecar = sidecar(driver, path)
        self._key = driver.key(path)
        self._chunk = driver.options.chunksize
        self._lock: BucketLock | None = None
        self._load()

    def _load(self) -> None:
        found = None if self._staged else read_state(self._driver, self._path)
        self._finished = not self._staged and found is None and self._driver.head(self._key) is not None
        if self._finished:
            head = self._driver.head(self._key) or {}
            found = AppendState(size=int(head.get("ContentLength", 0)))
        self._opened = found or AppendState()
        self._state = self._opened
        self._written = found is not None  # the state object exists
        self._buffer: PartBuffer | None = None  # the tail plus new bytes not yet in a part; loaded when needed
        self._dirty = False
        self.size = self._state.size

    # --- protocol ---------------------------------------------------------------------------------

    def try_lock(self) -> bool:
        if self._lock is None:
            self._lock = BucketLock(self._driver, f"{self._sidecar}/lock")
        if self._lock.held:
            return True
        if not self._lock.acquire():
            return False
        if not self._dirty:
            self._load()  # the state as the last writer left it: it may have ended between our open and the lock
        return True

    def write(self, data: bytes | bytearray | memoryview, observe: Callable[[memoryview], object] | None = None
              ) -> None:
        self.write_pieces([data], observe)

    def write_pieces(self, pieces: Sequence[bytes | bytearray | memoryview],
                     observe: Callable[[memoryview], object] | None = None) -> None:
        if self._finished:
            raise StorageError(f"{self._path} is complete; it cannot be appended to")
        buffer = self._load_buffer()
        while len(buffer) > self._chunk:  # a tail left larger than a part (a smaller chunksize since)
            self._send_part(buffer.take_front(self._chunk))
        if buffer.full:  # a tail of exactly one part (that part failed to send)
            self._send_part(buffer.body())
            buffer.clear()
        for piece in pieces:
            view = memoryview(piece).cast("B")
            if observe is not None:
                observe(view)
            self.size += len(view)
            self._dirty = True
            while view:
                view = buffer.fill(view)
                if buffer.full:
                    # The buffer itself is the part's body (no copy); refilled once the part is stored.
                    self._send_part(buffer.body())
                    buffer.clear()

    def flush(self) -> None:
        if self._staged or self._finished or (not self._dirty and self._written):
            return
        buffer = self._load_buffer()
        old_tail = self._state.tail
        tail = None
        if buffer:
            tail = f"{self._sidecar}/tail-{self._state.parts_size}-{uuid.uuid4().hex[:8]}"
            self._put(tail, buffer.body())
        self._state = replace(self._state, size=self.size, tail=tail, tail_size=len(buffer))
        self._put(f"{self._sidecar}/state", self._state.to_json())
        self._written, self._dirty = True, False
        if old_tail and old_tail != tail and old_tail != self._opened.tail:
            self._delete(old_tail)

    def sync(self) -> None:
        """Finish: the bytes become the object at the path, and the sidecar goes away."""
        if self._finished:
            return
        buffer = self._load_buffer()
        client, bucket = self._driver.client, self._driver.bucket
        with storage_errors(f"completing {self._path}"):
            if self._state.upload_id is None:
                client.put_object(Bucket=bucket, Key=self._key, Body=buffer.body())
            else:
                if buffer or not self._state.parts:
                    self._send_part(buffer.body())
                self._driver.complete_multipart(self._key, self._state.upload_id, self._state.parts)
        self._finished = True
        self._buffer = PartBuffer(0)
        if self._staged:
            return
        try:
            doomed = [item["Key"] for item in self._driver.list_keys(f"{self._sidecar}/")]
        except StorageError as exc:  # the file is whole and the caller may go on; the sidecar is left over
            log.warning("%s", exc)
            return
        for key in doomed:
            if "/lock/" not in key:
                self._delete(key)

    def abort(self) -> None:
        """Staged writers: drop every part sent; nothing was ever visible."""
        if not self._finished and self._state.upload_id is not None:
            self._driver.abort_multipart(self._key, self._state.upload_id, quiet=True)  # else the purge reaps it
        self._finished = True
        self._buffer = PartBuffer(0)

    def truncate(self, size: int) -> None:
        """Back to the size at open (drops what this writer appended), or within the unsent tail."""
        if size == self._opened.size:
            self._state, self.size, self._buffer, self._dirty = self._opened, size, None, True
            return
        if self._finished or not self._state.parts_size <= size <= self.size:
            raise StorageError(f"cannot truncate {self._path} to {size}: those bytes are in sent parts")
        buffer = self._load_buffer()
        buffer.truncate(size - self._state.parts_size)
        self.size, self._dirty = size, True

    def close(self) -> None:
        try:
            if self._lock is None or self._lock.held:
                self.flush()
        finally:
            if self._lock is not None:
                self._lock.release()

    # --- parts ------------------------------------------------------------------------------------

    def _load_buffer(self) -> PartBuffer:
        if self._buffer is None:
            tail = b""
            if self._state.tail:
                with storage_errors(f"reading the tail of {self._path}"):
                    answer = self._driver.client.get_object(Bucket=self._driver.bucket, Key=self._state.tail)
                    with answer["Body"] as body:
                        tail = body.read()
                if len(tail) != self._state.tail_size:
                    raise StorageError(f"tail of {self._path} holds {len(tail)} bytes, "
                                       f"expected {self._state.tail_size}")
            self._buffer = PartBuffer(self._chunk, tail)
        return self._buffer

    def _send_part(self, data: bytes | bytearray) -> None:
        client, bucket = self._driver.client, self._driver.bucket
        state = self._state
        with storage_errors(f"sending part of {self._path}"):
            if state.upload_id is None:
                upload_id = client.create_multipart_upload(Bucket=bucket, Key=self._key)["UploadId"]
                state = replace(state, upload_id=upload_id)
            number = len(state.parts) + 1
            answer = client.upload_part(Bucket=bucket, Key=self._key, UploadId=state.upload_id,
                                        PartNumber=number, Body=data)
        self._state = replace(state, parts=(*state.parts, (number, str(answer["ETag"]), len(data))))

    def _put(self, key: str, data: bytes | bytearray) -> None:
        with storage_errors(f"PUT {key}"):
            self._driver.client.put_object(Bucket=self._driver.bucket, Key=key, Body=data)

    def _delete(self, key: str) -> None:
        try:
            with storage_errors(f"deleting {key}"):
                self._driver.client.delete_object(Bucket=self._driver.bucket, Key=key)
        except StorageError as exc:
            log.warning("%s", exc)
