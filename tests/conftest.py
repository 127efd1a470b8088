from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import RunningServer, run_secreg


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A registry with auth off and deletes on: for testing the API itself."""
    workdir = tmp_path_factory.mktemp("open-registry")
    config = {"auth": {"enabled": False}, "storage": {"delete": {"enabled": True}}}
    with run_secreg(workdir, config) as server:
        yield server


@pytest.fixture()
def client(open_server: RunningServer) -> Iterator[httpx.Client]:
    with open_server.client() as c:
        yield c


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    return tmp_path
