"""Two upload stores over one storage (two replicas): the second continues the first one's running digest from
the saved hash state, without reading the data again."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from secreg.digest import Digest
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import DigestMismatch
from secreg.registry.uploads import UploadStore
from secreg.storage import filesystem, layout
from secreg.storage.filesystem import FilesystemDriver


async def body(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 65536):
        yield data[start:start + 65536]


def test_second_replica_continues_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FilesystemDriver(tmp_path)
    a, b = UploadStore(driver, BlobStore(driver)), UploadStore(driver, BlobStore(driver))
    data = os.urandom(3 * 1024 * 1024 + 5)
    upload = a.start("app")
    asyncio.run(a.append("app", upload, body(data[:1_000_000])))
    assert driver.exists(layout.upload_hash_state("app", upload, "sha256"))

    def no_rehash(*_: object) -> Digest:
        raise AssertionError("the data was hashed again")

    monkeypatch.setattr(b, "_hash_file", no_rehash)
    asyncio.run(b.append("app", upload, body(data[1_000_000:2_000_000])))
    size = asyncio.run(b.complete("app", upload, Digest.of(data), body(data[2_000_000:])))
    assert size == len(data)
    assert driver.read_bytes(layout.blob_data(Digest.of(data))) == data


def test_without_a_saved_state_the_data_is_hashed_at_commit(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    a, b = UploadStore(driver, BlobStore(driver)), UploadStore(driver, BlobStore(driver))
    data = os.urandom(200_000)
    upload = a.start("app")
    asyncio.run(a.append("app", upload, body(data), save_hash=False))
    assert asyncio.run(b.complete("app", upload, Digest.of(data))) == len(data)


def test_a_state_saved_before_a_restart_of_the_machine_is_not_trusted(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash states are saved without fsync: after a crash the data they describe may not be on disk, so one from
    an earlier boot is ignored and the data is hashed again at commit."""
    driver = FilesystemDriver(tmp_path)
    data = os.urandom(300_000)
    a = UploadStore(driver, BlobStore(driver))
    upload = a.start("app")
    asyncio.run(a.append("app", upload, body(data[:100_000])))
    assert driver.read_transient(layout.upload_hash_state("app", upload, "sha256"))
    monkeypatch.setattr(filesystem, "BOOT_ID", b"after-a-restart")
    b = UploadStore(driver, BlobStore(driver))
    rehashed: list[str] = []
    real_hash_file = b._hash_file
    monkeypatch.setattr(b, "_hash_file", lambda path, algorithm: (rehashed.append(path),
                                                                  real_hash_file(path, algorithm))[1])
    asyncio.run(b.append("app", upload, body(data[100_000:200_000])))
    assert asyncio.run(b.complete("app", upload, Digest.of(data), body(data[200_000:]))) == len(data)
    assert len(rehashed) == 1
    assert driver.read_bytes(layout.blob_data(Digest.of(data))) == data


def test_a_wrong_digest_after_a_final_chunk_stores_nothing(tmp_path: Path) -> None:
    """The final chunk and the commit share one writer: a digest that does not match still discards it all."""
    driver = FilesystemDriver(tmp_path)
    store = UploadStore(driver, BlobStore(driver))
    data = os.urandom(200_000)
    upload = store.start("app")
    asyncio.run(store.append("app", upload, body(data[:50_000])))
    with pytest.raises(DigestMismatch):
        asyncio.run(store.complete("app", upload, Digest.of(b"other"), body(data[50_000:])))
    assert not driver.exists(layout.blob_data(Digest.of(data)))
    assert not driver.exists(layout.upload_dir("app", upload))


def test_a_link_written_beside_a_commit_that_fails_is_taken_back(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's link is written while the data is fsynced and moved (two threads): when the move fails,
    the link goes too, and the session is still there to retry."""
    driver = FilesystemDriver(tmp_path)
    blobs = BlobStore(driver)
    store = UploadStore(driver, blobs)
    data = os.urandom(100_000)
    upload = store.start("app")

    def failing_commit(source: str, digest: Digest) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobs, "commit", failing_commit)
    with pytest.raises(OSError):
        asyncio.run(store.complete("app", upload, Digest.of(data), body(data)))
    assert not driver.exists(layout.layer_link("app", Digest.of(data)))
    assert not driver.exists(layout.blob_data(Digest.of(data)))
    assert driver.exists(layout.upload_data("app", upload))
    monkeypatch.undo()
    assert asyncio.run(store.complete("app", upload, Digest.of(data))) == len(data)
    assert blobs.stat("app", Digest.of(data)).size == len(data)


def test_one_state_file_per_upload_names_its_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request rewrites the one state file; a state of other bytes than the session holds (its request ended
    before saving) is not used: the data is hashed again at commit."""
    driver = FilesystemDriver(tmp_path)
    a, b = UploadStore(driver, BlobStore(driver)), UploadStore(driver, BlobStore(driver))
    data = os.urandom(300_000)
    upload = a.start("app")
    for start in range(0, 200_000, 50_000):
        asyncio.run(a.append("app", upload, body(data[start:start + 50_000])))
    state_dir = tmp_path / layout.upload_hash_state("app", upload, "sha256")
    assert os.listdir(state_dir.parent) == ["state"]
    assert driver.read_transient(layout.upload_hash_state("app", upload, "sha256")).startswith(b"200000\n")
    asyncio.run(a.append("app", upload, body(data[200_000:250_000]), save_hash=False))
    rehashed: list[str] = []
    real_hash_file = b._hash_file
    monkeypatch.setattr(b, "_hash_file", lambda path, algorithm: (rehashed.append(path),
                                                                  real_hash_file(path, algorithm))[1])
    assert asyncio.run(b.complete("app", upload, Digest.of(data), body(data[250_000:]))) == len(data)
    assert len(rehashed) == 1
    assert driver.read_bytes(layout.blob_data(Digest.of(data))) == data
