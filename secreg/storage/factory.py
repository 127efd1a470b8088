"""The storage driver the settings ask for: the one place that chooses a driver class."""

from __future__ import annotations

from secreg.config import Settings
from secreg.storage.driver import StorageDriver
from secreg.storage.filesystem import FilesystemDriver


def driver_from_settings(settings: Settings) -> StorageDriver:
    """S3 when `storage.s3.bucket` is set (the bucket is created if missing), else the filesystem."""
    if settings.storage_s3 is not None:
        from secreg.storage.s3 import S3Driver  # botocore loads only for S3

        driver = S3Driver(settings.storage_s3)
        driver.ensure_bucket()
        return driver
    return FilesystemDriver(settings.storage_root, direct_io=settings.storage_direct_io)


def describe(settings: Settings) -> str:
    """Where the data lives, for the startup line (never a credential)."""
    if settings.storage_s3 is not None:
        s3 = settings.storage_s3
        where = s3.regionendpoint or f"AWS {s3.region}"
        return f"s3://{s3.bucket}/{s3.rootdirectory.strip('/')} at {where}"
    return str(settings.storage_root)
