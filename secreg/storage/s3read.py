"""A seekable, streaming reader of one object: one ranged GET from the position to the end, reopened at the
same offset when the stream breaks (a reset connection or a 5xx mid-body), so a long read survives a hiccup."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

from secreg.storage.driver import StorageError
from secreg.storage.s3errors import CLIENT_FAILURES, storage_errors

if TYPE_CHECKING:
    from secreg.storage.s3 import S3Driver

log = logging.getLogger("secreg.storage.s3")
_REOPENS = 3


class S3Reader(io.RawIOBase):
    def __init__(self, driver: S3Driver, key: str, size: int) -> None:
        super().__init__()
        self._driver = driver
        self._key = key
        self.size = size
        self._position = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self._position + offset, io.SEEK_END: self.size + offset}[whence]
        if target < 0:
            raise ValueError("negative seek position")
        if target != self._position:
            self._drop()
            self._position = target
        return self._position

    def _open(self) -> Any:
        with storage_errors(f"GET {self._key} from {self._position}"):
            answer = self._driver.client.get_object(
                Bucket=self._driver.bucket, Key=self._key, Range=f"bytes={self._position}-"
            )
        return answer["Body"]

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self.size or not len(view):
            return 0
        for attempt in range(_REOPENS + 1):
            if self._body is None:
                self._body = self._open()
            try:
                data = self._body.read(len(view))
            except CLIENT_FAILURES as exc:
                self._drop()
                if attempt == _REOPENS:
                    raise StorageError(f"reading {self._key} at {self._position}: {exc}") from exc
                log.warning("object stream broke at %d (%s); reopening", self._position, exc)
                continue
            if not data:
                self._drop()
                if attempt == _REOPENS:
                    raise StorageError(f"{self._key} ended at {self._position} of {self.size}")
                continue
            view[: len(data)] = data
            self._position += len(data)
            return len(data)
        return 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(self.size - self._position, 0)
        buffer = bytearray(min(size, max(self.size - self._position, 0)))
        filled = 0
        while filled < len(buffer):
            count = self.readinto(memoryview(buffer)[filled:])
            if not count:
                break
            filled += count
        del buffer[filled:]
        return bytes(buffer)

    def close(self) -> None:
        self._drop()
        super().close()
