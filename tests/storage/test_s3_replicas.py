"""Three `secreg serve --role registry` replicas on one bucket of the moto emulator, started from one config and
copies of the first one's certs/ and auth/: any replica continues any upload, tokens of one are good on all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import dying_with_parent
from tests.objectstores import ObjectStore
from tests.oci import image_manifest, manifest_bytes
from tests.server import RunningServer, run_secreg
from tests.storage.test_driver_s3 import make_driver, moto  # noqa: F401  (the session's moto server)

MIB = 1024 * 1024
NAME = "team/app"


BALANCER = "127.0.0.3"  # the balancer's address, from which the replicas read PROXY headers (compose's)


def replica_config(store: ObjectStore, bucket: str, **storage: Any) -> dict[str, Any]:
    return {"storage": {"s3": store.s3_settings(bucket, chunksize=5 * MIB), "delete": {"enabled": True},
                        **storage}, "http": {"proxyprotocol": [f"{BALANCER}/32"]}}


def start_replicas(stack: ExitStack, root: Path, config: dict[str, Any], count: int) -> list[RunningServer]:
    first = stack.enter_context(run_secreg(root / "r0", config, args=["--role", "all"]))
    servers = [first]
    for index in range(1, count):
        workdir = root / f"r{index}"
        workdir.mkdir()
        # What a replica needs besides the config: copies of certs/ and auth/ (one read-only volume in practice).
        shutil.copytree(first.workdir / "certs", workdir / "certs")
        shutil.copytree(first.workdir / "auth", workdir / "auth")
        servers.append(stack.enter_context(run_secreg(workdir, config, args=["--role", "registry"])))
    return servers


@pytest.fixture(scope="module")
def bucket() -> str:
    return f"replicas-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def replicas(moto: ObjectStore, bucket: str, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
             ) -> Iterator[list[RunningServer]]:
    with ExitStack() as stack:
        yield start_replicas(stack, tmp_path_factory.mktemp("replicas"), replica_config(moto, bucket), 3)


def bearer(server: RunningServer, *scopes: str) -> dict[str, str]:
    """A token from the first replica's token server (role all); the registry-only replicas verify it with the
    copied certs/token.crt."""
    with server.client() as c:
        r = c.get("/auth/token", params=[("service", "secreg"), *[("scope", s) for s in scopes]],
                  auth=("admin", server.admin_password or ""))
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}


def test_a_chunked_upload_moves_across_replicas(replicas: list[RunningServer], moto: ObjectStore,  # noqa: F811
                                                bucket: str) -> None:
    a, b, c = replicas
    auth = bearer(a, f"repository:{NAME}:pull,push")  # signed by A's key, verified by all three
    data = os.urandom(13 * MIB + 17)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    cut = 6 * MIB + 5
    with a.client(headers=auth) as ca, b.client(headers=auth) as cb, c.client(headers=auth) as cc:
        r = ca.post(f"/v2/{NAME}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        r = ca.patch(location, content=data[:cut], headers={"Content-Range": f"0-{cut - 1}",
                                                            "Content-Type": "application/octet-stream"})
        assert r.status_code == 202 and r.headers["Range"] == f"0-{cut - 1}", r.text
        r = cb.get(location)
        assert r.status_code == 204 and r.headers["Range"] == f"0-{cut - 1}"
        r = cb.patch(r.headers["Location"], content=data[cut:], headers={
            "Content-Range": f"{cut}-{len(data) - 1}", "Content-Type": "application/octet-stream"})
        assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}", r.text
        r = cc.put(r.headers["Location"], params={"digest": digest})
        assert r.status_code == 201, r.text
        for client in (ca, cb, cc):
            r = client.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": f"bytes={5 * MIB}-"})
            assert r.status_code == 206 and r.content == data[5 * MIB:]
            assert client.head(f"/v2/{NAME}/blobs/{digest}").headers["Content-Length"] == str(len(data))
    driver = make_driver(moto, bucket)
    hexdigest = digest.split(":")[1]
    assert driver.exists(f"docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data")
    assert not driver.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert list(driver.walk_files(f"docker/registry/v2/repositories/{NAME}/_uploads")) == []


def test_push_on_one_pull_on_another(replicas: list[RunningServer]) -> None:
    a, b, _c = replicas
    auth = bearer(a, f"repository:{NAME}:pull,push")
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(2 * MIB)
    with a.client(headers=auth) as ca, b.client(headers=auth) as cb:
        for blob in (config, layer):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            r = ca.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": digest}, content=blob,
                        headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 201, r.text
        body = manifest_bytes(image_manifest(config, [layer]))
        r = ca.put(f"/v2/{NAME}/manifests/v1", content=body,
                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201, r.text
        r = cb.get(f"/v2/{NAME}/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.content == body
        assert "v1" in cb.get(f"/v2/{NAME}/tags/list").json()["tags"]


def test_cancel_aborts_the_multipart_upload(replicas: list[RunningServer], moto: ObjectStore,  # noqa: F811
                                            bucket: str) -> None:
    a, b, _c = replicas
    auth = bearer(a, f"repository:{NAME}:pull,push,delete")
    with a.client(headers=auth) as ca, b.client(headers=auth) as cb:
        location = ca.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
        r = ca.patch(location, content=os.urandom(11 * MIB), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        driver = make_driver(moto, bucket)
        assert driver.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert cb.delete(location).status_code == 204
        assert not driver.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert cb.get(location).status_code == 404


def test_redirect_mode(moto: ObjectStore, tmp_path: Path) -> None:  # noqa: F811
    bucket = f"redirect-{uuid.uuid4().hex[:10]}"
    config = replica_config(moto, bucket, redirect={"enabled": True, "expiry": 30})
    config["auth"] = {"enabled": False}
    data = os.urandom(MIB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with run_secreg(tmp_path, config) as server, server.client() as client:
        r = client.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201
        r = client.get(f"/v2/{NAME}/blobs/{digest}")
        assert r.status_code == 307 and r.headers["Location"].startswith(moto.endpoint)
        assert "Expires=30" in r.headers["Location"] or "X-Amz-Expires=30" in r.headers["Location"]
        fetched = httpx.get(r.headers["Location"], headers={"Range": "bytes=10-19"})
        assert fetched.status_code == 206 and fetched.content == data[10:20]
        head = client.head(f"/v2/{NAME}/blobs/{digest}")
        assert head.status_code == 200 and head.headers["Content-Length"] == str(MIB)
        assert client.get(f"/v2/{NAME}/blobs/sha256:{'0' * 64}").status_code == 404


def test_a_monolithic_push_is_written_at_its_final_key(replicas: list[RunningServer], moto: ObjectStore,  # noqa: F811
                                                       bucket: str) -> None:
    a, b, _c = replicas
    auth = bearer(a, f"repository:{NAME}:pull,push")
    data = os.urandom(11 * MIB + 1)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    octets = {"Content-Type": "application/octet-stream"}
    driver = make_driver(moto, bucket)
    with a.client(headers=auth) as ca, b.client(headers=auth) as cb:
        wrong = "sha256:" + "0" * 64
        r = ca.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": wrong}, content=data, headers=octets)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert not driver.exists(f"docker/registry/v2/blobs/sha256/00/{'0' * 64}/data")
        assert not driver.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
        r = ca.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": digest}, content=data, headers=octets)
        assert r.status_code == 201, r.text
        assert cb.get(f"/v2/{NAME}/blobs/{digest}").content == data
    hexdigest = digest.split(":")[1]
    head = driver.head(f"docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data")
    assert head is not None and "secreg-mtime" not in head.get("Metadata", {})  # written there, not copied
    assert not driver.client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_the_compose_balancer_config_passes_tls_through_to_the_replicas(replicas: list[RunningServer],
                                                                       tmp_path: Path) -> None:
    """deploy/haproxy.cfg (compose's `balancer`) with only what Docker's DNS would supply replaced: the listen
    address and the three replica addresses (and the balancer's own, from which the replicas read PROXY headers).
    Clients see the replicas' own certificate (passthrough, verified against the CA), requests without stickiness
    land on several replicas, and each replica logs the client (send-proxy-v2), not the balancer."""
    import re
    import socket
    import ssl
    import subprocess
    import time

    from tests.e2e.conftest import require_binary
    from tests.oci import push_blob
    from tests.server import free_port, stop_process_group

    haproxy = require_binary("haproxy", "haproxy", default="/usr/sbin/haproxy")
    text = (Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg").read_text()
    template = re.search(r"(?m)^    server-template replica 3 replica:5000 (send-proxy-v2 check check-ssl verify none) "
                         r"resolvers docker init-addr none$", text)
    assert template is not None and "    bind :5443\n" in text and "resolvers docker\n" in text
    port = free_port()
    servers = "\n".join(f"    server replica{i} 127.0.0.1:{r.port} {template.group(1)} source {BALANCER}"
                         for i, r in enumerate(replicas))
    text = text.replace(template.group(0), servers).replace("    bind :5443\n", f"    bind 127.0.0.1:{port}\n")
    text = re.sub(r"(?m)^resolvers docker\n(?:    .*\n)+", "", text)
    (tmp_path / "haproxy.cfg").write_text(text)
    with open(tmp_path / "haproxy.log", "wb") as log:
        process = subprocess.Popen(dying_with_parent([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")]), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"https://127.0.0.1:{port}"
        context = replicas[0].ssl_context()
        deadline = time.monotonic() + 60
        while True:  # up once the health checks (TLS + GET /healthz) passed on every replica
            assert process.poll() is None, (tmp_path / "haproxy.log").read_text()
            try:
                with httpx.Client(base_url=url, verify=context, timeout=5) as c:
                    if all(c.get("/v2/").status_code == 401 for _ in range(6)):
                        break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            seen = tls.getpeercert(binary_form=True)
        assert seen == ssl.PEM_cert_to_DER_cert((replicas[0].workdir / "certs" / "server.crt").read_text())
        name = f"balanced/{uuid.uuid4().hex[:8]}"
        blobs = [os.urandom(1000 + i) for i in range(6)]
        auth = bearer(replicas[0], f"repository:{name}:pull,push")
        with httpx.Client(base_url=url, verify=context, headers=auth, timeout=30) as c:
            digests = [push_blob(c, name, blob) for blob in blobs]
        for digest, blob in zip(digests, blobs, strict=True):  # a connection each: the balancer picks per connection
            with httpx.Client(base_url=url, verify=context, headers=auth, timeout=30) as fresh:
                assert fresh.get(f"/v2/{name}/blobs/{digest}").content == blob
        served = [r for r in replicas if f"/v2/{name}/blobs/" in r.log()]
        assert len(served) >= 2, "round robin without stickiness reaches several replicas"
        for replica in served:
            clients = {json.loads(line)["client"] for line in replica.log().splitlines()
                       if line.startswith("{") and f"/v2/{name}/blobs/" in line}
            assert clients == {"127.0.0.1"}, clients  # the test's own address, through the balancer
    finally:
        stop_process_group(process)
