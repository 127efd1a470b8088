"""Start a real `secreg serve` (real Hypercorn, real TLS with a generated CA) on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.processes import dying_with_parent


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class RunningServer:
    url: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    admin_password: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"

    @property
    def host_port(self) -> str:
        """127.0.0.1:PORT, or [::1]:PORT for a server started with host="::1"."""
        return _host_port(self.host, self.port)

    @property
    def ca(self) -> Path:
        return self.workdir / "certs" / "ca.crt"

    @property
    def storage(self) -> Path:
        return self.workdir / "data"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), **{"timeout": 60, **kwargs})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def token(server: RunningServer, user: str | None, password: str | None, *scopes: str) -> str:
    """A bearer token from the server's token endpoint for `scopes` (anonymous without a user and password)."""
    with server.client() as client:
        response = client.get("/auth/token", params=[("service", "secreg"), *[("scope", s) for s in scopes]],
                              auth=(user, password) if user and password else None)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


WORKERS_ENV = "TEST_SECREG_WORKERS"


def with_test_workers(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with `http.workers` set from TEST_SECREG_WORKERS (e.g. `auto`) when the test sets none itself:
    `TEST_SECREG_WORKERS=auto pytest tests/proxy` runs those tests against multi-worker servers. Unset (the
    default runs), the config is as the test wrote it."""
    workers = os.environ.get(WORKERS_ENV)
    http = config.get("http") or {}
    if not workers or "workers" in http:
        return config
    return {**config, "http": {**http, "workers": workers}}


class _PortTaken(RuntimeError):
    """The free port was taken by another process between `free_port` and the server's bind."""


@contextmanager
def run_secreg(
    workdir: Path,
    config: dict[str, Any] | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    host: str = "127.0.0.1",
    wrapper: list[str] | None = None,
) -> Iterator[RunningServer]:
    """`host` is the loopback address to listen on: "::1" for registries dockerd must verify TLS for.
    `wrapper` runs the server through a command that then execs it (e.g. `prlimit --nofile=...`).
    A port another process takes before the server binds it (many test runs share a machine) is retried."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(with_test_workers(config or {})))
    log_path = workdir / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    environment.update(env or {})
    for attempt in range(3):
        port = free_port(host)
        command = dying_with_parent([*(wrapper or []), sys.executable, "-m", "secreg", "serve", "--config",
                                     str(config_path), "--addr", _host_port(host, port), *(args or [])])
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT,
                                       env=environment, start_new_session=True)
        server = RunningServer(f"https://{_host_port(host, port)}", port, workdir, process, log_path, host=host)
        try:
            _wait_ready(server, timeout)
        except _PortTaken:
            stop_process_group(process)
            if attempt == 2:
                raise
            continue
        except BaseException:
            stop_process_group(process)
            raise
        break
    try:
        match = re.search(r"shown only this once:\s+(\S+)", server.log())
        server.admin_password = match.group(1) if match else None
        yield server
    finally:
        stop_process_group(process)


def _wait_ready(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log()
            error = _PortTaken if "cannot listen on" in log else RuntimeError
            raise error(f"secreg exited with {server.process.returncode}:\n{log}")
        if server.ca.exists():
            try:  # a probe that hangs (a port taken by a process that never answers) must not use up the wait
                with server.client(timeout=10) as client:
                    client.get("/healthz")
                return
            except (httpx.TransportError, ssl.SSLError):
                pass
        time.sleep(0.1)
    raise RuntimeError(f"secreg did not become ready in {timeout}s:\n{server.log()}")


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group a server was started in (Hypercorn workers included), SIGKILL if it
    lingers past Hypercorn's graceful timeout."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def worker_environment(parent: int) -> dict[str, str]:
    """The environment a worker of a multi-worker `secreg serve` started with (the parent's /proc shows its own
    at exec, workers get what it set up before spawning them)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for child in children:
        pairs = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        environment = dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)
        if "PROMETHEUS_MULTIPROC_DIR" in environment:
            return environment
    raise AssertionError(f"no worker of {parent} has PROMETHEUS_MULTIPROC_DIR ({children})")


def need_event_loop(loop: str) -> None:
    """Skip (fail in CI) a test of `http.eventloop: uvloop` where uvloop is not installed."""
    import importlib.util

    import pytest

    from tests.e2e.harness import ci_mode

    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        if ci_mode():
            pytest.fail("uvloop is not installed (CI is set: failing instead of skipping)", pytrace=False)
        pytest.skip("uvloop is not installed (pip install -e '.[test]')")
