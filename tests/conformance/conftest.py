from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conformance.classic import ClassicData
from tests.server import RunningServer, run_secreg


@pytest.fixture(scope="module")
def data() -> ClassicData:
    """The classic suite's data (setup.go), fresh per module as the suite is fresh per run."""
    return ClassicData()


@pytest.fixture(scope="module")
def state() -> dict[str, object]:
    """What one spec hands the next (`lastResponse`, `prevResponse`, `tagList`...): the suite's specs run in
    order and share variables, so the ported tests of one module do too."""
    return {}


@pytest.fixture(scope="module")
def closed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A registry with auth off and deletes off (the default): for the specs written for registries that
    refuse deletes."""
    workdir = tmp_path_factory.mktemp("closed-registry")
    with run_secreg(workdir, {"auth": {"enabled": False}}) as server:
        yield server


@pytest.fixture()
def closed(closed_server: RunningServer) -> Iterator[httpx.Client]:
    with closed_server.client() as c:
        yield c
