"""Redirects from a real TLS upstream (own CA, Basic auth) to a second TLS "blob host": followed by hand, HTTPS
only, at most five, the upstream's Authorization never sent elsewhere. And concurrent manifest misses sharing
one upstream exchange."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.oci import sha256
from tests.server import RunningServer, run_secreg

from .scripted_upstream import PASSWORD, USER, ScriptedUpstream, scripted_upstream
from .test_pull import ACCEPT, proxy_config


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedUpstream]:
    with scripted_upstream(tmp_path_factory.mktemp("scripted")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream) -> Iterator[RunningServer]:
    entry = {"name": "s", "url": scripted.url, "ca": str(scripted.ca), "username": USER, "password": PASSWORD,
             "prefix": "s", "ttl": "1h"}
    config = {**proxy_config(entry), "log": {"level": "debug"}}
    with run_secreg(tmp_path_factory.mktemp("redirect-proxy"), config) as server:
        yield server


def stored(proxy: RunningServer, digest: str) -> bool:
    return (proxy.storage / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data").exists()


def test_redirect_to_another_https_host_without_our_credentials(scripted: ScriptedUpstream,
                                                                proxy: RunningServer) -> None:
    image = scripted.images["redirect"]
    with proxy.client() as client:
        # A HEAD first: the async client (it learns the upstream's Basic challenge, then follows the 307).
        head = client.head(f"/v2/s/redirect/app/blobs/{image.layer_digest}")
        assert head.status_code == 200 and head.headers["content-length"] == str(image.layer_size)
        manifest = client.get("/v2/s/redirect/app/manifests/v1", headers=ACCEPT)
        assert manifest.status_code == 200, manifest.text
        # Then the blobs, on the blob download path (secreg.proxy.download) once the challenge is known.
        for digest in (image.config_digest, image.layer_digest):
            blob = client.get(f"/v2/s/redirect/app/blobs/{digest}")
            assert blob.status_code == 200 and sha256(blob.content) == digest, blob.text
            assert blob.headers["x-cache"] == "miss"
        again = client.get(f"/v2/s/redirect/app/blobs/{image.layer_digest}")
        assert again.headers["x-cache"] == "hit" and sha256(again.content) == image.layer_digest
    assert scripted.count("blobhost", "HEAD", image.layer_digest) == 1
    assert scripted.count("blobhost", "GET", image.layer_digest) == 1
    assert scripted.count("blobhost", "GET", image.config_digest) == 1
    # The upstream saw our credentials; its blob host never did.
    assert scripted.count("upstream", "GET", image.layer_digest, authorized=True) == 1
    assert scripted.count("blobhost", authorized=True) == 0
    log = proxy.log()
    # At log.level debug each upstream request is one line, without the query the storage URL carries.
    assert f"upstream s: HEAD {scripted.blob_url}/storage/{image.layer_digest} -> 200" in log
    assert "not-for-logs" not in log and PASSWORD not in log


@pytest.mark.parametrize("mode, message", [("plain", "non-HTTPS"), ("loop", "more than 5 redirects")])
def test_bad_redirects_fail_cleanly_and_cache_nothing(mode: str, message: str, scripted: ScriptedUpstream,
                                                      proxy: RunningServer) -> None:
    image = scripted.images[mode]
    with proxy.client() as client:
        assert client.get(f"/v2/s/{mode}/app/manifests/v1", headers=ACCEPT).status_code == 200
        for method in ("HEAD", "GET"):
            r = client.request(method, f"/v2/s/{mode}/app/blobs/{image.layer_digest}")
            assert r.status_code == 503, (method, r.status_code, r.text)
            if method == "GET":
                error = r.json()["errors"][0]
                assert error["code"] == "UNAVAILABLE" and message in error["message"], error
                assert "upstream registry s is unavailable" in error["message"]
        metrics = client.get("/metrics").text
    assert scripted.count("plain") == 0  # no request ever went out in plain HTTP
    # Each client path (httpx and the blob download) stops at 5 redirects: a bounded count, not a loop.
    assert scripted.count("upstream", "GET", image.layer_digest) <= 2 * 6
    assert not stored(proxy, image.layer_digest)
    staging = proxy.storage / "docker/registry/v2/_proxy"
    assert not staging.exists() or not any(staging.iterdir())
    assert 'secreg_proxy_upstream_errors_total{reason="other",upstream="s"}' in metrics
    assert "Traceback" not in proxy.log()


def test_concurrent_manifest_misses_share_one_upstream_fetch(scripted: ScriptedUpstream,
                                                             proxy: RunningServer) -> None:
    image = scripted.images["slow"]
    scripted.release.clear()

    def get(_: int) -> tuple[int, str, str]:
        with proxy.client() as client:
            r = client.get("/v2/s/slow/app/manifests/v1", headers=ACCEPT)
            return r.status_code, r.headers.get("docker-content-digest", ""), r.headers.get("x-cache", "")

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(get, i) for i in range(10)]
        deadline = time.monotonic() + 30
        while scripted.count("upstream", "HEAD", "/slow/app/manifests/", authorized=True) == 0:
            assert time.monotonic() < deadline, "the upstream never saw the manifest request"
            time.sleep(0.05)
        time.sleep(1)  # the other clients arrive meanwhile (late ones find the tag cached: same count)
        scripted.release.set()
        results = [f.result(timeout=60) for f in futures]
    assert all(status == 200 and digest == image.manifest_digest for status, digest, _ in results), results
    assert {cache for _, _, cache in results} <= {"miss", "hit"}
    assert scripted.count("upstream", "HEAD", "/slow/app/manifests/v1", authorized=True) == 1
    assert scripted.count("upstream", "GET", "/slow/app/manifests/", authorized=True) == 1



def test_concurrent_tag_lists_share_one_upstream_fetch(scripted: ScriptedUpstream, proxy: RunningServer) -> None:
    clients = [proxy.client(limits=httpx.Limits(max_connections=1)) for _ in range(10)]
    scripted.release.clear()
    try:
        for client in clients:  # connected (and accepted by a worker) before the tag lists are asked for
            assert client.get("/v2/").status_code == 200
        with ThreadPoolExecutor(len(clients)) as pool:
            futures = [pool.submit(client.get, "/v2/s/slow/app/tags/list") for client in clients]
            deadline = time.monotonic() + 30
            while scripted.count("upstream", "GET", "/slow/app/tags/list", authorized=True) == 0:
                assert time.monotonic() < deadline, "the upstream never saw the tag list request"
                time.sleep(0.05)
            time.sleep(2)  # the other clients' requests arrive meanwhile: they wait for the one held upstream
            assert scripted.count("upstream", "GET", "/slow/app/tags/list", authorized=True) == 1
            scripted.release.set()
            answers = [f.result(timeout=60) for f in futures]
        assert all(a.status_code == 200 and a.json()["tags"] == ["v1"] for a in answers), [a.text for a in answers]
    finally:
        scripted.release.set()
        for client in clients:
            client.close()


def test_json_nested_past_the_bound_from_the_upstream_is_an_upstream_error(proxy: RunningServer) -> None:
    """A tag list or manifest from the upstream nested 100,000 levels deep: parsed with the nesting bound
    (secreg.jsonlimit), not by json.loads into a RecursionError (a 500 with a traceback). An unreadable tag list
    is an upstream failure like any other: the cached tags (none) are listed."""
    with proxy.client() as client:
        tags = client.get("/v2/s/deep/app/tags/list")
        assert tags.status_code == 200 and tags.json()["tags"] == [], tags.text
        manifest = client.get("/v2/s/deep/app/manifests/v1", headers=ACCEPT)
        assert 400 <= manifest.status_code < 500 or manifest.status_code == 503, manifest.text
        assert manifest.json()["errors"], manifest.text
    log = proxy.log()
    assert "RecursionError" not in log and "unhandled error" not in log, log[-3000:]
