"""Module-scoped real upstreams (see upstreams.py); a missing docker-registry binary skips, or fails in CI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import require_binary
from tests.e2e.harness import GO_REGISTRY_BIN

from .upstreams import Pusher, Upstream, go_upstream, secreg_upstream


@pytest.fixture(scope="session")
def go_registry_bin() -> str:
    return require_binary("docker-registry", "docker-registry", default=GO_REGISTRY_BIN)


@pytest.fixture(scope="module")
def go_hub(tmp_path_factory: pytest.TempPathFactory, go_registry_bin: str) -> Iterator[Upstream]:
    with go_upstream(tmp_path_factory.mktemp("go-upstream")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def token_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with secreg_upstream(tmp_path_factory.mktemp("secreg-upstream")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def go_pusher(go_hub: Upstream) -> Iterator[Pusher]:
    pusher = Pusher(go_hub)
    yield pusher
    pusher.close()


@pytest.fixture(scope="module")
def token_pusher(token_upstream: Upstream) -> Iterator[Pusher]:
    pusher = Pusher(token_upstream)
    yield pusher
    pusher.close()
