"""The TLS a real `secreg serve` offers, as `openssl s_client` (what a scanner or an auditor runs) sees it: TLS 1.0
and 1.1 refused, 1.2 and 1.3 served, TLS 1.2 only with ECDHE and an AEAD cipher, no client-initiated
renegotiation. The client is let offer everything (`@SECLEVEL=0`), so each refusal is the server's."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.server import RunningServer, run_secreg

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
REQUEST = b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("tls"), {"auth": {"enabled": False}, "http": {"workers": 1}}) as running:
        yield running


def s_client(server: RunningServer, *options: str, stdin: bytes = REQUEST) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost",
                           "-CAfile", str(server.ca), "-verify_return_error", "-alpn", "http/1.1", *options],
                          input=stdin, capture_output=True, timeout=60)


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused(server: RunningServer, version: str) -> None:
    result = s_client(server, version, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.returncode != 0
    assert b"alert protocol version" in result.stderr, result.stderr[-600:]
    assert b"HTTP/1.1" not in result.stdout


@pytest.mark.parametrize(("version", "name"), [("-tls1_2", b"TLSv1.2"), ("-tls1_3", b"TLSv1.3")])
def test_tls_1_2_and_1_3_serve(server: RunningServer, version: str, name: bytes) -> None:
    result = s_client(server, version, "-ign_eof")  # read the answer to the end
    assert result.returncode == 0, result.stderr[-600:]
    assert b"Verify return code: 0 (ok)" in result.stdout
    assert f"New, {name.decode()}, Cipher is ".encode() in result.stdout
    assert b"HTTP/1.1 200" in result.stdout


def test_tls_1_2_offers_only_ecdhe_with_an_aead_cipher(server: RunningServer) -> None:
    chosen = s_client(server, "-tls1_2", "-cipher", "ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    assert b"Cipher is ECDHE-ECDSA-AES256-GCM-SHA384" in chosen.stdout, chosen.stdout[-600:]
    # Everything weaker a client may still offer: CBC (with SHA-1 or SHA-2 MACs), static RSA, no forward
    # secrecy, anonymous and null ciphers, RC4, 3DES.
    weak = s_client(server, "-tls1_2", "-cipher", "ALL:COMPLEMENTOFALL:!AESGCM:!CHACHA20:@SECLEVEL=0")
    assert weak.returncode != 0 and b"handshake failure" in weak.stderr, weak.stderr[-600:]
    for cipher in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256",
                   "DHE-RSA-AES128-GCM-SHA256"):
        refused = s_client(server, "-tls1_2", "-cipher", f"{cipher}:@SECLEVEL=0")
        assert refused.returncode != 0, cipher


def test_client_initiated_renegotiation_is_refused(server: RunningServer) -> None:
    """TLS 1.2 renegotiation on the client's demand costs the server a handshake each time (a DoS lever
    scanners flag): `R` asks s_client to renegotiate, and the server says no."""
    result = s_client(server, "-tls1_2", stdin=b"R\n")
    assert b"RENEGOTIATING" in result.stderr + result.stdout
    assert b"no renegotiation" in result.stderr, result.stderr[-600:]



def test_plain_http_on_the_tls_port_gets_no_http_answer(server: RunningServer) -> None:
    """A plain-HTTP request to the TLS port is a failed handshake: at most a TLS alert, never an HTTP answer (no
    redirect either: a registry client must be configured for HTTPS, not steered to it)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as plain:
        plain.sendall(b"GET /v2/_catalog HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = b""
        try:
            while chunk := plain.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/" not in received and b"repositories" not in received
    assert received == b"" or received[0] == 0x15  # nothing, or a TLS alert record
