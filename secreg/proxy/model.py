"""`ProxyRegistry`: the registry model of a server that caches upstream registries beside its own repositories.

It wraps the local registry (as distribution's proxy blob and manifest stores wrap theirs): a name that
`Router` maps to an upstream is served from the local cache repository when possible and fetched otherwise;
every other name goes to the local registry unchanged.

Manifests by digest are content-addressed: once cached, served forever without asking the upstream.
A tag is trusted for the upstream's `ttl` after it was last checked; then one HEAD compares the upstream's
Docker-Content-Digest with ours: equal, the tag is fresh again ("revalidated"); different, the manifest is
fetched, verified and stored ("miss"). When the upstream cannot answer (unreachable, 5xx, throttled, refusing
our credentials) a cached tag is served as it is ("stale", with a warning in the log); only content never
cached fails, with UpstreamUnavailable. A 404 from the upstream is an answer, not an outage: the tag is
reported unknown. Blobs come through the single-flight fetcher (`secreg.proxy.fetch`).

A blob that is in storage already but not yet linked into the cache repository is linked only after the
upstream confirms (HEAD) that this repository has it: linking by digest alone would let anyone who may pull
a cached name read any private blob whose digest they know.

Writes into a cache repository are refused (Unsupported); deletes are allowed, so an administrator can drop
cached content. Every result says how it was served in `cache` (hit, miss, revalidated, stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from secreg.config.proxy import ProxySettings, Upstream
from secreg.digest import Digest
from secreg.proxy.evict import evict, take_turn
from secreg.proxy.fetch import BlobFetch, BlobFetcher, FetchFailed, FetchOver
from secreg.proxy.flight import Flight, Flights
from secreg.proxy.metrics import ProxyMetrics
from secreg.proxy.routing import ProxiedName, Router
from secreg.proxy.upstream import UpstreamClient, UpstreamError, UpstreamNotFound
from secreg.registry.errors import (
    BlobInterrupted,
    BlobUnknown,
    ManifestUnknown,
    NameUnknown,
    Unsupported,
    UpstreamUnavailable,
)
from secreg.registry.local import LocalRegistry
from secreg.registry.manifest_format import MANIFEST_TYPES
from secreg.registry.model import BlobInfo, BlobReader, ChunkRange, ForwardingModel, Manifest, PutResult, UploadState
from secreg.storage import layout
from secreg.storage.driver import PathNotFound

log = logging.getLogger("secreg.proxy")

HIT, MISS, REVALIDATED, STALE = "hit", "miss", "revalidated", "stale"
ACCEPT = sorted(MANIFEST_TYPES)
_PULL_TOUCH_INTERVAL = 60.0  # seconds: a pulled image's "last pulled" mark is rewritten at most this often


class FetchingBlobReader:
    """A blob being fetched right now: its bytes come from the growing staging file, or from storage when the
    fetch is over before this reader starts."""

    local_path: str | None = None

    def __init__(self, fetch: BlobFetch, size: int, local: LocalRegistry, name: str) -> None:
        self._fetch = fetch
        self._local = local
        self._name = name
        self.digest = fetch.digest
        self.size = size
        # Verified already (being made durable): served from our copy, not fetched for this client.
        self.cache = HIT if fetch.state.done else MISS

    async def redirect_url(self) -> str | None:
        return None  # the bytes are on their way in: only this server can hand them out yet

    async def chunks(self, start: int = 0, length: int | None = None, chunk_size: int = 1024 * 1024
                     ) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._fetch.read(start, length):
                yield chunk
            return
        except FetchOver:
            pass  # committed and closed between the open and the first read
        except FetchFailed as exc:
            # The fetch logged why (once, however many clients were reading); this client's answer is cut off.
            raise BlobInterrupted(f"proxied blob {self.digest}: {exc.reason}") from None
        reader = await self._local.open_blob(self._name, self.digest)
        async for chunk in reader.chunks(start, length, chunk_size):
            yield chunk


class ProxyRegistry(ForwardingModel):
    def __init__(self, local: LocalRegistry, settings: ProxySettings, metrics: ProxyMetrics) -> None:
        super().__init__(local)
        self.local = local
        self.router = Router(settings)
        self.evict_interval = settings.evict_interval
        self.metrics = metrics
        self.clients = {u.name: UpstreamClient(u, metrics, local.settings.manifest_max_size)
                        for u in settings.upstreams}
        self.fetcher = BlobFetcher(local.driver, local.blobs, repr(local.settings.storage_s3))
        self.flights = Flights(self.fetcher.directory)
        self._touched: dict[tuple[str, Digest], float] = {}

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.fetcher.drop_stale)

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        await self.flights.aclose()
        for client in self.clients.values():
            await client.aclose()

    async def evict_forever(self) -> None:
        """Keep every upstream with a `maxage` or `maxsize` within it, every `proxy.eviction.interval` seconds
        (the first pass 10-60 s after the start, or one interval when that is shorter)."""
        bounded = [u for u in self.router.upstreams if u.maxage is not None or u.maxsize is not None]
        if not bounded:
            return
        await asyncio.sleep(min(self.evict_interval, random.uniform(10, 60)))
        while True:
            try:
                turn = await asyncio.to_thread(take_turn, self.local.driver, self.evict_interval)
            except Exception:  # noqa: BLE001 - keep the loop alive: a storage hiccup must not end upkeep
                log.exception("proxy: eviction could not tell whose turn it is")
                turn = None
            if turn is not None:
                try:
                    await self._evict_pass(bounded)
                finally:
                    await asyncio.shield(asyncio.to_thread(turn.close))
            await asyncio.sleep(self.evict_interval)

    async def _evict_pass(self, bounded: list[Upstream]) -> None:
        total = 0
        for upstream in bounded:
            try:
                evicted = await asyncio.to_thread(evict, self.local.driver, upstream, None,
                                                  self.local.manifests.forget_tag,
                                                  self.local.manifests.forget_revision)
            except Exception:  # noqa: BLE001 - keep the loop alive: a storage hiccup must not end upkeep
                log.exception("proxy: eviction for %s failed", upstream.name)
                continue
            for _ in evicted:
                self.metrics.evicted_image(upstream.name)
            total += len(evicted)
        log.info("proxy: eviction pass over %d upstream(s): %d image(s) evicted", len(bounded), total)

    # --- routing -----------------------------------------------------------------------------------

    def route(self, name: str) -> ProxiedName | None:
        return self.router.resolve(name)

    async def cached_repositories(self, names: list[str]) -> dict[str, str]:
        found = {}
        for name in names:
            upstream = self.router.is_cached_name(name)
            if upstream is not None:
                found[name] = upstream.name
        return found

    def _refuse_writes(self, name: str) -> None:
        proxied = self.route(name)
        if proxied is None:
            return
        own = [f"{u.prefix}/" for u in self.router.upstreams if u.prefix]
        outside = f" outside {', '.join(own)}" if own else " (this registry is a pure mirror)"
        raise Unsupported(
            f"{name} is in the pull-through cache of {proxied.upstream.name} ({proxied.upstream.url}); pushes "
            f"there are refused. Push your own images to a name{outside}."
        )

    # --- writes: refused inside a cache --------------------------------------------------------------

    async def start_upload(self, name: str) -> UploadState:
        self._refuse_writes(name)
        return await self.inner.start_upload(name)

    async def append_upload(self, name: str, upload_id: str, body: AsyncIterator[bytes],
                            chunk: ChunkRange | None = None, length: int | None = None) -> UploadState:
        self._refuse_writes(name)
        return await self.inner.append_upload(name, upload_id, body, chunk, length)

    async def complete_upload(self, name: str, upload_id: str, digest: Digest,
                              body: AsyncIterator[bytes] | None = None, chunk: ChunkRange | None = None,
                              length: int | None = None) -> BlobInfo:
        self._refuse_writes(name)
        return await self.inner.complete_upload(name, upload_id, digest, body, chunk, length)

    async def put_blob(self, name: str, digest: Digest, body: AsyncIterator[bytes],
                       length: int | None = None) -> BlobInfo:
        self._refuse_writes(name)
        return await self.inner.put_blob(name, digest, body, length)

    async def mount_blob(self, name: str, digest: Digest, source: str) -> bool:
        self._refuse_writes(name)
        proxied = self.route(source)
        return await self.inner.mount_blob(name, digest, proxied.local if proxied else source)

    async def put_manifest(self, name: str, reference: str | Digest, content: bytes, media_type: str | None,
                           tags: list[str] | None = None) -> PutResult:
        self._refuse_writes(name)
        return await self.inner.put_manifest(name, reference, content, media_type, tags)

    # --- forwarded under the cache repository's name ----------------------------------------------------

    def _local_name(self, name: str) -> str:
        proxied = self.route(name)
        return proxied.local if proxied else name

    async def delete_manifest(self, name: str, reference: str | Digest) -> None:
        await self.inner.delete_manifest(self._local_name(name), reference)

    async def unlink_blob(self, name: str, digest: Digest) -> None:
        await self.inner.unlink_blob(self._local_name(name), digest)

    async def upload_status(self, name: str, upload_id: str) -> UploadState:
        return await self.inner.upload_status(self._local_name(name), upload_id)

    async def cancel_upload(self, name: str, upload_id: str) -> None:
        await self.inner.cancel_upload(self._local_name(name), upload_id)

    async def referrers(self, name: str, subject: Digest, artifact_type: str | None = None) -> list[dict[str, Any]]:
        return await self.inner.referrers(self._local_name(name), subject, artifact_type)

    async def description(self, name: str) -> str:
        return await self.inner.description(self._local_name(name))

    async def list_tags(self, name: str) -> list[str]:
        proxied = self.route(name)
        if proxied is None:
            return await self.inner.list_tags(name)

        async def own() -> list[str]:
            try:
                return await self.clients[proxied.upstream.name].list_tags(proxied.remote)
            except UpstreamNotFound:
                raise NameUnknown(name) from None
            except UpstreamError as exc:
                log.warning("proxy: tags of %s: %s; listing the cached tags", name, exc.reason)
                return self.local.manifests.tags(proxied.local, missing_ok=True)

        async def follow(record: str) -> list[str]:
            document = json.loads(record)
            if document.get("unknown"):
                raise NameUnknown(name)
            return [str(tag) for tag in document["tags"]]

        # One upstream exchange per repository however many clients of however many workers ask at once.
        return await self.flights.run(f"tags\n{proxied.local}", Flight(own, _nothing, _share_tags, follow))

    # --- manifests -------------------------------------------------------------------------------------

    async def get_manifest(self, name: str, reference: str | Digest) -> Manifest:
        proxied = self.route(name)
        if proxied is None:
            return await self.inner.get_manifest(name, reference)
        cached = await self._cached_manifest(proxied, reference)
        if cached is not None and (isinstance(reference, Digest) or self._fresh(proxied, reference)):
            self._pulled(proxied, cached.digest, "manifest", HIT)
            return Manifest(cached.digest, cached.media_type, cached.content, HIT)
        if self.local.settings.readonly:
            # Maintenance mode writes nothing, the cache included: serve what is cached, unchecked.
            if cached is not None:
                self._pulled(proxied, cached.digest, "manifest", STALE)
                return Manifest(cached.digest, cached.media_type, cached.content, STALE)
            raise Unsupported("the registry is in read-only maintenance mode; only content already in the "
                              "pull-through cache is served")
        # One upstream exchange per manifest however many clients of however many workers ask at once.
        result = await self.flights.run(f"manifest\n{proxied.local}\n{reference}",
                                        self._manifest_flight(proxied, reference))
        self._pulled(proxied, result.digest, "manifest", result.cache or MISS)
        return result

    def _manifest_flight(self, proxied: ProxiedName, reference: str | Digest) -> Flight[Manifest]:
        cached: Manifest | None = None

        async def settled() -> Manifest | None:
            # Read again once the flight is ours: another worker's flight may have cached it just now.
            nonlocal cached
            cached = await self._cached_manifest(proxied, reference)
            if cached is not None and (isinstance(reference, Digest) or self._fresh(proxied, reference)):
                return Manifest(cached.digest, cached.media_type, cached.content, HIT)
            return None

        async def own() -> Manifest:
            return await self._from_upstream(proxied, reference, cached)

        async def follow(record: str) -> Manifest:
            document = json.loads(record)
            if "unavailable" in document:
                raise UpstreamUnavailable(proxied.upstream.name, str(document["unavailable"]))
            if "digest" not in document:
                raise ManifestUnknown(reference)
            found = await self.local.get_manifest(proxied.local, Digest.parse(document["digest"]))
            return Manifest(found.digest, found.media_type, found.content, str(document["cache"]))

        return Flight(own, settled, _share_manifest, follow)

    async def _cached_manifest(self, proxied: ProxiedName, reference: str | Digest) -> Manifest | None:
        try:
            return await self.local.get_manifest(proxied.local, reference)
        except ManifestUnknown:
            return None

    def _fresh(self, proxied: ProxiedName, tag: str) -> bool:
        try:
            checked = float(self.local.driver.read_bytes(layout.cache_tag_checked(proxied.local, tag)).decode())
        except (PathNotFound, ValueError):
            return False
        return time.time() - checked < proxied.upstream.ttl

    async def _from_upstream(self, proxied: ProxiedName, reference: str | Digest, cached: Manifest | None
                             ) -> Manifest:
        client = self.clients[proxied.upstream.name]
        try:
            if isinstance(reference, Digest):
                return await self._fetch_manifest(client, proxied, reference, None)
            head = await client.head_manifest(proxied.remote, reference, ACCEPT)
            if cached is not None and head.digest == cached.digest:
                await asyncio.to_thread(self._mark_checked, proxied.local, reference)
                return Manifest(cached.digest, cached.media_type, cached.content, REVALIDATED)
            return await self._fetch_manifest(client, proxied, head.digest or reference, reference)
        except UpstreamNotFound:
            raise ManifestUnknown(reference) from None
        except UpstreamError as exc:
            if cached is None:
                raise _unavailable(proxied.upstream, exc) from None
            log.warning("proxy: serving %s:%s from the cache unchecked (stale): %s", proxied.local, reference,
                        exc.reason)
            return Manifest(cached.digest, cached.media_type, cached.content, STALE)

    async def _fetch_manifest(self, client: UpstreamClient, proxied: ProxiedName, reference: str | Digest,
                              tag: str | None) -> Manifest:
        fetched = await client.get_manifest(proxied.remote, str(reference), ACCEPT)
        expected = reference if isinstance(reference, Digest) else fetched.digest
        actual = Digest.of(fetched.content, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            raise UpstreamError(proxied.upstream.name, f"sent a manifest whose digest is {actual}, not {expected}")
        media_type = fetched.media_type if fetched.media_type in MANIFEST_TYPES else None
        result = await asyncio.to_thread(self._store_manifest, proxied, actual, fetched.content, media_type, tag)
        return Manifest(actual, result, fetched.content, MISS)

    def _store_manifest(self, proxied: ProxiedName, digest: Digest, content: bytes, media_type: str | None,
                        tag: str | None) -> str:
        self._mark_cache(proxied)
        # Blobs arrive when clients ask for them: the references of a cached manifest are not checked.
        self.local.manifests.put(proxied.local, digest, content, media_type, [tag] if tag else [],
                                 check_references=False)
        if tag is not None:
            self._mark_checked(proxied.local, tag)
        return self.local.manifests.get(proxied.local, digest).media_type

    def _mark_cache(self, proxied: ProxiedName) -> None:
        path = layout.cache_upstream(proxied.local)
        if not self.local.driver.exists(path):
            self.local.driver.write_bytes(path, proxied.upstream.name.encode())

    def _mark_checked(self, local: str, tag: str) -> None:
        self.local.driver.write_bytes(layout.cache_tag_checked(local, tag), repr(time.time()).encode())

    def _pulled(self, proxied: ProxiedName, digest: Digest, kind: str, result: str) -> None:
        self.metrics.lookup(proxied.upstream.name, kind, result)
        if self.local.settings.readonly:
            return
        key = (proxied.local, digest)
        now = time.monotonic()
        if now - self._touched.get(key, -_PULL_TOUCH_INTERVAL) < _PULL_TOUCH_INTERVAL:
            return
        self._touched[key] = now
        if len(self._touched) > 100_000:
            self._touched.clear()
        with contextlib.suppress(OSError):
            self.local.driver.write_bytes(layout.cache_pulled(proxied.local, digest), repr(time.time()).encode())

    # --- blobs -----------------------------------------------------------------------------------------

    async def stat_blob(self, name: str, digest: Digest) -> BlobInfo:
        proxied = self.route(name)
        if proxied is None:
            return await self.inner.stat_blob(name, digest)
        with contextlib.suppress(BlobUnknown):
            info = await self.local.stat_blob(proxied.local, digest)
            return BlobInfo(info.digest, info.size, HIT)
        fetch = self.fetcher.inflight(proxied.local, digest)
        if fetch is not None and fetch.size is not None:
            return BlobInfo(digest, fetch.size, MISS)
        client = self.clients[proxied.upstream.name]
        size = await self._upstream_call(proxied, client.head_blob(proxied.remote, digest), digest)
        if self.local.blobs.exists_global(digest) and not self.local.settings.readonly:
            await asyncio.to_thread(self.local.blobs.link, proxied.local, digest)
            info = await self.local.stat_blob(proxied.local, digest)
            return BlobInfo(info.digest, info.size, HIT)
        if size is None:
            reader = await self.open_blob(name, digest)
            return BlobInfo(digest, reader.size, MISS)
        return BlobInfo(digest, size, MISS)

    async def open_blob(self, name: str, digest: Digest) -> BlobReader:
        proxied = self.route(name)
        if proxied is None:
            return await self.inner.open_blob(name, digest)
        with contextlib.suppress(BlobUnknown):
            reader = await self.local.open_blob(proxied.local, digest)
            self.metrics.lookup(proxied.upstream.name, "blob", HIT)
            return dataclasses.replace(reader, cache=HIT)
        client = self.clients[proxied.upstream.name]
        if self.local.settings.readonly:
            raise Unsupported("the registry is in read-only maintenance mode; only content already in the "
                              "pull-through cache is served")
        if self.fetcher.inflight(proxied.local, digest) is None and self.local.blobs.exists_global(digest):
            await self._upstream_call(proxied, client.head_blob(proxied.remote, digest), digest)
            await asyncio.to_thread(self.local.blobs.link, proxied.local, digest)
            self.metrics.lookup(proxied.upstream.name, "blob", HIT)
            return dataclasses.replace(await self.local.open_blob(proxied.local, digest), cache=HIT)
        try:
            fetch = await self.fetcher.start(client, proxied.remote, proxied.local, digest)
        except FetchFailed as exc:
            raise self._fetch_error(proxied, digest, exc) from None
        if fetch is None:  # another worker of this server has just fetched it
            self.metrics.lookup(proxied.upstream.name, "blob", MISS)
            return dataclasses.replace(await self.local.open_blob(proxied.local, digest), cache=MISS)
        self.metrics.lookup(proxied.upstream.name, "blob", HIT if fetch.state.done else MISS)
        if fetch.size is None:  # no Content-Length upstream: the response can only start once it is all here
            if fetch.task is not None:
                await asyncio.wait([fetch.task])  # committed (or failed) when it ends
            if fetch.state.error is not None:
                raise self._fetch_error(proxied, digest, fetch.state.error)
            return dataclasses.replace(await self.local.open_blob(proxied.local, digest), cache=MISS)
        return FetchingBlobReader(fetch, fetch.size, self.local, proxied.local)

    async def _upstream_call(self, proxied: ProxiedName, call: Awaitable[int | None], digest: Digest
                             ) -> int | None:
        try:
            return await call
        except UpstreamNotFound:
            raise BlobUnknown(digest) from None
        except UpstreamError as exc:
            raise _unavailable(proxied.upstream, exc) from None

    def _fetch_error(self, proxied: ProxiedName, digest: Digest, exc: FetchFailed) -> Exception:
        if exc.not_found:
            return BlobUnknown(digest)
        return _unavailable(proxied.upstream, exc.upstream_error or UpstreamError(proxied.upstream.name, exc.reason))


async def _nothing() -> None:
    return None  # tag lists are not cached: every flight asks the upstream


def _share_manifest(outcome: Manifest | Exception) -> str | None:
    """A flight's outcome for the other workers: where the manifest is, or the error to answer with."""
    if isinstance(outcome, Manifest):
        return json.dumps({"digest": str(outcome.digest), "cache": outcome.cache or MISS})
    if isinstance(outcome, ManifestUnknown):
        return json.dumps({"unknown": True})
    if isinstance(outcome, UpstreamUnavailable):
        return json.dumps({"unavailable": outcome.message})
    return None  # anything else (storage failing): each worker tries on its own


def _share_tags(outcome: list[str] | Exception) -> str | None:
    if isinstance(outcome, list):
        return json.dumps({"tags": outcome})
    if isinstance(outcome, NameUnknown):
        return json.dumps({"unknown": True})
    return None


def _unavailable(upstream: Upstream, exc: UpstreamError) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        upstream.name,
        f"the upstream registry {upstream.name} is unavailable and this content is not cached: {exc.reason}",
    )



