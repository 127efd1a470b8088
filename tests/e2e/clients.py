"""A private containerd (driven with ctr) and skopeo, for the end-to-end tests.

Standard library only, no pytest (see harness.py).
"""

from __future__ import annotations

import contextlib
import json
import shutil
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
    _read_tail,
    _stop_process,
    _unmount_under,
    dying_with_parent,
    run_command,
)

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
        process = subprocess.Popen(dying_with_parent([binary, "--config", str(config)]), stdin=subprocess.DEVNULL,
                                   stdout=log,
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
