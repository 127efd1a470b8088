"""Listing, walking, deleting and copying on an object store that fails: every failure of the client (a 5xx after
the retries, a connection reset mid-answer, a store that never answers, one that is gone) leaves the driver as
`StorageError` (the registry's 503 UNAVAILABLE), never as botocore's own exception (a 500 with a traceback), and
loses nothing: a failed move keeps every byte at the source or whole at both keys, a failed delete can be asked
again and finishes. Through the fault proxy in front of the moto server, one bucket per test."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

from secreg.storage.driver import StorageError
from secreg.storage.s3 import S3Driver, S3Options
from tests.faultproxy import Fault, FaultProxy
from tests.objectstores import ObjectStore
from tests.storage.test_driver_s3 import moto  # noqa: F401  (the session's moto server)

MIB = 1024 * 1024
BIG = 6 * MIB  # above the copy threshold below: moved as a multipart copy of two UploadPartCopy parts


def _driver(store: ObjectStore, bucket: str, endpoint: str, read_timeout: float = 120) -> S3Driver:
    options = S3Options(bucket=bucket, region=store.region, regionendpoint=endpoint, accesskey=store.accesskey,
                        secretkey=store.secretkey, secure=False, chunksize=5 * MIB,
                        multipartcopythresholdsize=5 * MIB, multipartcopychunksize=5 * MIB)
    # One try per request: the retries are botocore's (tests/storage/test_driver_s3.py); here they all failed.
    return S3Driver(options, attempts=1, read_timeout=read_timeout)


class Store:
    """A bucket with files, a directory and a file being appended (a multipart upload in progress), reached
    through the fault proxy (`driver`) and directly (`direct`, to judge what is left)."""

    def __init__(self, moto: ObjectStore, proxy: FaultProxy, endpoint: str) -> None:  # noqa: F811
        self.proxy = proxy
        self.direct = _driver(moto, f"b-{uuid.uuid4().hex[:12]}", moto.endpoint)
        self.direct.ensure_bucket()
        self.driver = _driver(moto, self.direct.bucket, endpoint)
        self.big = os.urandom(BIG)
        self.direct.write_bytes("d/a", b"a")
        self.direct.write_bytes("d/b", b"b")
        self.direct.write_bytes("big", self.big)
        appending = self.direct.open_append("d/up/data")
        appending.write(os.urandom(BIG))  # one part sent, the rest a tail
        appending.close()

    def objects(self) -> dict[str, bytes]:
        return {item["Key"]: self.direct.read_bytes(item["Key"]) for item in self.direct.list_keys("")}

    def uploads(self) -> list[str]:
        listed = self.direct.client.list_multipart_uploads(Bucket=self.direct.bucket).get("Uploads", [])
        return sorted(upload["Key"] for upload in listed)

    def fail(self, pattern: str) -> Fault:
        fault = Fault(pattern, times=1_000_000)
        self.proxy.faults.append(fault)
        return fault

    def heal(self) -> None:
        for fault in self.proxy.faults:
            fault.times = 0


@pytest.fixture()
def store(moto: ObjectStore) -> Iterator[Store]:  # noqa: F811
    host, port = moto.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port)))
    endpoint = proxy.start()
    try:
        yield Store(moto, proxy, endpoint)
    finally:
        proxy.close()


LISTING = r"^GET /\S+[?&]list-type=2"

READS: dict[str, Callable[[S3Driver], object]] = {
    "list": lambda d: d.list("d"),
    "walk_files": lambda d: list(d.walk_files("d")),
    "walk_paths": lambda d: list(d.walk_paths("")),
    "stat of a directory": lambda d: d.stat("d"),
}


@pytest.mark.parametrize("operation", READS)
def test_a_failing_listing_is_a_storage_error(store: Store, operation: str) -> None:
    before = store.objects()
    fault = store.fail(LISTING)
    with pytest.raises(StorageError):
        READS[operation](store.driver)
    assert fault.hits >= 1
    store.heal()
    READS[operation](store.driver)
    assert store.objects() == before


# (what fails, the request that fails): every request a delete of a directory makes, in its order.
DELETE_STEPS = {
    "the listing": LISTING,
    "the multipart listing": r"^GET /\S+\?uploads",
    "the abort of the append's upload": r"^DELETE /\S+/d/up/data\?uploadId=",
    "the batch delete": r"^POST /\S+\?delete",
}


@pytest.mark.parametrize("step", DELETE_STEPS)
def test_a_failing_delete_is_a_storage_error_and_can_be_asked_again(store: Store, step: str) -> None:
    before = store.objects()
    fault = store.fail(DELETE_STEPS[step])
    with pytest.raises(StorageError):
        store.driver.delete("d")
    assert fault.hits >= 1
    store.heal()
    store.driver.delete("d")
    assert store.objects() == {k: v for k, v in before.items() if "/d/" not in f"/{k}"}
    assert store.uploads() == []


def test_a_failing_delete_of_one_file_is_a_storage_error(store: Store) -> None:
    before = store.objects()
    store.fail(r"^DELETE /\S+/d/a ")
    with pytest.raises(StorageError):
        store.driver.delete("d/a")
    assert store.objects() == before


# (what fails, the request that fails, the file moved): a copy, then the delete of its source.
MOVE_STEPS = {
    "the copy": (r"^PUT /\S+/e/a ", "d/a"),
    "the delete of the source": (r"^DELETE /\S+/d/a ", "d/a"),
    "the multipart copy's start": (r"^POST /\S+/e/big\?uploads", "big"),
    "a part copy": (r"^PUT /\S+/e/big\?\S*partNumber=2[& ]", "big"),
    "the multipart copy's completion": (r"^POST /\S+/e/big\?uploadId=", "big"),
    "the directory listing": (LISTING, "d"),
}


@pytest.mark.parametrize("step", MOVE_STEPS)
def test_a_failing_move_is_a_storage_error_and_loses_nothing(store: Store, step: str) -> None:
    pattern, source = MOVE_STEPS[step]
    destination = f"e/{source.removeprefix('d/')}" if source != "d" else "e"
    before = store.objects()
    uploads = store.uploads()
    fault = store.fail(pattern)
    with pytest.raises(StorageError):
        store.driver.move(source, destination)
    assert fault.hits >= 1
    after = store.objects()
    assert before.items() <= after.items()  # a source is deleted only once its copy is whole...
    for key, data in after.items():  # ...and a copy is there whole or not at all
        assert data == before[key if key in before else key.replace(destination, source, 1)], key
    assert store.uploads() == uploads  # a failed multipart copy was aborted
    store.heal()
    store.driver.move(source, destination)
    moved = {key.replace(source, destination, 1) if key == source or key.startswith(f"{source}/") else key: data
             for key, data in before.items()}
    assert store.objects() == moved


def test_a_failing_multipart_copy_is_aborted_even_when_the_abort_fails_too(store: Store) -> None:
    """The copy's own failure is the one raised; the upload the failed abort left is for the purge to reap."""
    store.fail(r"^PUT /\S+/e/big\?\S*partNumber=2[& ]")
    store.fail(r"^DELETE /\S+/e/big\?uploadId=")
    with pytest.raises(StorageError, match="copying"):
        store.driver.copy_key(store.driver.key("big"), store.driver.key("e/big"), BIG, 0.0)
    assert store.uploads() == ["d/up/data", "e/big"]


OPERATIONS: dict[str, Callable[[S3Driver], object]] = {
    **READS,
    "exists": lambda d: d.exists("d/a"),
    "delete": lambda d: d.delete("d"),
    "move": lambda d: d.move("d/a", "e/a"),
    "copy": lambda d: d.copy_key(d.key("big"), d.key("e/big"), BIG, 0.0),
    "stale_writes": lambda d: d.stale_writes("", before=2e9),
    "append": lambda d: d.open_append("d/up/data").try_lock(),
    "ensure_bucket": lambda d: d.ensure_bucket(),
}


HEAD_ONLY = {"exists", "ensure_bucket"}  # a HEAD's answer has no body to cut


@pytest.mark.parametrize(("failure", "operation"),
                         [(failure, operation) for failure in ("reset mid-answer", "no answer", "gone")
                          for operation in OPERATIONS if failure != "reset mid-answer" or operation not in HEAD_ONLY])
def test_a_store_that_resets_hangs_or_is_gone_is_a_storage_error(store: Store, moto: ObjectStore,  # noqa: F811
                                                                 failure: str, operation: str) -> None:
    before = store.objects()
    if failure == "reset mid-answer":
        # Every answer that has a body is cut after its first bytes (a HEAD's or DELETE's has none).
        store.proxy.faults.append(Fault(r"^(GET|PUT|POST) ", action="cut", cut_after=8, times=1_000_000))
        driver = store.driver
        silent = None
    else:
        # "no answer": a store that takes the connection (the kernel's backlog) and never answers: the read
        # timeout ends the wait. "gone": nobody listens on the port any more.
        silent = socket.create_server(("127.0.0.1", 0), backlog=64)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        if failure == "gone":
            silent.close()
        driver = _driver(moto, store.direct.bucket, endpoint, read_timeout=0.5)
    try:
        with pytest.raises(StorageError):
            OPERATIONS[operation](driver)
    finally:
        if silent is not None:
            silent.close()
    assert before.items() <= store.objects().items()  # a copy may have been made before its answer was cut
