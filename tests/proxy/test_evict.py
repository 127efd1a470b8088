"""maxage / maxsize eviction of cached images: least recently pulled first, never our own repositories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secreg.config.proxy import Upstream
from secreg.digest import Digest
from secreg.proxy.evict import evict, plan_eviction, take_turn
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import ManifestUnknown
from secreg.registry.gc import collect_garbage
from secreg.registry.manifests import ManifestStore
from secreg.registry.tagcache import Counters, TagCache
from secreg.storage import layout
from secreg.storage.filesystem import FilesystemDriver
from tests.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST

MiB = 1024 * 1024


def _image(driver: FilesystemDriver, repository: str, tag: str, layer: bytes, pulled: float) -> Digest:
    blobs = BlobStore(driver)
    config = json.dumps({"tag": tag}).encode()
    for data in (config, layer):
        digest = Digest.of(data)
        driver.write_bytes(layout.blob_data(digest), data)
        blobs.link(repository, digest)
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": str(Digest.of(config)), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": str(Digest.of(layer)), "size": len(layer)}]}
    content = json.dumps(document).encode()
    digest = ManifestStore(driver, blobs).put(repository, tag, content, OCI_MANIFEST, []).digest
    driver.write_bytes(layout.cache_pulled(repository, digest), repr(pulled).encode())
    return digest


def test_least_recently_pulled_images_go_first_and_own_images_stay(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path, direct_io=False)
    old = _image(driver, "hub/library/old", "1", b"o" * MiB, pulled=1000)
    mid = _image(driver, "hub/library/mid", "1", b"m" * MiB, pulled=2000)
    new = _image(driver, "hub/library/new", "1", b"n" * MiB, pulled=3000)
    own = _image(driver, "team/app", "1", b"t" * MiB, pulled=0)
    upstream = Upstream("hub", "https://hub.example", "hub", 60, maxsize=int(2.5 * MiB))

    evicted = evict(driver, upstream, now=4000)

    assert [(e.repository, e.digest, e.reason) for e in evicted] == [("hub/library/old", old, "maxsize")]
    store = ManifestStore(driver, BlobStore(driver))
    assert not store.exists("hub/library/old", old) and store.tags("hub/library/old") == []
    assert store.exists("hub/library/mid", mid) and store.exists("hub/library/new", new)
    assert store.exists("team/app", own)
    assert not BlobStore(driver).is_linked("hub/library/old", Digest.of(b"o" * MiB))
    # The bytes are ordinary content from here on: garbage collection frees them.
    report = collect_garbage(driver, grace=0, delete_untagged=False, dry_run=False, now=10**10, settle=0)
    assert Digest.of(b"o" * MiB) in {b.digest for b in report.blobs_removed}
    assert BlobStore(driver).exists_global(Digest.of(b"t" * MiB))


def test_maxage_evicts_what_was_not_pulled_for_that_long(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path, direct_io=False)
    _image(driver, "hub/a", "1", b"a" * 100, pulled=1000)
    _image(driver, "hub/b", "1", b"b" * 100, pulled=9000)
    upstream = Upstream("hub", "https://hub.example", "hub", 60, maxage=5000)
    assert [(e.repository, e.reason) for e in plan_eviction(driver, upstream, now=10000)] == [("hub/a", "maxage")]
    assert plan_eviction(driver, Upstream("hub", "https://hub.example", "hub", 60), now=10000) == []


def test_an_evicted_tag_is_not_served_from_any_workers_memory(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path / "storage", direct_io=False)
    _image(driver, "hub/gone", "1", b"g" * 1000, pulled=1000)
    counters = tmp_path / "tags.counters"  # the workers' shared counters (secreg.workers' directory)
    evicting = ManifestStore(driver, BlobStore(driver), TagCache(Counters(counters), max_age=3600))
    serving = ManifestStore(driver, BlobStore(driver), TagCache(Counters(counters), max_age=3600))
    assert serving.get("hub/gone", "1").digest  # the tag is in the serving worker's memory now

    evict(driver, Upstream("hub", "https://hub.example", "hub", 60, maxage=10), now=5000,
          tag_deleted=evicting.forget_tag)

    with pytest.raises(ManifestUnknown):  # at once, not after storage.cache.tagmaxage
        serving.get("hub/gone", "1")


def test_an_evicted_manifest_is_not_served_by_digest_from_any_workers_memory(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path / "storage", direct_io=False)
    digest = _image(driver, "hub/gone", "1", b"g" * 1000, pulled=1000)
    counters = tmp_path / "tags.counters"
    evicting = ManifestStore(driver, BlobStore(driver), TagCache(Counters(counters), max_age=3600))
    serving = ManifestStore(driver, BlobStore(driver), TagCache(Counters(counters), max_age=3600))
    assert serving.get("hub/gone", digest).digest == digest  # in the serving worker's memory now

    evict(driver, Upstream("hub", "https://hub.example", "hub", 60, maxage=10), now=5000,
          tag_deleted=evicting.forget_tag, revision_deleted=evicting.forget_revision)

    with pytest.raises(ManifestUnknown):
        serving.get("hub/gone", digest)


def test_two_passes_that_planned_the_same_eviction_count_it_once(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker runs its own eviction passes: two may plan the same image at once (seen with 2 workers: the
    evicted counter at 2 for one image). Only the pass whose delete removed the revision counts it."""
    driver = FilesystemDriver(tmp_path, direct_io=False)
    _image(driver, "hub/a", "1", b"a" * 100, pulled=1000)
    upstream = Upstream("hub", "https://hub.example", "hub", 60, maxage=10)
    plan = plan_eviction(driver, upstream, now=5000)  # what a second worker planned before the first one ran
    assert len(plan) == 1

    assert evict(driver, upstream, now=5000) == plan
    # The second worker carries out its plan, made before the image went.
    monkeypatch.setattr("secreg.proxy.evict.plan_eviction", lambda *_args, **_kwargs: plan)
    assert evict(driver, upstream, now=5000) == []


def test_one_eviction_pass_per_interval_whoever_asks(tmp_path: Path) -> None:
    """Every worker asks for the turn once an interval: one gets it while none holds it and the last pass began
    at least an interval ago; the others (another process's open of the lock, here) do not."""
    driver = FilesystemDriver(tmp_path, direct_io=False)
    first = take_turn(driver, 600, now=1000)
    assert first is not None
    assert take_turn(driver, 600, now=1700) is None, "a pass is running"
    first.close()
    assert take_turn(driver, 600, now=1599) is None, "the last pass began less than an interval ago"
    second = take_turn(driver, 600, now=1600)
    assert second is not None
    second.close()
    assert take_turn(driver, 600, now=1000) is not None, "a last pass ahead of the clock (set back): no wait"
