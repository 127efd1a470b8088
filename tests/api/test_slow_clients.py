"""Clients that go away, trickle, or hold connections open: bounded, and logged as what they are."""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import RunningServer, need_event_loop, run_secreg


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("slow")) as server:
        yield server


def _tls(server: RunningServer) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def _wait_for(server: RunningServer, text: str, times: int = 1, timeout: float = 60) -> str:
    """The log once `text` is in it `times` times (the server logs what it notices, when it notices it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if log.count(text) >= times:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged {times} time(s):\n{server.log()[-3000:]}")


def test_client_leaving_mid_body_is_one_info_line(auth_server: RunningServer) -> None:
    head = (b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000\r\n\r\ngrant_type=pass")
    for _ in range(3):
        with _tls(auth_server) as sock:
            sock.sendall(head)
            time.sleep(0.2)
    big = (b"PUT /v2/admin/x/manifests/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 50000000\r\n\r\n" + b"{" * 65536)
    with _tls(auth_server) as sock:  # refused with 401 while the body is still coming, then gone
        sock.sendall(big)
        time.sleep(0.2)
    log = _wait_for(auth_server, "client went away", times=3)
    assert "Traceback" not in log and " ERROR " not in log and '"level": "error"' not in log, log[-4000:]


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


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _connect(server: RunningServer, source: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30, source_address=(source, 0))
    return server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def _closed_by_server(sock: ssl.SSLSocket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ssl.SSLError, ConnectionError):
        return True


def _read_to_close(sock: ssl.SSLSocket, within: float) -> bytes:
    """Everything the server sends until it closes the connection (fails if it does not within `within` s)."""
    sock.settimeout(within)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_two_thousand_idle_tls_connections(tmp_path: Path) -> None:
    """RSS before, during and after 2,000 idle TLS connections (from 10 loopback addresses, under the caps), and a
    normal client served all along. Was ~290 KiB per connection (asyncio's TLS read buffer), ~600 MiB held."""
    config = {"auth": {"enabled": False}, "http": {"limits": {"connections": 4000, "perclient": 256}}}
    with run_secreg(tmp_path, config) as server:
        pid = server.process.pid
        before = _rss_mib(pid)
        idle = [_connect(server, f"127.0.3.{1 + i // 200}") for i in range(2000)]
        during = _rss_mib(pid)
        with server.client() as c:
            served = sum(c.get("/v2/").status_code == 200 for _ in range(27))
        for sock in idle:
            sock.close()
        time.sleep(2)
        after = _rss_mib(pid)
    per_connection = (during - before) * 1024 / 2000
    print(f"\nRSS {before:.0f} MiB before, {during:.0f} MiB with 2,000 idle TLS connections "
          f"({per_connection:.0f} KiB each), {after:.0f} MiB after; normal client served {served}/27")
    assert served == 27
    assert per_connection < 80, per_connection


def _closed(socks: list[ssl.SSLSocket], within: float) -> list[ssl.SSLSocket]:
    """The sockets of `socks` the server has closed, waiting up to `within` s for all of them (an idle connection
    receives only TLS session tickets, which the TLS layer reads itself)."""
    deadline = time.monotonic() + within
    pending, closed = list(socks), []
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(pending, [], [], min(0.5, max(0.0, deadline - time.monotonic())))
        for sock in readable:
            sock.settimeout(0)
            try:
                if sock.recv(1) != b"":
                    continue
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (ssl.SSLError, ConnectionError):
                pass
            finally:
                sock.settimeout(30)
            pending.remove(sock)
            closed.append(sock)
    return closed


@pytest.mark.parametrize(("workers", "loop"), [(1, "asyncio"), (2, "asyncio")])
def test_one_client_cannot_take_every_connection(tmp_path: Path, workers: int, loop: str) -> None:
    """The caps are the server's, whichever worker accepted a connection: the oldest idle ones of all go first."""
    need_event_loop(loop)
    config = {"auth": {"enabled": False},
              "http": {"workers": workers, "eventloop": loop, "limits": {"connections": 120, "perclient": 40}}}
    with run_secreg(tmp_path, config) as server:
        hog = [_connect(server, "127.0.4.1") for _ in range(100)]  # idle: the oldest are shed for the newest
        assert len(_closed(hog[:60], within=30)) == 60
        assert not _closed(hog[60:], within=0.5)
        with server.client() as c:  # everyone else is served, and the hog's newest connection too
            assert all(c.get("/v2/").status_code == 200 for _ in range(10))
        hog[-1].sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in hog[-1].recv(4096)
        others = [_connect(server, f"127.0.4.{2 + i // 30}") for i in range(90)]  # past the total: shed idle
        assert len(_closed(hog[60:70], within=30)) == 10  # the oldest idle ones of anyone: the hog's
        assert not _closed(hog[70:] + others, within=0.5)  # and only those (a closed connection counted on
        # until Hypercorn's idle task ended, 75 s after it opened, shed 70 here)
        with server.client() as c:
            assert c.get("/v2/").status_code == 200
        for sock in hog + others:
            sock.close()
        log = server.log()
    assert "closing an idle connection from 127.0.4.1 to admit a new one" in log


def test_header_and_body_tricklers_are_cut(tmp_path: Path) -> None:
    config = {"http": {"timeouts": {"header": 2, "body": 2}}, "auth": {"token": {"maxbody": 4096}}}
    with run_secreg(tmp_path, config) as server:
        trickler = _tls(server)
        closed = False
        for byte in b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:  # a byte every 0.5 s
            try:
                trickler.sendall(bytes([byte]))
            except (ssl.SSLError, ConnectionError):
                closed = True
                break
            if _closed_by_server(trickler, 0.5):
                closed = True
                break
        assert closed
        with _tls(server) as big:  # more than the token endpoint takes: refused at once, not waited for
            big.sendall(b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                        b"urlencoded\r\nContent-Length: 100000\r\n\r\ngrant_type=pass")
            big.settimeout(30)
            assert big.recv(65536).startswith(b"HTTP/1.1 413 ")
        with _tls(server) as over:  # past auth.token.maxbody (4096 here)
            over.sendall(b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                         b"urlencoded\r\nContent-Length: 5000\r\n\r\ngrant_type=pass")
            assert _read_to_close(over, 30).startswith(b"HTTP/1.1 413 ")
        with _tls(server) as slow_body:  # unauthenticated, 3,000 bytes announced, 15 sent
            slow_body.sendall(b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                              b"urlencoded\r\nContent-Length: 3000\r\n\r\ngrant_type=pass")
            answer = _read_to_close(slow_body, 30)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
            assert b"no request body data for 2 s" in answer
        with server.client() as c:  # an idle keep-alive connection is not cut by the header timeout
            assert c.get("/v2/").status_code == 401
            time.sleep(3)
            assert c.get("/v2/").status_code == 401
            assert c.get("/healthz").status_code == 200
        log = server.log()
    assert "request headers incomplete after 2 s" in log and "no body data for 2 s" in log
    assert "Traceback" not in log


def test_descriptor_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with run_secreg(tmp_path, {"auth": {"enabled": False}}, wrapper=["prlimit", f"--nofile=1024:{hard}"]) as server:
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], line


def _get_v2(sock: ssl.SSLSocket) -> bytes:
    sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, "closed before the answer"
        head += chunk
    return head.split(b"\r\n", 1)[0]


def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    """Between requests a connection is closed after http.timeouts.idle (secreg's timer, not Hypercorn's task per
    idle spell); while in use it keeps being served."""
    config = {"auth": {"enabled": False}, "http": {"timeouts": {"idle": 2}}}
    with run_secreg(tmp_path, config) as server, _tls(server) as sock:
        for _ in range(3):
            assert b" 200 " in _get_v2(sock)  # keep-alive: each request restarts the idle clock
        assert _closed_by_server(sock, within=60)
        with _tls(server) as other:  # and the server goes on serving
            assert b" 200 " in _get_v2(other)
        assert "Traceback" not in server.log(), server.log()[-3000:]


def test_a_connection_in_use_outlives_the_idle_timeout(tmp_path: Path) -> None:
    """The idle timeout counts from the end of the last request, not from when the connection opened: a body sent
    over longer than it, then requests a second apart for longer again, all on one connection. (Hypercorn's own
    idle task, started with each connection, went on running and cut it `http.timeouts.idle` after it opened:
    bench.s3_rss's parallel pushes saw "Server disconnected without sending a response".)"""
    import hashlib

    body = b"x" * 40_000
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    config = {"auth": {"enabled": False}, "http": {"timeouts": {"idle": 2}}}
    with run_secreg(tmp_path, config) as server, _tls(server) as sock:
        sock.sendall(b"POST /v2/t/a/blobs/uploads/?digest=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % (digest.encode(), len(body)))
        for offset in range(0, len(body), 5_000):  # 8 pieces 0.5 s apart: 4 s, twice the idle timeout
            time.sleep(0.5)
            sock.sendall(body[offset:offset + 5_000])
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, "closed before the answer"
            head += chunk
        assert head.startswith(b"HTTP/1.1 201 "), head
        for _ in range(4):  # 4 s more, each pause shorter than the idle timeout
            time.sleep(1)
            assert b" 200 " in _get_v2(sock)
        assert _closed_by_server(sock, within=60)  # and once idle, it is closed after all
        assert "Traceback" not in server.log(), server.log()[-3000:]
