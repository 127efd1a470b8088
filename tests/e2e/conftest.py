"""Session fixtures for end-to-end tests: a private Docker engine, skopeo and the Go reference registry.

A missing component skips the tests that need it, except in CI (environment variable CI set), where it
fails them: .ci/run installs every component, so a skip there would hide a broken setup.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.proxy.fixtures import go_hub, token_upstream

from .harness import (
    GO_REGISTRY_BIN,
    STRICT_NAME,
    DockerBinaries,
    DockerEngine,
    ci_mode,
    ipv6_loopback_available,
    start_docker_engine,
)

_HERE = Path(__file__).resolve().parent
__all__ = ["go_hub", "token_upstream"]  # the pull-through cache's upstreams (test_proxy_mirror.py), shared


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def unavailable(reason: str) -> NoReturn:
    """Skip outside CI; fail in CI, where .ci/run should have provided the component."""
    if ci_mode():
        pytest.fail(f"{reason} (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, package: str, default: str | None = None) -> str:
    path = shutil.which(name) or (default if default and os.access(default, os.X_OK) else None)
    if path is None:
        unavailable(f"{name} not found in PATH (Debian package {package})")
    return path


def require_root(purpose: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{purpose} needs root")


@pytest.fixture(scope="session")
def docker_binaries() -> DockerBinaries:
    """The docker CLI and dockerd, checked to exist and to be usable (root); for tests that start
    their own engine with start_docker_engine(..., docker_bin=b.docker, dockerd_bin=b.dockerd)."""
    binaries = DockerBinaries(require_binary("docker", "docker.io"), require_binary("dockerd", "docker.io"))
    require_root("dockerd (and writing /etc/docker/certs.d)")
    return binaries


@pytest.fixture(scope="session")
def docker_engine(
    tmp_path_factory: pytest.TempPathFactory, docker_binaries: DockerBinaries
) -> Iterator[DockerEngine]:
    """One private dockerd for the whole session (tests must use unique image names and tags)."""
    workdir = tmp_path_factory.mktemp("docker-engine")
    with start_docker_engine(
        workdir, docker_bin=docker_binaries.docker, dockerd_bin=docker_binaries.dockerd
    ) as engine:
        print(f"\n[e2e] dockerd ready in {engine.startup_seconds:.2f} s ({engine.socket})")
        yield engine


@pytest.fixture(scope="session")
def containerd_bin() -> str:
    """containerd (and its ctr), checked to exist, for tests that start a private one (harness.start_containerd)."""
    require_binary("ctr", "containerd")
    path = require_binary("containerd", "containerd")
    require_root("containerd (mounts and its state directories)")
    return path


@pytest.fixture(scope="session")
def skopeo_bin() -> str:
    return require_binary("skopeo", "skopeo")


@pytest.fixture(scope="session")
def go_registry_bin() -> str:
    return require_binary("docker-registry", "docker-registry", default=GO_REGISTRY_BIN)


@pytest.fixture(scope="session")
def ipv6_loopback() -> str:
    """'::1', for registries dockerd must verify TLS for (it never verifies for 127.0.0.0/8)."""
    if not ipv6_loopback_available():
        unavailable("IPv6 loopback ::1 is not available")
    return "::1"


@pytest.fixture
def timings() -> Iterator[dict[str, float]]:
    """Durations by name (fill it with harness.timed); printed after the test, visible with -s."""
    recorded: dict[str, float] = {}
    yield recorded
    if recorded:
        print("\n[e2e timing] " + ", ".join(f"{k} {v:.2f} s" for k, v in recorded.items()))


@pytest.fixture(scope="module")
def verifying_engine(
    tmp_path_factory: pytest.TempPathFactory, docker_binaries: DockerBinaries, ipv6_loopback: str
) -> Iterator[DockerEngine]:
    """A private dockerd that resolves STRICT_NAME to ::1, so it verifies TLS for a registry served there
    (dockerd never verifies TLS for 127.0.0.0/8). One per test module."""
    with start_docker_engine(
        tmp_path_factory.mktemp("verifying-engine"),
        hosts={STRICT_NAME: ipv6_loopback},
        docker_bin=docker_binaries.docker,
        dockerd_bin=docker_binaries.dockerd,
    ) as started:
        yield started
