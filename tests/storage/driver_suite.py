"""One conformance suite for every storage driver (today: the filesystem driver)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from secreg.storage.driver import InvalidPath, PathNotFound, StorageDriver
from secreg.storage.filesystem import FilesystemDriver

DRIVERS: dict[str, Callable[[Path], StorageDriver]] = {"filesystem": FilesystemDriver}


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    return DRIVERS[request.param](tmp_path / "root")


def test_write_read_replace(driver: StorageDriver) -> None:
    driver.write_bytes("a/b/c", b"one")
    assert driver.read_bytes("a/b/c") == b"one"
    driver.write_bytes("a/b/c", b"two")
    assert driver.read_bytes("a/b/c") == b"two"
    assert driver.stat("a/b/c").size == 3
    assert driver.exists("a/b/c") and not driver.exists("a/b/d")


def test_missing_paths(driver: StorageDriver) -> None:
    for call in (lambda: driver.read_bytes("nope"), lambda: driver.stat("nope"), lambda: driver.list("nope"),
                 lambda: driver.delete("nope"), lambda: driver.open_read("nope"), lambda: driver.move("x", "y")):
        with pytest.raises(PathNotFound):
            call()
    assert list(driver.walk_files("nope")) == []


def test_list_hides_temporaries_and_walk(driver: StorageDriver) -> None:
    driver.write_bytes("d/one", b"1")
    driver.write_bytes("d/sub/two", b"22")
    assert sorted(driver.list("d")) == ["one", "sub"]
    assert sorted((f.path, f.size) for f in driver.walk_files("d")) == [("d/one", 1), ("d/sub/two", 2)]


def test_append_truncate_lock(driver: StorageDriver) -> None:
    writer = driver.open_append("up/data")
    try:
        assert writer.try_lock()
        writer.write(b"hello ")
        writer.write(memoryview(b"world"))
        writer.sync()
        assert writer.size == 11
        second = driver.open_append("up/data")
        try:
            assert not second.try_lock()
        finally:
            second.close()
        writer.truncate(5)
    finally:
        writer.close()
    assert driver.read_bytes("up/data") == b"hello"


def test_move_and_delete_tree(driver: StorageDriver) -> None:
    driver.write_bytes("src/file", b"x")
    driver.move("src/file", "dst/deep/file")
    assert driver.read_bytes("dst/deep/file") == b"x" and not driver.exists("src/file")
    driver.delete("dst")
    assert not driver.exists("dst/deep/file")


def test_paths_cannot_escape(driver: StorageDriver) -> None:
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../b", "a\x00b"):
        with pytest.raises(InvalidPath):
            driver.read_bytes(bad)


def test_files_written_atomically_leave_no_temporaries(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    for i in range(20):
        driver.write_bytes("x/link", str(i).encode())
    assert os.listdir(tmp_path / "x") == ["link"]
