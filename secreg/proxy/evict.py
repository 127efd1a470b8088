"""Keeping each upstream's cache within its `maxage` and `maxsize`: least-recently-pulled images go first.

An image is a manifest revision of a cache repository (one under the upstream's prefix; our own repositories
are never looked at). Its last pull is `_cache/pulled/<alg>/<hex>` (written by the proxy, at most once a
minute per image), or the revision's own time when it was never pulled since caching. Its size is the
manifest plus the config and layers it names; blobs shared by several cached images count once.

Evicting an image deletes its revision and the tags pointing at it, then the cache repository's blob links
no remaining revision of the repository needs. The bytes themselves are ordinary registry content from then
on: the next garbage collection (`gc.schedule`, or `secreg gc`) frees whatever no repository links any more.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from secreg.config.proxy import Upstream
from secreg.digest import Digest
from secreg.registry.blobs import list_repositories
from secreg.storage import layout
from secreg.storage.driver import AppendWriter, PathNotFound, StorageDriver

log = logging.getLogger("secreg.proxy")


@dataclass(frozen=True)
class Image:
    repository: str
    digest: Digest
    pulled: float
    blobs: frozenset[Digest]  # the manifest itself, its config and layers


@dataclass(frozen=True)
class Evicted:
    repository: str
    digest: Digest
    reason: str  # "maxage" | "maxsize"


def cache_repositories(driver: StorageDriver, upstream: Upstream) -> list[str]:
    names = list_repositories(driver)
    if not upstream.prefix:
        return [n for n in names if driver.exists(layout.cache_upstream(n))]
    return [n for n in names if n.startswith(upstream.prefix + "/")]


def _digests_under(driver: StorageDriver, path: str) -> list[Digest]:
    found: list[Digest] = []
    try:
        algorithms = driver.list(path)
    except PathNotFound:
        return found
    for algorithm in algorithms:
        try:
            hexes = driver.list(f"{path}/{algorithm}")
        except PathNotFound:
            continue
        for hex_ in hexes:
            try:
                found.append(Digest.parse(f"{algorithm}:{hex_}"))
            except Exception:  # noqa: BLE001 - a stray directory is not an image
                continue
    return found


def _references(content: bytes) -> set[Digest]:
    try:
        document = json.loads(content)
    except ValueError:
        return set()
    found: set[Digest] = set()
    descriptors = [document.get("config")] + list(document.get("layers") or [])
    for descriptor in descriptors:
        if isinstance(descriptor, dict) and isinstance(descriptor.get("digest"), str):
            try:
                found.add(Digest.parse(descriptor["digest"]))
            except Exception:  # noqa: BLE001
                continue
    return found


def images_of(driver: StorageDriver, repository: str) -> list[Image]:
    images: list[Image] = []
    for digest in _digests_under(driver, layout.revisions_dir(repository)):
        try:
            content = driver.read_bytes(layout.blob_data(digest))
            cached_at = driver.stat(layout.revision_link(repository, digest)).mtime
        except PathNotFound:
            continue
        try:
            pulled = float(driver.read_bytes(layout.cache_pulled(repository, digest)).decode())
        except (PathNotFound, ValueError):
            pulled = cached_at
        images.append(Image(repository, digest, pulled, frozenset({digest, *_references(content)})))
    return images


def _size(driver: StorageDriver, digest: Digest, sizes: dict[Digest, int]) -> int:
    if digest not in sizes:
        try:
            sizes[digest] = driver.stat(layout.blob_data(digest)).size
        except PathNotFound:
            sizes[digest] = 0
    return sizes[digest]


def plan_eviction(driver: StorageDriver, upstream: Upstream, now: float | None = None) -> list[Evicted]:
    """What to evict so the upstream's cache is within its bounds (nothing when it has none)."""
    if upstream.maxage is None and upstream.maxsize is None:
        return []
    now = time.time() if now is None else now
    images = [i for repo in cache_repositories(driver, upstream) for i in images_of(driver, repo)]
    images.sort(key=lambda i: i.pulled)
    sizes: dict[Digest, int] = {}
    users: dict[Digest, int] = {}
    for image in images:
        for digest in image.blobs:
            users[digest] = users.get(digest, 0) + 1
    total = sum(_size(driver, d, sizes) for d in users)
    plan: list[Evicted] = []
    for image in images:
        if upstream.maxage is not None and now - image.pulled > upstream.maxage:
            reason = "maxage"
        elif upstream.maxsize is not None and total > upstream.maxsize:
            reason = "maxsize"
        else:
            continue
        plan.append(Evicted(image.repository, image.digest, reason))
        for digest in image.blobs:
            users[digest] -= 1
            if users[digest] == 0:
                total -= _size(driver, digest, sizes)
    return plan


def take_turn(driver: StorageDriver, interval: float, now: float | None = None) -> AppendWriter | None:
    """Whether this process runs the eviction pass that is due: every worker (and replica) on the storage wakes
    once an interval, and the pass is the first one's that finds no other pass running (`_eviction/lock`, the
    storage's lock, as `secreg gc` takes it) and the last pass begun at least `interval` ago (`_eviction/last`).
    Then its start is recorded and the held lock returned (close it once the pass is over); else None. So one
    pass runs per interval, whatever the number of workers, and the worker that ran the last one (its timer is
    the first to find the next one due) usually runs the next."""
    writer = driver.open_append(layout.EVICTION_LOCK)
    try:
        if not writer.try_lock():
            writer.close()
            return None
        now = time.time() if now is None else now
        try:
            last: float | None = float(driver.read_bytes(layout.EVICTION_LAST).decode())
        except (PathNotFound, ValueError):
            last = None
        if last is not None and 0 <= now - last < interval:  # a time ahead of ours (a clock set back): due
            writer.close()
            return None
        driver.write_bytes(layout.EVICTION_LAST, repr(now).encode(), durable=False)  # lost in a crash: one more pass
        return writer
    except BaseException:
        writer.close()
        raise


TagDeleted = Callable[[str, str], None]
RevisionDeleted = Callable[[str, Digest], None]


def evict(driver: StorageDriver, upstream: Upstream, now: float | None = None,
          tag_deleted: TagDeleted | None = None, revision_deleted: RevisionDeleted | None = None) -> list[Evicted]:
    """Carry out `plan_eviction`; returns what this call removed. `tag_deleted(repository, tag)` is called after
    each tag that went, `revision_deleted(repository, digest)` after each manifest (the server's
    `ManifestStore.forget_tag` and `forget_revision`: no worker serves them from memory any more).

    One process at a time runs a pass (`take_turn`), yet one may still meet another (a server of an older
    version on the same storage): an image counts (and is logged) as evicted only by the pass whose delete
    removed its revision, so each is counted once."""
    plan = plan_eviction(driver, upstream, now)
    touched: set[str] = set()
    done: list[Evicted] = []
    for item in plan:
        try:
            removed = _drop_revision(driver, item.repository, item.digest, tag_deleted)
        finally:
            if revision_deleted is not None:
                revision_deleted(item.repository, item.digest)
        touched.add(item.repository)
        if removed:
            done.append(item)
            log.info("proxy: evicted %s@%s from the cache of %s (%s)", item.repository, item.digest,
                     upstream.name, item.reason)
    for repository in touched:
        _unlink_unneeded(driver, repository)
    return done


def _drop_revision(driver: StorageDriver, repository: str, digest: Digest, tag_deleted: TagDeleted | None) -> bool:
    """Delete the image's tags and revision; True when this call removed the revision (not another pass)."""
    try:
        tags = driver.list(layout.tags_dir(repository))
    except PathNotFound:
        tags = []
    for tag in tags:
        try:
            current = layout.link_target(driver.read_bytes(layout.tag_current_link(repository, tag)))
        except Exception:  # noqa: BLE001 - an unreadable tag link is left alone
            continue
        if current == digest:
            try:
                for path in (layout.tag_dir(repository, tag), layout.cache_tag_checked(repository, tag)):
                    try:
                        driver.delete(path)
                    except PathNotFound:
                        pass
            finally:
                if tag_deleted is not None:
                    tag_deleted(repository, tag)
    removed = False
    for path in (layout.revision_dir(repository, digest), layout.cache_pulled(repository, digest)):
        try:
            driver.delete(path)
            removed = removed or path == layout.revision_dir(repository, digest)
        except PathNotFound:
            pass
    return removed


def _unlink_unneeded(driver: StorageDriver, repository: str) -> None:
    needed: set[Digest] = set()
    for image in images_of(driver, repository):
        needed |= image.blobs
    for digest in _digests_under(driver, layout.layers_dir(repository)):
        if digest not in needed:
            try:
                driver.delete(layout.layer_link(repository, digest).rsplit("/", 1)[0])
            except PathNotFound:
                pass
