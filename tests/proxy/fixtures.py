"""The real upstreams of the pull-through cache tests as module-scoped fixtures (see upstreams.py), shared by
tests/proxy/ and tests/e2e/ (their conftests import them). `go_hub` needs the
`go_registry_bin` fixture (tests/e2e/conftest.py: a missing docker-registry binary skips, or fails in CI)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .upstreams import Pusher, Upstream, go_upstream, secreg_upstream


@pytest.fixture(scope="module")
def go_hub(tmp_path_factory: pytest.TempPathFactory, go_registry_bin: str) -> Iterator[Upstream]:
    """The Go reference registry with htpasswd auth."""
    with go_upstream(tmp_path_factory.mktemp("go-upstream")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def token_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A second `secreg serve` with token auth."""
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
