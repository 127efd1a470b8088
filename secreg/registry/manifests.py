"""Manifests, tags and referrers of a repository."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from secreg.digest import Digest
from secreg.errors import RegistryError
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import DigestMismatch, ManifestBlobsUnknown, ManifestInvalid, ManifestUnknown, NameUnknown
from secreg.registry.manifest_format import (
    ParsedManifest,
    parse_manifest,
    referrer_descriptor,
)
from secreg.registry.model import Manifest, PutResult
from secreg.registry.tagcache import Counters, Resolved, TagCache
from secreg.storage import layout
from secreg.storage.driver import PathNotFound, StorageDriver

_CACHE_BYTES = 16 * 1024 * 1024


class _ContentCache:
    """Manifest bytes by digest: immutable, so a hit needs only the repository's revision link checked."""

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[Digest, bytes] = OrderedDict()
        self._bytes = 0
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, digest: Digest) -> bytes | None:
        with self._lock:
            content = self._items.get(digest)
            if content is not None:
                self._items.move_to_end(digest)
            return content

    def put(self, digest: Digest, content: bytes) -> None:
        if len(content) > self._limit // 4:
            return
        with self._lock:
            if digest in self._items:
                return
            self._items[digest] = content
            self._bytes += len(content)
            while self._bytes > self._limit:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)


class ManifestStore:
    def __init__(self, driver: StorageDriver, blobs: BlobStore, tags: TagCache | None = None) -> None:
        self.driver = driver
        self.blobs = blobs
        self._cache = _ContentCache(_CACHE_BYTES)
        self._tags = tags if tags is not None else TagCache(Counters(), max_age=0)

    # --- reading -----------------------------------------------------------------------------------

    def resolve(self, name: str, reference: str | Digest) -> Digest:
        if isinstance(reference, Digest):
            if not self.driver.exists(layout.revision_link(name, reference)):
                raise ManifestUnknown(reference)
            return reference
        try:
            return layout.link_target(self.driver.read_bytes(layout.tag_current_link(name, reference)))
        except PathNotFound:
            raise ManifestUnknown(reference) from None

    def get(self, name: str, reference: str | Digest) -> Manifest:
        # From memory while no worker of this server changed the tag, or removed or rewrote the revision (a
        # digest's text has a colon, a tag cannot: the two never share a key).
        key = reference if isinstance(reference, str) else str(reference)
        hit = self._tags.get(name, key)
        if hit is not None and (cached := self._cache.get(hit.digest)) is not None:
            return Manifest(hit.digest, hit.media_type, cached)
        stamp = self._tags.stamp(name, key)  # before reading, so a change meanwhile is not missed
        digest = self.resolve(name, reference)
        if not isinstance(reference, Digest) and not self.driver.exists(layout.revision_link(name, digest)):
            raise ManifestUnknown(reference)
        content = self._cache.get(digest)
        if content is None:
            try:
                content = self.driver.read_bytes(layout.blob_data(digest))
            except PathNotFound:
                raise ManifestUnknown(reference) from None
            self._cache.put(digest, content)
        media_type = self._media_type(name, digest, content)
        self._tags.put(name, key, stamp, Resolved(digest, media_type))
        return Manifest(digest, media_type, content)

    def _media_type(self, name: str, digest: Digest, content: bytes) -> str:
        try:
            return self.driver.read_bytes(layout.revision_media_type(name, digest)).decode().strip()
        except PathNotFound:
            # Written by the reference registry, which keeps no media type: read it from the document.
            try:
                declared = json.loads(content).get("mediaType")
            except (ValueError, AttributeError):
                declared = None
            return declared if isinstance(declared, str) else "application/vnd.oci.image.manifest.v1+json"

    def exists(self, name: str, digest: Digest) -> bool:
        return self.driver.exists(layout.revision_link(name, digest))

    # --- writing -----------------------------------------------------------------------------------

    def put(
        self, name: str, reference: str | Digest, content: bytes, content_type: str | None, tags: list[str],
        *, check_references: bool = True,
    ) -> PutResult:
        """Store a manifest. `check_references=False` (the pull-through cache) stores it although its blobs
        are not in the repository yet: a cache fetches them when clients ask."""
        parsed = parse_manifest(content, content_type)
        algorithm = reference.algorithm if isinstance(reference, Digest) else "sha256"
        digest = Digest.of(content, algorithm)
        if isinstance(reference, Digest) and digest != reference:
            raise DigestMismatch(reference, digest, "manifest digest does not match the reference")
        if check_references:
            self._check_references(name, parsed)
        all_tags = list(dict.fromkeys(([reference] if isinstance(reference, str) else []) + tags))
        link = layout.link_content(digest)
        # Before the writes: what each one makes appear (the repository, a tag) is announced after them.
        announcements = [self.blobs.repositories.appears(name, layout.manifests_dir(name))]
        announcements += [self.blobs.repositories.tag_changes(name, tag) for tag in all_tags]
        # Each stage is on disk before the next shows: the bytes and their media type (a reader who finds the
        # link always finds its type), the revision link, the tags' index entries (and a referrer's entry),
        # then what the tags point at. The bytes are always (re)written, though they may exist: a fresh mtime
        # tells a concurrent garbage collection that this manifest is being pushed now.
        referrers = []
        if parsed.subject is not None:
            entry = referrer_descriptor(parsed, digest, len(content))
            referrers.append((layout.referrer_entry(name, parsed.subject.digest, digest), json.dumps(entry).encode()))
        try:
            self.driver.write_files([
                [(layout.blob_data(digest), content), (layout.revision_media_type(name, digest),
                                                       parsed.media_type.encode())],
                [(layout.revision_link(name, digest), link)],
                [*((layout.tag_index_link(name, tag, digest), link) for tag in all_tags), *referrers],
                [(layout.tag_current_link(name, tag), link) for tag in all_tags],
            ])
        finally:
            self._tags.changed(name, str(digest))  # its media type may have been rewritten
            for tag in all_tags:
                self._tags.changed(name, tag)
        for announce in announcements:
            announce()
        self._cache.put(digest, content)
        return PutResult(digest, parsed.subject.digest if parsed.subject else None)

    def _check_references(self, name: str, parsed: ParsedManifest) -> None:
        missing: list[str] = []
        for blob in parsed.blobs:
            if not blob.is_foreign and not self.blobs.is_linked(name, blob.digest):
                missing.append(str(blob.digest))
        for child in parsed.children:
            # An index lists manifests; an artifact index may also list plain blobs of the repository.
            if not self.exists(name, child.digest) and not self.blobs.is_linked(name, child.digest):
                missing.append(str(child.digest))
        if missing:
            raise ManifestBlobsUnknown(missing)

    # --- deleting ----------------------------------------------------------------------------------

    def forget_tag(self, name: str, tag: str) -> None:
        """After `tag` of `name` was deleted in storage by someone else in this server (the pull-through
        cache's eviction): no worker serves it from memory any more, and the tag list changes."""
        self._tags.changed(name, tag)
        self.blobs.repositories.tag_changes(name, tag, deleted=True)()

    def forget_revision(self, name: str, digest: Digest) -> None:
        """After the revision `digest` of `name` was deleted in storage by someone else in this server (the
        pull-through cache's eviction): no worker serves it by digest from memory any more."""
        self._tags.changed(name, str(digest))

    def delete(self, name: str, reference: str | Digest) -> None:
        if isinstance(reference, str):
            if not self.driver.exists(layout.tag_current_link(name, reference)):
                raise ManifestUnknown(reference)
            gone = self.blobs.repositories.tag_changes(name, reference, deleted=True)
            try:
                self.driver.delete(layout.tag_dir(name, reference))
            finally:
                self._tags.changed(name, reference)
            gone()
            return
        if not self.exists(name, reference):
            raise ManifestUnknown(reference)
        self._drop_referrer_entry(name, reference)
        for tag in self.tags(name, missing_ok=True):
            try:
                current = layout.link_target(self.driver.read_bytes(layout.tag_current_link(name, tag)))
            except (PathNotFound, RegistryError, ManifestInvalid):
                continue
            if current == reference:
                gone = self.blobs.repositories.tag_changes(name, tag, deleted=True)
                try:
                    self.driver.delete(layout.tag_dir(name, tag))
                except PathNotFound:
                    pass
                self._tags.changed(name, tag)
                gone()
        try:
            self.driver.delete(layout.revision_dir(name, reference))
        except PathNotFound:
            raise ManifestUnknown(reference) from None
        finally:
            self._tags.changed(name, str(reference))

    def _drop_referrer_entry(self, name: str, digest: Digest) -> None:
        try:
            parsed = parse_manifest(self.driver.read_bytes(layout.blob_data(digest)), None)
        except (PathNotFound, RegistryError, ManifestInvalid):
            return
        if parsed.subject is not None:
            try:
                self.driver.delete(layout.referrer_entry(name, parsed.subject.digest, digest))
            except PathNotFound:
                pass

    # --- tags and referrers ------------------------------------------------------------------------

    def repository_exists(self, name: str) -> bool:
        return self.driver.exists(layout.repository(name))

    def tag_names(self, name: str, missing_ok: bool = False) -> list[str]:
        """The tag directories, sorted: what the tags list answers, as the reference registry does; kept in
        memory between changes (`secreg.registry.catalog`), without a stat per tag. A tag directory exists
        without its `current/link` only while that tag's first write is in flight (a tag deletion removes the
        whole directory)."""
        if not self.repository_exists(name):
            if missing_ok:
                return []
            raise NameUnknown(name)
        return self.blobs.repositories.tags(name, lambda: self._list_tags(name)).names()

    def _list_tags(self, name: str) -> list[str]:
        try:
            return sorted(self.driver.list(layout.tags_dir(name)))
        except PathNotFound:
            return []

    def tags(self, name: str, missing_ok: bool = False) -> list[str]:
        """Tags whose `current/link` exists (for callers that read it next)."""
        return [t for t in self.tag_names(name, missing_ok)
                if self.driver.exists(layout.tag_current_link(name, t))]

    def referrers(self, name: str, subject: Digest, artifact_type: str | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        try:
            algorithms = self.driver.list(layout.referrers_dir(name, subject))
        except PathNotFound:
            return found
        for algorithm in sorted(algorithms):
            try:
                hexes = self.driver.list(layout.referrer_algorithm_dir(name, subject, algorithm))
            except PathNotFound:
                continue
            for hex_ in sorted(hexes):
                digest = layout.digest_of(algorithm, hex_)
                if digest is None:
                    continue
                try:
                    entry = json.loads(self.driver.read_bytes(layout.referrer_entry(name, subject, digest)))
                except (PathNotFound, ValueError):
                    continue
                if not self.exists(name, digest):
                    continue
                if artifact_type is None or entry.get("artifactType") == artifact_type:
                    found.append(entry)
        return found
