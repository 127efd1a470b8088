"""Pulling through a real `secreg serve` that caches two real upstreams over TLS, each with its own CA: the Go
reference registry (htpasswd) and a second secreg (token auth)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oci import OCI_MANIFEST, sha256
from tests.server import RunningServer, run_secreg

from .upstreams import Pusher, Upstream, random_bytes

ACCEPT = {"Accept": OCI_MANIFEST}
TOKEN_TTL = 2  # seconds a tag of the token upstream is trusted


def upstream_entry(name: str, upstream: Upstream, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": upstream.url, "ca": str(upstream.ca), "username": upstream.username,
            "password": upstream.password, "prefix": prefix, **extra}


def proxy_config(*entries: dict[str, Any], auth: bool = False) -> dict[str, Any]:
    return {"auth": {"enabled": auth}, "proxy": {"upstreams": list(entries)},
            "storage": {"delete": {"enabled": True}}}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, go_hub: Upstream, token_upstream: Upstream
          ) -> Iterator[RunningServer]:
    config = proxy_config(upstream_entry("go", go_hub, "go", ttl="1h", dockerhub=True),
                          upstream_entry("sec", token_upstream, "sec", ttl=TOKEN_TTL))
    with run_secreg(tmp_path_factory.mktemp("proxy"), config) as server:
        yield server


@pytest.fixture(scope="module")
def client(proxy: RunningServer) -> Iterator[httpx.Client]:
    with proxy.client() as c:
        yield c


def pull(client: httpx.Client, name: str, reference: str) -> tuple[httpx.Response, list[httpx.Response]]:
    """The manifest and every blob it names, through the proxy."""
    manifest = client.get(f"/v2/{name}/manifests/{reference}", headers=ACCEPT)
    assert manifest.status_code == 200, manifest.text
    document = json.loads(manifest.content)
    blobs = []
    for descriptor in [document["config"], *document["layers"]]:
        blob = client.get(f"/v2/{name}/blobs/{descriptor['digest']}")
        assert blob.status_code == 200, blob.text
        assert sha256(blob.content) == descriptor["digest"]
        blobs.append(blob)
    return manifest, blobs


@pytest.mark.parametrize("which", ["go", "sec"])
def test_pull_by_tag_and_by_digest(which: str, client: httpx.Client, request: pytest.FixtureRequest) -> None:
    upstream: Upstream = request.getfixturevalue("go_hub" if which == "go" else "token_upstream")
    pusher: Pusher = request.getfixturevalue("go_pusher" if which == "go" else "token_pusher")
    digest, content, layers = pusher.image("pull/app", "1.0", [random_bytes(700_000, seed=11 if which == "go" else 12)],
                                          label=which)

    manifest, blobs = pull(client, f"{which}/pull/app", "1.0")
    assert manifest.content == content and manifest.headers["docker-content-digest"] == digest
    assert manifest.headers["x-cache"] == "miss" and [b.headers["x-cache"] for b in blobs] == ["miss", "miss"]

    again, blobs = pull(client, f"{which}/pull/app", digest)
    assert again.content == content and again.headers["x-cache"] == "hit"
    assert [b.headers["x-cache"] for b in blobs] == ["hit", "hit"]
    assert upstream.requests_to("GET", f"/blobs/{layers[0]}", status=200) == 1
    head = client.head(f"/v2/{which}/pull/app/blobs/{layers[0]}")
    assert head.status_code == 200 and head.headers["content-length"] == "700000"


def test_tag_moved_upstream_is_revalidated_after_the_ttl(client: httpx.Client, token_pusher: Pusher,
                                                          token_upstream: Upstream) -> None:
    first, _, _ = token_pusher.image("moving/app", "latest", [random_bytes(1000, seed=21)], label="one")
    assert client.get("/v2/sec/moving/app/manifests/latest", headers=ACCEPT).headers["x-cache"] == "miss"
    second, _, _ = token_pusher.image("moving/app", "latest", [random_bytes(1000, seed=22)], label="two")

    fresh = client.get("/v2/sec/moving/app/manifests/latest", headers=ACCEPT)
    assert fresh.headers["docker-content-digest"] == first and fresh.headers["x-cache"] == "hit"
    time.sleep(TOKEN_TTL + 0.5)
    moved = client.get("/v2/sec/moving/app/manifests/latest", headers=ACCEPT)
    assert moved.headers["docker-content-digest"] == second and moved.headers["x-cache"] == "miss"
    heads = token_upstream.requests_to("HEAD", "/v2/moving/app/manifests/latest")
    time.sleep(TOKEN_TTL + 0.5)
    same = client.get("/v2/sec/moving/app/manifests/latest", headers=ACCEPT)
    assert same.headers["docker-content-digest"] == second and same.headers["x-cache"] == "revalidated"
    assert token_upstream.requests_to("HEAD", "/v2/moving/app/manifests/latest") == heads + 1
    # The old manifest is still there by digest: content-addressed, kept until evicted or collected.
    assert client.get(f"/v2/sec/moving/app/manifests/{first}", headers=ACCEPT).headers["x-cache"] == "hit"


def test_docker_hub_short_names_and_containerd_ns(client: httpx.Client, go_pusher: Pusher, go_hub: Upstream) -> None:
    digest, _, _ = go_pusher.image("library/busybox", "stable", [random_bytes(2000, seed=31)])
    short = client.get("/v2/library/busybox/manifests/stable", headers=ACCEPT)
    assert short.status_code == 200 and short.headers["docker-content-digest"] == digest
    host = go_hub.url.removeprefix("https://")
    go_pusher.image("tools/jq", "1", [random_bytes(2000, seed=32)])
    routed = client.get("/v2/tools/jq/manifests/1", params={"ns": host}, headers=ACCEPT)
    assert routed.status_code == 200, routed.text
    # Both landed in the cache repositories under the upstream's prefix.
    assert client.get("/v2/go/library/busybox/manifests/stable", headers=ACCEPT).headers["x-cache"] == "hit"
    assert client.get("/v2/go/tools/jq/manifests/1", headers=ACCEPT).headers["x-cache"] == "hit"
    # Without ?ns= the same name is one of our own repositories, which does not exist.
    assert client.get("/v2/tools/jq/manifests/1", headers=ACCEPT).status_code == 404


def test_pushes_into_a_cache_prefix_are_refused(client: httpx.Client) -> None:
    for name in ("go/team/app", "sec/x", "library/mine"):
        r = client.post(f"/v2/{name}/blobs/uploads/")
        assert r.status_code == 405, r.text
        error = r.json()["errors"][0]
        assert error["code"] == "UNSUPPORTED" and "pull-through cache" in error["message"]
        r = client.put(f"/v2/{name}/manifests/v1", content=b"{}", headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    # Outside the prefixes this is an ordinary registry.
    r = client.post("/v2/own/app/blobs/uploads/", params={"digest": sha256(b"mine")}, content=b"mine")
    assert r.status_code == 201, r.text


def test_names_that_escape_the_prefix_never_leave_the_machine(client: httpx.Client, go_hub: Upstream) -> None:
    before = go_hub.log()
    for path in ("/v2/go/../etc/manifests/x", "/v2/go/%2e%2e/etc/manifests/x", "/v2/go//x/manifests/y",
                 "/v2/go/Upper/manifests/x", "/v2/go/manifests/x"):
        r = client.get(path, headers=ACCEPT)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert r.status_code != 500
    assert go_hub.log() == before


def test_concurrent_pulls_of_a_missing_blob_make_one_upstream_get(client: httpx.Client, go_pusher: Pusher,
                                                                    go_hub: Upstream, tmp_path: Path,
                                                                    proxy: RunningServer) -> None:
    size = 64 * 1024 * 1024
    path = tmp_path / "big"
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        for i in range(64):
            piece = random_bytes(1024 * 1024, seed=1000 + i)
            hasher.update(piece)
            out.write(piece)
    digest = "sha256:" + hasher.hexdigest()
    go_pusher.blob_file("big/blob", path, digest)

    def fetch(_: int) -> tuple[int, str, int]:
        h = hashlib.sha256()
        received = 0
        with proxy.client() as c, c.stream("GET", f"/v2/go/big/blob/blobs/{digest}") as r:
            for chunk in r.iter_bytes():
                h.update(chunk)
                received += len(chunk)
            return r.status_code, "sha256:" + h.hexdigest(), received

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(fetch, range(20)))
    assert all(r == (200, digest, size) for r in results), results
    # One fetch: a worker's first request of the upstream is also answered 401 (the challenge it learns).
    assert go_hub.requests_to("GET", f"/v2/big/blob/blobs/{digest}", status=200) == 1
    stored = proxy.storage / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    deadline = time.monotonic() + 60  # the clients had every byte once it was verified; the commit follows
    while not (stored.exists() and stored.stat().st_size == size):
        assert time.monotonic() < deadline, "the blob was not committed"
        time.sleep(0.05)


def test_metrics_and_access_log_say_hit_or_miss(client: httpx.Client, proxy: RunningServer, go_pusher: Pusher,
                                                go_hub: Upstream, token_upstream: Upstream) -> None:
    go_pusher.image("observed/app", "v1", [random_bytes(5000, seed=41)])
    pull(client, "go/observed/app", "v1")
    pull(client, "go/observed/app", "v1")
    text = client.get("/metrics").text
    assert 'secreg_proxy_requests_total{kind="blob",result="hit",upstream="go"}' in text
    assert 'secreg_proxy_requests_total{kind="manifest",result="miss",upstream="go"}' in text
    assert 'secreg_proxy_fetched_bytes_total{upstream="go"}' in text
    assert "secreg_proxy_upstream_seconds_bucket" in text
    log = proxy.log()
    assert '"cache": "miss"' in log and '"cache": "hit"' in log
    for secret in (go_hub.password, token_upstream.password):
        assert secret not in log and secret not in text


def test_catalog_and_ui_mark_cache_repositories(client: httpx.Client, go_pusher: Pusher) -> None:
    go_pusher.image("listed/app", "v1", [random_bytes(2000, seed=71)])
    pull(client, "go/listed/app", "v1")
    assert client.post("/v2/own/listed/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x"
                       ).status_code == 201
    document = client.get("/v2/_catalog").json()
    assert document["cached"]["go/listed/app"] == "go" and "own/listed" not in document["cached"]
    page = client.get("/ui/", params={"q": "listed"}).text
    assert "go/listed/app</a> <span class=\"badge\"" in page and "cache: go" in page
    assert "own/listed</a></td>" in page


def test_a_blob_the_upstream_lacks_is_asked_for_once(proxy: RunningServer, go_pusher: Pusher,
                                                      go_hub: Upstream) -> None:
    _, _, layers = go_pusher.image("lacking/app", "v1", [random_bytes(3000, seed=81)])
    missing = sha256(b"not upstream")
    with proxy.client(limits=httpx.Limits(max_connections=1)) as one:  # one connection: one worker
        # A blob first, so this worker knows the upstream's challenge: the next GET takes the direct path.
        assert one.get(f"/v2/go/lacking/app/blobs/{layers[0]}").status_code == 200
        r = one.get(f"/v2/go/lacking/app/blobs/{missing}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN", r.text
    assert go_hub.requests_to("GET", f"/v2/lacking/app/blobs/{missing}", status=404) == 1
