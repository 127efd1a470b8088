"""Clients that go away, trickle, or hold connections open: bounded, and logged as what they are."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.server import RunningServer, run_secreg


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("slow")) as server:
        yield server


def _tls(server: RunningServer) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def _wait_for(server: RunningServer, text: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged:\n{server.log()[-3000:]}")


def test_client_leaving_mid_body_is_one_info_line(auth_server: RunningServer) -> None:
    head = (b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100000\r\n\r\ngrant_type=pass")
    for _ in range(3):
        with _tls(auth_server) as sock:
            sock.sendall(head)
            time.sleep(0.2)
    big = (b"PUT /v2/admin/x/manifests/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 50000000\r\n\r\n" + b"{" * 65536)
    with _tls(auth_server) as sock:  # refused with 401 while the body is still coming, then gone
        sock.sendall(big)
        time.sleep(0.2)
    log = _wait_for(auth_server, "client went away")
    time.sleep(0.5)
    log = auth_server.log()
    assert "Traceback" not in log and " ERROR " not in log and '"level": "error"' not in log, log[-4000:]
    assert log.count("client went away") >= 3


def test_client_leaving_after_a_413_is_not_an_error(open_server: RunningServer) -> None:
    for length in (5 * 1024 * 1024, 50 * 1024 * 1024):  # refused on the declared length; then the client leaves
        with _tls(open_server) as sock:
            sock.sendall(b"PUT /v2/big/x/manifests/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % length + b"{" * 65536)
            time.sleep(0.3)
    with _tls(open_server) as sock:  # and one that reads its 413 first
        sock.sendall(b"PUT /v2/big/x/manifests/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n" + b"{" * 65536)
        assert b" 413 " in sock.recv(65536).split(b"\r\n", 1)[0]
    time.sleep(0.5)
    log = open_server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
