"""What an upload session holds for certain (`committed`): bytes that no request that ended kept (a worker
killed mid-body left them) never count, on a disk and on an object store (moto), and a session without the
record (begun by registry:2) counts its data."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from secreg.digest import Digest
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import RangeMismatch
from secreg.registry.model import ChunkRange
from secreg.registry.uploads import UploadStore
from secreg.storage import layout
from secreg.storage.driver import StorageDriver
from secreg.storage.filesystem import FilesystemDriver
from secreg.storage.s3 import S3Driver, S3Options
from tests.objectstores import ObjectStore, moto_server

MIB = 1024 * 1024


async def body(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 65536):
        yield data[start:start + 65536]


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    with moto_server(tmp_path_factory.mktemp("moto")) as store:
        yield store


def _s3(store: ObjectStore) -> S3Driver:
    options = S3Options(bucket=f"b-{uuid.uuid4().hex[:12]}", region=store.region, regionendpoint=store.endpoint,
                        accesskey=store.accesskey, secretkey=store.secretkey, secure=False, chunksize=5 * MIB)
    driver = S3Driver(options)
    driver.ensure_bucket()
    return driver


@pytest.fixture(params=["filesystem", "s3"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    if request.param == "filesystem":
        return FilesystemDriver(tmp_path)
    return _s3(request.getfixturevalue("moto"))


def _killed_writer(driver: StorageDriver, upload: str, data: bytes) -> None:
    """What a worker killed mid-body leaves: its bytes stored (flushed), no request ended with them."""
    writer = driver.open_append(layout.upload_data("app", upload))
    assert writer.try_lock()
    writer.write(data)
    writer.flush()
    writer.close()


def test_bytes_a_killed_writer_left_never_count(driver: StorageDriver) -> None:
    store = UploadStore(driver, BlobStore(driver))
    data = os.urandom(4 * MIB + 3)
    upload = store.start("app")
    assert asyncio.run(store.append("app", upload, body(data[:MIB]), ChunkRange(0, MIB - 1))) == MIB
    _killed_writer(driver, upload, os.urandom(2 * MIB))  # within a part: an object store can cut it off too
    assert driver.stat(layout.upload_data("app", upload)).size == 3 * MIB
    assert store.size("app", upload) == MIB
    rest = ChunkRange(MIB, len(data) - 1)
    assert asyncio.run(store.append("app", upload, body(data[MIB:]), rest)) == len(data)
    assert store.size("app", upload) == len(data)
    assert asyncio.run(store.complete("app", upload, Digest.of(data))) == len(data)
    assert driver.read_bytes(layout.blob_data(Digest.of(data))) == data


def test_sent_parts_a_killed_writer_left_count_once_a_request_finds_them(moto: ObjectStore) -> None:
    """An object store cannot take back a part it was sent: the next request commits those bytes and refuses a
    chunk from the old size with the new one (the client asks the status and continues there)."""
    driver = _s3(moto)
    store = UploadStore(driver, BlobStore(driver))
    data = os.urandom(8 * MIB)
    upload = store.start("app")
    asyncio.run(store.append("app", upload, body(data[:MIB]), ChunkRange(0, MIB - 1)))
    _killed_writer(driver, upload, data[MIB:7 * MIB])  # one 5 MiB part sent
    assert store.size("app", upload) == MIB
    with pytest.raises(RangeMismatch) as refused:
        asyncio.run(store.append("app", upload, body(data[MIB:]), ChunkRange(MIB, len(data) - 1)))
    assert refused.value.current_size == 7 * MIB
    assert store.size("app", upload) == 7 * MIB
    asyncio.run(store.append("app", upload, body(data[7 * MIB:]), ChunkRange(7 * MIB, len(data) - 1)))
    assert asyncio.run(store.complete("app", upload, Digest.of(data))) == len(data)
    assert driver.read_bytes(layout.blob_data(Digest.of(data))) == data


def test_a_session_without_the_record_counts_its_data(tmp_path: Path) -> None:
    """A session registry:2 began (no `committed`): its data counts, and the next request records it."""
    driver = FilesystemDriver(tmp_path)
    store = UploadStore(driver, BlobStore(driver))
    data = os.urandom(300_000)
    upload = str(uuid.uuid4())
    driver.write_bytes(layout.upload_data("app", upload), data[:100_000])
    assert store.size("app", upload) == 100_000
    assert asyncio.run(store.append("app", upload, body(data[100_000:200_000]))) == 200_000
    assert driver.read_transient(layout.upload_committed("app", upload)) == b"200000"
    assert asyncio.run(store.complete("app", upload, Digest.of(data), body(data[200_000:]))) == len(data)
    assert driver.read_bytes(layout.blob_data(Digest.of(data))) == data
