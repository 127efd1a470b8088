"""Tag -> digest kept in memory (secreg/registry/tagcache.py): a GET by tag reads nothing from storage while the
tag is unchanged; a change by any worker of the server is seen by the others at once (the shared counters); a
write this server does not see is seen after max-age."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secreg.digest import Digest
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import ManifestUnknown
from secreg.registry.manifests import ManifestStore
from secreg.registry.tagcache import Counters, TagCache
from secreg.storage import layout
from secreg.storage.filesystem import FilesystemDriver

CONFIG = b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}'
MEDIA = "application/vnd.oci.image.manifest.v1+json"


class Counting(FilesystemDriver):
    """The real filesystem driver, counting reads and existence checks."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0

    def read_bytes(self, path: str) -> bytes:
        self.reads += 1
        return super().read_bytes(path)

    def exists(self, path: str) -> bool:
        self.reads += 1
        return super().exists(path)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _worker(root: Path, counters: Path, clock: Clock, max_age: float = 1.0) -> tuple[ManifestStore, Counting]:
    """What one worker process holds: its own driver and caches, the server's shared counters file."""
    driver = Counting(root)
    return ManifestStore(driver, BlobStore(driver), TagCache(Counters(counters), max_age, clock)), driver


def _manifest(store: ManifestStore, name: str, note: str) -> bytes:
    config = Digest.of(CONFIG, "sha256")
    store.driver.write_bytes(layout.blob_data(config), CONFIG)
    store.blobs.link(name, config)
    return json.dumps({"schemaVersion": 2, "mediaType": MEDIA, "annotations": {"note": note},
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": str(config), "size": len(CONFIG)}, "layers": []}).encode()


def test_a_tag_moved_or_deleted_by_one_worker_is_seen_by_another_at_once(tmp_path: Path) -> None:
    clock = Clock()
    a, _ = _worker(tmp_path / "data", tmp_path / "counters", clock, max_age=3600)
    b, b_driver = _worker(tmp_path / "data", tmp_path / "counters", clock, max_age=3600)
    first = a.put("team/app", "latest", _manifest(a, "team/app", "one"), MEDIA, []).digest
    assert b.get("team/app", "latest").digest == first
    before = b_driver.reads
    for _ in range(3):
        hit = b.get("team/app", "latest")
        assert (hit.digest, hit.media_type) == (first, MEDIA)
    assert b_driver.reads == before  # from memory: no read, no stat

    second = a.put("team/app", "latest", _manifest(a, "team/app", "two"), MEDIA, []).digest
    assert b.get("team/app", "latest").digest == second  # the other worker's write: no max-age wait
    a.delete("team/app", "latest")
    with pytest.raises(ManifestUnknown):
        b.get("team/app", "latest")

    a.put("team/app", "v1", _manifest(a, "team/app", "three"), MEDIA, [])
    assert b.get("team/app", "v1").digest != second
    a.delete("team/app", Digest.of(_manifest(a, "team/app", "three"), "sha256"))  # by digest: its tags go too
    with pytest.raises(ManifestUnknown):
        b.get("team/app", "v1")


def test_a_write_outside_this_server_is_seen_after_max_age(tmp_path: Path) -> None:
    clock = Clock()
    a, _ = _worker(tmp_path / "data", tmp_path / "counters", clock)
    first = a.put("team/app", "latest", _manifest(a, "team/app", "one"), MEDIA, []).digest
    assert a.get("team/app", "latest").digest == first
    other, _ = _worker(tmp_path / "data", tmp_path / "elsewhere", clock)  # another replica: its own counters
    second = other.put("team/app", "latest", _manifest(other, "team/app", "two"), MEDIA, []).digest
    assert a.get("team/app", "latest").digest == first  # cached; the other server's write is not known here
    clock.now += 1.0
    assert a.get("team/app", "latest").digest == second


def test_max_age_zero_reads_every_time(tmp_path: Path) -> None:
    clock = Clock()
    a, driver = _worker(tmp_path / "data", tmp_path / "counters", clock, max_age=0)
    a.put("team/app", "latest", _manifest(a, "team/app", "one"), MEDIA, [])
    a.get("team/app", "latest")
    before = driver.reads
    a.get("team/app", "latest")
    assert driver.reads > before


def test_a_manifest_by_digest_is_served_from_memory_until_any_worker_deletes_it(tmp_path: Path) -> None:
    clock = Clock()
    a, _ = _worker(tmp_path / "data", tmp_path / "counters", clock, max_age=3600)
    b, b_driver = _worker(tmp_path / "data", tmp_path / "counters", clock, max_age=3600)
    content = _manifest(a, "team/app", "one")
    digest = a.put("team/app", "latest", content, MEDIA, []).digest
    assert b.get("team/app", digest).content == content
    before = b_driver.reads
    for _ in range(3):
        hit = b.get("team/app", digest)
        assert (hit.digest, hit.media_type, hit.content) == (digest, MEDIA, content)
    assert b_driver.reads == before  # from memory: no stat of the revision link, no read of its media type
    with pytest.raises(ManifestUnknown):  # the revision of one repository says nothing of another
        b.get("team/other", digest)

    a.delete("team/app", digest)
    with pytest.raises(ManifestUnknown):  # the other worker's deletion: no max-age wait
        b.get("team/app", digest)
    a.put("team/app", digest, content, MEDIA, [])  # pushed again: found again
    assert b.get("team/app", digest).digest == digest


def test_a_manifest_rewritten_with_another_media_type_is_seen_at_once(tmp_path: Path) -> None:
    """Bytes without a `mediaType` take it from the push's Content-Type, so the same digest can be pushed again
    with another type."""
    clock = Clock()
    a, _ = _worker(tmp_path / "data", tmp_path / "counters", clock, max_age=3600)
    b, _ = _worker(tmp_path / "data", tmp_path / "counters", clock, max_age=3600)
    document = json.loads(_manifest(a, "team/app", "one"))
    del document["mediaType"]
    content = json.dumps(document).encode()
    docker = "application/vnd.docker.distribution.manifest.v2+json"
    digest = a.put("team/app", "latest", content, MEDIA, []).digest
    assert b.get("team/app", digest).media_type == MEDIA
    a.put("team/app", digest, content, docker, [])
    assert b.get("team/app", digest).media_type == docker


def test_a_manifest_deleted_outside_this_server_is_seen_by_digest_after_max_age(tmp_path: Path) -> None:
    clock = Clock()
    a, _ = _worker(tmp_path / "data", tmp_path / "counters", clock)
    digest = a.put("team/app", "latest", _manifest(a, "team/app", "one"), MEDIA, []).digest
    assert a.get("team/app", digest).digest == digest
    other, _ = _worker(tmp_path / "data", tmp_path / "elsewhere", clock)  # another replica: its own counters
    other.delete("team/app", digest)
    assert a.get("team/app", digest).digest == digest  # cached; the other server's deletion is not known here
    clock.now += 1.0
    with pytest.raises(ManifestUnknown):
        a.get("team/app", digest)


def test_max_age_zero_reads_a_manifest_by_digest_every_time(tmp_path: Path) -> None:
    clock = Clock()
    a, driver = _worker(tmp_path / "data", tmp_path / "counters", clock, max_age=0)
    digest = a.put("team/app", "latest", _manifest(a, "team/app", "one"), MEDIA, []).digest
    a.get("team/app", digest)
    before = driver.reads
    a.get("team/app", digest)
    assert driver.reads > before
