"""The one place the UI reaches the registry: a thin adapter over the registry's stores (manifests, blobs)
and its browsing queries (`registry.browse`). Pages get plain values and two errors, `NotFound` and
`Refused`; nothing here builds a path or knows a storage driver.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from secreg.digest import Digest, is_digest
from secreg.errors import RegistryError
from secreg.names import NAME_PATTERN, TAG_PATTERN
from secreg.registry.browse import Browse, StorageUsage, TagInfo
from secreg.registry.gc import GcBusy, GcReport, collect_garbage
from secreg.registry.service import Registry
from secreg.ui import logic

__all__ = ["Manifest", "NotFound", "Refused", "RegistrySource", "TagRow"]

MAX_CONFIG_BYTES = 1024 * 1024


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


class RegistrySource:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.browse = Browse(registry.driver)  # the registry model will answer these
        # Manifests are immutable: what a tag row shows about one is cached by digest.
        self._summaries: OrderedDict[str, _Summary] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def delete_enabled(self) -> bool:
        return self.registry.settings.delete_enabled and not self.registry.settings.readonly

    # --- reading -----------------------------------------------------------------------------------

    def repositories(self) -> list[str]:
        return self.browse.repositories()

    def tags(self, name: str) -> list[TagInfo]:
        return self.browse.tags(_check_name(name))

    def exists(self, name: str) -> bool:
        return bool(NAME_PATTERN.match(name)) and self.registry.manifests.repository_exists(name)

    def manifest(self, name: str, reference: str) -> Manifest:
        _check_name(name)
        if is_digest(reference):
            ref: str | Digest = _digest(reference)
        elif TAG_PATTERN.match(reference):
            ref = reference
        else:
            raise NotFound(reference)
        try:
            stored = self.registry.manifests.get(name, ref)
            document = json.loads(stored.content)
        except (RegistryError, ValueError):
            raise NotFound(reference) from None
        if not isinstance(document, dict):
            raise NotFound(reference)
        return Manifest(str(stored.digest), stored.media_type, document, len(stored.content))

    def config(self, name: str, document: dict[str, Any]) -> dict[str, Any] | None:
        """An image's config document (labels, created, platform), if it is JSON and not huge."""
        descriptor = document.get("config")
        if not isinstance(descriptor, dict):
            return None
        try:
            data = self.browse.read_small_blob(name, Digest.parse(str(descriptor.get("digest", ""))),
                                               MAX_CONFIG_BYTES)
            config = json.loads(data) if data is not None else None
        except (RegistryError, ValueError):
            return None
        return config if isinstance(config, dict) else None

    def summary(self, name: str, digest: str) -> _Summary:
        with self._lock:
            cached = self._summaries.get(digest)
            if cached is not None:
                self._summaries.move_to_end(digest)
                return cached
        try:
            manifest = self.manifest(name, digest)
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

    def tag_rows(self, name: str, tags: list[TagInfo]) -> list[TagRow]:
        rows = []
        for tag in tags:
            try:
                digest = str(self.registry.manifests.resolve(name, tag.name))
            except RegistryError:
                continue
            summary = self.summary(name, digest)
            rows.append(TagRow(tag.name, tag.pushed, digest, summary.size, summary.platforms))
        return rows

    def child_sizes(self, name: str, document: dict[str, Any]) -> dict[str, int | None]:
        """Each child manifest's own size (config + layers), by digest."""
        sizes: dict[str, int | None] = {}
        children = document.get("manifests")
        for child in children if isinstance(children, list) else []:
            digest = str(child.get("digest", "")) if isinstance(child, dict) else ""
            if digest and digest not in sizes:
                sizes[digest] = self.summary(name, digest).size
        return sizes

    def referrers(self, name: str, digest: str) -> list[dict[str, Any]]:
        return self.registry.manifests.referrers(name, _digest(digest), None)

    def tags_pointing_at(self, name: str, digest: str) -> list[str]:
        return self.browse.tags_pointing_at(_check_name(name), _digest(digest))

    def repository_size(self, name: str) -> int:
        return self.browse.repository_size(name)

    def usage(self) -> StorageUsage:
        return self.browse.usage()

    def last_gc(self) -> dict[str, Any] | None:
        return self.browse.last_gc()

    # --- changing ----------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        settings = self.registry.settings
        if not settings.delete_enabled:
            raise Refused("deletes are disabled on this registry (storage.delete.enabled: false)")
        if settings.readonly:
            raise Refused("the registry is in read-only maintenance mode")

    def delete_tag(self, name: str, tag: str) -> str:
        """Remove one tag (the manifest stays); returns the digest it pointed at."""
        self._check_writable()
        _check_name(name)
        if not TAG_PATTERN.match(tag):
            raise NotFound(tag)
        try:
            digest = str(self.registry.manifests.resolve(name, tag))
            self.registry.manifests.delete(name, tag)
        except RegistryError:
            raise NotFound(tag) from None
        return digest

    def delete_manifest(self, name: str, digest: str) -> list[str]:
        """Remove a manifest and every tag pointing at it; returns those tags."""
        self._check_writable()
        target = _digest(digest)
        tags = self.tags_pointing_at(name, digest)
        try:
            self.registry.manifests.delete(name, target)
        except RegistryError:
            raise NotFound(digest) from None
        return tags

    def collect_garbage(self, dry_run: bool) -> GcReport:
        settings = self.registry.settings
        if not dry_run and settings.readonly:
            raise Refused("the registry is in read-only maintenance mode")
        try:
            report = collect_garbage(self.registry.driver, grace=settings.gc_grace, delete_untagged=False,
                                     dry_run=dry_run, upload_purge_age=settings.upload_purge_age)
        except GcBusy as exc:
            raise Refused(str(exc)) from None
        if not dry_run:
            self.browse.record_gc(report, "ui")
        return report
