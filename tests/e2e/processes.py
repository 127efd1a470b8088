"""Harness basics: commands, processes started and stopped by PID, free ports, an HTTPS probe.

Standard library only, no pytest (see harness.py).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
# Short on purpose: AF_UNIX paths are limited to 107 bytes and containerd nests sockets under exec-root.
_SHORT_ROOT = Path("/tmp")
_LOG_TAIL = 4000




class HarnessError(RuntimeError):
    """A component of the harness could not be started or stopped."""


class CommandError(subprocess.CalledProcessError):
    """A command exited non-zero; unlike CalledProcessError, str() shows what it printed."""

    def __str__(self) -> str:
        parts = [super().__str__()]
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text:
                parts.append(f"--- {label} ---\n{_tail(str(text))}")
        return "\n".join(parts)


def ci_mode() -> bool:
    """True when the environment variable CI says we run in CI (anything but empty, 0, false, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def run_command(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv without a shell; stdout and stderr are captured and decoded (invalid UTF-8 replaced)."""
    data = input.encode() if isinstance(input, str) else input
    result = subprocess.run(
        list(argv),
        input=data,
        stdin=None if data is not None else subprocess.DEVNULL,
        capture_output=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    completed = subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )
    if check and completed.returncode != 0:
        raise CommandError(completed.returncode, list(argv), completed.stdout, completed.stderr)
    return completed


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Store how long the `with` block took, in seconds, as timings[name]."""
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - start


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (another process may still take it before you bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ipv6_loopback_available() -> bool:
    """Whether ::1 can be bound (needed for registries that dockerd must verify; see docker_engine.py)."""
    try:
        free_port("::1")
    except OSError:
        return False
    return True


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tail(text: str, limit: int = _LOG_TAIL) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def _read_tail(path: Path) -> str:
    try:
        return _tail(path.read_text(errors="replace"))
    except OSError as exc:
        return f"(no log: {exc})"


def dying_with_parent(argv: Sequence[str], signal_name: str = "TERM") -> list[str]:
    """`argv` started so that the kernel sends it SIG`signal_name` once the process that started it (the test
    run) dies: util-linux's `setpriv --pdeathsig` sets PR_SET_PDEATHSIG and execs it, and the setting survives
    further execs (`unshare`, `sh -c 'exec ...'`). A SIGKILLed pytest otherwise left its dockerd running, with
    its data-root still bind-mounted under /tmp. Strictly it is the starting *thread* whose end sends the signal:
    start servers that must outlive a helper thread from the main one. Without setpriv, `argv` as it is."""
    setpriv = shutil.which("setpriv")
    return [setpriv, f"--pdeathsig={signal_name}", "--", *argv] if setpriv else list(argv)


def _stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, wait `grace` seconds, then SIGKILL the process group we created for it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            # start_new_session=True made the process the leader of its own group: this reaches its
            # children (dockerd's containerd) and nothing else.
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _unmount_under(root: Path) -> None:
    """Lazily unmount whatever a killed dockerd left mounted at or below `root`, deepest first.

    dockerd bind-mounts its data-root onto itself and undoes that only on a clean shutdown; left
    mounted, the directory cannot be removed ("Device or resource busy").
    """
    top = str(root.resolve())
    for _ in range(10):  # stacked mounts come off one per round
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = [fields[4] for fields in (line.split() for line in lines) if len(fields) > 4]
        mine = [p for p in points if p == top or p.startswith(top + os.sep)]
        if not mine:
            return
        for point in sorted(mine, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


# --- HTTPS ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def https_get(
    url: str,
    ca_cert: Path,
    *,
    headers: Mapping[str, str] | None = None,
    server_hostname: str | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """GET `url`, trusting only `ca_cert`; `server_hostname` checks the certificate for another name.

    `ca_cert` may also be a self-signed leaf: partial chains are accepted, which is fine for tests.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError(f"not an https URL: {url}")
    port = parts.port or 443
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    with (
        socket.create_connection((parts.hostname, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname or parts.hostname) as tls,
    ):
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        return HttpResponse(response.status, dict(response.getheaders()), response.read())
