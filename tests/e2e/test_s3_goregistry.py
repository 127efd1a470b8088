"""A bucket written by the reference registry (Debian's docker-registry, distribution 2.8, s3-aws driver) is
served by secreg: same keys under the same rootdirectory. Both on the moto server."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.objectstores import ObjectStore
from tests.oci import image_manifest, manifest_bytes
from tests.server import free_port, run_secreg, stop_process_group
from tests.storage.test_driver_s3 import make_driver, moto  # noqa: F401  (the session's moto server)

from .conftest import require_binary
from .harness import GO_REGISTRY_BIN
from .processes import dying_with_parent

pytestmark = pytest.mark.e2e
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def test_secreg_serves_a_bucket_written_by_registry2(moto: ObjectStore, tmp_path: Path) -> None:  # noqa: F811
    binary = require_binary("docker-registry", "docker-registry", default=GO_REGISTRY_BIN)
    bucket = f"go-{uuid.uuid4().hex[:10]}"
    make_driver(moto, bucket)  # creates the bucket
    port = free_port()
    config = {
        "version": "0.1",
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"s3": {"region": moto.region, "regionendpoint": moto.endpoint, "bucket": bucket,
                           "accesskey": moto.accesskey, "secretkey": moto.secretkey, "secure": False,
                           "v4auth": True, "rootdirectory": "/shared", "chunksize": 5 * 1024 * 1024},
                    "maintenance": {"uploadpurging": {"enabled": False}}, "redirect": {"disable": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    (tmp_path / "go.yml").write_text(json.dumps(config))
    with open(tmp_path / "go.log", "wb") as log:
        # No AWS_* from the environment (an AWS_CA_BUNDLE makes the Go SDK panic on a plain-HTTP endpoint).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REGISTRY_"))}
        go = subprocess.Popen(dying_with_parent([binary, "serve", str(tmp_path / "go.yml")]), stdout=log,
                              stderr=subprocess.STDOUT,
                              start_new_session=True, env=env)
    layer = os.urandom(7 * 1024 * 1024 + 3)  # more than one part
    config_blob = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    body = manifest_bytes(image_manifest(config_blob, [layer]))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/v2/").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and go.poll() is None, (tmp_path / "go.log").read_text()
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=60) as client:
            for blob in (config_blob, layer):
                digest = "sha256:" + hashlib.sha256(blob).hexdigest()
                location = client.post("/v2/lib/app/blobs/uploads/").headers["Location"]
                r = client.patch(location, content=blob, headers={"Content-Type": "application/octet-stream"})
                assert r.status_code == 202, r.text
                location = r.headers["Location"]  # carries the Go registry's signed _state: keep its query
                r = client.put(f"{location}{'&' if '?' in location else '?'}digest={digest}")
                assert r.status_code == 201, r.text
            r = client.put("/v2/lib/app/manifests/v1", content=body, headers={"Content-Type": MANIFEST})
            assert r.status_code == 201, r.text
    finally:
        stop_process_group(go)

    secreg_config = {"auth": {"enabled": False},
                     "storage": {"s3": moto.s3_settings(bucket, rootdirectory="/shared")}}
    with run_secreg(tmp_path / "secreg", secreg_config) as server, server.client() as client:
        r = client.get("/v2/lib/app/manifests/v1", headers={"Accept": MANIFEST})
        assert r.status_code == 200 and r.content == body
        layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        r = client.get(f"/v2/lib/app/blobs/{layer_digest}", headers={"Range": "bytes=5242870-5242889"})
        assert r.status_code == 206 and r.content == layer[5242870:5242890]
        assert client.get("/v2/_catalog").json()["repositories"] == ["lib/app"]
        assert "v1" in client.get("/v2/lib/app/tags/list").json()["tags"]
