"""The driver conformance suite against the filesystem driver, plus what only a filesystem shows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from secreg.storage.driver import StorageDriver
from secreg.storage.filesystem import FilesystemDriver
from tests.storage.driver_suite import DriverSuite


class TestFilesystemDriver(DriverSuite):
    @pytest.fixture
    def driver(self, tmp_path: Path) -> StorageDriver:
        return FilesystemDriver(tmp_path / "root")


class TestFilesystemDriverBuffered(DriverSuite):
    """Without O_DIRECT (`storage.filesystem.directio: false`)."""

    @pytest.fixture
    def driver(self, tmp_path: Path) -> StorageDriver:
        return FilesystemDriver(tmp_path / "root", direct_io=False)


def test_files_written_atomically_leave_no_temporaries(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    for i in range(20):
        driver.write_bytes("x/link", str(i).encode())
    assert os.listdir(tmp_path / "x") == ["link"]
