"""The one place the UI reaches the registry: a thin adapter over the registry model (`RegistryModel`:
catalog, manifests, tags, referrers, blobs, deletes) and the browsing and upkeep queries the model does
not answer (`registry.browse.Browse`: push times, sizes, storage usage, garbage collection). Pages get
plain values and two errors, `NotFound` and `Refused`; nothing here builds a path or knows a driver.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from secreg import jsonlimit
from secreg.config import Settings
from secreg.digest import Digest, is_digest
from secreg.errors import RegistryError
from secreg.names import NAME_PATTERN, TAG_PATTERN
from secreg.registry.browse import Browse, RepositorySummary, StorageUsage, TagInfo
from secreg.registry.errors import ModelError, NameUnknown, Unsupported
from secreg.registry.gc import GcBusy, GcReport
from secreg.registry.model import RegistryModel
from secreg.ui import logic

__all__ = ["Manifest", "NotFound", "Refused", "RegistrySource", "TagRow"]

MAX_CONFIG_BYTES = 1024 * 1024
# A repository's row in the list (tag count, last push, size) is reused this long while neither its tag nor
# its layer directory changed; a tag pushed again in place shows its new push time after at most this.
SUMMARY_SECONDS = 15.0


class NotFound(Exception):
    """No such repository, tag or manifest (or the name or reference is not valid)."""


class Refused(Exception):
    """The registry will not make this change (deletes disabled, read-only mode, a collection running)."""


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    document: dict[str, Any]
    size: int


@dataclass(frozen=True)
class TagRow:
    name: str
    pushed: float
    digest: str
    size: int | None  # an image's config + layers; None for an index
    platforms: tuple[str, ...]  # an index's platforms


@dataclass(frozen=True)
class _Summary:
    size: int | None
    platforms: tuple[str, ...]


def _digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except RegistryError:
        raise NotFound(text) from None


def _check_name(name: str) -> str:
    if len(name) > 255 or not NAME_PATTERN.match(name):
        raise NotFound(name)
    return name


def _reference(text: str) -> str | Digest:
    if is_digest(text):
        return _digest(text)
    if TAG_PATTERN.match(text):
        return text
    raise NotFound(text)


class RegistrySource:
    def __init__(self, model: RegistryModel, browse: Browse, settings: Settings) -> None:
        self.model = model
        self.browse = browse
        self.settings = settings
        # Manifests are immutable: what a tag row shows about one is cached by digest.
        self._summaries: OrderedDict[str, _Summary] = OrderedDict()
        self._lock = threading.Lock()
        self._repositories: dict[str, tuple[tuple[float, float], float, RepositorySummary]] = {}

    @property
    def delete_enabled(self) -> bool:
        return self.settings.delete_enabled and not self.settings.readonly

    # --- reading -----------------------------------------------------------------------------------

    async def repositories(self) -> list[str]:
        return await self.model.catalog()

    async def cached(self, names: list[str]) -> dict[str, str]:
        """Which of `names` are pull-through cache repositories, with their upstream."""
        return await self.model.cached_repositories(names)

    async def tags(self, name: str) -> list[TagInfo]:
        return await anyio.to_thread.run_sync(self.browse.tags, _check_name(name))

    async def exists(self, name: str) -> bool:
        try:
            await self.model.list_tags(_check_name(name))
        except (NameUnknown, NotFound):
            return False
        return True

    async def manifest(self, name: str, reference: str) -> Manifest:
        try:
            stored = await self.model.get_manifest(_check_name(name), _reference(reference))
            document = jsonlimit.loads(stored.content)  # not pushed here (registry:2, a cache): maybe unchecked
        except (ModelError, ValueError):
            raise NotFound(reference) from None
        if not isinstance(document, dict):
            raise NotFound(reference)
        return Manifest(str(stored.digest), stored.media_type, document, len(stored.content))

    async def config(self, name: str, document: dict[str, Any]) -> dict[str, Any] | None:
        """An image's config document (labels, created, platform), if it is JSON and not huge."""
        descriptor = document.get("config")
        if not isinstance(descriptor, dict):
            return None
        try:
            blob = await self.model.open_blob(name, Digest.parse(str(descriptor.get("digest", ""))))
            if blob.size > MAX_CONFIG_BYTES:
                return None
            data = b"".join([chunk async for chunk in blob.chunks()])
            # Any pusher's bytes: json.loads of [[[...]]] 100,000 deep raised RecursionError, a 500 for every viewer.
            config = jsonlimit.loads(data)
        except (ModelError, RegistryError, ValueError, OSError):
            return None
        return config if isinstance(config, dict) else None

    async def summary(self, name: str, digest: str) -> _Summary:
        with self._lock:
            cached = self._summaries.get(digest)
            if cached is not None:
                self._summaries.move_to_end(digest)
                return cached
        try:
            manifest = await self.manifest(name, digest)
        except NotFound:
            return _Summary(None, ())
        if logic.is_index(manifest.media_type, manifest.document):
            rows = logic.platform_rows(manifest.document, {})
            found = _Summary(None, tuple(r.platform for r in rows))
        else:
            found = _Summary(logic.image_size(manifest.document), ())
        with self._lock:
            self._summaries[digest] = found
            while len(self._summaries) > 20000:
                self._summaries.popitem(last=False)
        return found

    async def tag_rows(self, name: str, tags: list[TagInfo]) -> list[TagRow]:
        rows = []
        for tag in tags:
            try:
                digest = str((await self.model.get_manifest(name, tag.name)).digest)
            except ModelError:
                continue  # deleted meanwhile
            summary = await self.summary(name, digest)
            rows.append(TagRow(tag.name, tag.pushed, digest, summary.size, summary.platforms))
        return rows

    async def child_sizes(self, name: str, document: dict[str, Any]) -> dict[str, int | None]:
        """Each child manifest's own size (config + layers), by digest."""
        sizes: dict[str, int | None] = {}
        children = document.get("manifests")
        for child in children if isinstance(children, list) else []:
            digest = str(child.get("digest", "")) if isinstance(child, dict) else ""
            if digest and digest not in sizes:
                sizes[digest] = (await self.summary(name, digest)).size
        return sizes

    async def referrers(self, name: str, digest: str) -> list[dict[str, Any]]:
        return await self.model.referrers(name, _digest(digest))

    async def tags_pointing_at(self, name: str, digest: str) -> list[str]:
        return await anyio.to_thread.run_sync(self.browse.tags_pointing_at, _check_name(name), _digest(digest))

    async def repository_summaries(self, names: list[str]) -> list[RepositorySummary]:
        """Tag count, last push and size of each repository, in one trip to a worker thread."""

        def collect() -> list[RepositorySummary]:
            found = []
            for name in names:
                stamp, now = self.browse.stamp(name), time.monotonic()
                cached = self._repositories.get(name)
                if cached is not None and cached[0] == stamp and now - cached[1] < SUMMARY_SECONDS:
                    found.append(cached[2])
                    continue
                summary = self.browse.summary(name)
                self._repositories[name] = (stamp, now, summary)
                found.append(summary)
            if len(self._repositories) > 100_000:
                self._repositories.clear()
            return found

        return await anyio.to_thread.run_sync(collect)

    async def usage(self) -> StorageUsage:
        return await anyio.to_thread.run_sync(self.browse.usage)

    async def last_gc(self) -> dict[str, Any] | None:
        return await anyio.to_thread.run_sync(self.browse.last_gc)

    # --- changing ----------------------------------------------------------------------------------

    async def delete_tag(self, name: str, tag: str) -> str:
        """Remove one tag (the manifest stays); returns the digest it pointed at."""
        if not TAG_PATTERN.match(tag):
            raise NotFound(tag)
        digest = (await self.manifest(name, tag)).digest
        try:
            await self.model.delete_manifest(name, tag)
        except Unsupported as exc:
            raise Refused(exc.reason) from None
        except ModelError:
            raise NotFound(tag) from None
        return digest

    async def delete_manifest(self, name: str, digest: str) -> list[str]:
        """Remove a manifest and every tag pointing at it; returns those tags."""
        tags = await self.tags_pointing_at(name, digest)
        try:
            await self.model.delete_manifest(name, _digest(digest))
        except Unsupported as exc:
            raise Refused(exc.reason) from None
        except ModelError:
            raise NotFound(digest) from None
        return tags

    async def collect_garbage(self, dry_run: bool) -> GcReport:
        if not dry_run and self.settings.readonly:
            raise Refused("the registry is in read-only maintenance mode")

        def run() -> GcReport:
            return self.browse.collect_garbage(grace=self.settings.gc_grace, dry_run=dry_run, trigger="ui",
                                               upload_purge_age=self.settings.upload_purge_age)

        try:
            return await anyio.to_thread.run_sync(run)
        except GcBusy as exc:
            raise Refused(str(exc)) from None
