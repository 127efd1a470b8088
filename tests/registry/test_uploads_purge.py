from __future__ import annotations

import os
import time
from pathlib import Path

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
