"""The blob fetch engine against the Go registry: a client that goes away does not stop the fetch, and a range
request of a blob on its way in gets exactly its bytes."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import RunningServer, run_secreg

from .test_pull import proxy_config, upstream_entry
from .upstreams import Pusher, Upstream, random_bytes

SIZE = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, go_hub: Upstream) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("fetch"), proxy_config(upstream_entry("go", go_hub, "go"))) as server:
        yield server


def _push(go_pusher: Pusher, tmp_path: Path, name: str, seed: int) -> tuple[bytes, str]:
    data = random_bytes(SIZE, seed=seed)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = tmp_path / "blob"
    path.write_bytes(data)
    go_pusher.blob_file(name, path, digest)
    return data, digest


def _downloads(go_hub: Upstream, name: str, digest: str) -> int:
    return len(re.findall(rf'"GET /v2/{name}/blobs/{digest} HTTP/1.1" 200 ', go_hub.log()))


def test_a_client_that_goes_away_does_not_stop_the_fetch(cache: RunningServer, go_pusher: Pusher,
                                                          go_hub: Upstream, tmp_path: Path) -> None:
    data, digest = _push(go_pusher, tmp_path, "fetch/gone", 9001)
    with cache.client() as client, client.stream("GET", f"/v2/go/fetch/gone/blobs/{digest}") as r:
        assert r.status_code == 200
        next(r.iter_raw())  # one piece, then the connection closes
    stored = cache.storage / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    deadline = time.monotonic() + 60
    while not (stored.exists() and stored.stat().st_size == SIZE):
        assert time.monotonic() < deadline, "the fetch stopped with its client"
        time.sleep(0.05)
    with cache.client() as client:
        again = client.get(f"/v2/go/fetch/gone/blobs/{digest}")
    assert again.status_code == 200 and again.headers["x-cache"] == "hit" and again.content == data
    assert _downloads(go_hub, "fetch/gone", digest) == 1


def test_a_range_of_a_blob_on_its_way_in(cache: RunningServer, go_pusher: Pusher, go_hub: Upstream,
                                         tmp_path: Path) -> None:
    data, digest = _push(go_pusher, tmp_path, "fetch/range", 9002)
    start, end = 5 * 1024 * 1024 + 7, SIZE - 1  # up to the last byte, which is held back until verified
    with cache.client() as client:
        r = client.get(f"/v2/go/fetch/range/blobs/{digest}", headers={"Range": f"bytes={start}-{end}"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert r.content == data[start:end + 1]
    assert _downloads(go_hub, "fetch/range", digest) == 1
