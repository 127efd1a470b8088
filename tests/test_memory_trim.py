"""secreg/memory.py's trim after uploads pause: a burst of upload requests ends in one trim, none while they
keep coming; and a real server's pushes, chunked and monolithic, give their memory back once they are over."""

from __future__ import annotations

import os
import time
from pathlib import Path

from secreg import memory
from tests.oci import sha256
from tests.server import run_secreg


def _wait_for(condition: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_burst_of_upload_ends_is_one_trim_after_it() -> None:
    idle = memory._IdleTrim()
    for _ in range(20):
        idle.soon()
    assert idle.trims == 0  # never at once: the next request of the push would fault the pages back in
    assert _wait_for(lambda: idle.trims == 1)
    time.sleep(3 * memory.IDLE_TRIM_SECONDS)
    assert idle.trims == 1 and idle._timer is None  # nothing more to do until the next upload ends
    idle.soon()
    assert _wait_for(lambda: idle.trims == 2)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_pushes_give_their_memory_back_once_over(tmp_path: Path) -> None:
    data = os.urandom(64 * 1024 * 1024)
    with run_secreg(tmp_path, {"auth": {"enabled": False}, "http": {"workers": 1}}) as server, \
            server.client(timeout=120) as client:
        idle = _rss_kib(server.process.pid)
        location = client.post("/v2/trim/a/blobs/uploads/").headers["location"]
        step = 8 * 1024 * 1024
        for start in range(0, len(data), step):
            r = client.patch(location, content=data[start:start + step], headers={
                "Content-Range": f"{start}-{start + step - 1}", "Content-Type": "application/octet-stream"})
            assert r.status_code == 202
            location = r.headers["location"]
        assert client.put(location, params={"digest": sha256(data)}).status_code == 201
        assert client.post(f"/v2/trim/b/blobs/uploads/?digest={sha256(data)}", content=data).status_code == 201
        # The buffers of both pushes are handed back after the quiet second (not after each request): here
        # ~20 MiB more right after the pushes, ~4 MiB more once trimmed.
        assert _wait_for(lambda: _rss_kib(server.process.pid) < idle + 12 * 1024), (idle, _rss_kib(server.process.pid))
        assert client.get(f"/v2/trim/a/blobs/{sha256(data)}").content == data


def test_a_commit_gives_the_uploads_memory_back_before_it_answers(tmp_path: Path) -> None:
    # With 2 workers the next push often lands on the other worker: one that waited for the quiet second
    # still held the last push's buffers while the other grew (secreg/memory.py).
    data = os.urandom(64 * 1024 * 1024)
    with run_secreg(tmp_path, {"auth": {"enabled": False}, "http": {"workers": 1}}) as server, \
            server.client(timeout=120) as client:
        idle = _rss_kib(server.process.pid)
        assert client.post(f"/v2/trim/m/blobs/uploads/?digest={sha256(data)}", content=data).status_code == 201
        monolithic = _rss_kib(server.process.pid)
        location = client.post("/v2/trim/c/blobs/uploads/").headers["location"]
        r = client.patch(location, content=data[:-1], headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        r = client.put(r.headers["location"], params={"digest": sha256(data)}, content=data[-1:])
        assert r.status_code == 201
        chunked = _rss_kib(server.process.pid)
        # Read as soon as the commit answered, long before the idle trim could run.
        assert monolithic < idle + 12 * 1024 and chunked < idle + 12 * 1024, (idle, monolithic, chunked)
