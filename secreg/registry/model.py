"""The registry model: what exists, what may be stored, what is deleted, with no HTTP and no paths.

`RegistryModel` is the one interface `api/` (and the web UI) talk to. It takes and returns values (names,
`Digest`s, descriptors, byte ranges, upload state) and raises the errors of `secreg.registry.errors`.
Implementations:

    LocalRegistry (secreg.registry.local)   today's storage-backed registry
    a pull-through cache                    wraps a LocalRegistry: subclass `ForwardingModel`, override what
                                            it answers differently (blob and manifest reads), forward the rest

Names arrive validated (`secreg.names`), digests parsed (`Digest.parse`); an implementation may rely on both.
Every method is a coroutine so an implementation may wait on the network; the local one runs its fsyncs
and long scans in threads.

Shaped after distribution's Namespace / Repository / BlobStore / ManifestService and quay's
`data/registry_model/interface.py`, flattened to one object: the repository is the first argument.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from secreg.digest import Digest

__all__ = [
    "BlobInfo",
    "BlobReader",
    "ChunkRange",
    "ForwardingModel",
    "Manifest",
    "PutResult",
    "RegistryModel",
    "UploadState",
]


@dataclass(frozen=True)
class BlobInfo:
    digest: Digest
    size: int
    cache: str | None = None  # a pull-through cache says how it answered: hit, miss, revalidated, stale


@dataclass(frozen=True)
class ChunkRange:
    """The bytes a chunk claims to hold: `start`-`end` inclusive (a PATCH's `Content-Range`)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class UploadState:
    """An upload session: which repository, which session, how many bytes it holds so far."""

    name: str
    upload_id: str
    size: int


@dataclass(frozen=True)
class Manifest:
    digest: Digest
    media_type: str
    content: bytes
    cache: str | None = None  # as BlobInfo.cache


@dataclass(frozen=True)
class PutResult:
    digest: Digest
    subject: Digest | None  # the manifest's `subject`, when it is a referrer


class BlobReader(Protocol):
    """An opened blob of `size` bytes, to read whole or a byte range of.

    `local_path` is the OS file holding the blob when the implementation has one (the filesystem driver):
    the server may then send from the file itself. `chunks` yields the bytes of [start, start + length)
    either way (length None: to the end); it opens what it reads and closes it when the iteration ends, and
    raises BlobInterrupted when the bytes cannot be delivered whole after the first were yielded."""

    @property
    def digest(self) -> Digest: ...
    @property
    def size(self) -> int: ...
    @property
    def local_path(self) -> str | None: ...
    @property
    def cache(self) -> str | None:
        """As BlobInfo.cache; None from a model that caches nothing."""
        ...

    def chunks(self, start: int = 0, length: int | None = None, chunk_size: int = 1024 * 1024
               ) -> AsyncIterator[bytes]: ...

    async def redirect_url(self) -> str | None:
        """A short-lived URL the client may fetch the bytes from itself (object storage with `storage.redirect`
        on), else None."""
        ...


@runtime_checkable
class RegistryModel(Protocol):
    """Repositories, blobs, uploads, manifests, tags, referrers and the catalog of one registry."""

    # --- repositories ------------------------------------------------------------------------------

    async def catalog(self) -> list[str]:
        """Every repository holding a manifest or a blob, in lexical order."""
        ...

    async def description(self, name: str) -> str:
        """`org.opencontainers.image.description` of the newest tagged image; "" when there is none."""
        ...

    async def cached_repositories(self, names: list[str]) -> dict[str, str]:
        """Which of `names` are pull-through cache repositories, each with its upstream's name; {} from a
        model that caches nothing."""
        ...

    async def check_ready(self) -> None:
        """Raise (any exception, saying what failed) unless the model can read and write right now."""
        ...

    # --- blobs -------------------------------------------------------------------------------------

    async def stat_blob(self, name: str, digest: Digest) -> BlobInfo:
        """The blob as `name` sees it. BlobUnknown unless `name` links it and its bytes exist."""
        ...

    async def open_blob(self, name: str, digest: Digest) -> BlobReader:
        """A blob of `name`, to read (or read a range of). BlobUnknown as `stat_blob`."""
        ...

    async def repositories_with_blob(self, digest: Digest) -> list[str]:
        """Repositories that link `digest` (the candidates of a cross-repository mount without `from`)."""
        ...

    async def mount_blob(self, name: str, digest: Digest, source: str) -> bool:
        """Link a blob `source` holds into `name`; False (nothing changed) when `source` does not hold it.
        Unsupported when the registry takes no writes. The caller checks that it may read `source`."""
        ...

    async def unlink_blob(self, name: str, digest: Digest) -> None:
        """Remove `name`'s link to the blob (the bytes stay until garbage collection). BlobUnknown;
        Unsupported when deletes are off or the registry takes no writes."""
        ...

    # --- uploads -----------------------------------------------------------------------------------

    async def start_upload(self, name: str) -> UploadState:
        """A new, empty upload session. Unsupported when the registry takes no writes."""
        ...

    async def upload_status(self, name: str, upload_id: str) -> UploadState:
        """UploadUnknown for an id that is not a session of `name`."""
        ...

    async def append_upload(self, name: str, upload_id: str, body: AsyncIterator[bytes],
                            chunk: ChunkRange | None = None, length: int | None = None) -> UploadState:
        """Append a body to the session. RangeMismatch when `chunk` does not start at the session's size;
        SizeMismatch when the body is not `length` (or `chunk.length`) bytes (the chunk is then dropped)."""
        ...

    async def complete_upload(self, name: str, upload_id: str, digest: Digest,
                              body: AsyncIterator[bytes] | None = None, chunk: ChunkRange | None = None,
                              length: int | None = None) -> BlobInfo:
        """Append the final chunk (if any), verify, commit and link the blob. DigestMismatch discards the
        session and stores nothing."""
        ...

    async def cancel_upload(self, name: str, upload_id: str) -> None:
        """Discard the session and its bytes. UploadUnknown."""
        ...

    async def put_blob(self, name: str, digest: Digest, body: AsyncIterator[bytes],
                       length: int | None = None) -> BlobInfo:
        """A whole blob in one body (a monolithic upload): start, append, complete."""
        ...

    # --- manifests and tags ------------------------------------------------------------------------

    async def get_manifest(self, name: str, reference: str | Digest) -> Manifest:
        """By tag or digest. ManifestUnknown."""
        ...

    async def put_manifest(self, name: str, reference: str | Digest, content: bytes, media_type: str | None,
                           tags: list[str] | None = None) -> PutResult:
        """Store a manifest under a tag or its digest, and point `tags` at it too. ManifestInvalid,
        DigestMismatch (reference is a digest the content does not have), ManifestBlobsUnknown, Unsupported."""
        ...

    async def delete_manifest(self, name: str, reference: str | Digest) -> None:
        """A tag: untag only. A digest: the manifest and every tag pointing at it. ManifestUnknown,
        Unsupported."""
        ...

    async def list_tags(self, name: str) -> list[str]:
        """Tags of `name` in lexical order; NameUnknown when the repository does not exist."""
        ...

    async def referrers(self, name: str, subject: Digest, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose `subject` is `subject`, optionally of one artifact type."""
        ...


class ForwardingModel:
    """A model that forwards every call to `inner`: the base of a model that changes a few answers (the
    pull-through cache overrides the reads and keeps the local registry for everything else)."""

    def __init__(self, inner: RegistryModel) -> None:
        self.inner = inner

    async def catalog(self) -> list[str]:
        return await self.inner.catalog()

    async def description(self, name: str) -> str:
        return await self.inner.description(name)

    async def cached_repositories(self, names: list[str]) -> dict[str, str]:
        return await self.inner.cached_repositories(names)

    async def check_ready(self) -> None:
        await self.inner.check_ready()

    async def stat_blob(self, name: str, digest: Digest) -> BlobInfo:
        return await self.inner.stat_blob(name, digest)

    async def open_blob(self, name: str, digest: Digest) -> BlobReader:
        return await self.inner.open_blob(name, digest)

    async def repositories_with_blob(self, digest: Digest) -> list[str]:
        return await self.inner.repositories_with_blob(digest)

    async def mount_blob(self, name: str, digest: Digest, source: str) -> bool:
        return await self.inner.mount_blob(name, digest, source)

    async def unlink_blob(self, name: str, digest: Digest) -> None:
        await self.inner.unlink_blob(name, digest)

    async def start_upload(self, name: str) -> UploadState:
        return await self.inner.start_upload(name)

    async def upload_status(self, name: str, upload_id: str) -> UploadState:
        return await self.inner.upload_status(name, upload_id)

    async def append_upload(self, name: str, upload_id: str, body: AsyncIterator[bytes],
                            chunk: ChunkRange | None = None, length: int | None = None) -> UploadState:
        return await self.inner.append_upload(name, upload_id, body, chunk, length)

    async def complete_upload(self, name: str, upload_id: str, digest: Digest,
                              body: AsyncIterator[bytes] | None = None, chunk: ChunkRange | None = None,
                              length: int | None = None) -> BlobInfo:
        return await self.inner.complete_upload(name, upload_id, digest, body, chunk, length)

    async def cancel_upload(self, name: str, upload_id: str) -> None:
        await self.inner.cancel_upload(name, upload_id)

    async def put_blob(self, name: str, digest: Digest, body: AsyncIterator[bytes],
                       length: int | None = None) -> BlobInfo:
        return await self.inner.put_blob(name, digest, body, length)

    async def get_manifest(self, name: str, reference: str | Digest) -> Manifest:
        return await self.inner.get_manifest(name, reference)

    async def put_manifest(self, name: str, reference: str | Digest, content: bytes, media_type: str | None,
                           tags: list[str] | None = None) -> PutResult:
        return await self.inner.put_manifest(name, reference, content, media_type, tags)

    async def delete_manifest(self, name: str, reference: str | Digest) -> None:
        await self.inner.delete_manifest(name, reference)

    async def list_tags(self, name: str) -> list[str]:
        return await self.inner.list_tags(name)

    async def referrers(self, name: str, subject: Digest, artifact_type: str | None = None) -> list[dict[str, Any]]:
        return await self.inner.referrers(name, subject, artifact_type)


def _forwarding_conforms(model: ForwardingModel) -> RegistryModel:
    return model  # mypy proves ForwardingModel implements every method of the interface
