"""Moving bytes at paths: the driver interface (`driver`), the one tree of paths (`layout`), the drivers
(`filesystem`, `s3`) and the choice among them (`factory.driver_from_settings`, imported from there: this
package's own surface is the protocol). Nothing here knows manifests or repositories."""

from secreg.storage.driver import AppendWriter, FileInfo, InvalidPath, PathNotFound, StorageDriver, StorageError

__all__ = [
    "AppendWriter",
    "FileInfo",
    "InvalidPath",
    "PathNotFound",
    "StorageDriver",
    "StorageError",
]
