"""The client behind a reverse proxy (`http.trustedproxies`): real servers, clients on distinct loopback addresses
(127.0.0.2 ... reach 127.0.0.1 on Linux), and a real haproxy with `option forwardfor` in front."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from secreg.config import ConfigError, load_settings
from secreg.forwarded import ForwardedMiddleware, TrustedProxies
from tests.api.test_slow_clients import _closed, _connect
from tests.e2e.processes import dying_with_parent
from tests.server import RunningServer, free_port, run_secreg, stop_process_group

ATTEMPTS = {"attempts": 2, "window": 60, "lockout": 120}


def _nets(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


@pytest.mark.parametrize(("headers", "client"), [
    ([b"192.0.2.1"], "192.0.2.1"),
    ([b"198.51.100.9, 192.0.2.1"], "192.0.2.1"),  # the left one is whatever the client sent: not believed
    ([b"198.51.100.9", b"192.0.2.1, 10.1.2.3"], "192.0.2.1"),  # headers joined in order; a trusted hop skipped
    ([b"10.9.9.9, 10.1.2.3"], "10.9.9.9"),  # every hop trusted: the leftmost
    ([b"not-an-address, 10.1.2.3"], "10.1.2.3"),  # unreadable: the hop that passed it on
    ([b"\xff\xfe garbage"], "10.0.0.1"),
    ([b""], "10.0.0.1"),
    ([b"[2001:db8::7]:4711"], "2001:db8::7"),
    ([b"192.0.2.5:8080"], "192.0.2.5"),
    ([b"::ffff:192.0.2.6"], "192.0.2.6"),
    ([b",".join([b"10.0.0.2"] * 100)], "10.0.0.2"),
    ([b",".join([b"10.0.0.2"] * 100) + b", 192.0.2.3"], "192.0.2.3"),  # long: computed, not remembered
])
def test_the_rightmost_untrusted_hop_is_the_client(headers: list[bytes], client: str) -> None:
    trusted = TrustedProxies(_nets("10.0.0.0/8"))
    assert trusted.client(ipaddress.ip_address("10.0.0.1"), b",".join(headers)) == client


def test_only_short_chains_are_remembered() -> None:
    trusted = TrustedProxies(_nets("10.0.0.0/8"))
    peer = ipaddress.ip_address("10.0.0.1")
    assert trusted.client(peer, b"192.0.2.1") == trusted.client(peer, b"192.0.2.1") == "192.0.2.1"
    assert trusted.client(peer, b"x" * 16000 + b", 192.0.2.2") == "192.0.2.2"
    assert trusted._cached_client.cache_info().currsize == 1


def _scope(peer: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "client": (peer, 5555), "scheme": "http", "headers": list(headers)}


def test_the_middleware_rewrites_only_requests_from_trusted_peers() -> None:
    middleware = ForwardedMiddleware(lambda s, r, w: None, _nets("10.0.0.0/8", "fd00::/8"))  # type: ignore[arg-type,return-value]
    spoofed = _scope("192.0.2.1", (b"x-forwarded-for", b"203.0.113.1"), (b"x-forwarded-proto", b"https"))
    assert middleware.rewrite(spoofed, "192.0.2.1") is spoofed
    plain = _scope("10.0.0.1", (b"host", b"r.example"))
    assert middleware.rewrite(plain, "10.0.0.1") is plain
    forwarded = middleware.rewrite(
        _scope("fd00::1", (b"x-forwarded-for", b"203.0.113.1"), (b"x-forwarded-proto", b"HTTPS")), "fd00::1")
    assert forwarded["client"] == ("203.0.113.1", 0) and forwarded["scheme"] == "https"
    for proto in (b"ftp", b"https, http"):  # not one of ours, or two values: the scheme stays
        assert middleware.rewrite(_scope("10.0.0.1", (b"x-forwarded-proto", proto)), "10.0.0.1")["scheme"] == "http"


def test_the_setting_takes_cidrs_from_the_file_and_the_environment(tmp_path: Path) -> None:
    assert load_settings(environ={}, base_dir=tmp_path).trusted_proxies == ()
    settings = load_settings(overrides={"http": {"trustedproxies": ["10.0.0.0/8", "::1"]}}, environ={},
                             base_dir=tmp_path)
    assert settings.trusted_proxies == tuple(_nets("10.0.0.0/8", "::1/128"))
    from_env = load_settings(environ={"SECREG_HTTP_TRUSTEDPROXIES": "192.168.0.0/16, 127.0.0.1"}, base_dir=tmp_path)
    assert from_env.trusted_proxies == tuple(_nets("192.168.0.0/16", "127.0.0.1/32"))
    as_list = load_settings(environ={"SECREG_HTTP_TRUSTEDPROXIES": "[10.1.0.0/16]"}, base_dir=tmp_path)
    assert as_list.trusted_proxies == tuple(_nets("10.1.0.0/16"))
    for bad, words in ((["10.0.0.0/33"], "'10.0.0.0/33' is not an IP network"),
                       (["10.0.0.1/8"], "has host bits set"), ([8], "expected a list of CIDRs"),
                       ({"a": 1}, "single value")):
        with pytest.raises(ConfigError, match=words):
            load_settings(overrides={"http": {"trustedproxies": bad}}, environ={}, base_dir=tmp_path)


def _get(server: RunningServer, source: str, path: str, headers: dict[str, str] | None = None,
         auth: tuple[str, str] | None = None, url: str | None = None) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source, verify=server.ssl_context())
    with httpx.Client(base_url=url or server.url, transport=transport, timeout=60) as c:
        return c.get(path, params={"service": "secreg"} if path == "/auth/token" else None, headers=headers,
                     auth=auth)


def _add_user(server: RunningServer, name: str) -> None:
    subprocess.run(["htpasswd", "-b", "-B", "-C", "4", str(server.workdir / "auth" / "htpasswd"), name,
                    f"{name}-password"], check=True, capture_output=True)


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


@pytest.fixture(scope="module")
def trusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server trusting 127.0.0.1 (the test client and haproxy) as a proxy; 127.0.0.2... are strangers."""
    workdir = tmp_path_factory.mktemp("trusting")
    config = {"auth": {"ratelimit": ATTEMPTS}, "http": {"trustedproxies": ["127.0.0.1/32"]},
              "log": {"audit": {"file": str(workdir / "audit.log")}}}
    with run_secreg(workdir, config) as s:
        for name in ("alice", "bob", "carol"):
            _add_user(s, name)
        yield s


def test_the_rate_limit_counts_the_forwarded_client(trusting: RunningServer) -> None:
    attacker, owner = {"X-Forwarded-For": "192.0.2.66"}, {"X-Forwarded-For": "192.0.2.7"}
    statuses = [_get(trusting, "127.0.0.1", "/auth/token", attacker, ("alice", f"guess{i}")).status_code
                for i in range(2)]
    assert statuses == [401, 401]
    assert _get(trusting, "127.0.0.1", "/auth/token", attacker, ("alice", "alice-password")).status_code == 429
    # Everyone else behind the same proxy logs in: the lockout is the attacker's address's, not the proxy's.
    assert _get(trusting, "127.0.0.1", "/auth/token", owner, ("alice", "alice-password")).status_code == 200
    audit = trusting.workdir / "audit.log"
    assert {r["client"] for r in _records(audit, "event", "login.failed") if r.get("user") == "alice"} == {
        "192.0.2.66"}
    assert {r["client"] for r in _records(audit, "event", "login.ok") if r.get("user") == "alice"} == {"192.0.2.7"}


def test_a_stranger_cannot_pick_its_address(trusting: RunningServer) -> None:
    """From a peer not in http.trustedproxies, X-Forwarded-For is ignored: a new address per guess does not
    escape the limit, and the logs name the peer."""
    stranger = "127.0.0.2"
    statuses = [_get(trusting, stranger, "/auth/token", {"X-Forwarded-For": f"198.51.100.{i}"},
                     ("bob", f"guess{i}")).status_code for i in range(3)]
    assert statuses == [401, 401, 429]
    assert {r["client"] for r in _records(trusting.workdir / "audit.log", "user", "bob")} == {stranger}
    marker = "/v2/stranger-was-here/tags/list"
    _get(trusting, stranger, marker, {"X-Forwarded-For": "198.51.100.1"})
    assert [r["client"] for r in _logged(trusting.log_path, "path", marker)] == [stranger]


def test_the_access_log_and_metrics_check_see_the_forwarded_client(trusting: RunningServer) -> None:
    marker = "/v2/forwarded-client/tags/list"
    _get(trusting, "127.0.0.1", marker, {"X-Forwarded-For": "203.0.113.50"})
    assert [r["client"] for r in _logged(trusting.log_path, "path", marker)] == ["203.0.113.50"]
    # /metrics is for loopback clients: a remote client behind a proxy on this host is not one.
    assert _get(trusting, "127.0.0.1", "/metrics", {"X-Forwarded-For": "203.0.113.50"}).status_code == 403
    assert _get(trusting, "127.0.0.1", "/metrics").status_code == 200


def test_the_token_realm_follows_the_forwarded_scheme(tmp_path: Path) -> None:
    """Behind a TLS-terminating proxy (plain HTTP to secreg), the challenge names https:// as the client sees it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    subprocess.run([sys.executable, "-m", "secreg", "certs", "generate", "--out", str(tmp_path / "certs"), "--host",
                    "localhost"], check=True, capture_output=True, env=env)  # the token key (TLS is the proxy's)
    env["SECREG_HTTP_TRUSTEDPROXIES"] = "127.0.0.1/32"
    command = [sys.executable, "-m", "secreg", "serve", "--insecure-http", "--addr", f"127.0.0.1:{port}"]
    process = subprocess.Popen(dying_with_parent(command), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    url, host = f"http://127.0.0.1:{port}", {"Host": "registry.example"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                plain = httpx.get(f"{url}/v2/", headers=host, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "secreg did not start"
                time.sleep(0.1)
        assert 'realm="http://registry.example/auth/token"' in plain.headers["WWW-Authenticate"]
        proxied = httpx.get(f"{url}/v2/", headers={**host, "X-Forwarded-Proto": "https"})
        assert 'realm="https://registry.example/auth/token"' in proxied.headers["WWW-Authenticate"]
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as stranger:
            spoofed = stranger.get(f"{url}/v2/", headers={**host, "X-Forwarded-Proto": "https"})
        assert 'realm="http://registry.example/auth/token"' in spoofed.headers["WWW-Authenticate"]
    finally:
        stop_process_group(process)


_HAPROXY = """global
    maxconn 64
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend registry
    bind 127.0.0.1:{port} ssl crt {pem}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend secreg
backend secreg
    server s1 127.0.0.1:{server} ssl verify required ca-file {ca} source 127.0.0.1
"""


@pytest.fixture(scope="module")
def haproxy(trusting: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(binary, os.X_OK):
        pytest.skip("haproxy not installed (Debian package haproxy)")
    root = tmp_path_factory.mktemp("haproxy")
    certs = trusting.workdir / "certs"
    pem = root / "frontend.pem"
    pem.write_bytes((certs / "server.crt").read_bytes() + (certs / "server.key").read_bytes())
    pem.chmod(0o600)
    port = free_port()
    (root / "haproxy.cfg").write_text(_HAPROXY.format(port=port, pem=pem, server=trusting.port,
                                                      ca=certs / "ca.crt"))
    with open(root / "haproxy.log", "wb") as log:
        process = subprocess.Popen(dying_with_parent([binary, "-db", "-f", str(root / "haproxy.cfg")]),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"https://127.0.0.1:{port}"
        for _ in range(100):
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {(root / 'haproxy.log').read_text()}")
            try:
                _get(trusting, "127.0.0.1", "/healthz", url=url)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        stop_process_group(process)


def test_behind_haproxy_each_client_is_itself(trusting: RunningServer, haproxy: str) -> None:
    """haproxy's `option forwardfor` appends the address it saw; what a client sent itself stays to its left."""
    attacker, owner = "127.0.0.8", "127.0.0.9"
    spoof = {"X-Forwarded-For": "198.51.100.77"}
    statuses = [_get(trusting, attacker, "/auth/token", spoof, ("carol", f"guess{i}"), url=haproxy).status_code
                for i in range(2)]
    assert statuses == [401, 401]
    assert _get(trusting, attacker, "/auth/token", spoof, ("carol", "carol-password"), url=haproxy).status_code == 429
    assert _get(trusting, owner, "/auth/token", None, ("carol", "carol-password"), url=haproxy).status_code == 200
    audit = trusting.workdir / "audit.log"
    assert {r["client"] for r in _records(audit, "event", "login.failed") if r.get("user") == "carol"} == {attacker}
    marker = "/v2/through-haproxy/tags/list"
    _get(trusting, owner, marker, spoof, url=haproxy)
    assert [r["client"] for r in _logged(trusting.log_path, "path", marker)] == [owner]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_trusted_proxy_is_not_held_to_the_per_client_cap(tmp_path: Path, workers: int) -> None:
    """Every client's connections arrive from the proxy: http.limits.perclient is for the clients it does not
    know apart; http.limits.connections still holds."""
    config = {"auth": {"enabled": False}, "http": {"workers": workers, "trustedproxies": ["127.0.5.1"],
                                                  "limits": {"connections": 40, "perclient": 3}}}
    with run_secreg(tmp_path, config) as server:
        proxy = [_connect(server, "127.0.5.1") for _ in range(8)]
        stranger = [_connect(server, "127.0.5.2") for _ in range(8)]
        assert len(_closed(stranger[:5], within=30)) == 5  # the oldest idle ones shed for the newest
        assert not _closed(proxy + stranger[5:], within=0.5)
        proxy[0].sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in proxy[0].recv(4096)
        for sock in proxy + stranger:
            sock.close()
