"""The pull-through cache on the S3 storage driver (the moto emulator): a proxied blob is spooled to a local file
for the clients while it arrives, then written to the bucket through the driver's staged writer only once its
digest matched; the spool file goes afterwards, and wrong bytes never reach the bucket."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from secreg.config import load_settings
from secreg.digest import Digest
from secreg.proxy.fetch import spool_directory
from secreg.storage import layout
from secreg.storage.s3 import S3Driver
from tests.objectstores import ObjectStore
from tests.oci import OCI_MANIFEST
from tests.server import RunningServer, run_secreg
from tests.storage.test_driver_s3 import make_driver, moto  # noqa: F401  (the session's moto server)

from .fake_upstream import FakeUpstream, fake_upstream
from .test_pull import proxy_config, upstream_entry
from .upstreams import Pusher, Upstream, random_bytes

LAYER = 12 * 1024 * 1024  # above the driver's 10 MiB part size: a multipart upload


class OnS3:
    def __init__(self, server: RunningServer, bucket: str, driver: S3Driver, spool: Path) -> None:
        self.server, self.bucket, self.driver, self.spool = server, bucket, driver, spool

    def has_blob(self, digest: str) -> bool:
        return self.driver.exists(layout.blob_data(Digest.parse(digest)))

    def pending_uploads(self) -> list[object]:
        return list(self.driver.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))

    def spooled(self) -> list[str]:
        return [str(p) for p in self.spool.glob("*/data")] if self.spool.exists() else []


def _wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstream]:
    with fake_upstream(tmp_path_factory.mktemp("fake-s3")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def on_s3(tmp_path_factory: pytest.TempPathFactory, moto: ObjectStore, go_hub: Upstream,  # noqa: F811
          fake: FakeUpstream) -> Iterator[OnS3]:
    bucket = f"proxy-{uuid.uuid4().hex[:10]}"
    config = proxy_config(upstream_entry("go", go_hub, "go"),
                          {"name": "fake", "url": fake.url, "ca": str(fake.ca), "prefix": "fake"})
    config["storage"] = {**config["storage"], "s3": moto.s3_settings(bucket)}
    workdir = tmp_path_factory.mktemp("proxy-s3")
    spool = Path(spool_directory(repr(load_settings(None, config, base_dir=workdir).storage_s3)))
    with run_secreg(workdir, config) as server:
        yield OnS3(server, bucket, make_driver(moto, bucket), spool)


def test_a_cold_pull_onto_s3_lands_in_the_bucket(on_s3: OnS3, go_pusher: Pusher, go_hub: Upstream,
                                                   tmp_path: Path) -> None:
    layer = random_bytes(LAYER, seed=4242)
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    path = tmp_path / "layer"
    path.write_bytes(layer)
    go_pusher.blob_file("s3/app", path, digest)
    with on_s3.server.client() as client:
        first = client.get(f"/v2/go/s3/app/blobs/{digest}")
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        assert hashlib.sha256(first.content).hexdigest() == digest[7:]
        # The client had every byte once the digest matched; the upload into the bucket follows.
        _wait(lambda: on_s3.has_blob(digest) and not on_s3.spooled())
        assert on_s3.driver.read_bytes(layout.blob_data(Digest.parse(digest))) == layer
        again = client.get(f"/v2/go/s3/app/blobs/{digest}")
        assert again.status_code == 200 and again.headers["x-cache"] == "hit" and again.content == layer
    assert len(re.findall(rf'"GET /v2/s3/app/blobs/{digest} HTTP/1.1" 200 ', go_hub.log())) == 1
    assert not on_s3.spooled() and not on_s3.pending_uploads()
    assert "cannot stage" not in on_s3.server.log()


def test_wrong_bytes_never_reach_the_bucket(on_s3: OnS3, fake: FakeUpstream) -> None:
    with on_s3.server.client() as client:
        manifest = client.get("/v2/fake/bad/app/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert manifest.status_code == 200
        layer = json.loads(manifest.content)["layers"][0]["digest"]
        with pytest.raises(httpx.HTTPError):
            with client.stream("GET", f"/v2/fake/bad/app/blobs/{layer}") as r:
                assert r.status_code == 200
                assert sum(len(chunk) for chunk in r.iter_raw()) < fake.layer_size
    assert not on_s3.has_blob(layer)
    assert not on_s3.pending_uploads()
    assert not on_s3.spooled()
    assert os.path.isdir(on_s3.spool)  # the spool was used (and emptied), not some other path
