"""Purging upload sessions idle longer than a maximum age (part of a collection run, or on its own through
`UploadStore.purge_idle`)."""

from __future__ import annotations

from dataclasses import dataclass

from secreg.registry.blobs import BlobStore
from secreg.registry.uploads import UploadStore
from secreg.storage.driver import StorageDriver


@dataclass(frozen=True)
class PurgedUpload:
    repository: str
    upload_id: str
    idle: float = 0.0  # seconds without data when removed
    size: int = 0



def purge_uploads(driver: StorageDriver, max_age: float, now: float, dry_run: bool) -> list[PurgedUpload]:
    uploads = UploadStore(driver, BlobStore(driver))
    sessions = uploads.idle_sessions(max_age, now) if dry_run else uploads.purge_idle(max_age, now)
    return [PurgedUpload(s.repository, s.upload_id, s.idle, s.size) for s in sessions]
