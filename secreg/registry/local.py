"""`LocalRegistry`: the registry model over a storage driver (today's registry: blobs, uploads and manifests
stored in the reference registry's tree), with the settings that change what it accepts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from secreg import workers
from secreg.config import Settings
from secreg.digest import Digest
from secreg.registry.blobs import BlobStore
from secreg.registry.descriptions import Descriptions
from secreg.registry.errors import Unsupported
from secreg.registry.health import probe_storage
from secreg.registry.manifests import ManifestStore
from secreg.registry.model import BlobInfo, ChunkRange, Manifest, PutResult, UploadState
from secreg.registry.offload import Offload
from secreg.registry.tagcache import TagCache, counters_for
from secreg.registry.uploads import UploadStore
from secreg.storage.driver import StorageDriver
from secreg.storage.factory import driver_from_settings

__all__ = ["LocalBlobReader", "LocalRegistry"]

_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LocalBlobReader:
    digest: Digest
    size: int
    local_path: str | None
    _driver: StorageDriver
    _path: str
    cache: str | None = None

    async def redirect_url(self) -> str | None:
        return await anyio.to_thread.run_sync(self._driver.redirect_url, self._path)

    async def chunks(self, start: int = 0, length: int | None = None, chunk_size: int = _READ_CHUNK
                     ) -> AsyncIterator[bytes]:
        start = min(max(start, 0), self.size)
        remaining = self.size - start if length is None else min(max(length, 0), self.size - start)
        handle = await anyio.to_thread.run_sync(self._driver.open_read, self._path)
        try:
            await anyio.to_thread.run_sync(handle.seek, start, os.SEEK_SET)
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(handle.read, min(chunk_size, remaining))
                if not chunk:
                    break  # shorter than stat said: cannot happen to a committed blob
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()


@dataclass
class LocalRegistry:
    """The registry model over `driver`. `blobs`, `uploads` and `manifests` are its stores; only the model's
    methods are for callers above `registry/` (garbage collection and upload purging use the stores)."""

    settings: Settings
    driver: StorageDriver
    blobs: BlobStore
    uploads: UploadStore
    manifests: ManifestStore
    descriptions: Descriptions = field(init=False)
    offload: Offload = field(init=False)

    def __post_init__(self) -> None:
        self.descriptions = Descriptions(self.driver, self.manifests, self.blobs)
        # Store calls: inline on the filesystem, in threads on an object store (see registry/offload.py).
        self.offload = self.uploads.offload

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalRegistry:
        return cls.over(settings, driver_from_settings(settings))

    @classmethod
    def over(cls, settings: Settings, driver: StorageDriver) -> LocalRegistry:
        blobs = BlobStore(driver)
        tags = TagCache(counters_for(workers.shared_directory()), settings.tag_cache_max_age)
        uploads = UploadStore(driver, blobs, Offload(driver))
        return cls(settings, driver, blobs, uploads, ManifestStore(driver, blobs, tags))

    def require_delete(self) -> None:
        if not self.settings.delete_enabled:
            raise Unsupported("deletes are disabled on this registry (storage.delete.enabled: false)")

    def require_writable(self) -> None:
        if self.settings.readonly:
            raise Unsupported(
                "the registry is in read-only maintenance mode; pulls keep working, writes are refused"
            )

    # --- repositories ------------------------------------------------------------------------------

    async def catalog(self) -> list[str]:
        # Usually the in-memory list; a walk when another process announced a repository (in a thread, so
        # other requests keep moving meanwhile).
        return await self.offload.thread(self.blobs.repositories.names)

    async def description(self, name: str) -> str:
        return await self.offload.thread(self.descriptions.of, name)

    async def cached_repositories(self, names: list[str]) -> dict[str, str]:
        return {}

    async def check_ready(self) -> None:
        await anyio.to_thread.run_sync(probe_storage, self.driver, abandon_on_cancel=True)

    # --- blobs -------------------------------------------------------------------------------------

    async def stat_blob(self, name: str, digest: Digest) -> BlobInfo:
        info = await self.offload.run(self.blobs.stat, name, digest)
        return BlobInfo(info.digest, info.size)

    async def open_blob(self, name: str, digest: Digest) -> LocalBlobReader:
        info = await self.offload.run(self.blobs.stat, name, digest)
        return LocalBlobReader(digest, info.size, self.driver.local_path(info.path), self.driver, info.path)

    async def repositories_with_blob(self, digest: Digest) -> list[str]:
        # A stat per repository: in a thread.
        return await self.offload.thread(lambda: list(self.blobs.repositories_linking(digest)))

    async def mount_blob(self, name: str, digest: Digest, source: str) -> bool:
        self.require_writable()
        if not await self.offload.run(self.blobs.is_linked, source, digest):
            return False
        await self.offload.thread(self.blobs.link, name, digest)  # fsyncs (link, mark, directories): off the loop
        return True

    async def unlink_blob(self, name: str, digest: Digest) -> None:
        self.require_delete()
        self.require_writable()
        await self.offload.run(self.blobs.stat, name, digest)
        await self.offload.run(self.blobs.unlink, name, digest)

    # --- uploads -----------------------------------------------------------------------------------

    async def start_upload(self, name: str) -> UploadState:
        self.require_writable()
        upload_id = await self.offload.thread(self.uploads.start, name)  # fsyncs: off the event loop
        return UploadState(name, upload_id, 0)

    async def upload_status(self, name: str, upload_id: str) -> UploadState:
        return UploadState(name, upload_id, await self.offload.run(self.uploads.size, name, upload_id))

    async def append_upload(self, name: str, upload_id: str, body: AsyncIterator[bytes],
                            chunk: ChunkRange | None = None, length: int | None = None) -> UploadState:
        self.require_writable()
        size = await self.uploads.append(name, upload_id, body, chunk, length)
        return UploadState(name, upload_id, size)

    async def complete_upload(self, name: str, upload_id: str, digest: Digest,
                              body: AsyncIterator[bytes] | None = None, chunk: ChunkRange | None = None,
                              length: int | None = None) -> BlobInfo:
        self.require_writable()
        size = await self.uploads.complete(name, upload_id, digest, body, chunk, length)
        return BlobInfo(digest, size)

    async def cancel_upload(self, name: str, upload_id: str) -> None:
        await self.offload.run(self.uploads.cancel, name, upload_id)

    async def put_blob(self, name: str, digest: Digest, body: AsyncIterator[bytes],
                       length: int | None = None) -> BlobInfo:
        self.require_writable()
        size = await self.uploads.monolithic(name, digest, body, length)
        return BlobInfo(digest, size)

    # --- manifests and tags ------------------------------------------------------------------------

    async def get_manifest(self, name: str, reference: str | Digest) -> Manifest:
        return await self.offload.run(self.manifests.get, name, reference)

    async def put_manifest(self, name: str, reference: str | Digest, content: bytes, media_type: str | None,
                           tags: list[str] | None = None) -> PutResult:
        self.require_writable()
        # Several small fsynced writes: in a thread, so other requests keep moving meanwhile.
        return await self.offload.thread(self.manifests.put, name, reference, content, media_type, tags or [])

    async def delete_manifest(self, name: str, reference: str | Digest) -> None:
        self.require_delete()
        self.require_writable()
        await self.offload.thread(self.manifests.delete, name, reference)

    async def list_tags(self, name: str) -> list[str]:
        return await self.offload.run(self.manifests.tag_names, name)

    async def referrers(self, name: str, subject: Digest, artifact_type: str | None = None) -> list[dict[str, Any]]:
        return await self.offload.run(self.manifests.referrers, name, subject, artifact_type)
