"""Making clients trust our CA: the commands for docker, podman/skopeo and curl, and installing it for docker."""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from secreg.files import atomic_write
from secreg.tls.certificates import IPAddress, is_dns_name, load_certificate_chain

__all__ = ["docker_trust_instructions", "install_docker_ca"]


def docker_trust_instructions(ca_cert: Path, host_ports: Sequence[str]) -> str:
    """Shell commands that make docker, podman/skopeo and curl on a client trust our CA for each HOST:PORT."""
    ca = shlex.quote(str(Path(ca_cert).absolute()))
    lines = [f"# Copy {Path(ca_cert).name} to each client machine, then run there (docker needs no restart):"]
    for host_port in host_ports:
        _check_host_port(host_port)
        docker_dir = f"/etc/docker/certs.d/{host_port}"
        containers_dir = f"/etc/containers/certs.d/{host_port}"
        q = shlex.quote
        lines += [
            f"# {host_port}",
            f"sudo mkdir -p {q(docker_dir)} && sudo cp {ca} {q(docker_dir + '/ca.crt')}",
            f"sudo mkdir -p {q(containers_dir)} && sudo cp {ca} {q(containers_dir + '/ca.crt')}  # podman, skopeo",
            f"curl --cacert {ca} {q(f'https://{host_port}/v2/')}",
        ]
    return "\n".join(lines) + "\n"


def install_docker_ca(ca_cert: Path, host_port: str, root: Path = Path("/etc/docker/certs.d")) -> Path:
    """Install `ca_cert` as `root/HOST:PORT/ca.crt` (what docker reads for that registry); return its path."""
    _check_host_port(host_port)
    load_certificate_chain(ca_cert)  # refuse to install something that is not a certificate
    directory = Path(root) / host_port
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    target = directory / "ca.crt"
    atomic_write(target, Path(ca_cert).read_bytes(), 0o644)
    return target


_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+)(?::(?P<port>[0-9]{1,5}))?")


def _check_host_port(host_port: str) -> None:
    # The value becomes a directory name under /etc, so anything but a host and port (e.g. "../x") is refused.
    match = _HOST_PORT.fullmatch(host_port)
    valid = match is not None
    if match is not None:
        host, port = match["host"], match["port"]
        if host.startswith("["):
            valid = isinstance(_ip_or_none(host[1:-1]), ipaddress.IPv6Address)
        else:
            valid = (is_dns_name(host) and not host.startswith("*")) or _ip_or_none(host) is not None
        valid = valid and (port is None or 0 < int(port) < 65536)
    if not valid:
        raise ValueError(
            f"invalid registry address {host_port!r}: expected HOST:PORT, e.g. registry.lan:5000"
        )


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
