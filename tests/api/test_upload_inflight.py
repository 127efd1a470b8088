"""An upload's status while another request is still writing to it: only what requests that ended stored counts
(real server over TLS, the slow PATCH streamed by a raw TLS client; one and two workers)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from secreg.storage import layout
from tests.server import RunningServer, run_secreg

MIB = 1024 * 1024
FIRST = MIB  # committed by an ordinary PATCH before the slow one begins
IN_FLIGHT = 6 * MIB  # what the slow PATCH sends before it stalls


def _config(workers: int) -> dict[str, object]:
    return {"auth": {"enabled": False}, "http": {"workers": workers}}


@contextmanager
def _tls(server: RunningServer) -> Iterator[ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    with server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        yield sock


def _status(server: RunningServer, location: str) -> httpx.Response:
    with server.client() as fresh:  # a new connection each time: with two workers, either may answer
        return fresh.get(location)


def _wait_until(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _answer(sock: ssl.SSLSocket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        piece = sock.recv(65536)
        if not piece:
            break
        answer += piece
    return answer


def _begin_upload(server: RunningServer, client: httpx.Client, data: bytes) -> tuple[str, Path]:
    location = client.post("/v2/inflight/app/blobs/uploads/").headers["Location"]
    r = client.patch(location, content=data[:FIRST], headers={"Content-Range": f"0-{FIRST - 1}"})
    assert r.status_code == 202 and r.headers["Range"] == f"0-{FIRST - 1}", r.text
    upload_id = location.rstrip("/").rsplit("/", 1)[1].split("?")[0]
    return location, server.storage / layout.upload_data("inflight/app", upload_id)


def _check_only_committed_shows(server: RunningServer, location: str, data: bytes) -> None:
    for _ in range(6):
        status = _status(server, location)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{FIRST - 1}", status.headers
    with server.client() as other:  # a second writer is refused, and told the committed size too
        r = other.patch(location, content=data[FIRST:FIRST + 10], headers={"Content-Range": f"{FIRST}-{FIRST + 9}"})
    assert r.status_code == 416 and "another request" in r.text, r.text
    assert r.headers["Range"] == f"0-{FIRST - 1}"


def _finish(server: RunningServer, location: str, data: bytes, offset: int) -> None:
    with server.client() as c:
        deadline = time.monotonic() + 30
        while True:  # the record is written just before the ended request lets go of the data's lock
            r = c.patch(location, content=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"})
            if r.status_code != 416 or "another request" not in r.text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}", r.text
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = c.put(r.headers["Location"], params={"digest": digest})
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/inflight/app/blobs/{digest}").content == data


@pytest.mark.parametrize("workers", [1, 2])
def test_a_chunk_cut_short_never_shows_in_the_status(tmp_path: Path, workers: int) -> None:
    """A PATCH announces its chunk's range and stalls mid-body, its first bytes already in the data file: the
    status (from other connections) shows the committed size only. The chunk then ends short of its range: it is
    cut off again, the status still says the committed size, and a PATCH from there completes the upload."""
    data = os.urandom(12 * MIB)
    with run_secreg(tmp_path, _config(workers)) as server, server.client() as c:
        location, data_file = _begin_upload(server, c, data)
        with _tls(server) as slow:
            slow.sendall(f"PATCH {location} HTTP/1.1\r\nHost: {server.host_port}\r\n"
                         f"Content-Range: {FIRST}-{len(data) - 1}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            slow.sendall(b"%x\r\n" % IN_FLIGHT + data[FIRST:FIRST + IN_FLIGHT] + b"\r\n")
            _wait_until(lambda: data_file.stat().st_size > FIRST + MIB, "the slow PATCH's bytes on disk")
            _check_only_committed_shows(server, location, data)
            slow.sendall(b"0\r\n\r\n")  # the chunk ends here, short of its Content-Range
            answer = _answer(slow)
        assert answer.startswith(b"HTTP/1.1 400") and b"SIZE_INVALID" in answer, answer[:500]
        assert _status(server, location).headers["Range"] == f"0-{FIRST - 1}"
        assert data_file.stat().st_size == FIRST
        _finish(server, location, data, FIRST)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_patch_whose_client_goes_away_commits_what_arrived(tmp_path: Path, workers: int) -> None:
    """Until the client of a stalled PATCH goes away the status shows the committed size; afterwards, what
    arrived is kept and committed (the session resumes there)."""
    data = os.urandom(12 * MIB)
    with run_secreg(tmp_path, _config(workers)) as server, server.client() as c:
        location, data_file = _begin_upload(server, c, data)
        with _tls(server) as slow:
            slow.sendall(f"PATCH {location} HTTP/1.1\r\nHost: {server.host_port}\r\n"
                         f"Content-Length: {len(data) - FIRST}\r\n\r\n".encode() + data[FIRST:FIRST + IN_FLIGHT])
            _wait_until(lambda: data_file.stat().st_size > FIRST + MIB, "the slow PATCH's bytes on disk")
            _check_only_committed_shows(server, location, data)
        kept = FIRST + IN_FLIGHT
        _wait_until(lambda: _status(server, location).headers["Range"] == f"0-{kept - 1}",
                    "the dropped PATCH's bytes committed")
        _finish(server, location, data, kept)
