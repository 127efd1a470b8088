"""The blob fetch engine against the Go registry: a client that goes away does not stop the fetch, and a range
request of a blob on its way in gets exactly its bytes."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from secreg.digest import Digest, Hasher
from secreg.proxy.fetch import SPOOL_BYTES, SPOOL_WRITE_BYTES, FetchFailed, _Spool
from secreg.storage.appendfile import ALIGNMENT
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


def _page_cached(path: Path, offset: int) -> bool:
    """Whether the page at `offset` of `path` is in the page cache (a one-byte RWF_NOWAIT read)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], offset, os.RWF_NOWAIT)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _direct_io_works(directory: Path) -> bool:
    probe = directory / ".direct-probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o600))
        return hasattr(os, "O_DIRECT") and hasattr(os, "RWF_NOWAIT")
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def test_a_client_far_behind_the_fetch_reads_the_disk_and_the_blob_skips_the_page_cache(
        cache: RunningServer, go_pusher: Pusher, go_hub: Upstream, tmp_path: Path) -> None:
    data, digest = _push(go_pusher, tmp_path, "fetch/behind", 9003)
    assert SIZE > 2 * SPOOL_BYTES  # the client stops within the first few MiB: the fetch runs past the ring
    stored = cache.storage / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    with cache.client() as client, client.stream("GET", f"/v2/go/fetch/behind/blobs/{digest}") as r:
        assert r.status_code == 200 and r.headers["x-cache"] == "miss"
        pieces = r.iter_raw()
        received = [next(pieces)]
        deadline = time.monotonic() + 60
        while not (stored.exists() and stored.stat().st_size == SIZE):  # the fetch ends while the client waits
            assert time.monotonic() < deadline, "the fetch waited for its client"
            time.sleep(0.05)
        if _direct_io_works(stored.parent):  # written with O_DIRECT: nothing of it entered the page cache
            assert not any(_page_cached(stored, offset) for offset in (SIZE // 2, SIZE - 2 * SPOOL_BYTES))
        received.extend(pieces)  # the rest: from the ring while it lasted, then from the file
    assert b"".join(received) == data
    assert _downloads(go_hub, "fetch/behind", digest) == 1


def _put(spool: _Spool, piece: memoryview) -> None:
    """As a download hands a piece to the spool: into its buffer, as much as that takes, then the rest."""
    while piece:
        buffer = spool.buffer()
        count = min(len(buffer), len(piece))
        buffer[:count] = piece[:count]
        spool.received(count)
        piece = piece[count:]


@pytest.mark.parametrize("direct", [True, False])
def test_the_spool_keeps_the_newest_bytes_and_writes_all_of_them(tmp_path: Path, direct: bool) -> None:
    data = random_bytes(3 * SPOOL_BYTES + 4097, seed=9004)
    path = tmp_path / "data"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    spool = _Spool(str(path), fd, Hasher("sha256"), direct)
    spool.size = len(data)
    sizes = itertools.cycle([1, 4096, 1024 * 1024 + 3, 65536, 777, 2 * 1024 * 1024])
    offset = 0
    try:
        while offset < len(data):
            piece = memoryview(data)[offset:offset + next(sizes)]
            _put(spool, piece)
            offset += len(piece)
            assert spool.total == offset and offset - SPOOL_WRITE_BYTES - ALIGNMENT < spool.in_file <= offset
            assert spool.in_file % ALIGNMENT == 0
            oldest = max(offset - SPOOL_BYTES, 0)
            assert spool.copy(oldest, 100_000) == data[oldest:oldest + 100_000][:offset - oldest]
            assert spool.copy(offset - 1, 10) == data[offset - 1:offset]
            if oldest:
                assert spool.copy(oldest - 1, 10) is None  # overwritten: the reader goes to the file
        with pytest.raises(FetchFailed, match="more than"):
            _put(spool, memoryview(b"x"))
        spool.finish()
        assert spool.in_file == len(data)
        assert spool.hasher.digest() == Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    finally:
        spool.close()
        os.close(fd)
    assert path.read_bytes() == data
    assert spool.copy(len(data) - 1, 1) is None  # closed: its buffer went back to the pool


def test_a_reader_about_to_fall_out_of_the_ring_holds_the_download_back_within_a_budget(tmp_path: Path) -> None:
    path = tmp_path / "data"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    spool = _Spool(str(path), fd, Hasher("sha256"), True)
    try:
        assert spool.room() == SPOOL_BYTES  # no reader: the download goes as fast as the upstream sends
        _put(spool, memoryview(random_bytes(SPOOL_BYTES, seed=9005)))
        spool.readers[object()] = SPOOL_BYTES  # caught up: waits for bytes, wants nothing from the ring
        assert spool.room() == SPOOL_BYTES
        behind = object()
        spool.readers[behind] = 3 * 1024 * 1024
        assert spool.room() == 3 * 1024 * 1024 - SPOOL_WRITE_BYTES  # more would overwrite what it wants next
        spool.readers[behind] = SPOOL_WRITE_BYTES
        assert spool.room() == 0  # the download waits for it
        spool._budget = 0.0  # held back as long as a fetch may be: the reader will read the file
        assert spool.room() == SPOOL_BYTES
    finally:
        spool.close()
        os.close(fd)
