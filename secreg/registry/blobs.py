"""Blobs as a repository sees them: content-addressed bytes reachable only through the repository's links."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from secreg.digest import Digest
from secreg.registry.catalog import RepositoryIndex
from secreg.registry.errors import BlobUnknown
from secreg.storage import layout
from secreg.storage.driver import PathNotFound, StorageDriver


@dataclass(frozen=True)
class BlobInfo:
    digest: Digest
    size: int
    path: str  # driver path of the data


class BlobStore:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self.repositories = RepositoryIndex(driver, list_repositories)

    def stat(self, name: str, digest: Digest) -> BlobInfo:
        """The blob as seen from repository `name`; BlobUnknown unless linked there and present."""
        if not self.driver.exists(layout.layer_link(name, digest)):
            raise BlobUnknown(digest)
        return self.stat_global(digest)

    def stat_global(self, digest: Digest) -> BlobInfo:
        path = layout.blob_data(digest)
        try:
            info = self.driver.stat(path)
        except PathNotFound:
            raise BlobUnknown(digest) from None
        return BlobInfo(digest, info.size, path)

    def exists_global(self, digest: Digest) -> bool:
        return self.driver.exists(layout.blob_data(digest))

    def is_linked(self, name: str, digest: Digest) -> bool:
        return self.driver.exists(layout.layer_link(name, digest)) and self.exists_global(digest)

    def link(self, name: str, digest: Digest) -> None:
        announce = self.repositories.appears(name, layout.layers_dir(name))
        # One stage: a mark without its link is allowed for (`repositories_linking`), a link without its mark
        # is only missed by a mount without `from`.
        self.driver.write_files([[(layout.layer_link(name, digest), layout.link_content(digest)),
                                  (layout.linker_mark(digest, name), b"")]])
        announce()

    def unlink(self, name: str, digest: Digest) -> None:
        """Remove the repository's link; the bytes stay until garbage collection finds them unreferenced."""
        try:
            self.driver.delete(layout.layer_link_dir(name, digest))
        except PathNotFound:
            raise BlobUnknown(digest) from None

    def commit(self, source_path: str, digest: Digest) -> None:
        """Move verified, fsynced upload data into place. Concurrent commits of one digest carry equal bytes,
        so whichever rename lands last is as good as the first."""
        self.driver.move(source_path, layout.blob_data(digest))

    def repositories_linking(self, digest: Digest) -> Iterator[str]:
        """Repositories that hold a link to `digest` (for a mount without `from`). Each link leaves a mark
        under `layout.linkers_dir`, so this is one listing, not a stat per repository (~600 ms with 10,000
        repositories here). A blob with no marks (linked by an older secreg or by the reference registry)
        is searched for in every repository once, and the marks found are written for the next time."""
        if not self.exists_global(digest):
            return
        try:
            marks = sorted(self.driver.list(layout.linkers_dir(digest)))
        except PathNotFound:
            marks = []
        if marks:
            for mark in marks:
                name = layout.linker_name(mark)
                if self.driver.exists(layout.layer_link(name, digest)):  # a mark outlives an unlink
                    yield name
            return
        for name in self.repositories.names():
            if self.driver.exists(layout.layer_link(name, digest)):
                self.driver.write_bytes(layout.linker_mark(digest, name), b"")
                yield name


def list_repositories(driver: StorageDriver, include_upload_only: bool = False) -> list[str]:
    """Every repository (a directory holding `_manifests` or `_layers`), in lexical order; with
    `include_upload_only`, also those that so far hold only upload sessions."""
    markers = layout.REPOSITORY_MARKERS | ({layout.UPLOADS_MARKER} if include_upload_only else set())
    found: list[str] = []

    def visit(name: str) -> None:
        try:
            children = driver.list(layout.repository(name) if name else layout.REPOSITORIES)
        except PathNotFound:
            return
        if name and markers.intersection(children):
            found.append(name)
        for child in children:
            if not child.startswith("_") and not child.startswith("."):
                visit(f"{name}/{child}" if name else child)

    visit("")
    return sorted(found)
