"""Purging upload sessions idle longer than a maximum age, and aborting the incomplete writes (multipart
uploads) no session owns that are as old (part of a collection run, or on its own through
`UploadStore.purge_idle` and `UploadStore.abort_stale_writes`)."""

from __future__ import annotations

from collections.abc import Collection
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


@dataclass(frozen=True)
class AbortedWrite:
    path: str  # where the interrupted write was going (a blob's data, an upload's data)
    idle: float  # seconds since its last byte
    size: int  # bytes it held


def purge_uploads(driver: StorageDriver, max_age: float, now: float, dry_run: bool,
                  sessions: Collection[tuple[str, str]] | None = None
                  ) -> tuple[list[PurgedUpload], list[AbortedWrite]]:
    """`sessions`: every session, as a collection's scan begun after `now` found them (else they are listed)."""
    uploads = UploadStore(driver, BlobStore(driver))
    idle = (uploads.idle_sessions(max_age, now, sessions) if dry_run
            else uploads.purge_idle(max_age, now, sessions))
    if sessions is not None and not dry_run:
        sessions = set(sessions).difference((s.repository, s.upload_id) for s in idle)
    writes = (uploads.stale_writes(max_age, now, sessions) if dry_run
              else uploads.abort_stale_writes(max_age, now, sessions))
    return ([PurgedUpload(s.repository, s.upload_id, s.idle, s.size) for s in idle],
            [AbortedWrite(w.path, now - w.last_written, w.size) for w in writes])
