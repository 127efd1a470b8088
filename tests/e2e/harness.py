"""End-to-end harness: a private Docker engine, the Go reference registry, skopeo and TLS trust.

Standard library only, no pytest, so it can drive any registry (the Go reference registry, secreg) from
tests, benchmarks or a REPL. Every helper cleans up what it starts.

Things that are not obvious and shaped this code:

* dockerd always treats 127.0.0.0/8 as an *insecure* registry range (hard-coded, no flag removes it):
  for ``127.0.0.1:PORT`` and ``localhost:PORT`` it skips certificate verification and even falls back to
  plain HTTP. A push there passes with or without ``/etc/docker/certs.d``. To make docker really verify
  TLS, address the registry by a name that resolves to ``::1`` inside dockerd only:
  ``start_docker_engine(workdir, hosts={"registry.e2e.test": "::1"})`` runs dockerd in a private mount
  namespace with its own /etc/hosts; serve the registry on ``[::1]:PORT``. Docker 20.10 rejects IPv6
  literals in image references, so ``[::1]:PORT/repo`` itself is not an option. skopeo does verify TLS
  on 127.0.0.1.
* Without ``--containerd``, dockerd uses the *system* containerd when /run/containerd/containerd.sock
  exists and otherwise starts its own under ``exec-root/containerd``. Every engine here therefore uses
  its own containerd namespaces, so two engines never share containers even on one containerd.
* A unix socket path must be shorter than 108 bytes, and containerd puts its sockets under exec-root:
  socket, exec-root and pidfile live in a short directory under /tmp.
* The Docker CLI in PATH may be much newer than the daemon (here CLI 28 and dockerd 20.10; the API is
  negotiated down). Without the buildx plugin, ``docker build`` needs DOCKER_BUILDKIT=0.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CERTS_D",
    "GO_REGISTRY_BIN",
    "CommandError",
    "Containerd",
    "DockerBinaries",
    "DockerEngine",
    "GoRegistry",
    "HarnessError",
    "HttpResponse",
    "MiB",
    "build_image",
    "ci_mode",
    "deep_merge",
    "free_port",
    "https_get",
    "image_exists",
    "image_id",
    "ipv6_loopback_available",
    "push_digest",
    "run_command",
    "skopeo",
    "skopeo_json",
    "start_containerd",
    "start_docker_engine",
    "start_go_registry",
    "timed",
    "trust_ca",
]

MiB = 1024 * 1024
CERTS_D = Path("/etc/docker/certs.d")
# A name only the test dockerd resolves (to ::1): registries there get their TLS verified.
STRICT_NAME = "registry.e2e.test"
GO_REGISTRY_BIN = "/usr/bin/docker-registry"
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
    """Whether ::1 can be bound (needed for registries that dockerd must verify; see the module docstring)."""
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


# --- Docker engine ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerBinaries:
    """The docker CLI and dockerd an engine runs with."""

    docker: str
    dockerd: str


class DockerEngine:
    """A private dockerd: its own socket, data-root, exec-root, pidfile, daemon.json and containerd
    namespaces, so it runs beside any other dockerd. Create it with `start_docker_engine`.

    `env` is a copy of os.environ pointing the docker CLI at this engine, with a private DOCKER_CONFIG
    (so `docker login` never writes to ~/.docker) and DOCKER_BUILDKIT=0 when buildx is missing.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        hosts: Mapping[str, str] | None = None,
        docker_bin: str | None = None,
        dockerd_bin: str | None = None,
        daemon_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.hosts = dict(hosts or {})
        self.daemon_config = dict(daemon_config or {})
        self.docker_bin = docker_bin or shutil.which("docker") or "docker"
        self.dockerd_bin = dockerd_bin or shutil.which("dockerd") or "dockerd"
        self.short_dir = Path(tempfile.mkdtemp(prefix="secreg-dk-", dir=_SHORT_ROOT))
        self.socket = self.short_dir / "docker.sock"
        self.exec_root = self.short_dir / "x"
        self.pidfile = self.short_dir / "docker.pid"
        self.data_root = self.workdir / "data"
        self.config_dir = self.workdir / "docker-config"
        self.build_dir = self.workdir / "build"
        self.daemon_json = self.workdir / "daemon.json"
        self.hosts_file = self.workdir / "hosts"
        self.log_path = self.workdir / "dockerd.log"
        # containerd namespaces allow [A-Za-z0-9] runs joined by . _ -, so a mkdtemp suffix ("_0pb7") won't do.
        suffix = hashlib.sha256(self.short_dir.name.encode()).hexdigest()[:12]
        self.namespace = f"secreg-e2e-{suffix}"
        self.env = self._client_env()
        self.startup_seconds = 0.0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The DOCKER_HOST value of this engine."""
        return f"unix://{self.socket}"

    def _client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_BUILDKIT"):
            env.pop(name, None)
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.config_dir)
        env["DOCKER_CLI_HINTS"] = "false"
        return env

    def start(self, timeout: float = 60.0) -> None:
        """Start dockerd and wait until `docker version` reaches it; HarnessError (with its log) if not."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for directory in (self.data_root, self.config_dir, self.build_dir):
            directory.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "config.json").write_text("{}\n")
        # A daemon.json of our own (empty unless the test asks for settings such as registry-mirrors):
        # /etc/docker/daemon.json must not change how tests behave.
        self.daemon_json.write_text(json.dumps(self.daemon_config) + "\n")
        argv = [
            self.dockerd_bin,
            f"--config-file={self.daemon_json}",
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            f"--containerd-namespace={self.namespace}",
            f"--containerd-plugins-namespace={self.namespace}-plugins",
        ]
        if self.hosts:
            argv = self._in_private_hosts_namespace(argv)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        if self.run("buildx", "version", check=False).returncode != 0:
            # Without the buildx plugin a new CLI refuses BuildKit builds; the classic builder works.
            self.env["DOCKER_BUILDKIT"] = "0"

    def _in_private_hosts_namespace(self, argv: list[str]) -> list[str]:
        # dockerd resolves registry names itself; a bind-mounted /etc/hosts in a private mount namespace
        # changes what it (and only it) resolves, without touching the machine's /etc/hosts.
        original = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
        entries = "".join(f"{ip} {name}\n" for name, ip in self.hosts.items())
        self.hosts_file.write_text(original.rstrip("\n") + "\n# secreg e2e\n" + entries)
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        unshare = shutil.which("unshare") or "unshare"
        return [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            str(self.hosts_file),
            *argv,
        ]

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"dockerd exited with status {self.process.returncode} while starting; "
                    f"log {self.log_path}:\n{_read_tail(self.log_path)}"
                )
            try:
                probe = self.run("version", "--format", "{{.Server.Version}}", check=False, timeout=10)
            except subprocess.TimeoutExpired:
                last = "docker version timed out"
            else:
                if probe.returncode == 0:
                    return
                last = probe.stderr.strip()
            time.sleep(0.1)
        raise HarnessError(
            f"dockerd did not answer on {self.socket} in time (last: {last}); "
            f"log {self.log_path}:\n{_read_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop dockerd (SIGTERM, wait, SIGKILL) and remove everything it created except its log."""
        if self.process is not None:
            _stop_process(self.process, grace=30)
        self._kill_leftover_containerd()
        for root in (self.short_dir, self.data_root):
            _unmount_under(root)
        for path in (self.short_dir, self.data_root, self.config_dir, self.build_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.daemon_json, self.hosts_file):
            path.unlink(missing_ok=True)

    def _kill_leftover_containerd(self) -> None:
        # dockerd stops its managed containerd itself; this is only for a dockerd that had to be killed.
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.exec_root).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run(
        self,
        *args: str,
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float = 600.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS...` against this engine; CommandError (with the output) if check fails."""
        return run_command([self.docker_bin, *args], check=check, input=input, env=self.env, timeout=timeout)

    def login(self, registry: str, username: str, password: str) -> subprocess.CompletedProcess[str]:
        """`docker login` with the password on stdin; credentials land in this engine's DOCKER_CONFIG."""
        return self.run("login", "--username", username, "--password-stdin", registry, input=password)

    def logout(self, registry: str) -> None:
        self.run("logout", registry, check=False)


@contextlib.contextmanager
def start_docker_engine(
    workdir: Path,
    *,
    hosts: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    docker_bin: str | None = None,
    dockerd_bin: str | None = None,
    daemon_config: Mapping[str, Any] | None = None,
) -> Iterator[DockerEngine]:
    """Run a private dockerd for the duration of the `with` block (see DockerEngine).

    `hosts` maps names to IP addresses that only this dockerd resolves (a private /etc/hosts in its own
    mount namespace); {"registry.e2e.test": "::1"} makes dockerd verify TLS for that registry.
    `daemon_config` is written as the engine's daemon.json, e.g. {"registry-mirrors": ["https://..."]}.
    """
    engine = DockerEngine(workdir, hosts=hosts, docker_bin=docker_bin, dockerd_bin=dockerd_bin,
                          daemon_config=daemon_config)
    try:
        engine.start(timeout=timeout)
        yield engine
    finally:
        engine.stop()


def image_id(engine: DockerEngine, ref: str) -> str:
    """The image ID (sha256:...) of a local image."""
    return engine.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def image_exists(engine: DockerEngine, ref: str) -> bool:
    return engine.run("image", "inspect", ref, check=False).returncode == 0


def build_image(
    engine: DockerEngine,
    tag: str,
    layers: int = 3,
    layer_size: int = 2 * MiB,
    seed: int = 0,
) -> str:
    """Build a `FROM scratch` image of `layers` COPY layers of random bytes; return its image ID.

    Layer i holds `layer_size` bytes that depend only on (seed, i), and file times are fixed, so two
    builds with the same seed share layer digests (the image IDs still differ: `created` changes).
    """
    if layers < 1:
        raise ValueError("an image needs at least one layer")
    context = engine.build_dir / secrets.token_hex(6)
    context.mkdir(parents=True)
    try:
        dockerfile = ["FROM scratch"]
        for index in range(layers):
            name = f"layer{index}.bin"
            _write_random(context / name, layer_size, f"{seed}:{index}")
            dockerfile.append(f"COPY {name} /{name}")
        (context / "Dockerfile").write_text("\n".join(dockerfile) + "\n")
        for path in context.iterdir():
            os.utime(path, (946684800, 946684800))  # 2000-01-01: layer tars must not depend on "now"
        engine.run("build", "--quiet", "--tag", tag, str(context))
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return image_id(engine, tag)


def _write_random(path: Path, size: int, seed: str) -> None:
    rng = random.Random(seed)
    with path.open("wb") as out:
        remaining = size
        while remaining > 0:
            chunk = min(remaining, MiB)
            out.write(rng.randbytes(chunk))
            remaining -= chunk


_PUSH_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: \d+")


def push_digest(push_output: str) -> str:
    """The manifest digest from `docker push` output ("TAG: digest: sha256:... size: N")."""
    match = _PUSH_DIGEST.search(push_output)
    if match is None:
        raise ValueError(f"no manifest digest in docker push output:\n{push_output}")
    return match.group(1)


@contextlib.contextmanager
def trust_ca(ca_cert: Path, host_port: str, certs_root: Path = CERTS_D) -> Iterator[Path]:
    """Make docker trust `ca_cert` for `host_port` (writes certs_root/HOST:PORT/ca.crt); yield that dir.

    dockerd reads the directory on every connection, so no restart is needed. skopeo also reads
    /etc/docker/certs.d/HOST:PORT by default, and the yielded directory works as its --cert-dir.
    Remember that dockerd does not verify TLS at all for 127.0.0.0/8 (see the module docstring).
    """
    if "/" in host_port or host_port in ("", ".", ".."):
        raise ValueError(f"not a HOST:PORT: {host_port!r}")
    directory = certs_root / host_port
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "ca.crt"
    data = Path(ca_cert).read_bytes()
    staging = directory / f".ca.crt.{secrets.token_hex(4)}"
    staging.write_bytes(data)
    staging.chmod(0o644)
    os.replace(staging, target)
    try:
        yield directory
    finally:
        with contextlib.suppress(OSError):
            if target.read_bytes() == data:
                target.unlink()
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()


# --- containerd -----------------------------------------------------------------------------------


@dataclass
class Containerd:
    """A private containerd (own root, state and socket; the CRI plugin off). `ctr(...)` talks to it."""

    address: Path
    root: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    namespace: str = "secreg-e2e"

    def ctr(self, *args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        binary = shutil.which("ctr") or "ctr"
        return run_command([binary, "--address", str(self.address), "--namespace", self.namespace, *args],
                           check=check, timeout=timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def start_containerd(workdir: Path, timeout: float = 30.0) -> Iterator[Containerd]:
    """Run `containerd` with everything of its own under `workdir` (socket in a short /tmp directory)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    short = Path(tempfile.mkdtemp(prefix="secreg-ctd-", dir=_SHORT_ROOT))
    address = short / "containerd.sock"
    root, state = workdir / "root", short / "state"
    config = workdir / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{root}"\nstate = "{state}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{address}"\n'
        f'[ttrpc]\n  address = "{address}.ttrpc"\n'
        f'[debug]\n  address = "{address}.debug"\n'
    )
    log_path = workdir / "containerd.log"
    binary = shutil.which("containerd") or "containerd"
    with log_path.open("ab") as log:
        process = subprocess.Popen([binary, "--config", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    started = Containerd(address, root, log_path, process)
    try:
        deadline = time.monotonic() + timeout
        while started.ctr("version", check=False, timeout=10).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"containerd did not start; log {log_path}:\n{_read_tail(log_path)}")
            time.sleep(0.1)
        yield started
    finally:
        _stop_process(process, grace=10)
        _unmount_under(root)
        _unmount_under(short)
        shutil.rmtree(short, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


# --- skopeo -----------------------------------------------------------------------------------------


def skopeo(
    *args: str,
    check: bool = True,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    """Run `skopeo --insecure-policy ARGS...` (the signature policy is not what these tests are about).

    TLS and credentials, per command:
      inspect / list-tags / delete: --cert-dir DIR, --creds USER:PASS, --tls-verify=true
      copy / sync: --src-cert-dir DIR --dest-cert-dir DIR, --src-creds / --dest-creds USER:PASS,
                   --src-tls-verify=true / --dest-tls-verify=true
    DIR holds the CA as *.crt (ca.crt); *.cert + *.key there are a client certificate. With a cert dir
    given, skopeo reads only that directory; without one it reads /etc/containers/certs.d/HOST:PORT and
    /etc/docker/certs.d/HOST:PORT. Unlike dockerd, skopeo verifies TLS for 127.0.0.1 as well.
    """
    binary = shutil.which("skopeo") or "skopeo"
    return run_command(
        [binary, "--insecure-policy", *args], check=check, input=input, env=env, timeout=timeout
    )


def skopeo_json(*args: str, timeout: float = 600.0) -> Any:
    """Run skopeo and parse its JSON output (inspect, list-tags)."""
    return json.loads(skopeo(*args, timeout=timeout).stdout)


# --- the Go reference registry ----------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override` merged in: mappings merge key by key, other values replace,
    and None deletes the key (e.g. {"storage": {"filesystem": None, "s3": {...}}})."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class GoRegistry:
    """A running `docker-registry serve` (see start_go_registry)."""

    host: str
    port: int
    config: dict[str, Any]
    config_path: Path
    storage_root: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def host_port(self) -> str:
        """127.0.0.1:PORT or [::1]:PORT: the registry part of an image reference and the certs.d name."""
        return _host_port(self.host, self.port)

    @property
    def url(self) -> str:
        return f"https://{self.host_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def start_go_registry(
    workdir: Path,
    port: int,
    certfile: Path,
    keyfile: Path,
    extra_config: Mapping[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    ca_cert: Path | None = None,
    binary: str | None = None,
    timeout: float = 30.0,
) -> Iterator[GoRegistry]:
    """Run the Go reference registry over TLS on host:port with filesystem storage in `workdir`.

    Waits until GET /v2/ answers (any status below 500, so 401 from an auth-enabled registry counts),
    trusting `ca_cert` (default: `certfile` itself). `extra_config` is deep-merged into the generated
    config (see deep_merge), e.g. {"storage": {"delete": {"enabled": True}}} or {"auth": {"token": ...}}.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    storage_root = workdir / "storage"
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_root)},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": _host_port(host, port),
            "secret": secrets.token_hex(16),
            "tls": {"certificate": str(Path(certfile).resolve()), "key": str(Path(keyfile).resolve())},
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    config = deep_merge(config, extra_config or {})
    config_path = workdir / "config.yml"
    # JSON is a subset of YAML, so the registry reads this as its YAML config; no YAML library needed.
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    log_path = workdir / "registry.log"
    argv = [binary or shutil.which("docker-registry") or GO_REGISTRY_BIN, "serve", str(config_path)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    registry = GoRegistry(host, port, config, config_path, storage_root, log_path, process)
    try:
        _wait_for_v2(registry, Path(ca_cert or certfile), time.monotonic() + timeout)
        yield registry
    finally:
        _stop_process(process, grace=10)


def _wait_for_v2(registry: GoRegistry, ca_cert: Path, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise HarnessError(
                f"docker-registry exited with status {registry.process.returncode} while starting; "
                f"log {registry.log_path}:\n{_read_tail(registry.log_path)}"
            )
        try:
            if https_get(f"{registry.url}/v2/", ca_cert, timeout=2).status < 500:
                return
        except ssl.SSLCertVerificationError as exc:
            # Waiting longer will not fix a certificate that does not match the CA or the address.
            raise HarnessError(f"{registry.url}/v2/: TLS verification with {ca_cert} failed: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise HarnessError(
        f"docker-registry did not answer {registry.url}/v2/ in time (last: {last}); "
        f"log {registry.log_path}:\n{_read_tail(registry.log_path)}"
    )
