"""When the upstream is down, answers 5xx or sends wrong bytes: cached content keeps being served (a stale tag
says so), content never cached fails with UNAVAILABLE, and no byte that fails its digest is ever kept."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import h2.exceptions
import httpx
import pytest

from tests.oci import OCI_MANIFEST
from tests.server import RunningServer, run_secreg

from .fake_upstream import FakeUpstream, fake_upstream
from .test_pull import ACCEPT, proxy_config, pull, upstream_entry
from .upstreams import Pusher, go_registry_of, go_upstream, random_bytes


def test_upstream_stopped_cached_content_still_pulls(tmp_path: Path, go_registry_bin: str) -> None:
    with go_upstream(tmp_path / "upstream") as upstream:
        pusher = Pusher(upstream)
        digest, _, layers = pusher.image("offline/app", "v1", [random_bytes(4000, seed=51)])
        pusher.image("offline/never", "v1", [random_bytes(4000, seed=52)])
        pusher.close()
        config = proxy_config(upstream_entry("up", upstream, "up", ttl=0))
        with run_secreg(tmp_path / "proxy", config) as proxy, proxy.client() as client:
            pull(client, "up/offline/app", "v1")
            process = go_registry_of(upstream).process
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)

            stale = client.get("/v2/up/offline/app/manifests/v1", headers=ACCEPT)
            assert stale.status_code == 200 and stale.headers["x-cache"] == "stale"
            assert stale.headers["docker-content-digest"] == digest
            by_digest, blobs = pull(client, "up/offline/app", digest)
            assert by_digest.headers["x-cache"] == "hit" and {b.headers["x-cache"] for b in blobs} == {"hit"}

            for path in ("/v2/up/offline/never/manifests/v1", f"/v2/up/offline/never/blobs/{layers[0]}"):
                missing = client.get(path, headers=ACCEPT)
                assert missing.status_code == 503, missing.text
                error = missing.json()["errors"][0]
                assert error["code"] == "UNAVAILABLE" and "upstream registry up is unavailable" in error["message"]
                assert error["detail"] == {"upstream": "up"}
            log = proxy.log()
            assert "serving up/offline/app:v1 from the cache unchecked (stale)" in log
            assert '"cache": "stale"' in log and upstream.password not in log


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstream]:
    with fake_upstream(tmp_path_factory.mktemp("fake")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def fake_proxy(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[RunningServer]:
    entry = {"name": "fake", "url": fake.url, "ca": str(fake.ca), "prefix": "fake"}
    with run_secreg(tmp_path_factory.mktemp("fake-proxy"), proxy_config(entry)) as server:
        yield server


def test_upstream_answering_5xx_is_unavailable(fake: FakeUpstream, fake_proxy: RunningServer) -> None:
    fake.mode[0] = "unavailable"
    try:
        with fake_proxy.client() as client:
            r = client.get("/v2/fake/some/app/manifests/latest", headers=ACCEPT)
    finally:
        fake.mode[0] = "corrupt"
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "503" in r.json()["errors"][0]["message"]


def test_a_blob_answered_5xx_is_asked_for_once(fake: FakeUpstream, fake_proxy: RunningServer) -> None:
    with fake_proxy.client(limits=httpx.Limits(max_connections=1)) as client:
        # A blob download first (its bytes are wrong, but it was answered 200): this worker knows now that the
        # upstream serves anonymously, so the next blob GET takes the direct download path.
        with pytest.raises(httpx.HTTPError):
            with client.stream("GET", f"/v2/fake/learn/app/blobs/{fake.layer_digest}") as r:
                for _ in r.iter_raw():
                    pass
        fake.mode[0] = "unavailable"
        try:
            r = client.get(f"/v2/fake/down/app/blobs/{fake.layer_digest}")
        finally:
            fake.mode[0] = "corrupt"
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
    assert "503" in r.json()["errors"][0]["message"]
    assert fake.requests[f"GET /v2/down/app/blobs/{fake.layer_digest}"] == 1


def _digest_warnings(log: str) -> int:
    return len([line for line in log.splitlines() if "WARNING" in line and "bytes whose digest is" in line])


def test_wrong_bytes_from_the_upstream_are_never_kept(fake: FakeUpstream, fake_proxy: RunningServer) -> None:
    warned = _digest_warnings(fake_proxy.log())  # by the module's other tests
    with fake_proxy.client() as client:
        manifest = client.get("/v2/fake/bad/app/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert manifest.status_code == 200
        layer = json.loads(manifest.content)["layers"][0]["digest"]
        assert layer == fake.layer_digest
        for attempt in (1, 2):
            with pytest.raises(httpx.HTTPError):
                with client.stream("GET", f"/v2/fake/bad/app/blobs/{layer}") as r:
                    assert r.status_code == 200
                    received = sum(len(chunk) for chunk in r.iter_raw())
                    # The held-back last byte never comes: the client can never mistake this for the blob.
                    assert received < fake.layer_size
            assert fake.requests[f"GET /v2/bad/app/blobs/{layer}"] == attempt  # nothing cached: asked again
    data = fake_proxy.storage / "docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:]
    assert not data.exists()
    staging = fake_proxy.storage / "docker/registry/v2/_proxy"
    assert not staging.exists() or not any(staging.iterdir())
    log = fake_proxy.log()
    # One warning line per failed fetch, and no traceback for the answers it cut off.
    assert _digest_warnings(log) - warned == 2 and "Traceback" not in log


def test_wrong_bytes_over_http2_end_the_stream_short(tmp_path: Path, fake: FakeUpstream) -> None:
    """Over HTTP/2 a cut-off answer ends its stream short of the Content-Length (the client refuses it) instead
    of leaving the stream open until the client's timeout."""
    entry = {"name": "fake", "url": fake.url, "ca": str(fake.ca), "prefix": "fake"}
    config = {**proxy_config(entry), "http": {"http2": True}, "log": {"level": "debug"}}
    with run_secreg(tmp_path / "proxy", config) as proxy, httpx.Client(base_url=proxy.url, verify=proxy.ssl_context(),
                                                                        http2=True, timeout=120) as client:
        # Auth is off here, but a debug log must never show what a client sends as its credentials.
        manifest = client.get("/v2/fake/h2/app/manifests/latest",
                              headers={**ACCEPT, "Authorization": "Bearer h2-client-token-0c5e"})
        assert manifest.http_version == "HTTP/2" and manifest.status_code == 200
        # httpx hands h2's own InvalidBodyLengthError through unwrapped.
        with pytest.raises((httpx.HTTPError, h2.exceptions.ProtocolError)) as raised:
            with client.stream("GET", f"/v2/fake/h2/app/blobs/{fake.layer_digest}") as r:
                assert r.status_code == 200
                for _ in r.iter_raw():
                    pass
        assert not isinstance(raised.value, httpx.TimeoutException), raised.value
        log = proxy.log()
        assert "Traceback" not in log and "h2-client-token-0c5e" not in log
