"""A slow object store stalls only the requests waiting on it: the model's store calls on a non-local driver run
off the event loop (secreg/registry/offload.py), so while one request's HEAD to the bucket is held, the same
server answers `/v2/` and reads other repositories. Ordered by events (the proxy says when the held request
arrived; the test releases it), never by timings."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future

import httpx
import pytest

from tests.faultproxy import Fault, FaultProxy
from tests.objectstores import ObjectStore
from tests.oci import OCI_MANIFEST, error_code, push_image
from tests.server import RunningServer, run_secreg
from tests.storage.test_driver_s3 import moto  # noqa: F401  (the session's moto server)

BLOB = b"layer bytes " * 1000
DIGEST = f"sha256:{hashlib.sha256(BLOB).hexdigest()}"


@pytest.fixture(scope="module")
def proxied(moto: ObjectStore, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
            ) -> Iterator[tuple[FaultProxy, RunningServer]]:
    host, port = moto.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port)))
    endpoint = proxy.start()
    settings = moto.s3_settings(f"slow-{uuid.uuid4().hex[:10]}", regionendpoint=endpoint)
    try:
        config = {"auth": {"enabled": False}, "storage": {"s3": settings, "delete": {"enabled": True}}}
        with run_secreg(tmp_path_factory.mktemp("slow"), config, timeout=60) as server:
            yield proxy, server
    finally:
        proxy.close()


def _push(client: httpx.Client, name: str) -> None:
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": DIGEST}, content=BLOB,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text


def _held(proxy: FaultProxy, pattern: str) -> Fault:
    fault = Fault(pattern, action="hold")
    proxy.faults.append(fault)
    return fault


def _in_background(call: object) -> Future[httpx.Response]:
    outcome: Future[httpx.Response] = Future()

    def run() -> None:
        try:
            outcome.set_result(call())  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001  (handed to the test thread)
            outcome.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return outcome


@pytest.mark.parametrize("route", ["blob HEAD", "manifest GET", "upload status"])
def test_a_held_store_request_does_not_block_the_server(proxied: tuple[FaultProxy, RunningServer],
                                                        route: str) -> None:
    proxy, server = proxied
    slow, other = f"slow/{uuid.uuid4().hex[:8]}", f"other/{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=60) as client:
        _push(client, slow)
        _push(client, other)
        if route == "blob HEAD":
            fault = _held(proxy, rf"^(HEAD|GET) /\S+/{slow}/_layers/")
            path, method = f"/v2/{slow}/blobs/{DIGEST}", "HEAD"
        elif route == "manifest GET":
            fault = _held(proxy, rf"^(HEAD|GET) /\S+/{slow}/_manifests/")
            path, method = f"/v2/{slow}/manifests/latest", "GET"
        else:
            location = client.post(f"/v2/{slow}/blobs/uploads/").headers["Location"]
            fault = _held(proxy, rf"^(HEAD|GET) /\S+/{slow}/_uploads/")
            path, method = location, "GET"
        background = httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=90)
        held = _in_background(lambda: background.request(method, path))
        try:
            assert fault.arrived.wait(60), "the request never reached the object store"
            # The held request is inside a store call now. The same server still answers others at once:
            # the version check (no store call) and a blob HEAD of another repository (store calls of its own).
            assert client.get("/v2/").status_code == 200
            assert client.head(f"/v2/{other}/blobs/{DIGEST}").status_code == 200
            assert not held.done() and not fault.release.is_set()  # ...while the first one still waits
        finally:
            fault.release.set()
        answer = held.result(90)
        background.close()
        assert answer.status_code == {"blob HEAD": 200, "manifest GET": 404, "upload status": 204}[route], answer.text


def test_a_failing_store_answers_503_unavailable_not_500(proxied: tuple[FaultProxy, RunningServer]) -> None:
    """The object store answering 503 to every try (after the driver's own retries): the client gets the spec's
    JSON error, `UNAVAILABLE` with 503 and `Retry-After`, never a 500; once the store is back the same blob is
    served (nothing was lost)."""
    proxy, server = proxied
    name = f"failing/{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=120) as client:
        _push(client, name)
        fault = Fault(rf"^(HEAD|GET) /\S+/{name}/_layers/", times=1000)
        proxy.faults.append(fault)
        try:
            head = client.head(f"/v2/{name}/blobs/{DIGEST}")
            get = client.get(f"/v2/{name}/blobs/{DIGEST}")
        finally:
            fault.times = 0
        assert fault.hits > 0
        for answer in (head, get):
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
        assert get.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert client.get(f"/v2/{name}/blobs/{DIGEST}").content == BLOB
    log = server.log()
    assert "storage backend failed" in log and "Traceback" not in log


def test_a_failing_store_answers_catalog_tags_and_delete_with_the_json_error(
        proxied: tuple[FaultProxy, RunningServer]) -> None:
    """Listings (the catalog's walk, a tag list) and deletes failing at the object store: 503 `UNAVAILABLE` in
    the spec's JSON body, not a 500 (botocore's errors from listings, batch deletes and copies went through as
    they were); once the store is back everything is still there and the delete goes through."""
    proxy, server = proxied
    name = f"listfail/{uuid.uuid4().hex[:8]}"  # new: the next catalog request walks the bucket
    with httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=120) as client:
        digest, manifest = push_image(client, name, "latest")
        listing = Fault(r"^GET /\S+[?&]list-type=2", times=1_000_000)
        proxy.faults.append(listing)
        try:
            catalog = client.get("/v2/_catalog")
            tags = client.get(f"/v2/{name}/tags/list")
        finally:
            listing.times = 0
        deleting = Fault(r"^(DELETE /\S+/\S+ |POST /\S+\?delete )", times=1_000_000)
        proxy.faults.append(deleting)
        try:
            delete = client.delete(f"/v2/{name}/manifests/{digest}")
        finally:
            deleting.times = 0
        assert listing.hits > 0 and deleting.hits > 0
        for answer in (catalog, tags, delete):
            assert answer.status_code == 503, (answer.request.url, answer.text)
            assert answer.headers["Retry-After"] == "5"
            assert error_code(answer) == "UNAVAILABLE"
        assert name in client.get("/v2/_catalog").json()["repositories"]
        assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["latest"]
        got = client.get(f"/v2/{name}/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and got.content == manifest
        assert client.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
        assert client.get(f"/v2/{name}/manifests/{digest}").status_code == 404
    log = server.log()
    assert "storage backend failed" in log and "Traceback" not in log
