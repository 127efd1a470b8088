"""A private Docker engine for the end-to-end tests, images built in it, and docker's TLS trust (certs.d).

Standard library only, no pytest (see harness.py). Things that are not obvious and shaped this code:

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
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import (
    _SHORT_ROOT,
    HarnessError,
    MiB,
    _read_tail,
    _stop_process,
    _unmount_under,
    dying_with_parent,
    run_command,
)

CERTS_D = Path("/etc/docker/certs.d")
# A name only the test dockerd resolves (to ::1): registries there get their TLS verified.
STRICT_NAME = "registry.e2e.test"


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
        # SIGTERM, not SIGKILL, when the test run dies: dockerd then stops its containerd and undoes its mounts.
        argv = dying_with_parent(argv)
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
