"""The driver conformance suite against the filesystem driver, plus what only a filesystem shows."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from secreg.storage import filesystem
from secreg.storage.driver import PathNotFound, StorageDriver
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


def test_staged_files_are_on_disk_before_the_next_stage_appears(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`write_files`: every temporary file fsynced (side by side) before any rename; a stage renamed only once
    the directories of the stage before it are fsynced; nothing left over."""
    driver = FilesystemDriver(tmp_path)
    events: list[tuple[str, str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), threading.get_ident()))

    def replace(source: str, target: str) -> None:
        events.append(("rename", str(target), threading.get_ident()))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    driver.write_files([[("blob/data", b"d"), ("rev/type", b"t")], [("rev/link", b"l")],
                        [("tag/index/link", b"l")], [("tag/current/link", b"l"), ("other/current/link", b"l")]])
    root = str(tmp_path.resolve())
    temps = [i for i, (kind, path, _) in enumerate(events) if kind == "fsync" and path.endswith(".tmp-secreg")]
    renames = [i for i, (kind, _, _) in enumerate(events) if kind == "rename"]
    assert len(temps) == 6 and max(temps) < min(renames)
    assert len({events[i][2] for i in temps}) > 1  # side by side, not one after the other
    order = [events[i][1][len(root) + 1:] for i in renames]
    assert order == ["blob/data", "rev/type", "rev/link", "tag/index/link", "tag/current/link", "other/current/link"]

    def dir_synced_before(directory: str, rename: str) -> bool:
        synced = [i for i, (kind, path, _) in enumerate(events) if kind == "fsync" and path == f"{root}/{directory}"]
        renamed = next(i for i, (kind, path, _) in enumerate(events) if kind == "rename" and path == f"{root}/{rename}")
        return any(i < renamed for i in synced)

    assert dir_synced_before("blob", "rev/link") and dir_synced_before("rev", "rev/link")
    assert dir_synced_before("rev", "tag/index/link") and dir_synced_before("tag/index", "tag/current/link")
    assert not dir_synced_before("tag/index", "tag/index/link")
    assert all(not name.endswith(".tmp-secreg") for _, _, names in os.walk(tmp_path) for name in names)


def test_staged_files_after_a_failed_stage_never_appear(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    (tmp_path / "b" / "link" / "in-the-way").mkdir(parents=True)  # a rename onto a non-empty directory fails
    with pytest.raises(OSError):
        driver.write_files([[("a/data", b"1")], [("b/link", b"2")], [("c/tag", b"3")]])
    assert driver.read_bytes("a/data") == b"1" and not driver.exists("c/tag")
    assert all(not name.endswith(".tmp-secreg") for _, _, names in os.walk(tmp_path) for name in names)


def test_transient_files_skip_fsync_and_are_refused_after_a_restart(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No fsync (a PATCH of a chunked push saved its hash state with two); a file from an earlier boot, or what a
    crash left of one (empty, cut), reads as absent: it may describe data that never reached the disk."""
    driver = FilesystemDriver(tmp_path)
    assert filesystem.BOOT_ID  # Linux
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    driver.write_transient("u/hashstates/sha256/10", b"state")
    assert synced == [] and driver.read_transient("u/hashstates/sha256/10") == b"state"
    assert os.listdir(tmp_path / "u/hashstates/sha256") == ["10"]
    monkeypatch.setattr(filesystem, "BOOT_ID", b"another-boot")
    with pytest.raises(PathNotFound):
        driver.read_transient("u/hashstates/sha256/10")
    driver.write_transient("u/hashstates/sha256/10", b"state")
    for leftover in (b"", b"secreg-transient-1", b"state", b"secreg-transient-1 other-boot\nstate"):
        (tmp_path / "u/hashstates/sha256/10").write_bytes(leftover)
        with pytest.raises(PathNotFound):
            driver.read_transient("u/hashstates/sha256/10")


def test_transient_files_without_a_boot_id_are_written_durably(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FilesystemDriver(tmp_path)
    monkeypatch.setattr(filesystem, "BOOT_ID", b"")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    driver.write_transient("u/state", b"x")
    assert len(synced) == 2  # the file and its directory
    assert driver.read_transient("u/state") == b"x"
    monkeypatch.setattr(filesystem, "BOOT_ID", b"a-later-boot")
    assert driver.read_transient("u/state") == b"x"  # fsynced: valid after a restart too


def test_a_transient_file_is_rewritten_in_place(tmp_path: Path) -> None:
    """After the first write (temp file and rename) a transient file keeps its inode: no temp file, no inode
    allocated or freed per write; a shorter record cuts off the longer one before it."""
    driver = FilesystemDriver(tmp_path)
    driver.write_transient("u/committed", b"1" * 100)
    inode = os.stat(tmp_path / "u/committed").st_ino
    for data in (b"22", b"", b"\n333\n"):
        driver.write_transient("u/committed", data)
        assert driver.read_transient("u/committed") == data
        assert os.stat(tmp_path / "u/committed").st_ino == inode
    assert os.listdir(tmp_path / "u") == ["committed"]
    assert os.stat(tmp_path / "u/committed").st_size < 100


def test_a_transient_file_read_while_rewritten_or_garbled_is_never_wrong(tmp_path: Path) -> None:
    """A rewrite in place may overlap a read: what is read is the old record, the new one, or (length or
    checksum wrong) nothing; a record a crash cut off or changed reads as absent."""
    driver = FilesystemDriver(tmp_path)
    driver.write_transient("u/committed", b"0" * 20)
    written = {b"%020d" % 0}
    stop = threading.Event()

    def rewrite() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            written.add(b"%020d" % i)  # before the write: a reader may see it the moment it starts
            driver.write_transient("u/committed", b"%020d" % i)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(3000):
            try:
                assert driver.read_transient("u/committed") in written
            except PathNotFound:
                pass  # torn three times in a row: absent, never wrong
    finally:
        stop.set()
        writer.join()
    record = (tmp_path / "u/committed").read_bytes()
    changed = record[:-1] + (b"8" if record.endswith(b"9") else b"9")
    for garbled in (record[:-1], changed, record[:record.index(b"\n")], record + b"tail"):
        (tmp_path / "u/committed").write_bytes(garbled)
        if garbled == record + b"tail":
            assert driver.read_transient("u/committed") == record.partition(b"\n")[2]  # past its length
        else:
            with pytest.raises(PathNotFound):
                driver.read_transient("u/committed")


def test_walk_files_and_paths_cover_a_tree_walked_in_threads(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    expected = {}
    for i in range(300):  # more directories than the walk lists alone before it shares them out
        path = f"tree/{i % 7}/{i:03d}/data" if i % 2 else f"tree/{i % 7}/{i:03d}/deeper/still/f{i}"
        driver.write_bytes(path, b"x" * i)
        expected[path] = i
    driver.write_bytes("tree/top", b"top")
    expected["tree/top"] = 3
    os.symlink(tmp_path / "tree" / "0", tmp_path / "tree" / "link-to-dir")  # never entered
    infos = list(driver.walk_files("tree"))
    assert {info.path: info.size for info in infos} == expected
    assert sorted(driver.walk_paths("tree")) == sorted(expected)
    assert list(driver.walk_files("missing")) == [] and list(driver.walk_paths("missing")) == []
    pruned = set(driver.walk_paths("tree", lambda d: d.endswith("/deeper")))
    assert pruned == {p for p in expected if "/deeper/" not in p}


def test_walk_only_hint_stats_the_named_file_as_the_listing_gives_it(tmp_path: Path) -> None:
    """A hinted directory is not listed: its named file is stat()ed, and the walk gives what the full walk gives
    of that file (followed symlinks, no directories), in threads too."""
    driver = FilesystemDriver(tmp_path)
    root = tmp_path / "tree"
    for i in range(100):  # more directories than the walk lists alone before it shares them out
        driver.write_bytes(f"tree/{i % 5}/{i:03d}/data", b"x" * i)
        driver.write_bytes(f"tree/{i % 5}/{i:03d}/other", b"o")
    driver.write_bytes("tree/0/file/data/inside", b"i")  # `data` is a directory: nothing from it
    driver.write_bytes("tree/1/nodata/else", b"e")
    driver.write_bytes("tree/target", b"target")
    (root / "2" / "tofile").mkdir()
    os.symlink(root / "target", root / "2" / "tofile" / "data")
    (root / "2" / "todir").mkdir()
    os.symlink(root / "0", root / "2" / "todir" / "data")
    (root / "2" / "broken").mkdir()
    os.symlink(root / "nowhere", root / "2" / "broken" / "data")
    os.symlink(root / "3", root / "4" / "dirlink")  # a symlinked directory is never entered, hinted or not

    def only(directory: str) -> str | None:
        return "data" if directory.count("/") == 2 else None

    def taken(path: str) -> bool:  # what the hint keeps of a full walk
        parts = path.split("/")
        return len(parts) != 4 or parts[3] == "data"

    full = {info.path: (info.size, info.mtime) for info in driver.walk_files("tree")}
    hinted = {info.path: (info.size, info.mtime) for info in driver.walk_files("tree", only)}
    assert hinted == {p: v for p, v in full.items() if taken(p) and not p.startswith("tree/0/file/")}
    assert "tree/2/tofile/data" in hinted and "tree/2/broken/data" not in hinted and len(hinted) == 102
    paths = sorted(driver.walk_paths("tree", None, only))
    assert paths == sorted(p for p in driver.walk_paths("tree") if taken(p) and not p.startswith("tree/0/file/"))
    assert "tree/2/broken/data" in paths and "tree/2/todir/data" not in paths


def _synced_directories(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of every directory fsynced from now on (files are left out), in order."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            synced.append(path)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_new_directories_are_made_durable_with_what_goes_into_them(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A file renamed into a directory made for it is only safe once the directory's own entry is: the parent of
    every directory made is fsynced (a new blob's `<hex>` directory in `<xx>`, a new link's directories), and a
    write into directories that exist fsyncs only its own."""
    root = tmp_path.resolve()
    driver = FilesystemDriver(root)
    synced = _synced_directories(monkeypatch)
    driver.write_bytes("a/b/c/file", b"1")
    assert set(synced) == {f"{root}/a/b/c", f"{root}/a/b", f"{root}/a", str(root)}
    synced.clear()
    driver.write_bytes("a/b/c/other", b"2")
    assert synced == [f"{root}/a/b/c"]

    synced.clear()
    driver.write_bytes("uploads/u1/data", b"blob")
    synced.clear()
    driver.move("uploads/u1/data", "blobs/sha256/ab/abcd/data")
    assert set(synced) == {f"{root}/blobs/sha256/ab/abcd", f"{root}/blobs/sha256/ab", f"{root}/blobs/sha256",
                           f"{root}/blobs", str(root)}
    assert driver.read_bytes("blobs/sha256/ab/abcd/data") == b"blob"

    events: list[str] = []
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        events.append(f"rename {target}")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    synced.clear()
    driver.write_files([[("repo/_layers/sha256/ef/link", b"l")], [("repo/_tags/t/current/link", b"l")]])
    first_rename = synced.index(f"{root}/repo/_layers/sha256/ef")  # the stage's own fsync, after its rename
    made = {f"{root}/repo", f"{root}/repo/_layers", f"{root}/repo/_layers/sha256", f"{root}/repo/_tags",
            f"{root}/repo/_tags/t", str(root)}
    assert made <= set(synced[:first_rename])  # every new entry on disk before any file of the stages shows
    assert driver.read_bytes("repo/_tags/t/current/link") == b"l"


def test_a_non_durable_write_fsyncs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FilesystemDriver(tmp_path)
    synced = _synced_directories(monkeypatch)
    driver.write_bytes("x/y/token", b"t", durable=False)
    assert synced == [] and driver.read_bytes("x/y/token") == b"t"
