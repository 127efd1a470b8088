"""`registry.browse` on real files written through the registry model: push times, what a delete takes
with it, repository and store sizes, and the record of the last garbage collection."""

from __future__ import annotations

import os
from pathlib import Path

from secreg.digest import Digest
from secreg.registry.browse import Browse
from secreg.storage import layout
from tests.registry.test_model import local, push_image, run


def test_tags_sizes_and_what_a_delete_takes(tmp_path: Path) -> None:
    registry = local(tmp_path / "store")
    digest, manifest = run(push_image(registry, "team/app", "1.0", b"one"))
    run(registry.put_manifest("team/app", "latest", manifest, None))
    other, _ = run(push_image(registry, "team/app", "2.0", b"two"))
    browse = Browse(registry.driver)
    # push times are the tags' link times: make 1.0 the oldest
    os.utime(registry.driver.local_path(layout.tag_current_link("team/app", "1.0")) or "", (1000, 1000))
    tags = {t.name: t.pushed for t in browse.tags("team/app")}
    assert sorted(tags) == ["1.0", "2.0", "latest"] and tags["1.0"] == 1000
    assert browse.tags("no/such") == []
    assert browse.tags_pointing_at("team/app", digest) == ["1.0", "latest"]
    assert browse.tags_pointing_at("team/app", other) == ["2.0"]
    config_and_layers = len(b'{"seed": "one"}') + 300 + len(b'{"seed": "two"}') + 300
    assert browse.repository_size("team/app") == config_and_layers
    summary = browse.summary("team/app")
    assert summary.tags == 3 and summary.size == config_and_layers and summary.pushed is not None
    usage = browse.usage()
    assert usage.repositories == 1 and usage.blobs == 6  # two configs, two layers, two manifests
    assert usage.largest == (("team/app", config_and_layers),)
    assert usage.bytes == config_and_layers + len(manifest) + len(run(registry.get_manifest("team/app", other)).content)
    before = browse.stamp("team/app")
    run(registry.delete_manifest("team/app", "2.0"))
    assert browse.stamp("team/app") != before  # the tag directory changed


def test_usage_sizes_repositories_from_the_walk_of_the_blobs(tmp_path: Path) -> None:
    """Usage takes each linked blob's size from its walk of blobs/ (no stat per link): the same as a
    repository's own size; a link to a missing blob counts nothing, a blob's other files are not blobs."""
    registry = local(tmp_path / "store")
    run(push_image(registry, "team/app", "1.0", b"one"))
    run(push_image(registry, "a/b/c/deep", "1.0", b"two"))
    missing = Digest.of(b"never stored")
    registry.driver.write_bytes(layout.layer_link("a/b/c/deep", missing), layout.link_content(missing))
    stray = Digest.of(b"stray")
    registry.driver.write_bytes(layout.blob_data(stray), b"stray")
    registry.driver.write_bytes(f"{layout.blob_dir(stray)}/data.partial", b"not a blob")
    browse = Browse(registry.driver)
    usage = browse.usage()
    assert usage.repositories == 2 and usage.blobs == 7  # two images (config, layer, manifest each) and the stray
    assert dict(usage.largest) == {n: browse.repository_size(n) for n in ("team/app", "a/b/c/deep")}
    assert usage.largest[0][1] > 0


def test_the_last_collection_is_recorded_for_every_worker(tmp_path: Path) -> None:
    registry = local(tmp_path / "store")
    run(push_image(registry, "team/app", "1.0", b"one"))
    browse = Browse(registry.driver)
    assert browse.last_gc() is None
    dry = browse.collect_garbage(grace=0, upload_purge_age=3600, dry_run=True, trigger="test")
    assert dry.dry_run and browse.last_gc() is None, "a dry run is not a run"
    browse.collect_garbage(grace=0, upload_purge_age=3600, dry_run=False, trigger="test")
    last = Browse(registry.driver).last_gc()
    assert last is not None and last["trigger"] == "test" and last["blobs_removed"] == 0
    # the next collection neither trips over the record nor removes it
    browse.collect_garbage(grace=0, upload_purge_age=3600, dry_run=False, trigger="again")
    assert (browse.last_gc() or {})["trigger"] == "again"


def test_secreg_gc_records_its_run(tmp_path: Path) -> None:
    from secreg.cli.main import main

    registry = local(tmp_path / "store")
    run(push_image(registry, "team/app", "1.0", b"one"))
    assert main(["gc", "--storage", str(tmp_path / "store"), "--grace", "0", "--dry-run"]) == 0
    assert Browse(registry.driver).last_gc() is None
    assert main(["gc", "--storage", str(tmp_path / "store"), "--grace", "0"]) == 0
    assert (Browse(registry.driver).last_gc() or {})["trigger"] == "cli"
