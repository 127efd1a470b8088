"""The storage driver the settings ask for: the one place that chooses a driver class."""

from __future__ import annotations

import logging

from secreg import workers
from secreg.config import Settings
from secreg.storage.driver import StorageDriver, StorageError
from secreg.storage.filesystem import FilesystemDriver

log = logging.getLogger("secreg.serve")


def driver_from_settings(settings: Settings) -> StorageDriver:
    """S3 when `storage.s3.bucket` is set (the bucket is created if missing; in a spawned worker a store that
    cannot be reached is logged, not fatal), else the filesystem."""
    if settings.storage_s3 is not None:
        from secreg.storage.s3 import S3Driver  # botocore loads only for S3

        driver = S3Driver(settings.storage_s3)
        try:
            driver.ensure_bucket()
        except StorageError as exc:
            if not workers.spawned():
                raise  # the server (or `secreg gc`) starting: a store it cannot reach is an error to stop on
            # A worker `secreg serve` (re)started while the store is unreachable: the serving process found the
            # bucket when the server started. Exiting would leave the connections the kernel hashes to this
            # worker's seat waiting in its backlog for a worker that never comes; serving on, its requests that
            # need storage fail as the serving process's do, and work again once the store is back.
            log.error("storage unreachable as this worker starts (serving on): %s", exc)
        return driver
    return FilesystemDriver(settings.storage_root, direct_io=settings.storage_direct_io)


def describe(settings: Settings) -> str:
    """Where the data lives, for the startup line (never a credential)."""
    if settings.storage_s3 is not None:
        s3 = settings.storage_s3
        where = s3.regionendpoint or f"AWS {s3.region}"
        return f"s3://{s3.bucket}/{s3.rootdirectory.strip('/')} at {where}"
    return str(settings.storage_root)
