"""The driver conformance suite against the S3 driver on the moto server, plus what only an object store has:
multipart appends continued by another client, aborts, distribution's key layout, faults mid-transfer."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from secreg.storage.driver import PathNotFound, StorageError
from secreg.storage.s3 import S3Driver, S3Options
from tests.faultproxy import Fault, FaultProxy
from tests.objectstores import ObjectStore, moto_server
from tests.storage.driver_suite import DriverSuite

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    with moto_server(tmp_path_factory.mktemp("moto")) as store:
        yield store


def make_driver(store: ObjectStore, bucket: str, endpoint: str | None = None, attempts: int = 5,
                **extra: object) -> S3Driver:
    options = S3Options(bucket=bucket, region=store.region, regionendpoint=endpoint or store.endpoint,
                        accesskey=store.accesskey, secretkey=store.secretkey, secure=False,
                        **extra)  # type: ignore[arg-type]
    driver = S3Driver(options, attempts=attempts)
    driver.ensure_bucket()
    return driver


@pytest.fixture()
def driver(moto: ObjectStore) -> S3Driver:
    return make_driver(moto, f"b-{uuid.uuid4().hex[:12]}", rootdirectory="/some/root/")


class TestS3Driver(DriverSuite):
    """The suite on the module's `driver` fixture."""


def test_keys_are_distributions(driver: S3Driver) -> None:
    driver.write_bytes("docker/registry/v2/blobs/sha256/ab/abc/data", b"x")
    keys = [item["Key"] for item in driver.list_keys("")]
    assert keys == ["some/root/docker/registry/v2/blobs/sha256/ab/abc/data"]


def test_multipart_append_continued_by_another_client(moto: ObjectStore, driver: S3Driver) -> None:
    data = os.urandom(13 * MIB + 123)
    first = driver.open_append("up/data")
    assert first.try_lock()
    first.write(data[: 7 * MIB])  # one 5 MiB part sent, 2 MiB tail kept
    first.close()
    # Another process (its own client) continues where the first stopped.
    other = make_driver(moto, driver.bucket, rootdirectory="/some/root/", chunksize=5 * MIB)
    assert other.stat("up/data").size == 7 * MIB and not other.stat("up/data").is_dir
    assert other.list("up") == ["data"]
    second = other.open_append("up/data")
    assert second.try_lock() and second.size == 7 * MIB
    second.write_pieces([data[7 * MIB: 9 * MIB], memoryview(data)[9 * MIB:]])
    second.sync()
    second.close()
    assert other.read_bytes("up/data") == data
    assert [i["Key"] for i in other.list_keys("some/root/up/")] == ["some/root/up/data"]
    uploads = other.client.list_multipart_uploads(Bucket=other.bucket).get("Uploads", [])
    assert uploads == []


def test_parts_are_chunksize(moto: ObjectStore) -> None:
    driver = make_driver(moto, f"b-{uuid.uuid4().hex[:12]}", chunksize=6 * MIB)
    writer = driver.open_append("p/data")
    writer.write(os.urandom(13 * MIB))
    writer.flush()
    state_parts = driver.client.list_parts(Bucket=driver.bucket, Key="p/data",
                                           UploadId=_upload_id(driver, "p/data"))["Parts"]
    assert [p["Size"] for p in state_parts] == [6 * MIB, 6 * MIB]
    writer.sync()
    writer.close()
    assert driver.stat("p/data").size == 13 * MIB


def _upload_id(driver: S3Driver, key: str) -> str:
    uploads = driver.client.list_multipart_uploads(Bucket=driver.bucket)["Uploads"]
    return str(next(u["UploadId"] for u in uploads if u["Key"] == key))


def test_delete_aborts_the_multipart_upload(driver: S3Driver) -> None:
    writer = driver.open_append("u/1/data")
    writer.write(os.urandom(11 * MIB))
    writer.close()
    driver.write_bytes("u/1/startedat", b"now")
    assert driver.client.list_multipart_uploads(Bucket=driver.bucket).get("Uploads")
    driver.delete("u/1")
    assert not driver.client.list_multipart_uploads(Bucket=driver.bucket).get("Uploads")
    assert list(driver.list_keys("")) == []
    with pytest.raises(PathNotFound):
        driver.delete("u/1")


def test_truncate_back_to_the_opened_size(driver: S3Driver) -> None:
    writer = driver.open_append("t/data")
    writer.write(b"kept")
    writer.close()
    writer = driver.open_append("t/data")
    writer.write(os.urandom(12 * MIB))  # parts sent, then the chunk is refused
    writer.flush()
    writer.truncate(4)
    writer.close()
    writer = driver.open_append("t/data")
    assert writer.size == 4
    writer.sync()
    writer.close()
    assert driver.read_bytes("t/data") == b"kept"


def test_large_move_uses_multipart_copy(moto: ObjectStore) -> None:
    driver = make_driver(moto, f"b-{uuid.uuid4().hex[:12]}", multipartcopythresholdsize=5 * MIB,
                         multipartcopychunksize=5 * MIB)
    data = os.urandom(12 * MIB)
    driver.write_bytes("a", data)
    driver.move("a", "b/c")
    assert driver.read_bytes("b/c") == data and not driver.exists("a")


def test_ranged_reads(driver: S3Driver) -> None:
    data = os.urandom(3 * MIB)
    driver.write_bytes("r", data)
    with driver.open_read("r") as reader:
        reader.seek(MIB + 7)
        assert reader.read(100) == data[MIB + 7: MIB + 107]
        assert reader.read() == data[MIB + 107:]


@pytest.fixture()
def faulty(moto: ObjectStore, tmp_path: Path) -> Iterator[tuple[FaultProxy, S3Driver]]:
    host, port = moto.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port)))
    endpoint = proxy.start()
    try:
        yield proxy, make_driver(moto, f"b-{uuid.uuid4().hex[:12]}", endpoint=endpoint, attempts=3)
    finally:
        proxy.close()


def test_a_503_on_a_part_is_retried(faulty: tuple[FaultProxy, S3Driver]) -> None:
    proxy, driver = faulty
    proxy.faults.append(Fault(r"^PUT \S*[?&]partNumber=1[& ]", times=2))
    data = os.urandom(12 * MIB)
    writer = driver.open_append("f/data")
    writer.write(data)
    writer.sync()
    writer.close()
    assert proxy.faults[0].hits == 2
    assert driver.read_bytes("f/data") == data


def test_a_part_that_keeps_failing_fails_the_write_and_loses_nothing_flushed(
        faulty: tuple[FaultProxy, S3Driver], moto: ObjectStore) -> None:
    proxy, retrying = faulty
    driver = make_driver(moto, retrying.bucket, endpoint=retrying.options.regionendpoint, attempts=1)
    data = os.urandom(12 * MIB)
    writer = driver.open_append("g/data")
    writer.write(data[:3 * MIB])
    writer.close()
    proxy.faults.append(Fault(r"^PUT \S*[?&]partNumber=1[& ]", times=100))
    writer = driver.open_append("g/data")
    with pytest.raises(StorageError):
        writer.write(data[3 * MIB:])
    writer.truncate(writer.size - len(data) + 3 * MIB)
    writer.close()
    proxy.faults.clear()
    writer = driver.open_append("g/data")
    assert writer.size == 3 * MIB
    writer.write(data[3 * MIB:])
    writer.sync()
    writer.close()
    assert driver.read_bytes("g/data") == data


def test_a_read_cut_mid_stream_resumes(faulty: tuple[FaultProxy, S3Driver]) -> None:
    proxy, driver = faulty
    data = os.urandom(6 * MIB)
    driver.write_bytes("big", data)
    proxy.faults.append(Fault(r"^GET /\S+/big ", action="cut", cut_after=2 * MIB))
    with driver.open_read("big") as reader:
        received = b"".join(iter(lambda: reader.read(MIB), b""))
    assert proxy.faults[0].hits == 1
    assert received == data


def test_gc_on_the_bucket_removes_only_the_unreferenced_and_locks_across_clients(moto: ObjectStore) -> None:
    from secreg.digest import Digest
    from secreg.registry.gc import GcBusy, collect_garbage
    from secreg.registry.gc.quarantine import lock
    from secreg.storage import layout

    driver = make_driver(moto, f"b-{uuid.uuid4().hex[:12]}")
    kept, orphan = Digest.of(b"kept"), Digest.of(b"orphan")
    driver.write_bytes(layout.blob_data(kept), b"kept")
    driver.write_bytes(layout.blob_data(orphan), b"orphan")
    driver.write_bytes(layout.layer_link("app", kept), layout.link_content(kept))
    # Another replica (its own client) holding the lock keeps this collection out.
    other = make_driver(moto, driver.bucket)
    held = lock(other)
    try:
        with pytest.raises(GcBusy):
            collect_garbage(driver, grace=0, delete_untagged=False, dry_run=False, settle=0)
    finally:
        held.close()
    time.sleep(1.5)  # older than gc's one-second clock slack (object times have one-second resolution)
    report = collect_garbage(driver, grace=0, delete_untagged=False, dry_run=False, settle=0)
    assert [b.digest for b in report.blobs_removed] == [orphan], report.to_json()
    assert driver.exists(layout.blob_data(kept)) and not driver.exists(layout.blob_data(orphan))


def test_legacy_signatures_when_v4auth_is_off(moto: ObjectStore) -> None:
    driver = make_driver(moto, f"b-{uuid.uuid4().hex[:12]}", v4auth=False)
    driver.write_bytes("v2/sig", b"signed the old way")
    assert driver.read_bytes("v2/sig") == b"signed the old way"


def test_staged_writes_appear_whole_or_not_at_all(driver: S3Driver) -> None:
    data = os.urandom(12 * MIB)
    staged = driver.open_staged("blob/data")
    staged.write_pieces([data[:7 * MIB], data[7 * MIB:]])
    staged.flush()
    assert not driver.exists("blob/data") and driver.list_keys("") and not list(driver.walk_files(""))
    staged.sync()
    assert driver.read_bytes("blob/data") == data
    dropped = driver.open_staged("other/data")
    dropped.write_pieces([data])
    dropped.abort()
    assert not driver.exists("other/data")
    assert not driver.client.list_multipart_uploads(Bucket=driver.bucket).get("Uploads")


def test_the_upload_purge_finds_sessions_in_one_listing(moto: ObjectStore) -> None:
    """On S3 the sessions come from one listing of repositories/ (not two delimited listings per repository):
    in a nested repository, in one that holds nothing else, and in a gc's scan alike."""
    from secreg.registry.blobs import BlobStore
    from secreg.registry.gc import collect_garbage
    from secreg.registry.uploads import UploadStore
    from secreg.storage import layout

    driver = make_driver(moto, f"b-{uuid.uuid4().hex[:12]}", rootdirectory="/root")
    uploads = UploadStore(driver, BlobStore(driver))
    sessions = sorted((name, uploads.start(name)) for name in ("a/b/c/deep", "only/uploads", "only/uploads"))
    writer = driver.open_append(layout.upload_data(*sessions[0]))
    writer.write(b"some bytes")
    writer.close()
    assert uploads.all_sessions() == sessions
    later = time.time() + 2 * 3600
    dry = collect_garbage(driver, grace=3600, delete_untagged=False, dry_run=True, settle=0,
                          upload_purge_age=3600, now=later)
    assert sorted((u.repository, u.upload_id) for u in dry.uploads_purged) == sessions
    assert sorted(uploads.purge_stale(3600, now=later)) == sessions
    assert uploads.all_sessions() == []


def test_gc_aborts_stale_multipart_uploads_no_session_owns(moto: ObjectStore) -> None:
    from secreg.digest import Digest
    from secreg.registry.blobs import BlobStore
    from secreg.registry.gc import collect_garbage
    from secreg.registry.uploads import UploadStore
    from secreg.storage import layout

    driver = make_driver(moto, f"b-{uuid.uuid4().hex[:12]}", rootdirectory="/root", chunksize=5 * MIB)
    outside = "elsewhere/data"  # not secreg's tree: never touched, whatever its age
    abandoned_outside = driver.open_staged(outside)
    abandoned_outside.write_pieces([os.urandom(6 * MIB)])
    abandoned_outside.flush()
    # An interrupted monolithic push: its multipart upload at the blob key, one part sent (the rest was still in
    # memory), never completed.
    blob = layout.blob_data(Digest.of(b"never finished"))
    interrupted = driver.open_staged(blob)
    interrupted.write_pieces([os.urandom(6 * MIB)])
    interrupted.flush()
    # A live upload session: a PATCH is writing it (it holds the lock) and one part is in the bucket.
    uploads = UploadStore(driver, BlobStore(driver))
    upload_id = uploads.start("app")
    data = layout.upload_data("app", upload_id)
    writer = driver.open_append(data)
    assert writer.try_lock()
    writer.write(os.urandom(6 * MIB))
    writer.flush()

    def multipart_keys() -> set[str]:
        listed = driver.client.list_multipart_uploads(Bucket=driver.bucket).get("Uploads", [])
        return {u["Key"] for u in listed}

    keys = {driver.key(blob), driver.key(data), driver.key(outside)}
    assert multipart_keys() == keys
    # Young writes are never aborted, even at --upload-age 0: nothing tells an in-flight push from a dead one
    # but the age of its last part.
    report = collect_garbage(driver, grace=3600, delete_untagged=False, dry_run=False, settle=0,
                             upload_purge_age=0)
    assert report.writes_aborted == () and report.uploads_purged == () and multipart_keys() == keys
    later = time.time() + 2 * 3600
    dry = collect_garbage(driver, grace=3600, delete_untagged=False, dry_run=True, settle=0,
                          upload_purge_age=3600, now=later)
    assert [(w.path, w.size) for w in dry.writes_aborted] == [(blob, 5 * MIB)] and multipart_keys() == keys
    report = collect_garbage(driver, grace=3600, delete_untagged=False, dry_run=False, settle=0,
                             upload_purge_age=3600, now=later)
    assert [w.path for w in report.writes_aborted] == [blob], report.to_json()
    assert report.to_json()["incomplete_writes_aborted"][0]["path"] == blob
    assert multipart_keys() == {driver.key(data), driver.key(outside)}
    # The live session is untouched: its upload completes.
    writer.sync()
    writer.close()
    assert driver.stat(data).size == 6 * MIB
    # The server's own purge (storage.maintenance.uploadpurging) reaps with the same rule.
    again = driver.open_staged(blob)
    again.write_pieces([b"x" * (5 * MIB)])
    again.flush()
    assert [w.path for w in uploads.abort_stale_writes(3600, now=later)] == [blob]
    assert driver.key(blob) not in multipart_keys()


def test_a_small_read_cut_mid_body_or_unreachable_is_a_storage_error(faulty: tuple[FaultProxy, S3Driver],
                                                                     moto: ObjectStore) -> None:
    """`read_bytes` (so `read_transient`, an upload's saved hash state) and `head` say StorageError when the
    object store cuts the answer or cannot be reached, as the writes do: botocore's own errors (not ClientError)
    went through as they were, a 500 with a traceback instead of the storage error's answer."""
    proxy, retrying = faulty
    driver = make_driver(moto, retrying.bucket, endpoint=retrying.options.regionendpoint, attempts=1)
    driver.write_transient("u/hashstate", os.urandom(3 * MIB))
    proxy.faults.append(Fault(r"^GET /\S+/u/hashstate ", action="cut", cut_after=MIB, times=100))
    with pytest.raises(StorageError):
        driver.read_transient("u/hashstate")
    assert proxy.faults[0].hits >= 1
    proxy.close()  # nobody listens there any more
    with pytest.raises(StorageError):
        driver.read_bytes("u/hashstate")
    with pytest.raises(StorageError):
        driver.stat("u/hashstate")


def test_complete_after_invalid_part_checks_the_listed_parts(driver: S3Driver) -> None:
    """moto can cache a wrong part ETag (a ListParts racing the part's upload, see `S3Driver.complete_multipart`)
    and then refuses the right one with InvalidPart. The driver asks ListParts once: every part listed with the
    size sent completes with the listed ETags; a size that differs (a part that is not the one sent) still fails.
    The refused ETag here is made up; the parts themselves are real."""
    data = os.urandom(6 * MIB)
    key = driver.key("c/data")
    for size, completes in ((len(data), True), (len(data) + 1, False)):
        upload = driver.client.create_multipart_upload(Bucket=driver.bucket, Key=key)["UploadId"]
        driver.client.upload_part(Bucket=driver.bucket, Key=key, UploadId=upload, PartNumber=1, Body=data)
        wrong = [(1, '"0123456789abcdef0123456789abcdef"', size)]
        if completes:
            driver.complete_multipart(key, upload, wrong)
            assert driver.read_bytes("c/data") == data
        else:
            with pytest.raises(ClientError, match="InvalidPart"):
                driver.complete_multipart(key, upload, wrong)
            driver.abort_multipart(key, upload)


def _upload_parts(driver: S3Driver, key: str, pieces: list[bytes]) -> tuple[str, list[tuple[int, str, int]]]:
    """A multipart upload of `pieces`, and its parts with made-up ETags for the first and last (as moto's race
    leaves them: refused with InvalidPart)."""
    upload = driver.client.create_multipart_upload(Bucket=driver.bucket, Key=key)["UploadId"]
    parts = []
    for number, piece in enumerate(pieces, 1):
        etag = driver.client.upload_part(Bucket=driver.bucket, Key=key, UploadId=upload, PartNumber=number,
                                         Body=piece)["ETag"]
        made_up = number in (1, len(pieces))
        parts.append((number, '"0123456789abcdef0123456789abcdef"' if made_up else str(etag), len(piece)))
    return upload, parts


def test_an_object_completed_with_the_listed_etags_is_checked(driver: S3Driver,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The InvalidPart fallback checks the object the store made: its size is what the parts add up to and its
    ETag the MD5 of the listed parts' MD5s with their count (3 parts on moto)."""
    pieces = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(MIB + 7)]
    key = driver.key("checked/data")
    upload, parts = _upload_parts(driver, key, pieces)
    with caplog.at_level("INFO", logger="secreg.storage.s3"):
        driver.complete_multipart(key, upload, parts)
    assert driver.read_bytes("checked/data") == b"".join(pieces)
    checked = [r.getMessage() for r in caplog.records if "listed parts checked" in r.getMessage()]
    assert checked and f"({11 * MIB + 7} bytes, ETag " in checked[0] and '-3"' in checked[0]


@pytest.mark.parametrize("meanwhile", ["deleted", "replaced"])
def test_a_completed_object_that_is_not_as_listed_fails_the_completion(
        faulty: tuple[FaultProxy, S3Driver], moto: ObjectStore, meanwhile: str) -> None:
    """The check of the fallback's object finds the key without it (deleted between the completion and the
    check's HEAD, which the proxy holds) or holding another object (replaced): StorageError, not a completion
    taken on trust; another writer's object is left as it is."""
    proxy, through_proxy = faulty
    direct = make_driver(moto, through_proxy.bucket)
    key = through_proxy.key("checked/data")
    upload, parts = _upload_parts(direct, key, [os.urandom(5 * MIB), os.urandom(MIB)])
    hold = Fault(rf"^HEAD /{through_proxy.bucket}/{key} ", action="hold")
    proxy.faults.append(hold)
    failure: list[BaseException] = []

    def complete() -> None:
        try:
            through_proxy.complete_multipart(key, upload, parts)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=complete)
    worker.start()
    assert hold.arrived.wait(60)
    if meanwhile == "deleted":
        direct.client.delete_object(Bucket=direct.bucket, Key=key)
    else:
        direct.client.put_object(Bucket=direct.bucket, Key=key, Body=b"another writer's")
    hold.release.set()
    worker.join(60)
    assert failure and isinstance(failure[0], StorageError), failure
    if meanwhile == "replaced":
        assert "another object" in str(failure[0]) and direct.read_bytes("checked/data") == b"another writer's"
    else:
        assert "not there" in str(failure[0])
