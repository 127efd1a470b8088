"""The Go reference registry (`docker-registry serve`) over TLS, started and stopped by the harness.

Standard library only, no pytest (see harness.py).
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import HarnessError, _host_port, _read_tail, _stop_process, dying_with_parent, https_get

GO_REGISTRY_BIN = "/usr/bin/docker-registry"


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
            dying_with_parent(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
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
