"""The registry as handlers see it: its stores and the settings that change behaviour, on app.state."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from secreg.config import Settings
from secreg.errors import ErrorCode, RegistryError
from secreg.registry.blobs import BlobStore
from secreg.registry.manifests import ManifestStore
from secreg.registry.uploads import UploadStore
from secreg.storage.driver import StorageDriver
from secreg.storage.filesystem import FilesystemDriver


@dataclass
class Registry:
    settings: Settings
    driver: StorageDriver
    blobs: BlobStore
    uploads: UploadStore
    manifests: ManifestStore

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        driver = FilesystemDriver(settings.storage_root, direct_io=settings.storage_direct_io)
        blobs = BlobStore(driver)
        return cls(settings, driver, blobs, UploadStore(driver, blobs), ManifestStore(driver, blobs))

    def require_delete(self) -> None:
        if not self.settings.delete_enabled:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "deletes are disabled on this registry (storage.delete.enabled: false)",
            )

    def require_writable(self) -> None:
        if self.settings.readonly:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "the registry is in read-only maintenance mode; pulls keep working, writes are refused",
            )


def registry_of(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry
