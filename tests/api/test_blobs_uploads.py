"""Blob and upload endpoints against a real server over TLS (spec: push, pull, content management)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from secreg.api.fileresponse import STREAM_CHUNK, _PageCacheProbe, mapped
from secreg.digest import Digest
from secreg.storage import layout
from tests.oci import error_code, push_blob, sha256, sha512
from tests.server import RunningServer, run_secreg


def test_api_version(client: httpx.Client) -> None:
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert r.content == b"{}" and r.headers["Content-Type"] == "application/json"
    assert r.headers["Content-Length"] == "2"


def test_monolithic_post_then_get_head(client: httpx.Client) -> None:
    data = os.urandom(100_000)
    digest = push_blob(client, "mono/repo", data)
    r = client.get(f"/v2/mono/repo/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Length"] == str(len(data))
    h = client.head(f"/v2/mono/repo/blobs/{digest}")
    assert h.status_code == 200 and h.content == b"" and h.headers["Content-Length"] == str(len(data))


def test_post_put_two_step(client: httpx.Client) -> None:
    data = b"two step upload"
    r = client.post("/v2/steps/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["Range"] == "0-0" and r.headers["Docker-Upload-UUID"]
    location = r.headers["Location"]
    assert location.startswith("/v2/steps/blobs/uploads/")
    r = client.put(location, params={"digest": sha256(data)}, content=data,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v2/steps/blobs/{sha256(data)}"
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    assert client.get(f"/v2/steps/blobs/{sha256(data)}").content == data


def test_chunked_upload_with_status_and_ranges(client: httpx.Client) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    parts = [data[: 1024 * 1024], data[1024 * 1024 : 3 * 1024 * 1024], data[3 * 1024 * 1024 :]]
    location = client.post("/v2/chunky/blobs/uploads/").headers["Location"]
    offset = 0
    for part in parts[:-1]:
        end = offset + len(part) - 1
        r = client.patch(location, content=part, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}",
            "Content-Length": str(len(part))})
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{end}"
        location = r.headers["Location"]
        offset = end + 1
    status = client.get(location)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{offset - 1}"
    # Out of order / overlapping chunk: 416 with the current range, data untouched.
    bad = client.patch(location, content=b"zz", headers={"Content-Range": "5-6", "Content-Length": "2"})
    assert bad.status_code == 416 and bad.headers["Range"] == f"0-{offset - 1}"
    last = parts[-1]
    r = client.put(location, params={"digest": sha256(data)}, content=last, headers={
        "Content-Range": f"{offset}-{offset + len(last) - 1}", "Content-Length": str(len(last))})
    assert r.status_code == 201, r.text
    got = client.get(f"/v2/chunky/blobs/{sha256(data)}")
    assert got.content == data


def test_streamed_patch_without_content_range(client: httpx.Client) -> None:
    data = os.urandom(2 * 1024 * 1024)

    def body() -> object:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    location = client.post("/v2/streamed/blobs/uploads/").headers["Location"]
    r = client.patch(location, content=body())  # chunked transfer encoding, no length
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    r = client.put(r.headers["Location"], params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"/v2/streamed/blobs/{sha256(data)}").content == data


def test_sha512_blob(client: httpx.Client) -> None:
    data = os.urandom(5000)
    digest = sha512(data)
    r = client.post("/v2/sha512/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/sha512/blobs/{digest}").content == data
    location = client.post("/v2/sha512/blobs/uploads/").headers["Location"]
    client.patch(location, content=data[:100])
    r = client.put(location, params={"digest": digest}, content=data[100:])
    assert r.status_code == 201


def test_digest_mismatch_stores_nothing(client: httpx.Client, open_server: RunningServer) -> None:
    data = b"the real bytes"
    wrong = sha256(b"other bytes")
    r = client.post("/v2/mismatch/blobs/uploads/", params={"digest": wrong}, content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert client.head(f"/v2/mismatch/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/mismatch/blobs/{sha256(data)}").status_code == 404
    hex_ = wrong.split(":")[1]
    assert not (open_server.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_).exists()
    # The two-step form: the session is discarded.
    location = client.post("/v2/mismatch/blobs/uploads/").headers["Location"]
    r = client.put(location, params={"digest": wrong}, content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert client.get(location).status_code == 404


def test_bad_digests(client: httpx.Client) -> None:
    for bad in ("sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "nocolon", "sha256:" + "A" * 64):
        r = client.get(f"/v2/repo/blobs/{bad}")
        assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID", bad
    r = client.post("/v2/repo/blobs/uploads/", params={"digest": "sha256:short"}, content=b"x")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    location = client.post("/v2/repo/blobs/uploads/").headers["Location"]
    r = client.put(location)  # no digest
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_unknown_blob_and_upload(client: httpx.Client) -> None:
    missing = sha256(b"never pushed")
    r = client.get(f"/v2/repo/blobs/{missing}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    r = client.head(f"/v2/repo/blobs/{missing}")
    assert r.status_code == 404 and r.content == b""
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        r = client.request(method, "/v2/repo/blobs/uploads/00000000-0000-4000-8000-000000000000",
                           params={"digest": missing} if method == "PUT" else None)
        assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN", method
    r = client.get("/v2/repo/blobs/uploads/../../../etc")
    assert r.status_code in (400, 404)


def test_blob_isolated_per_repository(client: httpx.Client) -> None:
    data = b"only in repository A"
    digest = push_blob(client, "iso/a", data)
    assert client.get(f"/v2/iso/a/blobs/{digest}").status_code == 200
    r = client.get(f"/v2/iso/b/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"


def test_cross_repository_mount(client: httpx.Client) -> None:
    data = b"mount me"
    digest = push_blob(client, "mount/src", data)
    r = client.post("/v2/mount/dst/blobs/uploads/", params={"mount": digest, "from": "mount/src"})
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/mount/dst/blobs/{digest}"
    assert client.get(f"/v2/mount/dst/blobs/{digest}").content == data
    # Not present in `from`: an ordinary upload session instead.
    other = sha256(b"not there")
    r = client.post("/v2/mount/dst2/blobs/uploads/", params={"mount": other, "from": "mount/src"})
    assert r.status_code == 202 and "Location" in r.headers
    # Without `from`: found in some repository the caller may pull.
    r = client.post("/v2/mount/dst3/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 201
    assert client.get(f"/v2/mount/dst3/blobs/{digest}").content == data


def test_range_requests(client: httpx.Client) -> None:
    data = bytes(range(256)) * 10
    digest = push_blob(client, "ranges", data)
    r = client.get(f"/v2/ranges/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = client.get(f"/v2/ranges/blobs/{digest}", headers={"Range": "bytes=2550-"})
    assert r.status_code == 206 and r.content == data[2550:]
    r = client.get(f"/v2/ranges/blobs/{digest}", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = client.get(f"/v2/ranges/blobs/{digest}", headers={"Range": "bytes=5000-6000"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_cancel_upload(client: httpx.Client) -> None:
    location = client.post("/v2/cancel/blobs/uploads/").headers["Location"]
    client.patch(location, content=b"partial")
    assert client.delete(location).status_code == 204
    r = client.get(location)
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"


def test_size_mismatch_discards_chunk(client: httpx.Client) -> None:
    location = client.post("/v2/sizes/blobs/uploads/").headers["Location"]
    r = client.patch(location, content=b"abc", headers={"Content-Range": "0-9"})
    assert r.status_code == 416
    assert client.get(location).headers["Range"] == "0-0"


def test_delete_blob(client: httpx.Client) -> None:
    digest = push_blob(client, "deleting", b"delete me")
    r = client.delete(f"/v2/deleting/blobs/{digest}")
    assert r.status_code == 202
    r = client.get(f"/v2/deleting/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    r = client.delete(f"/v2/deleting/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"


def test_same_blob_pushed_concurrently(client: httpx.Client, open_server: RunningServer) -> None:
    import concurrent.futures

    data = os.urandom(1024 * 1024)

    def push(i: int) -> int:
        with open_server.client() as c:
            return c.post(f"/v2/race/r{i}/blobs/uploads/", params={"digest": sha256(data)}, content=data).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert set(pool.map(push, range(6))) == {201}
    for i in range(6):
        got = client.get(f"/v2/race/r{i}/blobs/{sha256(data)}")
        assert hashlib.sha256(got.content).hexdigest() == sha256(data).split(":")[1]


def test_invalid_names(client: httpx.Client) -> None:
    for bad in ("UPPER/case", "a..b", "-lead", "a/_uploads", "a//b", "x" * 300):
        r = client.get(f"/v2/{bad}/tags/list")
        assert r.status_code == 400 and error_code(r) == "NAME_INVALID", bad
    r = client.post("/v2/Bad/blobs/uploads/")
    assert r.status_code == 400 and error_code(r) == "NAME_INVALID"


def test_wrong_method_and_unknown_path(client: httpx.Client) -> None:
    r = client.post("/v2/repo/tags/list")
    assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
    r = client.get("/v2/repo/nothing/here")
    assert r.status_code == 404 and r.json()["errors"]


def _evict_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_blob_not_in_the_page_cache_is_served_whole(client: httpx.Client, open_server: RunningServer) -> None:
    """Pieces that must come from the disk are read in a thread: same bytes, ranges included."""
    data = os.urandom(3 * 1024 * 1024 + 12345)
    digest = push_blob(client, "cold/blob", data)
    blob_file = open_server.storage / layout.blob_data(Digest.parse(digest))
    _evict_from_page_cache(blob_file)
    r = client.get(f"/v2/cold/blob/blobs/{digest}")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest.split(":")[1]
    _evict_from_page_cache(blob_file)
    r = client.get(f"/v2/cold/blob/blobs/{digest}", headers={"Range": "bytes=1000000-2999999"})
    assert r.status_code == 206 and r.content == data[1000000:3000000]


def test_mapped_pieces_are_the_files_bytes_and_unmapped_once_let_go(tmp_path: Path) -> None:
    """Views at offsets off the page grid, up to the file's last byte; the mapping is gone with the view."""
    path = tmp_path / "blob"
    data = os.urandom(3 * 4096 + 777)
    path.write_bytes(data)

    def mappings() -> int:
        return Path("/proc/self/maps").read_text().count(str(path))

    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, size in ((0, len(data)), (1, 4095), (4095, 2), (4097, len(data) - 4097), (len(data) - 1, 1)):
            view = mapped(fd, offset, size)
            assert bytes(view) == data[offset:offset + size] and view.readonly
            assert mappings() == 1
            del view
            assert mappings() == 0
    finally:
        os.close(fd)


def test_cached_blob_ranges_across_pieces(client: httpx.Client, open_server: RunningServer) -> None:
    """A blob in the page cache, served from views of its pages: whole and in ranges that start and end off
    the page grid and across piece boundaries, over HTTP/1.1 and HTTP/2."""
    data = os.urandom(2 * STREAM_CHUNK + 12345)
    digest = push_blob(client, "warm/blob", data)
    ranges = [(4097, STREAM_CHUNK + 5), (STREAM_CHUNK - 1, 2 * STREAM_CHUNK + 1), (len(data) - 3, len(data) - 1)]
    with httpx.Client(base_url=open_server.url, verify=open_server.ssl_context(), http2=True, timeout=60) as h2:
        for c, version in ((client, "HTTP/1.1"), (h2, "HTTP/2")):
            r = c.get(f"/v2/warm/blob/blobs/{digest}")
            assert r.status_code == 200 and r.http_version == version and r.content == data
            for first, last in ranges:
                r = c.get(f"/v2/warm/blob/blobs/{digest}", headers={"Range": f"bytes={first}-{last}"})
                assert r.status_code == 206 and r.content == data[first:last + 1], (version, first, last)


def test_page_cache_probe(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(os.urandom(1024 * 1024))
    fd = os.open(path, os.O_RDONLY)
    try:
        probe = _PageCacheProbe()
        os.pread(fd, 1024 * 1024, 0)
        assert probe.cached(fd, 1024 * 1024 - 1)
        _evict_from_page_cache(path)
        if probe.cached(fd, 512 * 1024):
            pytest.skip("this filesystem keeps the file cached or cannot tell (tmpfs, no RWF_NOWAIT)")
        os.pread(fd, 4096, 512 * 1024)
        assert probe.cached(fd, 512 * 1024)
    finally:
        os.close(fd)


def test_bodies_sent_to_unknown_routes_leave_the_connection_usable(client: httpx.Client) -> None:
    """404 and 405 answered by the router itself also read the body first (up to the drain limit)."""
    chunk = os.urandom(2 * 1024 * 1024)
    for _ in range(5):
        r = client.put("/v2/no/such/endpoint", content=chunk)
        assert r.status_code == 404 and error_code(r) == "UNSUPPORTED" and "connection" not in r.headers
        assert client.get("/v2/").status_code == 200
        r = client.put("/v2/", content=chunk)
        assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
        assert client.get("/v2/").status_code == 200
    r = client.put("/v2/no/such/endpoint", content=os.urandom(6 * 1024 * 1024))
    assert r.status_code == 404 and r.headers["Connection"] == "close"
    assert client.get("/v2/").status_code == 200


def test_uploads_through_the_page_cache_when_direct_io_is_off(tmp_path: Path) -> None:
    config = {"auth": {"enabled": False}, "storage": {"filesystem": {"directio": False}}}
    with run_secreg(tmp_path, config) as server, server.client() as client:
        data = os.urandom(5 * 1024 * 1024 + 7)
        location = client.post("/v2/buffered/blobs/uploads/").headers["Location"]
        half = len(data) // 2
        location = client.patch(location, content=data[:half]).headers["Location"]
        r = client.put(location, params={"digest": sha256(data)}, content=data[half:])
        assert r.status_code == 201, r.text
        assert client.get(f"/v2/buffered/blobs/{sha256(data)}").content == data
