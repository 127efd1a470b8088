"""The storage driver the settings ask for: the one place that chooses a driver class."""

from __future__ import annotations

from secreg.config import Settings
from secreg.storage.driver import StorageDriver
from secreg.storage.filesystem import FilesystemDriver


def driver_from_settings(settings: Settings) -> StorageDriver:
    return FilesystemDriver(settings.storage_root, direct_io=settings.storage_direct_io)
