"""Moving bytes at paths: the driver interface (`driver`), the one tree of paths (`layout`), the drivers
(`filesystem`) and the choice among them (`factory`). Nothing here knows manifests or repositories."""

from secreg.storage.driver import AppendWriter, FileInfo, InvalidPath, PathNotFound, StorageDriver, StorageError
from secreg.storage.factory import driver_from_settings

__all__ = [
    "AppendWriter",
    "FileInfo",
    "InvalidPath",
    "PathNotFound",
    "StorageDriver",
    "StorageError",
    "driver_from_settings",
]
