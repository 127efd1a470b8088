"""A server killed mid-push leaves no blob, corrupt or otherwise; after a restart the push simply succeeds."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.server import run_secreg

OPEN = {"auth": {"enabled": False}}


def test_kill_during_monolithic_push_leaves_nothing_visible(tmp_path: Path) -> None:
    piece = os.urandom(1024 * 1024)
    pieces = 64
    digest = "sha256:" + hashlib.sha256(piece * pieces).hexdigest()
    sent = threading.Event()

    def body() -> Iterator[bytes]:
        for i in range(pieces):
            if i == pieces // 2:
                sent.set()
                time.sleep(30)  # the server is killed while we wait
            yield piece

    with run_secreg(tmp_path, OPEN) as server:
        errors: list[Exception] = []

        def push() -> None:
            try:
                with server.client() as c:
                    c.post("/v2/crash/app/blobs/uploads/", params={"digest": digest}, content=body(),
                           headers={"Content-Length": str(len(piece) * pieces)})
            except Exception as exc:  # the connection dies with the server
                errors.append(exc)

        thread = threading.Thread(target=push, daemon=True)
        thread.start()
        assert sent.wait(30)
        time.sleep(0.5)
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
    blobs = list((tmp_path / "data").rglob("blobs/**/data"))
    assert blobs == [], "a half-received blob became visible"
    uploads = list((tmp_path / "data").rglob("_uploads/*/data"))
    assert len(uploads) == 1 and uploads[0].stat().st_size < len(piece) * pieces

    with run_secreg(tmp_path, OPEN) as server, server.client() as c:
        r = c.head(f"/v2/crash/app/blobs/{digest}")
        assert r.status_code == 404
        r = c.post("/v2/crash/app/blobs/uploads/", params={"digest": digest}, content=piece * pieces)
        assert r.status_code == 201
        got = c.get(f"/v2/crash/app/blobs/{digest}")
        assert hashlib.sha256(got.content).hexdigest() == digest.split(":")[1]


def test_client_disconnect_mid_patch_keeps_a_resumable_session(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    sent = 1024 * 1024
    with run_secreg(tmp_path, OPEN) as server, server.client() as c:
        location = c.post("/v2/resume/blobs/uploads/").headers["Location"]
        # A client that dies mid-body: announce 3 MiB, send 1 MiB, drop the connection.
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:sent])
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while True:
            status = c.get(location)
            assert status.status_code == 204
            if status.headers["Range"] == f"0-{sent - 1}" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status.headers["Range"] == f"0-{sent - 1}", "what arrived before the disconnect is kept"
        while True:  # the dropped request's bytes show before its writer lets go of the lock: 416 until then
            r = c.patch(location, content=data[sent:], headers={"Content-Range": f"{sent}-{len(data) - 1}"})
            if r.status_code != 416 or "another request" not in r.text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 202, r.text
        r = c.put(r.headers["Location"], params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()})
        assert r.status_code == 201, r.text
