"""Both registries over TLS with one certificate, and a sampler of their resident memory.

secreg runs as a user starts it (`python -m secreg serve`, default workers and settings, fresh storage);
the Go registry through the end-to-end harness (`start_go_registry`, its default config: info log level and
access log on, as the reference registry ships), with `auth.token` added for the authenticated workloads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from secreg.tls import CertificateFiles, generate_certificates
from tests.e2e.harness import GO_REGISTRY_BIN, deep_merge, free_port, https_get, start_go_registry
from tests.server import stop_process_group

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
_PASSWORD = re.compile(r"shown only this once:\s+(\S+)")
GO_REGISTRY_ENV = "GO_REGISTRY"  # `GO_REGISTRY=/path/to/registry make bench`: the distribution build to compare


def go_registry_binary() -> str | None:
    """The Go registry to compare against: $GO_REGISTRY, else Debian's docker-registry (2.8.2); None if absent."""
    chosen = os.environ.get(GO_REGISTRY_ENV, "").strip()
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    return shutil.which("docker-registry") or (GO_REGISTRY_BIN if os.access(GO_REGISTRY_BIN, os.X_OK) else None)


def go_registry_version(binary: str | None) -> str | None:
    """`registry --version`'s line, e.g. `docker-registry github.com/docker/distribution v2.8.2+ds1`."""
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].strip() if text else None


@dataclass
class Server:
    name: str  # "secreg" or "go"
    host: str  # 127.0.0.1 or ::1
    port: int
    pid: int
    ca: Path
    log_path: Path
    admin_password: str | None = None

    @property
    def host_port(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host_port}"

    def path_of(self, location: str) -> str:
        """A Location header (absolute, as Go sends it, or a path, as secreg does) as path?query."""
        parts = urllib.parse.urlsplit(location)
        return parts.path + (f"?{parts.query}" if parts.query else "")


def make_certificates(directory: Path, extra_hosts: list[str] | None = None) -> CertificateFiles:
    """One CA, server certificate and token key pair for both registries."""
    return generate_certificates(directory, ["localhost", *(extra_hosts or [])], ["127.0.0.1", "::1"])


@contextlib.contextmanager
def start_secreg(
    workdir: Path,
    certs: CertificateFiles,
    *,
    host: str = "127.0.0.1",
    auth: bool = False,
    http2: bool = False,
    storage: Path | None = None,
    timeout: float = 60.0,
    extra: dict[str, Any] | None = None,
    code: Path | None = None,
) -> Iterator[Server]:
    """`python -m secreg serve` with fresh storage (or `storage`), the shared certificate and otherwise default
    settings (plus `extra`, deep-merged: e.g. a `proxy` section, or `http.workers`); from the source tree `code`
    (first on PYTHONPATH: older code for an A/B) instead of the installed secreg when given."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    config: dict[str, Any] = {
        "storage": {"filesystem": {"rootdirectory": str(storage or workdir / "data")}},
        "http": {"tls": {
            "directory": str(certs.directory),
            "certificate": str(certs.server_cert),
            "key": str(certs.server_key),
        }},
        "auth": {"enabled": auth, "directory": str(workdir / "auth")},
    }
    config = deep_merge(config, extra or {})
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    argv = [sys.executable, "-m", "secreg", "serve", "--config", str(config_path), "--addr", addr]
    if http2:
        argv.append("--http2")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    if code is not None:
        inherited = os.environ.get("PYTHONPATH")
        environment["PYTHONPATH"] = os.pathsep.join([str(code.resolve()), *([inherited] if inherited else [])])
    log_path = workdir / "secreg.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    server = Server("secreg", host, port, process.pid, certs.ca_cert, log_path)
    try:
        _wait_ready(server, process, timeout)
        match = _PASSWORD.search(log_path.read_text(errors="replace"))
        server.admin_password = match.group(1) if match else None
        yield server
    finally:
        stop_process_group(process)


def _wait_ready(server: Server, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `server` answers `/v2/` (any status below 500); its log's tail in the error if it exits or stays
    silent for `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = server.log_path.read_text()[-4000:]
            raise RuntimeError(f"{server.name} exited with {process.returncode}:\n{tail}")
        try:
            if https_get(f"{server.url}/v2/", server.ca, timeout=2).status < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not answer in {timeout}s:\n{server.log_path.read_text()[-4000:]}")


def go_token_auth(secreg: Server) -> dict[str, Any]:
    """Go's `auth.token` trusting the tokens secreg issues (same service, issuer and CA)."""
    return {"auth": {"token": {
        "realm": f"{secreg.url}/auth/token",
        "service": "secreg",
        "issuer": "secreg",
        "rootcertbundle": str(secreg.ca),
    }}}


@contextlib.contextmanager
def start_go(
    workdir: Path, certs: CertificateFiles, *, host: str = "127.0.0.1", extra: dict[str, Any] | None = None
) -> Iterator[Server]:
    port = free_port(host)
    with start_go_registry(workdir, port, certs.server_cert, certs.server_key, extra or {}, host=host,
                           ca_cert=certs.ca_cert, binary=go_registry_binary()) as registry:
        yield Server("go", host, port, registry.process.pid, certs.ca_cert, registry.log_path)


HAPROXY_CONFIG = """global
    maxconn 64
defaults
    mode tcp
    timeout connect 10s
    timeout client 120s
    timeout server 120s
frontend bench
    bind {bind} ssl crt {pem}
    default_backend upstream
backend upstream
    server up {upstream} ssl verify required ca-file {ca} verifyhost localhost
"""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)


@contextlib.contextmanager
def start_haproxy(workdir: Path, certs: CertificateFiles, upstream: Server, timeout: float = 30.0) -> Iterator[Server]:
    """haproxy (Debian's, its default threads) terminating TLS with the shared certificate and re-encrypting
    to `upstream`, whose certificate it verifies against the CA: a TLS proxy doing nothing but decrypt, copy
    and encrypt, in optimized C. Stopped by its process group when done."""
    binary = haproxy_binary()
    if binary is None:
        raise FileNotFoundError("haproxy is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    pem = workdir / "haproxy.pem"
    pem.write_bytes(certs.server_cert.read_bytes() + certs.server_key.read_bytes())
    pem.chmod(0o600)
    port = free_port(upstream.host)
    bind = f"[{upstream.host}]:{port}" if ":" in upstream.host else f"{upstream.host}:{port}"
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(bind=bind, pem=pem, upstream=upstream.host_port, ca=certs.ca_cert))
    log_path = workdir / "haproxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, "-db", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("haproxy", upstream.host, port, process.pid, certs.ca_cert, log_path)
    try:
        _wait_ready(server, process, timeout)
        yield server
    finally:
        stop_process_group(process)


# --- resident memory ------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found.extend(int(p) for p in text.split())
    except OSError:
        pass
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (threads included), from /proc."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS
        except (OSError, IndexError, ValueError):
            continue
    return total


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


class RssSampler:
    """Samples the summed RSS of each server's process tree every 10 ms in a thread.

    `window()` returns the peak per server since the previous call (or the start) and starts a new window."""

    def __init__(self, servers: list[Server], interval: float = 0.01) -> None:
        self.servers = servers
        self.interval = interval
        self._peaks = {s.name: 0 for s in servers}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        trees = {s.name: process_tree(s.pid) for s in self.servers}
        refreshed = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 0.5:  # workers may come and go
                trees = {s.name: process_tree(s.pid) for s in self.servers}
                refreshed = time.monotonic()
            with self._lock:
                for name, pids in trees.items():
                    self._peaks[name] = max(self._peaks[name], rss_bytes(pids))
            self._stop.wait(self.interval)

    def window(self) -> dict[str, int]:
        with self._lock:
            peaks = dict(self._peaks)
            current = {s.name: rss_bytes(process_tree(s.pid)) for s in self.servers}
            self._peaks = current
        return {name: max(peaks[name], current[name]) for name in peaks}

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

