"""What a person browsing or administering the registry asks that the push/pull model does not answer: when
was each tag last pushed, how much storage does a repository's content take, how much does the whole store
hold, and what did the last garbage collection do (and run one). Cheap per call: a tag listing costs one
stat per tag, a repository's size one stat per blob it links; nothing here reads every manifest. The web
UI reaches it only through its adapter (`secreg.ui.source`); it is built where the app is composed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from secreg.digest import Digest
from secreg.errors import RegistryError
from secreg.registry.blobs import list_repositories
from secreg.registry.gc import GcReport, collect_garbage
from secreg.storage import layout
from secreg.storage.driver import PathNotFound, StorageDriver

__all__ = ["Browse", "RepositorySummary", "StorageUsage", "TagInfo"]


@dataclass(frozen=True)
class TagInfo:
    name: str
    pushed: float  # when the tag was last written (POSIX time)


@dataclass(frozen=True)
class RepositorySummary:
    tags: int
    pushed: float | None  # the most recent push of any tag
    size: int  # bytes of the distinct blobs the repository links


@dataclass(frozen=True)
class StorageUsage:
    repositories: int
    blobs: int
    bytes: int
    largest: tuple[tuple[str, int], ...] = ()  # (repository, bytes), biggest first


class Browse:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    def repositories(self) -> list[str]:
        return list_repositories(self.driver)

    def tags(self, name: str) -> list[TagInfo]:
        """The repository's tags with their push times, in name order ([] for an unknown repository)."""
        try:
            names = self.driver.list(layout.tags_dir(name))
        except PathNotFound:
            return []
        found: list[TagInfo] = []
        for tag in sorted(names):
            try:
                found.append(TagInfo(tag, self.driver.stat(layout.tag_current_link(name, tag)).mtime))
            except PathNotFound:
                continue  # a tag being deleted
        return found

    def summary(self, name: str) -> RepositorySummary:
        tags = self.tags(name)
        return RepositorySummary(len(tags), max((t.pushed for t in tags), default=None), self.repository_size(name))

    def stamp(self, name: str) -> tuple[float, float]:
        """Modification times of the repository's tag and layer directories: they change when a tag or a
        blob link is added or removed (not when an existing tag is pushed again)."""
        stamps = []
        for path in (layout.tags_dir(name), layout.layers_dir(name)):
            try:
                stamps.append(self.driver.stat(path).mtime)
            except PathNotFound:
                stamps.append(0.0)
        return stamps[0], stamps[1]

    def tags_pointing_at(self, name: str, digest: Digest) -> list[str]:
        """Tags whose current target is `digest`: what a delete of that manifest takes with it."""
        found: list[str] = []
        for tag in self.tags(name):
            try:
                target = layout.link_target(self.driver.read_bytes(layout.tag_current_link(name, tag.name)))
            except (PathNotFound, RegistryError):
                continue
            if target == digest:
                found.append(tag.name)
        return found

    def read_small_blob(self, name: str, digest: Digest, limit: int) -> bytes | None:
        """A blob of the repository (an image config) of at most `limit` bytes; None if not linked there,
        missing or larger."""
        if not self.driver.exists(layout.layer_link(name, digest)):
            return None
        try:
            if self.driver.stat(layout.blob_data(digest)).size > limit:
                return None
            return self.driver.read_bytes(layout.blob_data(digest))
        except PathNotFound:
            return None

    def repository_size(self, name: str, sizes: dict[Digest, int] | None = None) -> int:
        """Bytes of the distinct blobs (layers, configs) the repository links, as stored (compressed); each
        blob's size from `sizes` when given (a walk of the blobs), else from a stat."""
        total = 0
        for digest in self._linked(name):
            if sizes is not None:
                total += sizes.get(digest, 0)
                continue
            try:
                total += self.driver.stat(layout.blob_data(digest)).size
            except PathNotFound:
                continue
        return total

    def _linked(self, name: str) -> Iterator[Digest]:
        base = layout.layers_dir(name)
        try:
            algorithms = self.driver.list(base)
        except PathNotFound:
            return
        for algorithm in algorithms:
            try:
                hexes = self.driver.list(layout.child(base, algorithm))
            except PathNotFound:
                continue
            for hex_ in hexes:
                digest = layout.digest_of(algorithm, hex_)
                if digest is not None:
                    yield digest

    def usage(self, largest: int = 10) -> StorageUsage:
        """Every blob in the store (the walk of the blob tree a collection makes: a stat per blob), the number
        of repositories, and the `largest` repositories by the size of the blobs they link (shared blobs count
        in each; sizes from that walk, not a stat per link)."""
        sizes: dict[Digest, int] = {}
        for info in self.driver.walk_files(layout.BLOBS, layout.blob_file_of):
            digest = layout.parse_blob_path(info.path)
            if digest is not None:
                sizes[digest] = info.size
        names = self.repositories()
        linked = sorted(((self.repository_size(n, sizes), n) for n in names), key=lambda p: (-p[0], p[1]))
        return StorageUsage(len(names), len(sizes), sum(sizes.values()), tuple((n, b) for b, n in linked[:largest]))

    # --- the last garbage collection ------------------------------------------------------------------

    def collect_garbage(self, *, grace: float, upload_purge_age: float, dry_run: bool, trigger: str) -> GcReport:
        """The collection `secreg gc` runs (without --delete-untagged); a real run is recorded. GcBusy."""
        report = collect_garbage(self.driver, grace=grace, delete_untagged=False, dry_run=dry_run,
                                 upload_purge_age=upload_purge_age)
        if not dry_run:
            self.record_gc(report, trigger)
        return report

    def record_gc(self, report: Any, trigger: str) -> None:
        """Keep the summary of a finished collection (`GcReport`) beside the data, for every worker to show."""
        summary = {
            "finished": time.time(),
            "trigger": trigger,
            "dry_run": bool(report.dry_run),
            "blobs_removed": len(report.blobs_removed),
            "bytes_freed": int(report.bytes_freed),
            "manifests_removed": len(report.manifests_removed),
            "uploads_purged": len(report.uploads_purged),
            "duration": round(float(report.duration), 3),
        }
        self.driver.write_bytes(layout.GC_LAST_RUN, json.dumps(summary).encode())

    def last_gc(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.driver.read_bytes(layout.GC_LAST_RUN))
        except (PathNotFound, ValueError):
            return None
        return value if isinstance(value, dict) else None
