"""The one conformance suite for every storage driver (distribution's storage/driver/testsuites).

A driver's test file subclasses `DriverSuite` and gives the `driver` fixture, a fresh empty driver per test,
either in the class or once at module level, where the file's other tests use it too:

    @pytest.fixture
    def driver(tmp_path: Path) -> StorageDriver:
        return FilesystemDriver(tmp_path / "root")


    class TestFilesystemDriver(DriverSuite):
        pass

Everything the registry relies on is asserted here, through the `StorageDriver` protocol only: nothing about
files, directories or objects, so an object-store driver passes the same tests.
"""

from __future__ import annotations

import hashlib

import pytest

from secreg.storage.driver import InvalidPath, PathNotFound, StorageDriver


class DriverSuite:
    """Subclass as `Test<Driver>` and define the `driver` fixture (in the class or in its module): the tests
    here take it as an argument and declare no default, which would hide a module-level one."""

    def test_write_read_replace(self, driver: StorageDriver) -> None:
        driver.write_bytes("a/b/c", b"one")
        assert driver.read_bytes("a/b/c") == b"one"
        driver.write_bytes("a/b/c", b"two")
        assert driver.read_bytes("a/b/c") == b"two"
        assert driver.stat("a/b/c").size == 3
        assert driver.exists("a/b/c") and not driver.exists("a/b/d")

    def test_write_files_in_stages(self, driver: StorageDriver) -> None:
        driver.write_bytes("m/tags/t/current", b"old")
        driver.write_files([
            [("m/data", b"bytes"), ("m/type", b"text/plain")],
            [("m/link", b"sha256:1")],
            [],
            [("m/tags/t/current", b"new"), ("m/tags/u/current", b"")],
        ])
        assert [driver.read_bytes(p) for p in ("m/data", "m/type", "m/link", "m/tags/t/current",
                                               "m/tags/u/current")] == [b"bytes", b"text/plain", b"sha256:1",
                                                                       b"new", b""]
        assert sorted(driver.list("m")) == ["data", "link", "tags", "type"]
        assert sorted(driver.list("m/tags/t")) == ["current"]
        driver.write_files([])

    def test_transient_write_read_replace(self, driver: StorageDriver) -> None:
        for data in (b"\x00state\nwith a newline", b"", b"two"):
            driver.write_transient("a/hashstates/sha256/5", data)
            assert driver.read_transient("a/hashstates/sha256/5") == data
        with pytest.raises(PathNotFound):
            driver.read_transient("a/hashstates/sha256/6")

    def test_empty_file(self, driver: StorageDriver) -> None:
        driver.write_bytes("empty", b"")
        assert driver.read_bytes("empty") == b"" and driver.stat("empty").size == 0

    def test_missing_paths(self, driver: StorageDriver) -> None:
        for call in (lambda: driver.read_bytes("nope"), lambda: driver.stat("nope"), lambda: driver.list("nope"),
                     lambda: driver.delete("nope"), lambda: driver.open_read("nope"),
                     lambda: driver.move("x", "y")):
            with pytest.raises(PathNotFound):
                call()
        assert list(driver.walk_files("nope")) == []
        assert not driver.exists("nope")

    def test_directories_exist_through_their_files(self, driver: StorageDriver) -> None:
        driver.write_bytes("d/sub/file", b"x")
        assert driver.exists("d") and driver.exists("d/sub")
        assert driver.stat("d/sub").is_dir and not driver.stat("d/sub/file").is_dir
        assert driver.list("d") == ["sub"]

    def test_list_hides_temporaries_and_walk(self, driver: StorageDriver) -> None:
        driver.write_bytes("d/one", b"1")
        driver.write_bytes("d/sub/two", b"22")
        assert sorted(driver.list("d")) == ["one", "sub"]
        assert sorted((f.path, f.size) for f in driver.walk_files("d")) == [("d/one", 1), ("d/sub/two", 2)]
        assert all(f.mtime > 0 and not f.is_dir for f in driver.walk_files("d"))

    def test_walk_only_hint_keeps_the_named_files(self, driver: StorageDriver) -> None:
        """`only` is a hint: the named file of each hinted directory is there; others may be too."""
        for path, data in (("h/a/data", b"1"), ("h/a/other", b"2"), ("h/b/data", b"33"), ("h/c/x/data", b"4"),
                           ("h/top", b"5")):
            driver.write_bytes(path, data)
        only = lambda d: "data" if d.count("/") == 1 else None  # noqa: E731
        every = {"h/a/data", "h/a/other", "h/b/data", "h/c/x/data", "h/top"}
        must = {"h/a/data", "h/b/data", "h/top"}
        walked = {f.path: f.size for f in driver.walk_files("h", only)}
        assert must <= set(walked) <= every and walked["h/b/data"] == 2 and walked["h/top"] == 1
        assert must <= set(driver.walk_paths("h", None, only)) <= every

    def test_streaming_read_with_seek(self, driver: StorageDriver) -> None:
        driver.write_bytes("blob", bytes(range(256)) * 4)
        with driver.open_read("blob") as handle:
            handle.seek(300)
            assert handle.read(4) == bytes([44, 45, 46, 47])

    def test_append_truncate_lock(self, driver: StorageDriver) -> None:
        writer = driver.open_append("up/data")
        try:
            assert writer.try_lock()
            writer.write(b"hello ")
            writer.write(memoryview(b"world"))
            writer.flush()
            assert writer.size == 11
            second = driver.open_append("up/data")
            try:
                assert not second.try_lock()
            finally:
                second.close()
            writer.truncate(5)  # within bytes not yet handed to an object store (see AppendWriter)
            writer.sync()  # finished: readable as a whole from here on
        finally:
            writer.close()
        assert driver.read_bytes("up/data") == b"hello"

    def test_append_resumes_and_observes_every_byte(self, driver: StorageDriver) -> None:
        seen = hashlib.sha256()
        writer = driver.open_append("up/data")
        try:
            writer.write_pieces([b"ab", bytearray(b"cd"), memoryview(b"ef")], seen.update)
        finally:
            writer.close()
        again = driver.open_append("up/data")
        try:
            assert again.size == 6
            again.write(b"gh" * 100_000, seen.update)
            again.sync()
        finally:
            again.close()
        data = driver.read_bytes("up/data")
        assert data == b"abcdef" + b"gh" * 100_000
        assert seen.hexdigest() == hashlib.sha256(data).hexdigest()
        assert driver.stat("up/data").size == len(data)

    def test_move_and_delete_tree(self, driver: StorageDriver) -> None:
        driver.write_bytes("src/file", b"x")
        driver.move("src/file", "dst/deep/file")
        assert driver.read_bytes("dst/deep/file") == b"x" and not driver.exists("src/file")
        driver.delete("dst")
        assert not driver.exists("dst/deep/file") and not driver.exists("dst")

    def test_move_replaces_and_moves_trees(self, driver: StorageDriver) -> None:
        driver.write_bytes("new", b"new")
        driver.write_bytes("old", b"old")
        driver.move("new", "old")
        assert driver.read_bytes("old") == b"new" and not driver.exists("new")
        driver.write_bytes("tree/a/one", b"1")
        driver.write_bytes("tree/two", b"2")
        driver.move("tree", "elsewhere/tree")
        assert sorted(f.path for f in driver.walk_files("elsewhere")) == ["elsewhere/tree/a/one",
                                                                         "elsewhere/tree/two"]
        assert not driver.exists("tree")

    def test_delete_one_file_keeps_its_siblings(self, driver: StorageDriver) -> None:
        driver.write_bytes("d/keep", b"1")
        driver.write_bytes("d/drop", b"2")
        driver.delete("d/drop")
        assert driver.list("d") == ["keep"]

    def test_paths_cannot_escape(self, driver: StorageDriver) -> None:
        for bad in ("../etc/passwd", "/etc/passwd", "a/../../b", "a\x00b"):
            with pytest.raises(InvalidPath):
                driver.read_bytes(bad)
            with pytest.raises(InvalidPath):
                driver.write_bytes(bad, b"x")

    def test_local_path_is_the_file_or_none(self, driver: StorageDriver) -> None:
        driver.write_bytes("f", b"local")
        local = driver.local_path("f")
        if local is not None:
            with open(local, "rb") as handle:
                assert handle.read() == b"local"
