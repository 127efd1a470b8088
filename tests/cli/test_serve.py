"""`secreg serve` as users run it: TLS by default, dev certificates once, config sources, workers."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import dying_with_parent
from tests.oci import sha256
from tests.server import free_port, run_secreg

OPEN = {"auth": {"enabled": False}}


def secreg_command(*args: str) -> list[str]:
    """`python -m secreg ARGS`, dying with the test process (tests/e2e/processes.dying_with_parent): a
    SIGKILLed pytest otherwise left a server it started here running (run_secreg's servers die with it too)."""
    return dying_with_parent([sys.executable, "-m", "secreg", *args])


def _handshake(port: int, ca: Path, *, max_version: ssl.TLSVersion | None = None,
               alpn: list[str] | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    if max_version is not None:
        # Let the client offer old versions, so a refusal comes from the server, not from our own OpenSSL.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = max_version
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def test_dev_certificates_generated_once_and_tls_floor(tmp_path: Path) -> None:
    with run_secreg(tmp_path, OPEN) as server:
        log = server.log()
        assert "/etc/docker/certs.d/127.0.0.1:" in log and "ca.crt" in log
        assert oct((tmp_path / "certs" / "server.key").stat().st_mode & 0o777) == "0o600"
        with _handshake(server.port, server.ca) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() is None
        with _handshake(server.port, server.ca, alpn=["h2", "http/1.1"]) as tls:
            assert tls.selected_alpn_protocol() == "h2"  # HTTP/2 is offered by default
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError, match="(?i)version|protocol"):
            _handshake(server.port, server.ca, max_version=old).close()
    with run_secreg(tmp_path, OPEN) as server:
        assert "generated a development CA" not in server.log()


def test_tls13_prefers_aes128_gcm_whatever_the_client_lists_first(tmp_path: Path) -> None:
    """A client offering OpenSSL's default order (AES-256-GCM first: curl, Python) gets AES-128-GCM, as from the
    Go registry; a client offering only AES-256-GCM or ChaCha20 still gets it."""
    import _ssl
    import ctypes

    def offering(suites: str | None) -> str:
        context = ssl.create_default_context(cafile=str(server.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        if suites is not None:  # the client's own TLS 1.3 list, set as secreg.tls.suites sets the server's
            from secreg.tls.suites import _ssl_ctx

            library = ctypes.CDLL(_ssl.__file__)
            pointer = _ssl_ctx(context, library)
            assert pointer is not None
            set_suites = library.SSL_CTX_set_ciphersuites
            set_suites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            assert set_suites(pointer, suites.encode()) == 1
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            cipher = tls.cipher()
            assert cipher is not None
            return cipher[0]

    default_first = ssl.create_default_context().get_ciphers()[0]["name"]
    assert default_first == "TLS_AES_256_GCM_SHA384"  # what makes the test mean something
    with run_secreg(tmp_path, OPEN) as server:
        assert offering(None) == "TLS_AES_128_GCM_SHA256"
        assert offering("TLS_AES_256_GCM_SHA384") == "TLS_AES_256_GCM_SHA384"
        assert offering("TLS_CHACHA20_POLY1305_SHA256") == "TLS_CHACHA20_POLY1305_SHA256"
    assert "TLS 1.3 suites" not in server.log()  # no warning: the order was set


def test_no_session_tickets_are_sent(tmp_path: Path) -> None:
    """Neither TLS 1.3 nor TLS 1.2 clients get a session ticket (dockerd and Go clients never resume with one;
    each worker has its own key)."""
    with run_secreg(tmp_path, OPEN) as server:
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            context = ssl.create_default_context(cafile=str(server.ca))
            context.maximum_version = version
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == ("TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
                tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := tls.recv(65536):  # reads whatever the server sent after the handshake too
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200")
                session = tls.session
                assert session is None or not session.has_ticket


def test_http2_is_offered_by_default_and_the_flag_overrides_the_file(tmp_path: Path) -> None:
    def alpn(server: Any) -> str | None:
        with _handshake(server.port, server.ca, alpn=["h2", "http/1.1"]) as tls:
            return tls.selected_alpn_protocol()

    with run_secreg(tmp_path / "default", OPEN) as server:
        assert alpn(server) == "h2"
        with _handshake(server.port, server.ca, alpn=["http/1.1"]) as tls:  # a client that asks for HTTP/1.1 only
            assert tls.selected_alpn_protocol() == "http/1.1"
    with run_secreg(tmp_path / "setting", {**OPEN, "http": {"http2": False}}) as server:
        assert alpn(server) == "http/1.1"
    with run_secreg(tmp_path / "flag", {**OPEN, "http": {"http2": False}}, args=["--http2"]) as server:
        assert alpn(server) == "h2"
    with run_secreg(tmp_path / "off", {**OPEN, "http": {"http2": True}}, args=["--no-http2"]) as server:
        assert alpn(server) == "http/1.1"
    with run_secreg(tmp_path / "env", OPEN, env={"SECREG_HTTP_HTTP2": "false"}) as server:
        assert alpn(server) == "http/1.1"


def test_environment_settings(tmp_path: Path) -> None:
    env = {"SECREG_STORAGE_DELETE_ENABLED": "true", "SECREG_VALIDATION_MANIFESTS_MAXSIZE": "2048"}
    with run_secreg(tmp_path, OPEN, env=env) as server, server.client() as client:
        digest = sha256(b"x")
        client.post("/v2/env/blobs/uploads/", params={"digest": digest}, content=b"x")
        assert client.delete(f"/v2/env/blobs/{digest}").status_code == 202
        r = client.put("/v2/env/manifests/t", content=b"{" + b" " * 3000 + b"}",
                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 413


def test_deletes_disabled_by_default(tmp_path: Path) -> None:
    with run_secreg(tmp_path, OPEN) as server, server.client() as client:
        digest = sha256(b"y")
        client.post("/v2/nodel/blobs/uploads/", params={"digest": digest}, content=b"y")
        for path in (f"/v2/nodel/blobs/{digest}", f"/v2/nodel/manifests/{digest}", "/v2/nodel/manifests/t"):
            r = client.delete(path)
            assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_readonly_maintenance_mode(tmp_path: Path) -> None:
    with run_secreg(tmp_path, OPEN, args=["--readonly"]) as server, server.client() as client:
        r = client.post("/v2/ro/blobs/uploads/")
        assert r.status_code == 405 and "read-only" in r.json()["errors"][0]["message"]
        assert client.get("/v2/").status_code == 200


def test_plain_http_only_when_asked_and_loud(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    process = subprocess.Popen(
        secreg_command("serve", "--no-auth", "--insecure-http", "--addr", f"127.0.0.1:{port}"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(100):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except httpx.TransportError:
                import time
                time.sleep(0.1)
        assert r.status_code == 200
        assert not (tmp_path / "certs").exists()
    finally:
        process.terminate()
        output = process.communicate(timeout=15)[0].decode()
    assert "PLAIN HTTP" in output


def test_custom_certificate_missing_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    env["SECREG_HTTP_TLS_CERTIFICATE"] = str(tmp_path / "mine.crt")
    result = subprocess.run(secreg_command("serve", "--no-auth", "--addr", "127.0.0.1:1"),
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "mine.crt" in result.stderr and "secreg certs generate" in result.stderr


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    env["SECREG_HTTP_ADDR"] = "nonsense"
    result = subprocess.run(secreg_command("serve"), cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 2 and "http.addr" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(("addr", "message"), [
    ("unix:/tmp/secreg-test.sock", "unix sockets and inherited descriptors (fd://) are not supported"),
    ("fd://3", "unix sockets and inherited descriptors (fd://) are not supported"),
    # Once HOST:PORT with Hypercorn's prefixes in HOST: a traceback, and a socket on a random port of every
    # interface (`[fd://3]:5000` has Hypercorn skip the bind, and listen() picks a port).
    ("unix:/tmp/secreg-test:5000", "unix sockets and inherited descriptors (fd://) are not supported"),
    ("fd://3:5000", "unix sockets and inherited descriptors (fd://) are not supported"),
    ("bad host:5000", "'bad host' is neither an IP address nor a host name"),
    ("name.invalid:5000", "cannot listen on name.invalid:5000: "),
])
def test_a_listener_other_than_host_port_is_refused_at_start(tmp_path: Path, addr: str, message: str,
                                                              workers: str) -> None:
    """`http.addr` names a TCP address: a unix socket or an inherited descriptor (`fd://`), which Hypercorn would
    take from a bind string, is refused with one line before anything listens, whatever the worker count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    result = subprocess.run(secreg_command("serve", "--no-auth", "--workers", workers, "--addr", addr),
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "secreg: error: " in result.stderr
    assert "Traceback" not in result.stderr and "Running on" not in result.stderr


def test_two_workers_continue_each_others_uploads(tmp_path: Path) -> None:
    data = os.urandom(512 * 1024)
    with run_secreg(tmp_path, {**OPEN, "http": {"workers": 2}}) as server:
        pids = set()
        for attempt in range(8):
            # A new connection per request: chunks land on whichever worker accepts them.
            with server.client() as c:
                location = c.post(f"/v2/workers/r{attempt}/blobs/uploads/").headers["Location"]
            for i in range(0, len(data), 128 * 1024):
                with server.client() as c:
                    r = c.patch(location, content=data[i : i + 128 * 1024],
                                headers={"Content-Range": f"{i}-{i + 128 * 1024 - 1}"})
                    assert r.status_code == 202, r.text
                    location = r.headers["Location"]
            with server.client() as c:
                r = c.put(location, params={"digest": sha256(data)})
                assert r.status_code == 201, r.text
                assert c.get(f"/v2/workers/r{attempt}/blobs/{sha256(data)}").content == data
        # The serving process is worker 0 (secreg.supervisor): one spawned worker beside it, no idle parent.
        children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True)
        pids = set(children.stdout.split())
        assert len(pids) == 1


def test_registry_role_without_policy_is_a_one_line_error(tmp_path: Path) -> None:
    from secreg import tls

    tls.generate_certificates(tmp_path / "certs", ["localhost"], ["127.0.0.1"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    result = subprocess.run(secreg_command("serve", "--role", "registry", "--addr", "127.0.0.1:1"),
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "policy.yaml is missing" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "policy.yaml").write_text("rules:\n  - account: [\n")
    result = subprocess.run(secreg_command("serve", "--role", "registry", "--addr", "127.0.0.1:1"),
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "policy.yaml" in result.stderr and "Traceback" not in result.stderr


def test_hypercorn_read_size_is_raised() -> None:
    """The tuning reaches into a Hypercorn module constant: this fails when an upgrade moves it."""
    import hypercorn.asyncio.tcp_server as tcp_server

    from secreg import hypercorn_h11, hypercorn_tuning

    assert hypercorn_tuning.apply()
    assert tcp_server.MAX_RECV == hypercorn_h11.READ_BYTES


def test_version() -> None:
    result = subprocess.run(secreg_command("--version"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("secreg 0.")


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(secreg_command("serve", "--no-auth", "--addr", addr),
                                cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"secreg: error: cannot listen on {addr}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_auth_role_names_what_clients_log_in_to_and_policy_is_announced_once(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {}, args=["--role", "auth"]) as server:
        log = server.log()
    assert f"docker login <host>:{server.port}" not in log
    assert "docker login <registry-host>:<registry-port> -u admin" in log
    assert log.count('"policy.loaded"') + log.count("policy.loaded path=") == 1, log


def test_tls_connections_read_through_one_shared_large_buffer() -> None:
    """Every TLS connection of a thread reads from its socket into the same buffer, TLS_READ_BYTES at a time
    (more than asyncio's own size, which stays what it decrypts at a time and allocates per connection)."""
    import asyncio
    import asyncio.sslproto as sslproto
    import ssl

    from secreg import connections

    connections.share_tls_read_buffer()
    loop = asyncio.new_event_loop()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        made = [sslproto.SSLProtocol(loop, asyncio.Protocol(), context, None, server_side=True) for _ in range(2)]
        views = [protocol.get_buffer(-1) for protocol in made]
        assert [len(view) for view in views] == [connections.TLS_READ_BYTES] * 2
        assert views[0].obj is views[1].obj
        assert connections.TLS_READ_BYTES > sslproto.SSLProtocol.max_size
    finally:
        loop.close()


def test_connection_limits_reach_into_hypercorn() -> None:
    """secreg.connections subclasses Hypercorn's TCPServer and replaces its name in hypercorn.asyncio.run, and
    shares asyncio's TLS read buffer: this fails when an upgrade moves either."""
    import asyncio.sslproto as sslproto

    import hypercorn.asyncio.run as hypercorn_run
    import hypercorn.asyncio.tcp_server as tcp_server

    from secreg import connections

    for name in ("run", "protocol_send", "_read_data", "_close"):
        assert callable(getattr(tcp_server.TCPServer, name))
    assert isinstance(sslproto.SSLProtocol.max_size, int)
    limits = connections.install(connections.Limits(100, 10, 5))
    assert hypercorn_run.TCPServer is connections.LimitedTCPServer
    assert limits.total <= 100 and limits.per_client == 10


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith(("Z", "X"))
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_server_started_here_dies_with_the_test_process(tmp_path: Path) -> None:
    """What these tests start directly (not through run_secreg) is gone once the process that started it is
    SIGKILLed, as a killed pytest would be: here a stand-in for pytest starts it the way the tests above do."""
    import signal
    import time

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    starter = ("import subprocess, sys, time\n"
               "from tests.cli.test_serve import secreg_command\n"
               f"p = subprocess.Popen(secreg_command('serve', '--no-auth', '--insecure-http', '--addr', "
               f"'127.0.0.1:{port}'), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
               "print(p.pid, flush=True)\n"
               "time.sleep(600)\n")
    stand_in = subprocess.Popen(dying_with_parent([sys.executable, "-c", starter]), cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, start_new_session=True)
    server_pid = -1
    try:
        assert stand_in.stdout is not None
        server_pid = int(stand_in.stdout.readline())
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        stand_in.kill()
        stand_in.wait(10)
        deadline = time.monotonic() + 30
        while not _gone(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(server_pid), "the server outlived the process that started it"
    finally:
        stand_in.kill()
        stand_in.wait(10)
        if server_pid > 0 and not _gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)
