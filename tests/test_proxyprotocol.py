"""The PROXY protocol (`http.proxyprotocol`): the parser, then real servers over real TLS with headers written by
hand from a listed peer (127.0.0.3) and by a real haproxy in TCP mode (`send-proxy`, `send-proxy-v2`), clients on
distinct loopback addresses (127.0.0.x reach 127.0.0.1 on Linux)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from secreg import proxyprotocol
from secreg.config import ConfigError, load_settings
from secreg.proxyprotocol import V2_SIGNATURE, Header, HeaderError, header_bytes, parse
from tests.api.test_slow_clients import _closed
from tests.e2e.processes import dying_with_parent
from tests.server import RunningServer, free_port, run_secreg, stop_process_group

BALANCER = "127.0.0.3"  # the one peer listed in http.proxyprotocol
ATTEMPTS = {"attempts": 2, "window": 60, "lockout": 120}


def v1(source: str, port: int = 40000, family: str = "TCP4", destination: str = "") -> bytes:
    destination = destination or ("10.0.0.1" if family == "TCP4" else "2001:db8::1")
    return f"PROXY {family} {source} {destination} {port} 443\r\n".encode()


def v2(source: str | None, port: int = 40000, command: int = 1, tlvs: bytes = b"", family: int | None = None,
       block: bytes | None = None) -> bytes:
    if block is None:
        assert source is not None
        address = ipaddress.ip_address(source)
        family = 0x11 if address.version == 4 else 0x21
        destination = ipaddress.ip_address("10.0.0.1" if address.version == 4 else "2001:db8::1")
        block = address.packed + destination.packed + port.to_bytes(2, "big") + (443).to_bytes(2, "big")
    body = block + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family or 0]) + len(body).to_bytes(2, "big") + body


# --- the parser ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "header"), [
    (v1("192.0.2.1", 1234), Header(1, ("192.0.2.1", 1234))),
    (v1("2001:db8::5", 65535, "TCP6"), Header(1, ("2001:db8::5", 65535))),
    (v1("::ffff:192.0.2.9", 0, "TCP6"), Header(1, ("192.0.2.9", 0))),  # IPv4-mapped: the IPv4 client
    (b"PROXY UNKNOWN\r\n", Header(1, None)),
    (b"PROXY UNKNOWN ffff:f::1 whatever goes 1 2\r\n", Header(1, None)),  # the rest is to be ignored
    (b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n", Header(1, None)),  # 107 bytes: the longest line
    (v2("198.51.100.7", 999), Header(2, ("198.51.100.7", 999))),
    (v2("2001:db8::7", 1), Header(2, ("2001:db8::7", 1))),
    (v2("::ffff:198.51.100.8", 2), Header(2, ("198.51.100.8", 2))),
    (v2("198.51.100.7", 5, tlvs=b"\x04\x00\x03abc" + b"\xea\x00\x00"), Header(2, ("198.51.100.7", 5))),  # TLVs
    (v2(None, command=0, block=b""), Header(2, None)),  # LOCAL: a health check, the real peer
    (v2(None, command=0, family=0x11, block=bytes(12)), Header(2, None)),  # LOCAL ignores its address block
    (v2(None, family=0x00, block=b""), Header(2, None)),  # UNSPEC
    (v2(None, family=0x31, block=bytes(216)), Header(2, None)),  # a UNIX stream: no address of ours
])
def test_headers_the_spec_allows(data: bytes, header: Header) -> None:
    assert parse(data) == header
    assert header_bytes(b"", data + b"\x16\x03\x01 the ClientHello") == len(data)  # not one byte more


@pytest.mark.parametrize("data", [
    b"PROXY TCP4 192.0.2.1 10.0.0.1 01234 443\r\n",  # leading zero (octal?)
    b"PROXY TCP4 192.0.2.01 10.0.0.1 1234 443\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 65536 443\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 -1 443\r\n",
    b"PROXY TCP4 2001:db8::1 10.0.0.1 1 443\r\n",  # the family says IPv4
    b"PROXY TCP6 192.0.2.1 2001:db8::1 1 443\r\n",
    b"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 443\r\n",
    b"PROXY TCP4  192.0.2.1 10.0.0.1 1 443\r\n",  # two spaces
    b"PROXY TCP4 192.0.2.1 10.0.0.1 1 443 7\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 1\r\n",
    b"PROXY UDP4 192.0.2.1 10.0.0.1 1 443\r\n",
    b"PROXY tcp4 192.0.2.1 10.0.0.1 1 443\r\n",
    b"PROXY TCP4 192.0.2.\xff 10.0.0.1 1 443\r\n",
    v2("192.0.2.1")[:12] + b"\x21\x11\x00\x0b" + bytes(11),  # shorter than TCP4's addresses
    v2("192.0.2.1")[:12] + b"\x22" + v2("192.0.2.1")[13:],  # command 2
    v2("192.0.2.1")[:12] + b"\x21\x41" + v2("192.0.2.1")[14:],  # family 4
    v2("192.0.2.1")[:12] + b"\x21\x13" + v2("192.0.2.1")[14:],  # protocol 3
    v2("192.0.2.1", tlvs=b"\x04\x00\x09abc"),  # a TLV longer than what is left
    v2("192.0.2.1", tlvs=b"\x04\x00"),
])
def test_headers_the_spec_refuses(data: bytes) -> None:
    with pytest.raises(HeaderError):
        header_bytes(b"", data)
        parse(data)


@pytest.mark.parametrize("data", [
    b"\x16\x03\x01\x02\x00",  # a ClientHello: the balancer's send-proxy is off
    b"GET / HTTP/1.1\r\n",
    b"PROXY\r\n",
    b"PROXZ TCP4",
    b"\r\n\r\n\x00\r\nQUIX",
    V2_SIGNATURE + b"\x10",  # version 1 in a v2 header
    V2_SIGNATURE + b"\x21\x11" + (proxyprotocol.V2_MAX - 15).to_bytes(2, "big"),  # longer than V2_MAX
    b"PROXY TCP4 " + b"1" * 200,  # no CRLF within 107 bytes
    b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n",  # 108 bytes with the CRLF
])
def test_garbage_is_refused_from_what_is_there_without_waiting_for_more(data: bytes) -> None:
    with pytest.raises(HeaderError):
        header_bytes(b"", data)


def test_a_header_arriving_in_pieces_is_consumed_as_it_comes() -> None:
    for data in (v1("2001:db8::5", 7, "TCP6"), v2("192.0.2.1", tlvs=b"\x05\x00\x10" + bytes(16))):
        have = b""
        stream = data + b"\x16\x03\x01"
        while not proxyprotocol.complete(have):
            waiting = stream[len(have):len(have) + 1]  # one byte at a time, the worst a sender can do
            take = header_bytes(have, waiting)
            have += waiting[:take]
        assert have == data and parse(have) == parse(data)
    # A CRLF split between two reads is still the end of the line.
    line = v1("192.0.2.1")
    assert header_bytes(line[:-1], b"\n\x16") == 1


def test_the_setting_takes_cidrs_and_refuses_uvloop(tmp_path: Path) -> None:
    assert load_settings(environ={}, base_dir=tmp_path).proxy_protocol == ()
    settings = load_settings(overrides={"http": {"proxyprotocol": ["10.0.0.0/8", "::1"]}}, environ={},
                             base_dir=tmp_path)
    assert settings.proxy_protocol == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert settings.trusted_proxies == ()  # a separate list: a balancer is not an HTTP proxy
    from_env = load_settings(environ={"SECREG_HTTP_PROXYPROTOCOL": "192.168.0.0/16, 127.0.0.3"}, base_dir=tmp_path)
    assert from_env.proxy_protocol == (ipaddress.ip_network("192.168.0.0/16"), ipaddress.ip_network("127.0.0.3/32"))
    for bad, words in ((["10.0.0.0/33"], "http.proxyprotocol: '10.0.0.0/33' is not an IP network"),
                       (["10.0.0.1/8"], "has host bits set"), ([8], "http.proxyprotocol: expected a list")):
        with pytest.raises(ConfigError, match=words):
            load_settings(overrides={"http": {"proxyprotocol": bad}}, environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="uvloop cannot read PROXY headers"):
        load_settings(overrides={"http": {"proxyprotocol": ["10.0.0.0/8"], "eventloop": "uvloop"}}, environ={},
                      base_dir=tmp_path)
    auto = load_settings(overrides={"http": {"proxyprotocol": ["10.0.0.0/8"], "eventloop": "auto"}}, environ={},
                         base_dir=tmp_path)
    assert auto.event_loop == "asyncio"


def test_this_python_accepts_as_the_patch_expects() -> None:
    assert proxyprotocol.supported()


# --- real servers -------------------------------------------------------------------------------------------------

def _connect(server: RunningServer, header: bytes, source: str = BALANCER) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30, source_address=(source, 0))
    raw.sendall(header)
    return raw


def _request(server: RunningServer, header: bytes, path: str, source: str = BALANCER,
             auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None) -> int:
    """The status of one HTTPS request on a connection that begins with `header`."""
    fields = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
    if auth:
        fields["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    with server.ssl_context().wrap_socket(_connect(server, header, source), server_hostname="127.0.0.1") as tls:
        tls.sendall(request.encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _token(server: RunningServer, header: bytes, user: str, password: str) -> int:
    return _request(server, header, "/auth/token?service=secreg", auth=(user, password))


def _records(path: Path, key: str, value: str) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get(key) == value:
                found.append(record)
    return found


def _logged(path: Path, key: str, value: str) -> list[dict[str, Any]]:
    for _ in range(50):  # the access line is written after the answer is sent
        if found := _records(path, key, value):
            return found
        time.sleep(0.1)
    return []


def _add_user(server: RunningServer, name: str) -> None:
    subprocess.run(["htpasswd", "-b", "-B", "-C", "4", str(server.workdir / "auth" / "htpasswd"), name,
                    f"{name}-password"], check=True, capture_output=True)


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server reading PROXY headers from 127.0.0.3 (two workers: `auto` on this machine); 192.0.2.200, when a
    header names it, is an HTTP proxy whose X-Forwarded-For is believed."""
    workdir = tmp_path_factory.mktemp("balanced")
    config = {"auth": {"ratelimit": ATTEMPTS},
              "http": {"proxyprotocol": [f"{BALANCER}/32"], "trustedproxies": ["192.0.2.200/32"],
                       "timeouts": {"header": 3}},
              "log": {"audit": {"file": str(workdir / "audit.log")}}}
    with run_secreg(workdir, config) as s:
        for name in ("alice", "bob", "carol", "dave"):
            _add_user(s, name)
        yield s


@pytest.mark.parametrize(("header", "client"), [
    (v1("192.0.2.10"), "192.0.2.10"),
    (v1("2001:db8::10", family="TCP6"), "2001:db8::10"),
    (v2("198.51.100.10", tlvs=b"\x04\x00\x02ab"), "198.51.100.10"),
    (v2("2001:db8::11"), "2001:db8::11"),
    (v2("::ffff:198.51.100.11"), "198.51.100.11"),
    (v2(None, command=0, block=b""), BALANCER),  # LOCAL: the balancer's health check is the balancer's
    (b"PROXY UNKNOWN\r\n", BALANCER),
    (v2(None, family=0x00, block=b""), BALANCER),
])
def test_the_client_a_header_names_is_the_one_logged(balanced: RunningServer, header: bytes, client: str) -> None:
    marker = f"/v2/named-{hashlib.sha256(header).hexdigest()[:12]}/tags/list"
    assert _request(balanced, header, marker) == 401
    assert [r["client"] for r in _logged(balanced.log_path, "path", marker)] == [client]


@pytest.mark.parametrize("header", [
    b"",  # TLS straight away: the balancer's send-proxy is off
    b"GARBAGE\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 01 443\r\n",
    b"PROXY TCP4 " + b"9" * 150,
    V2_SIGNATURE + b"\x21\x11\xff\xff",  # 64 KiB announced: refused at 16 bytes, nothing more read
    V2_SIGNATURE + b"\x23\x11\x00\x0c" + bytes(12),
])
def test_a_listed_peer_without_a_valid_header_is_closed_at_once(balanced: RunningServer, header: bytes) -> None:
    """Closed without a handshake and without waiting for more (the header timeout is 3 s; closed here before
    anything else is sent)."""
    with _connect(balanced, header) as raw:
        if not header:
            raw.sendall(b"\x16\x03\x01\x00\x05hello")
        raw.settimeout(2.5)
        try:
            assert raw.recv(1) == b""
        except ConnectionResetError:
            pass  # closed with unread bytes: a reset


@pytest.mark.parametrize("part", [b"PROXY TCP4 ", V2_SIGNATURE[:7], b""])
def test_a_slow_or_missing_header_is_closed_after_the_header_timeout(balanced: RunningServer, part: bytes) -> None:
    with _connect(balanced, part) as raw:
        started = time.monotonic()
        raw.settimeout(30)
        try:
            assert raw.recv(1) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - started >= 2  # http.timeouts.header is 3 s: not at once


def test_a_trickled_header_is_held_to_one_deadline(balanced: RunningServer) -> None:
    """Two bytes a second of a valid header: each arrives in time for the next read, the whole does not."""
    line = v1("192.0.2.99")
    with _connect(balanced, b"") as raw:
        for index, byte in enumerate(line):
            try:
                raw.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.5)
            if index == 10:
                raw.settimeout(10)
                try:
                    assert raw.recv(1) == b""
                except ConnectionResetError:
                    pass
                break
        else:
            pytest.fail("the whole header was taken")
    assert not _records(balanced.log_path, "client", "192.0.2.99")


@pytest.mark.parametrize("header", [v1("192.0.2.77"), v2("192.0.2.77")])
def test_a_header_from_a_peer_not_listed_is_an_error_not_an_address(balanced: RunningServer, header: bytes) -> None:
    """127.0.0.1 is not listed: its header is the start of its TLS, which it is not."""
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _request(balanced, header, "/v2/spoofed/tags/list", source="127.0.0.1")
    with balanced.client() as client:  # its own TLS works as ever, under its own address
        assert client.get("/v2/direct/tags/list").status_code == 401
    assert [r["client"] for r in _logged(balanced.log_path, "path", "/v2/direct/tags/list")][-1] == "127.0.0.1"
    assert not _records(balanced.log_path, "client", "192.0.2.77")


def test_the_rate_limit_counts_the_named_client(balanced: RunningServer) -> None:
    attacker, owner = v1("192.0.2.66"), v2("192.0.2.7")
    assert [_token(balanced, attacker, "alice", f"guess{i}") for i in range(2)] == [401, 401]
    assert _token(balanced, attacker, "alice", "alice-password") == 429
    assert _token(balanced, owner, "alice", "alice-password") == 200  # the balancer's other clients log in
    audit = balanced.workdir / "audit.log"
    assert {r["client"] for r in _records(audit, "event", "login.failed") if r.get("user") == "alice"} == {
        "192.0.2.66"}
    assert {r["client"] for r in _records(audit, "event", "login.ok") if r.get("user") == "alice"} == {"192.0.2.7"}


def test_metrics_is_for_clients_on_this_host_not_for_the_balancer(balanced: RunningServer) -> None:
    assert _request(balanced, v1("192.0.2.1"), "/metrics") == 403
    assert _request(balanced, v1("127.0.0.1"), "/metrics") == 200
    assert _request(balanced, v2(None, command=0, block=b""), "/metrics") == 200  # the balancer's own


def test_forwarded_for_is_read_from_the_named_client_when_it_is_a_trusted_proxy(balanced: RunningServer) -> None:
    xff = {"X-Forwarded-For": "203.0.113.9"}
    _request(balanced, v2("192.0.2.200"), "/v2/xff-trusted/tags/list", headers=xff)
    _request(balanced, v2("192.0.2.201"), "/v2/xff-stranger/tags/list", headers=xff)
    _request(balanced, v2(None, command=0, block=b""), "/v2/xff-local/tags/list", headers=xff)
    assert [r["client"] for r in _logged(balanced.log_path, "path", "/v2/xff-trusted/tags/list")] == ["203.0.113.9"]
    assert [r["client"] for r in _logged(balanced.log_path, "path", "/v2/xff-stranger/tags/list")] == ["192.0.2.201"]
    assert [r["client"] for r in _logged(balanced.log_path, "path", "/v2/xff-local/tags/list")] == [BALANCER]


@pytest.mark.parametrize("transport", ["socket", "asyncio"])
def test_the_per_client_cap_counts_named_clients(tmp_path: Path, transport: str) -> None:
    """http.limits.perclient 3: 8 idle connections naming one client shed 5; 8 naming 8 clients all stay (with
    either TLS transport)."""
    http = {"proxyprotocol": [BALANCER], "limits": {"connections": 40, "perclient": 3}, "tlstransport": transport}
    with run_secreg(tmp_path, {"auth": {"enabled": False}, "http": http}) as server:
        context = server.ssl_context()

        def idle(header: bytes) -> ssl.SSLSocket:
            tls = context.wrap_socket(_connect(server, header), server_hostname="127.0.0.1")
            tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 200 " in tls.recv(4096)
            return tls

        one = [idle(v2("192.0.2.50")) for _ in range(8)]
        many = [idle(v1(f"192.0.2.{60 + i}")) for i in range(8)]
        assert len(_closed(one, within=10)) == 5  # shed as the later ones were admitted (they were answered)
        assert not _closed(many + one[5:], within=0.5)
        for sock in one + many:
            sock.close()


def test_plain_http_reads_the_header_too(tmp_path: Path) -> None:
    """--insecure-http behind a TLS-terminating balancer (haproxy mode tcp with ssl on its bind, send-proxy)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    subprocess.run([sys.executable, "-m", "secreg", "certs", "generate", "--out", str(tmp_path / "certs"),
                    "--host", "localhost"], check=True, capture_output=True, env=env)
    port = free_port()
    env["SECREG_HTTP_PROXYPROTOCOL"] = BALANCER
    command = [sys.executable, "-m", "secreg", "serve", "--insecure-http", "--no-auth", "--addr",
               f"127.0.0.1:{port}"]
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen(dying_with_parent(command), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "secreg did not start"
                time.sleep(0.1)

        def get(header: bytes, path: str, source: str = BALANCER) -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
            with raw:
                raw.sendall(header + f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                try:
                    while chunk := raw.recv(65536):
                        answer += chunk
                except ConnectionResetError:  # closed with the request unread
                    pass
            return answer

        assert b" 404 " in get(v1("192.0.2.30"), "/v2/plain-v1/tags/list")
        assert b" 404 " in get(v2("2001:db8::30"), "/v2/plain-v2/tags/list")
        assert b" 400 " in get(v1("192.0.2.31"), "/v2/plain-spoof/tags/list", source="127.0.0.1")  # not listed
        assert get(b"GET", "/v2/plain-none/tags/list") == b""  # listed, no header: closed
        log_path = tmp_path / "server.log"
        assert [r["client"] for r in _logged(log_path, "path", "/v2/plain-v1/tags/list")] == ["192.0.2.30"]
        assert [r["client"] for r in _logged(log_path, "path", "/v2/plain-v2/tags/list")] == ["2001:db8::30"]
        assert not _records(log_path, "client", "192.0.2.31")
    finally:
        stop_process_group(process)


# --- a real haproxy in TCP mode -----------------------------------------------------------------------------------

_HAPROXY = """global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend text
    bind 127.0.0.1:{text}
    default_backend text
frontend binary
    bind 127.0.0.1:{binary}
    default_backend binary
backend text
    option httpchk GET /healthz
    server s1 127.0.0.1:{server} send-proxy source {source} check check-ssl verify none inter 1s
backend binary
    option httpchk GET /healthz
    server s1 127.0.0.1:{server} send-proxy-v2 source {source} check check-ssl verify none inter 1s
"""


@pytest.fixture(scope="module")
def haproxy(balanced: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """haproxy passing TLS through (the server's own certificate reaches the client), `send-proxy` on one port,
    `send-proxy-v2` on the other, connecting from the listed 127.0.0.3, health checks included."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(binary, os.X_OK):
        pytest.skip("haproxy not installed (Debian package haproxy)")
    root = tmp_path_factory.mktemp("haproxy")
    ports = {"text": free_port(), "binary": free_port()}
    (root / "haproxy.cfg").write_text(_HAPROXY.format(server=balanced.port, source=BALANCER, **ports))
    with open(root / "haproxy.log", "wb") as log:
        process = subprocess.Popen(dying_with_parent([binary, "-db", "-f", str(root / "haproxy.cfg")]),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        urls = {name: f"https://127.0.0.1:{port}" for name, port in ports.items()}
        for url in urls.values():
            for _ in range(100):
                if process.poll() is not None:
                    raise RuntimeError(f"haproxy exited: {(root / 'haproxy.log').read_text()}")
                try:
                    with httpx.Client(verify=balanced.ssl_context(), timeout=10) as c:
                        c.get(f"{url}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
        yield {**urls, "log": root / "haproxy.log"}
    finally:
        stop_process_group(process)


def _through(server: RunningServer, url: str, source: str, path: str,
             auth: tuple[str, str] | None = None) -> int:
    transport = httpx.HTTPTransport(local_address=source, verify=server.ssl_context())
    with httpx.Client(base_url=url, transport=transport, timeout=60) as c:
        params = {"service": "secreg"} if path == "/auth/token" else None
        return c.get(path, params=params, auth=auth).status_code


@pytest.mark.parametrize(("version", "user", "attacker", "owner"), [
    ("text", "bob", "127.0.0.8", "127.0.0.9"), ("binary", "carol", "127.0.0.10", "127.0.0.11")])
def test_behind_haproxy_in_tcp_mode_each_client_is_itself(balanced: RunningServer, haproxy: dict[str, Any],
                                                          version: str, user: str, attacker: str,
                                                          owner: str) -> None:
    url = haproxy[version]
    assert [_through(balanced, url, attacker, "/auth/token", (user, f"guess{i}")) for i in range(2)] == [401, 401]
    assert _through(balanced, url, attacker, "/auth/token", (user, f"{user}-password")) == 429
    assert _through(balanced, url, owner, "/auth/token", (user, f"{user}-password")) == 200
    audit = balanced.workdir / "audit.log"
    assert {r["client"] for r in _records(audit, "event", "login.failed") if r.get("user") == user} == {attacker}
    assert {r["client"] for r in _records(audit, "event", "login.ok") if r.get("user") == user} == {owner}
    marker = f"/v2/through-haproxy-{version}/tags/list"
    _through(balanced, url, owner, marker)
    assert [r["client"] for r in _logged(balanced.log_path, "path", marker)] == [owner]
    # haproxy's health checks (a header of their own: v2 LOCAL, v1 with the check's addresses) are haproxy's.
    assert _logged(balanced.log_path, "client", BALANCER)
    assert " is DOWN" not in haproxy["log"].read_text()
