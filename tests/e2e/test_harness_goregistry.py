"""The harness proven against the Go reference registry over TLS, our CA trusted only through certs.d.

These tests are the template for secreg's own end-to-end tests: replace start_go_registry with secreg's
server and keep the client side. Image names are unique per test because the Docker engine is shared.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from secreg.tls import CertificateFiles, generate_certificates

from .harness import (
    CERTS_D,
    DockerBinaries,
    DockerEngine,
    GoRegistry,
    build_image,
    free_port,
    image_exists,
    image_id,
    push_digest,
    skopeo,
    skopeo_json,
    start_docker_engine,
    start_go_registry,
    timed,
    trust_ca,
)

pytestmark = pytest.mark.e2e

# Resolved to ::1 by a dockerd started with hosts={STRICT_NAME: "::1"}; .test is reserved (RFC 2606).
STRICT_NAME = "registry.e2e.test"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return generate_certificates(
        tmp_path_factory.mktemp("certs") / "tls", ["localhost", STRICT_NAME], ["127.0.0.1", "::1"]
    )


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory, certs: CertificateFiles) -> Path:
    """A skopeo --cert-dir holding only our CA, independent of /etc/docker/certs.d."""
    directory = tmp_path_factory.mktemp("skopeo-certs")
    shutil.copy(certs.ca_cert, directory / "ca.crt")
    return directory


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory,
    certs: CertificateFiles,
    go_registry_bin: str,
    docker_engine: DockerEngine,
) -> Iterator[GoRegistry]:
    """The Go registry on 127.0.0.1 with deletes enabled (extra_config), its CA trusted via certs.d."""
    with (
        start_go_registry(
            tmp_path_factory.mktemp("go-registry"),
            free_port(),
            certs.server_cert,
            certs.server_key,
            {"storage": {"delete": {"enabled": True}}},
            ca_cert=certs.ca_cert,
            binary=go_registry_bin,
        ) as reg,
        trust_ca(certs.ca_cert, reg.host_port),
    ):
        yield reg


@dataclass(frozen=True)
class Pushed:
    ref: str
    local_tag: str
    image_id: str
    digest: str


@pytest.fixture(scope="module")
def pushed(docker_engine: DockerEngine, registry: GoRegistry) -> Pushed:
    """A 3-layer image built, tagged as REGISTRY/team/app:1.0 and pushed."""
    timings: dict[str, float] = {}
    with timed(timings, "build 3x2MiB"):
        built = build_image(docker_engine, "e2e/app:src", layers=3, seed=1)
    ref = f"{registry.host_port}/team/app:1.0"
    docker_engine.run("tag", "e2e/app:src", ref)
    with timed(timings, "push"):
        out = docker_engine.run("push", ref).stdout
    assert out.count("Pushed") == 3, out
    print("\n[e2e timing] " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return Pushed(ref, "e2e/app:src", built, push_digest(out))


def test_docker_push_rmi_pull_round_trip(
    docker_engine: DockerEngine, registry: GoRegistry, pushed: Pushed, timings: dict[str, float]
) -> None:
    docker_engine.run("rmi", pushed.ref, pushed.local_tag)
    assert not image_exists(docker_engine, pushed.image_id)

    with timed(timings, "pull"):
        out = docker_engine.run("pull", pushed.ref).stdout
    assert f"Digest: {pushed.digest}" in out
    assert image_id(docker_engine, pushed.ref) == pushed.image_id

    second = f"{registry.host_port}/team/app:1.1"
    docker_engine.run("tag", pushed.ref, second)
    out = docker_engine.run("push", second).stdout
    assert out.count("Layer already exists") == 3, out
    assert push_digest(out) == pushed.digest


def test_skopeo_inspect_copy_list_tags_delete(
    skopeo_bin: str, registry: GoRegistry, pushed: Pushed, cert_dir: Path
) -> None:
    source = f"docker://{registry.host_port}/team/app:1.0"
    info = skopeo_json("inspect", "--cert-dir", str(cert_dir), source)
    assert info["Digest"] == pushed.digest
    assert len(info["Layers"]) == 3

    copy = f"docker://{registry.host_port}/team/app-copy:1.0"
    skopeo("copy", "--src-cert-dir", str(cert_dir), "--dest-cert-dir", str(cert_dir), source, copy)
    tags = skopeo_json(
        "list-tags", "--cert-dir", str(cert_dir), f"docker://{registry.host_port}/team/app-copy"
    )
    assert tags["Tags"] == ["1.0"]
    assert skopeo_json("inspect", "--cert-dir", str(cert_dir), copy)["Digest"] == pushed.digest

    # Deleting works only because extra_config enabled it (the Go registry answers 405 otherwise).
    skopeo("delete", "--cert-dir", str(cert_dir), copy)
    assert skopeo("inspect", "--cert-dir", str(cert_dir), copy, check=False).returncode != 0


def test_skopeo_refuses_a_registry_whose_ca_it_does_not_trust(
    skopeo_bin: str, registry: GoRegistry, pushed: Pushed, tmp_path: Path
) -> None:
    # An explicit --cert-dir replaces /etc/docker/certs.d, so an empty one means "trust no private CA".
    result = skopeo("inspect", "--cert-dir", str(tmp_path), f"docker://{pushed.ref}", check=False)
    assert result.returncode != 0
    assert "certificate signed by unknown authority" in result.stderr


def test_login_credentials_stay_in_the_private_docker_config(
    docker_engine: DockerEngine,
    certs: CertificateFiles,
    cert_dir: Path,
    skopeo_bin: str,
    go_registry_bin: str,
    tmp_path: Path,
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(b"alice:" + bcrypt.hashpw(b"s3cret-pw", bcrypt.gensalt(rounds=5)) + b"\n")
    home_config = Path.home() / ".docker" / "config.json"
    before = home_config.read_bytes() if home_config.exists() else None
    auth = {"auth": {"htpasswd": {"realm": "e2e", "path": str(htpasswd)}}}
    with (
        start_go_registry(
            tmp_path / "registry",
            free_port(),
            certs.server_cert,
            certs.server_key,
            auth,
            ca_cert=certs.ca_cert,
            binary=go_registry_bin,
        ) as reg,
        trust_ca(certs.ca_cert, reg.host_port),
    ):
        ref = f"{reg.host_port}/team/private:1.0"
        build_image(docker_engine, ref, layers=1, layer_size=4096, seed=2)
        denied = docker_engine.run("push", ref, check=False)
        assert denied.returncode != 0
        assert "no basic auth credentials" in denied.stderr

        docker_engine.login(reg.host_port, "alice", "s3cret-pw")
        try:
            docker_engine.run("push", ref)
            stored = json.loads((docker_engine.config_dir / "config.json").read_text())
            assert reg.host_port in stored["auths"]
        finally:
            docker_engine.logout(reg.host_port)

        creds = ["--cert-dir", str(cert_dir), f"docker://{ref}"]
        assert skopeo("inspect", "--creds", "alice:s3cret-pw", *creds).returncode == 0
        anonymous = skopeo("inspect", "--no-creds", *creds, check=False)
        assert anonymous.returncode != 0
        assert "unauthorized" in anonymous.stderr.lower() or "authentication required" in anonymous.stderr
    after = home_config.read_bytes() if home_config.exists() else None
    assert after == before


def test_dockerd_does_not_verify_tls_on_loopback_ips(
    docker_engine: DockerEngine, go_registry_bin: str, tmp_path: Path
) -> None:
    """Pins the pitfall behind STRICT_NAME: dockerd treats 127.0.0.0/8 as an insecure registry."""
    untrusted = generate_certificates(tmp_path / "untrusted", ["localhost"], ["127.0.0.1"])
    port = free_port()
    assert not (CERTS_D / f"127.0.0.1:{port}").exists()
    with start_go_registry(
        tmp_path / "registry",
        port,
        untrusted.server_cert,
        untrusted.server_key,
        ca_cert=untrusted.ca_cert,
        binary=go_registry_bin,
    ) as reg:
        ref = f"{reg.host_port}/team/unverified:1.0"
        build_image(docker_engine, ref, layers=1, layer_size=4096, seed=3)
        assert docker_engine.run("push", ref, check=False).returncode == 0


def test_dockerd_verifies_tls_for_a_name_resolving_to_ipv6_loopback(
    docker_binaries: DockerBinaries,
    go_registry_bin: str,
    ipv6_loopback: str,
    certs: CertificateFiles,
    tmp_path: Path,
    timings: dict[str, float],
) -> None:
    with (
        start_docker_engine(
            tmp_path / "engine",
            hosts={STRICT_NAME: ipv6_loopback},
            docker_bin=docker_binaries.docker,
            dockerd_bin=docker_binaries.dockerd,
        ) as engine,
        start_go_registry(
            tmp_path / "registry",
            free_port(ipv6_loopback),
            certs.server_cert,
            certs.server_key,
            host=ipv6_loopback,
            ca_cert=certs.ca_cert,
            binary=go_registry_bin,
        ) as reg,
    ):
        timings["dockerd start (private /etc/hosts)"] = engine.startup_seconds
        host_port = f"{STRICT_NAME}:{reg.port}"
        ref = f"{host_port}/team/strict:1.0"
        built = build_image(engine, ref, layers=2, layer_size=64 * 1024, seed=4)

        refused = engine.run("push", ref, check=False)
        assert refused.returncode != 0
        assert "certificate signed by unknown authority" in refused.stderr

        with trust_ca(certs.ca_cert, host_port):
            engine.run("push", ref)
            engine.run("rmi", ref)
            engine.run("pull", ref)
        assert image_id(engine, ref) == built


def test_a_second_engine_runs_beside_the_first(
    docker_engine: DockerEngine, docker_binaries: DockerBinaries, tmp_path: Path
) -> None:
    build_image(docker_engine, "e2e/only-in-first:1", layers=1, layer_size=1024, seed=5)
    with start_docker_engine(
        tmp_path / "second", docker_bin=docker_binaries.docker, dockerd_bin=docker_binaries.dockerd
    ) as second:
        assert second.socket != docker_engine.socket
        assert second.namespace != docker_engine.namespace
        assert not image_exists(second, "e2e/only-in-first:1")
        # With no system containerd, each dockerd supervises its own, with its socket under its exec-root.
        if not Path("/run/containerd/containerd.sock").exists():
            assert (second.exec_root / "containerd" / "containerd.sock").is_socket()
            assert (docker_engine.exec_root / "containerd" / "containerd.sock").is_socket()
        second_process = second.process
        short_dir = second.short_dir
    assert second_process is not None and second_process.poll() is not None
    assert not short_dir.exists()
    assert image_exists(docker_engine, "e2e/only-in-first:1")
