"""The in-memory repository index: kept true across processes by the generation token in storage."""

from __future__ import annotations

import json
import time
from pathlib import Path

from secreg.digest import Digest
from secreg.registry.blobs import BlobStore, list_repositories
from secreg.registry.catalog import RepositoryIndex
from secreg.registry.manifests import ManifestStore
from secreg.storage import layout
from secreg.storage.filesystem import FilesystemDriver

CONFIG = b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}'


class Counting(FilesystemDriver):
    """The real filesystem driver, counting directory listings (a walk lists every repository directory)."""

    lists = 0

    def list(self, path: str) -> list[str]:
        Counting.lists += 1
        return super().list(path)


def _worker(root: Path) -> BlobStore:
    """What one worker process holds: its own driver and index over the shared tree."""
    return BlobStore(Counting(root))


def _blob(root: Path, data: bytes) -> Digest:
    digest = Digest.of(data, "sha256")
    path = root / layout.blob_data(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def test_a_repository_linked_by_one_worker_is_listed_by_another_without_a_walk_per_request(tmp_path: Path) -> None:
    a, b = _worker(tmp_path), _worker(tmp_path)
    digest = _blob(tmp_path, b"layer")
    a.link("team/one", digest)
    assert b.repositories.names() == ["team/one"]
    before = Counting.lists
    for _ in range(5):
        assert b.repositories.names() == ["team/one"]
    assert Counting.lists == before  # served from memory: no listing at all

    a.link("team/two", digest)  # a new repository in the other worker
    assert b.repositories.names() == ["team/one", "team/two"]
    a.link("team/two", digest)  # an existing one: no new token, no walk elsewhere
    before = Counting.lists
    assert b.repositories.names() == ["team/one", "team/two"]
    assert Counting.lists == before
    assert a.repositories.names() == ["team/one", "team/two"]


def test_a_manifest_push_announces_its_repository(tmp_path: Path) -> None:
    a, b = _worker(tmp_path), _worker(tmp_path)
    assert b.repositories.names() == []
    config = _blob(tmp_path, CONFIG)
    a.link("only/manifest", config)
    assert b.repositories.names() == ["only/manifest"]
    # The layer link of the next repository is written behind the index's back: only the manifest announces it.
    link = tmp_path / layout.layer_link("other/repo", config)
    link.parent.mkdir(parents=True)
    link.write_bytes(layout.link_content(config))
    assert b.repositories.names() == ["only/manifest"]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "size": len(CONFIG), "digest": str(config)}, "layers": []}).encode()
    ManifestStore(a.driver, a).put("other/repo", "v1", manifest, "application/vnd.oci.image.manifest.v1+json", [])
    assert b.repositories.names() == ["only/manifest", "other/repo"]
    # Mount candidates come from the marks links leave: the link written behind secreg's back left none.
    assert list(b.repositories_linking(config)) == ["only/manifest"]


def test_a_repository_written_behind_secregs_back_shows_after_the_maximum_age(tmp_path: Path) -> None:
    store = _worker(tmp_path)
    # Long enough that a stalled test (a loaded machine) does not see the list go stale before it means to.
    store.repositories = RepositoryIndex(store.driver, list_repositories, max_age=2.0)
    assert store.repositories.names() == []
    link = tmp_path / layout.layer_link("foreign/repo", Digest.of(b"x", "sha256"))
    link.parent.mkdir(parents=True)
    link.write_text("written by another registry")
    assert store.repositories.names() == []  # no token changed: the list in memory still holds
    time.sleep(2.1)
    store.repositories.names()  # stale: a background walk starts, the old list is served meanwhile
    deadline = time.monotonic() + 60
    while store.repositories.names() != ["foreign/repo"]:
        assert time.monotonic() < deadline, "the background walk never picked the repository up"
        time.sleep(0.05)


def test_tags_list_is_one_listing_in_lexical_order(tmp_path: Path) -> None:
    store = _worker(tmp_path)
    manifests = ManifestStore(store.driver, store)
    digest = Digest.of(b"m", "sha256")
    for tag in ("b", "a", "c10", "c9"):
        link = tmp_path / layout.tag_current_link("lib/x", tag)
        link.parent.mkdir(parents=True)
        link.write_bytes(layout.link_content(digest))
    assert manifests.tag_names("lib/x") == ["a", "b", "c10", "c9"]


def _image(root: Path, store: BlobStore, name: str) -> bytes:
    config = _blob(root, CONFIG)
    store.link(name, config)
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "size": len(CONFIG), "digest": str(config)}, "layers": []}).encode()


def test_tags_pushed_or_deleted_by_one_worker_are_seen_by_another(tmp_path: Path) -> None:
    a, b = _worker(tmp_path), _worker(tmp_path)
    ma, mb = ManifestStore(a.driver, a), ManifestStore(b.driver, b)
    manifest = _image(tmp_path, a, "lib/x")
    oci = "application/vnd.oci.image.manifest.v1+json"
    ma.put("lib/x", "v2", manifest, oci, [])
    assert mb.tag_names("lib/x") == ["v2"]
    ma.put("lib/x", "v10", manifest, oci, [])
    assert mb.tag_names("lib/x") == ["v10", "v2"]
    before = Counting.lists
    assert mb.tag_names("lib/x") == ["v10", "v2"]
    ma.put("lib/x", "v2", manifest, oci, [])  # re-pointing a tag changes no list
    assert mb.tag_names("lib/x") == ["v10", "v2"]
    assert Counting.lists == before
    ma.delete("lib/x", "v2")
    assert mb.tag_names("lib/x") == ["v10"]
    assert ma.tag_names("lib/x") == ["v10"]
    ma.delete("lib/x", Digest.of(manifest, "sha256"))  # deleting the manifest drops the tags pointing at it
    assert mb.tag_names("lib/x") == []


def test_mount_candidates_come_from_link_marks_or_one_search_that_leaves_them(tmp_path: Path) -> None:
    store = _worker(tmp_path)
    digest = _blob(tmp_path, b"shared layer")
    for name in ("a/one", "b/two"):  # linked the way the reference registry does: no marks
        link = tmp_path / layout.layer_link(name, digest)
        link.parent.mkdir(parents=True)
        link.write_bytes(layout.link_content(digest))
    (tmp_path / layout.layer_link("c/three", Digest.of(b"other", "sha256"))).parent.mkdir(parents=True)
    assert list(store.repositories_linking(digest)) == ["a/one", "b/two"]  # one search of every repository
    assert sorted(p.name for p in (tmp_path / layout.linkers_dir(digest)).iterdir()) == ["a+one", "b+two"]
    before = Counting.lists
    assert list(store.repositories_linking(digest)) == ["a/one", "b/two"]
    assert Counting.lists == before + 1  # now one listing of the marks
    store.link("d/four", digest)
    store.unlink("a/one", digest)  # its mark stays; the link check drops it
    assert list(store.repositories_linking(digest)) == ["b/two", "d/four"]
    assert list(store.repositories_linking(Digest.of(b"absent", "sha256"))) == []
