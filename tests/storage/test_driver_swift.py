"""The driver conformance suite and a cross-client multipart append on a real object store: OpenStack Swift
with its s3api middleware (Debian's packages), on loopback, started and stopped by the fixture."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from secreg.storage.s3 import S3Driver
from tests.objectstores import ObjectStore, swift_available, swift_server
from tests.storage.driver_suite import DriverSuite
from tests.storage.test_driver_s3 import make_driver

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    if not swift_available():
        if os.environ.get("CI"):
            pytest.fail("swift-proxy-server and friends are not installed (.ci/run installs them)")
        pytest.skip("OpenStack Swift is not installed")
    with swift_server(tmp_path_factory.mktemp("swift")) as store:
        yield store


@pytest.fixture()
def driver(swift: ObjectStore) -> S3Driver:
    return make_driver(swift, f"b-{uuid.uuid4().hex[:12]}", rootdirectory="root")


class TestS3DriverOnSwift(DriverSuite):
    """The suite on the module's `driver` fixture."""


def test_multipart_append_continued_by_another_client(swift: ObjectStore, driver: S3Driver) -> None:
    data = os.urandom(11 * MIB + 3)
    first = driver.open_append("up/data")
    assert first.try_lock()
    first.write(data[: 6 * MIB])
    first.close()
    other = make_driver(swift, driver.bucket, rootdirectory="root", chunksize=5 * MIB)
    second = other.open_append("up/data")
    assert second.try_lock() and second.size == 6 * MIB
    second.write(data[6 * MIB:])
    second.sync()
    second.close()
    with other.open_read("up/data") as reader:
        reader.seek(5 * MIB - 10)
        assert reader.read(20) == data[5 * MIB - 10: 5 * MIB + 10]
    assert other.read_bytes("up/data") == data
    other.delete("up")
    assert list(other.list_keys("root/")) == []
    assert not other.client.list_multipart_uploads(Bucket=other.bucket).get("Uploads")
