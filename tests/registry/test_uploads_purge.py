from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from secreg.registry.blobs import BlobStore
from secreg.registry.uploads import UploadStore
from secreg.storage import layout
from secreg.storage.filesystem import FilesystemDriver


def test_purge_removes_only_stale_sessions(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    uploads = UploadStore(driver, BlobStore(driver))
    old = uploads.start("team/app")
    fresh = uploads.start("team/app")
    stamp = time.time() - 10_000
    driver.write_bytes(layout.upload_started_at("team/app", old), b"2000-01-01T00:00:00+00:00")
    os.utime(tmp_path / layout.upload_data("team/app", old), (stamp, stamp))
    removed = uploads.purge_stale(3600)
    assert removed == [("team/app", old)]
    assert uploads.list_sessions("team/app") == [fresh]


def test_the_purge_finds_sessions_in_one_walk_of_every_kind_of_repository(tmp_path: Path) -> None:
    """Sessions in a nested repository, in one that holds nothing else, and one whose start time was lost are
    found and judged; young ones and whatever is not a session (a temporary, a tag named `_uploads`) stay."""
    driver = FilesystemDriver(tmp_path)
    uploads = UploadStore(driver, BlobStore(driver))
    stamp = time.time() - 10_000
    stale = []
    for name, lose_start in (("team/app", False), ("a/b/c/deep", True), ("only/uploads", False)):
        upload_id = uploads.start(name)
        if lose_start:
            (tmp_path / layout.upload_started_at(name, upload_id)).unlink()
        else:
            driver.write_bytes(layout.upload_started_at(name, upload_id), b"2000-01-01T00:00:00+00:00")
        os.utime(tmp_path / layout.upload_data(name, upload_id), (stamp, stamp))
        stale.append((name, upload_id))
    fresh = sorted((name, uploads.start(name)) for name in ("team/app", "a/b/c/deep", "young"))
    driver.write_bytes(layout.tag_current_link("team/app", "_uploads"), b"sha256:" + b"0" * 64)
    driver.write_bytes(f"{layout.uploads_dir('team/app')}/not-a-uuid/data", b"")
    assert uploads.all_sessions() == sorted(stale + fresh)
    assert sorted(uploads.purge_stale(3600)) == sorted(stale)
    assert uploads.all_sessions() == fresh


def test_a_session_starts_without_fsync_and_a_lost_start_time_falls_back_to_the_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start time is written without fsync: after a crash it may be missing or empty; the session's age is
    then the data file's."""
    driver = FilesystemDriver(tmp_path)
    uploads = UploadStore(driver, BlobStore(driver))
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    session = uploads.start("team/app")
    assert synced == []
    assert abs(uploads.started_at("team/app", session) - time.time()) < 60
    stamp = time.time() - 10_000
    os.utime(tmp_path / layout.upload_data("team/app", session), (stamp, stamp))
    for leftover in (b"", b"\x00" * 32):
        (tmp_path / layout.upload_started_at("team/app", session)).write_bytes(leftover)
        assert uploads.started_at("team/app", session) == pytest.approx(stamp, abs=1)
    (tmp_path / layout.upload_started_at("team/app", session)).unlink()
    assert uploads.started_at("team/app", session) == pytest.approx(stamp, abs=1)
