"""Garbage collection on real files, with images built through the real stores."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from secreg.cli.main import main
from secreg.digest import Digest
from secreg.registry.blobs import BlobStore
from secreg.registry.gc import GC_DIR, GC_LOCK, GcBusy, GcReport, Progress, collect_garbage
from secreg.registry.manifests import ManifestStore
from secreg.registry.uploads import UploadStore
from secreg.storage import layout
from secreg.storage.filesystem import FilesystemDriver

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LATER = 7200.0  # seconds ahead: `now` for a run that must find everything older than a 3600 s grace


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.driver = FilesystemDriver(root)
        self.blobs = BlobStore(self.driver)
        self.uploads = UploadStore(self.driver, self.blobs)
        self.manifests = ManifestStore(self.driver, self.blobs)

    def push_blob(self, name: str, data: bytes, algorithm: str = "sha256") -> Digest:
        async def body() -> AsyncIterator[bytes]:
            yield data

        digest = Digest.of(data, algorithm)
        asyncio.run(self.uploads.monolithic(name, digest, body(), len(data)))
        return digest

    def push_image(self, name: str, tag: str | None, seed: str, algorithm: str = "sha256",
                   subject: Digest | None = None, layers: list[bytes] | None = None) -> Digest:
        config = json.dumps({"seed": seed}).encode()
        layer_data = layers if layers is not None else [f"{seed}-layer-{i}".encode() * 50 for i in range(2)]
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self._descriptor("application/vnd.oci.image.config.v1+json", config, name, algorithm),
            "layers": [self._descriptor("application/vnd.oci.image.layer.v1.tar", layer, name, algorithm)
                       for layer in layer_data],
        }
        if subject is not None:
            document["subject"] = {"mediaType": OCI_MANIFEST, "digest": str(subject), "size": 1}
        return self.put(name, tag, document, algorithm)

    def push_index(self, name: str, tag: str | None, children: list[Digest]) -> Digest:
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": str(child), "size": 1} for child in children],
        }
        return self.put(name, tag, document)

    def put(self, name: str, tag: str | None, document: dict[str, object], algorithm: str = "sha256") -> Digest:
        content = json.dumps(document).encode()
        # By digest (which names the algorithm), tagged through `?tag=` as clients do for sha512 manifests.
        digest = Digest.of(content, algorithm)
        tags = [tag] if tag is not None else []
        return self.manifests.put(name, digest, content, str(document["mediaType"]), tags).digest

    def _descriptor(self, media_type: str, data: bytes, name: str, algorithm: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": str(self.push_blob(name, data, algorithm)), "size": len(data)}

    def has_blob(self, digest: Digest) -> bool:
        return self.driver.exists(layout.blob_data(digest))

    def orphan(self, data: bytes, algorithm: str = "sha256") -> Digest:
        """A blob no repository links (an upload whose repository link was deleted)."""
        digest = self.push_blob("scratch/orphans", data, algorithm)
        self.blobs.unlink("scratch/orphans", digest)
        return digest

    def gc(self, grace: float = 3600, delete_untagged: bool = False, dry_run: bool = False,
           later: bool = True, **extra: Any) -> GcReport:
        now = time.time() + (LATER if later else 0)
        return collect_garbage(self.driver, grace=grace, delete_untagged=delete_untagged, dry_run=dry_run,
                               now=now, settle=extra.pop("settle", 0), **extra)


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path)


def removed_blobs(report: GcReport) -> set[Digest]:
    return {blob.digest for blob in report.blobs_removed}


def test_unreferenced_blob_is_swept_and_its_bytes_counted(reg: Registry) -> None:
    orphan = reg.orphan(b"o" * 1000)
    report = reg.gc()
    assert removed_blobs(report) == {orphan}
    assert report.bytes_freed == 1000
    assert not reg.has_blob(orphan)
    assert not reg.driver.exists(layout.blob_dir(orphan))
    assert reg.driver.list(GC_DIR) == ["lock"]  # nothing left in quarantine


def test_referenced_and_linked_blobs_are_kept(reg: Registry) -> None:
    image = reg.push_image("team/app", "v1", "a")
    parsed = json.loads(reg.manifests.get("team/app", image).content)
    layer = Digest.parse(parsed["layers"][0]["digest"])
    reg.blobs.unlink("team/app", layer)  # still referenced by the manifest
    linked_only = reg.push_blob("team/app", b"pushed, manifest not yet")
    report = reg.gc()
    assert report.blobs_removed == () and report.links_removed == ()
    for digest in (image, layer, linked_only, Digest.parse(parsed["config"]["digest"])):
        assert reg.has_blob(digest)


def test_grace_period_is_respected(reg: Registry) -> None:
    orphan = reg.orphan(b"young")
    assert reg.gc(grace=3600, later=False).blobs_removed == ()
    # An upload committed from old data keeps the data's mtime; the rename into place still makes it young.
    data = reg.root / layout.blob_data(orphan)
    os.utime(data, (time.time() - 10_000, time.time() - 10_000))
    # The listing's old mtime does not decide alone: a dry run (exact plan) and a real run (recheck's stat)
    # both see the recent ctime.
    assert reg.gc(grace=3600, later=False, dry_run=True).blobs_removed == ()
    assert reg.gc(grace=3600, later=False).blobs_removed == ()
    assert reg.has_blob(orphan)
    assert removed_blobs(reg.gc(grace=3600, later=True)) == {orphan}


def test_dry_run_reports_the_same_and_removes_nothing(reg: Registry) -> None:
    orphans = {reg.orphan(b"one"), reg.orphan(b"two")}
    reg.push_image("team/app", None, "untagged")
    reg.driver.write_bytes(layout.layer_link("team/app", Digest.of(b"never stored")),
                           layout.link_content(Digest.of(b"never stored")))
    dry = reg.gc(delete_untagged=True, dry_run=True)
    assert dry.dry_run and removed_blobs(dry) >= orphans
    assert len(dry.manifests_removed) == 1 and len(dry.links_removed) == 1
    assert all(reg.has_blob(d) for d in orphans)
    assert reg.manifests.exists("team/app", dry.manifests_removed[0].digest)
    real = reg.gc(delete_untagged=True)
    assert (removed_blobs(real), real.manifests_removed, real.links_removed, real.bytes_freed) == (
        removed_blobs(dry), dry.manifests_removed, dry.links_removed, dry.bytes_freed)


def test_delete_untagged_keeps_index_children_and_referrers_of_kept(reg: Registry) -> None:
    name = "team/multi"
    amd = reg.push_image(name, None, "amd64")
    arm = reg.push_image(name, None, "arm64")
    index = reg.push_index(name, "latest", [amd, arm])
    signature = reg.push_image(name, None, "sig-of-index", subject=index)
    sbom = reg.push_image(name, None, "sbom-of-child", subject=amd)
    sig_of_sig = reg.push_image(name, None, "sig-of-sig", subject=signature)
    stray = reg.push_image(name, None, "stray")
    stray_sig = reg.push_image(name, None, "sig-of-stray", subject=stray)
    old_head = reg.push_image(name, "moving", "old-head")
    new_head = reg.push_image(name, "moving", "new-head")

    report = reg.gc(delete_untagged=True)

    removed = {m.digest for m in report.manifests_removed}
    assert removed == {stray, stray_sig, old_head}
    for digest in (amd, arm, index, signature, sbom, sig_of_sig, new_head):
        assert reg.manifests.exists(name, digest) and reg.has_blob(digest)
    for digest in removed:
        assert not reg.manifests.exists(name, digest) and not reg.has_blob(digest)
    assert removed_blobs(report) == removed  # their layers stay linked: links are never removed here
    assert {r["digest"] for r in reg.manifests.referrers(name, index, None)} == {str(signature)}
    assert reg.manifests.referrers(name, stray, None) == []
    assert not reg.driver.exists(layout.referrer_entry(name, stray, stray_sig))
    assert not reg.driver.exists(layout.tag_index_link(name, "moving", old_head))
    assert reg.driver.exists(layout.tag_index_link(name, "moving", new_head))
    assert reg.manifests.get(name, "latest").digest == index


def test_delete_untagged_reads_tags_named_like_the_layouts_directories(reg: Registry) -> None:
    """The walk stats a tag's `current/link` and `index/<alg>/<hex>/link` in place of listing them; a tag
    named `_layers`, `current` or `index` is still read as a tag, and its history of a removed head goes."""
    name = "team/names"
    for tag in ("_layers", "current", "index", "tags", "revisions"):
        old_head = reg.push_image(name, tag, f"old-{tag}")
        new_head = reg.push_image(name, tag, f"new-{tag}")
        report = reg.gc(delete_untagged=True)
        assert [m.digest for m in report.manifests_removed] == [old_head], tag
        assert not reg.driver.exists(layout.tag_index_link(name, tag, old_head)), tag
        assert reg.driver.exists(layout.tag_index_link(name, tag, new_head)), tag
        assert reg.manifests.get(name, tag).digest == new_head


def test_delete_untagged_spares_young_revisions_and_shared_manifest_blobs(reg: Registry) -> None:
    young = reg.push_image("team/a", None, "young")
    assert reg.gc(delete_untagged=True, later=False).manifests_removed == ()
    shared = reg.push_image("team/b", "kept", "young")  # the same bytes, tagged in another repository
    assert shared == young
    report = reg.gc(delete_untagged=True)
    assert report.manifests_removed[0].repository == "team/a" and report.blobs_removed == ()
    assert reg.manifests.get("team/b", "kept").digest == young


def test_without_delete_untagged_every_revision_is_kept(reg: Registry) -> None:
    untagged = reg.push_image("team/app", None, "untagged")
    report = reg.gc()
    assert report.manifests_removed == () and reg.manifests.exists("team/app", untagged)


@pytest.mark.parametrize("delete_untagged", [False, True])
def test_repositories_named_like_layout_directories_keep_their_blobs(reg: Registry, delete_untagged: bool) -> None:
    # Without delete_untagged the mark skips `_manifests/tags`: a repository whose name has a `tags` (or
    # `_manifests`-like) component must still be walked, links and revisions alike.
    names = ["team/tags", "team/tags/app", "tags/manifests/tags", "a/revisions/tags"]
    images = {name: reg.push_image(name, "v1", name) for name in names}
    linked = {name: reg.push_blob(name, f"{name} linked only".encode()) for name in names}
    for name, image in images.items():
        reg.blobs.unlink(name, Digest.parse(json.loads(reg.manifests.get(name, image).content)["layers"][0]["digest"]))
    orphan = reg.orphan(b"nobody's")
    report = reg.gc(delete_untagged=delete_untagged)
    assert removed_blobs(report) == {orphan} and report.manifests_removed == ()
    for name, image in images.items():
        parsed = json.loads(reg.manifests.get(name, image).content)
        referenced = [Digest.parse(d["digest"]) for d in [parsed["config"], *parsed["layers"]]]
        for digest in (image, linked[name], *referenced):
            assert reg.has_blob(digest), (name, digest)


def test_deleted_manifest_frees_its_blob_and_unlinked_layers(reg: Registry) -> None:
    keep = reg.push_image("team/keep", "v1", "keep")
    shared_layer = json.loads(reg.manifests.get("team/keep", keep).content)["layers"][0]["digest"]
    gone = reg.push_image("team/gone", "v1", "gone", layers=[b"own layer", b"keep-layer-0" * 50])
    document = json.loads(reg.manifests.get("team/gone", gone).content)
    blobs = [Digest.parse(d["digest"]) for d in (document["config"], *document["layers"])]
    assert str(blobs[2]) == shared_layer
    reg.manifests.delete("team/gone", gone)
    for digest in blobs:
        reg.blobs.unlink("team/gone", digest)
    report = reg.gc()
    assert removed_blobs(report) == {gone, blobs[0], blobs[1]}
    assert reg.has_blob(blobs[2])  # still linked (and used) by team/keep


def test_sha512_blobs(reg: Registry) -> None:
    image = reg.push_image("team/512", "v1", "five-twelve", algorithm="sha512")
    assert image.algorithm == "sha512"
    layers = [Digest.parse(d["digest"]) for d in json.loads(reg.manifests.get("team/512", "v1").content)["layers"]]
    assert all(d.algorithm == "sha512" for d in layers)
    orphan = reg.orphan(b"sha512 orphan", "sha512")
    report = reg.gc()
    assert removed_blobs(report) == {orphan}
    assert all(reg.has_blob(d) for d in (image, *layers))


def test_links_to_missing_blobs_are_removed(reg: Registry) -> None:
    missing = Digest.of(b"gone elsewhere")
    reg.driver.write_bytes(layout.layer_link("team/app", missing), layout.link_content(missing))
    present = reg.push_blob("team/app", b"present")
    report = reg.gc()
    assert [(k.repository, k.digest) for k in report.links_removed] == [("team/app", missing)]
    assert not reg.driver.exists(layout.layer_link("team/app", missing))
    assert reg.blobs.is_linked("team/app", present)


def test_stale_upload_sessions_are_purged(reg: Registry) -> None:
    stale = reg.uploads.start("team/app")
    reg.driver.write_bytes(layout.upload_started_at("team/app", stale), b"2000-01-01T00:00:00+00:00")
    data = reg.driver.local_path(layout.upload_data("team/app", stale))
    if data is not None and os.path.exists(data):  # idle: no data since long ago either
        os.utime(data, (946684800, 946684800))
    fresh = reg.uploads.start("team/app")
    report = reg.gc(later=False, upload_purge_age=3600)
    assert [(u.repository, u.upload_id) for u in report.uploads_purged] == [("team/app", stale)]
    assert reg.uploads.list_sessions("team/app") == [fresh]


def test_the_purge_finds_sessions_in_the_scan_of_every_kind_of_repository(reg: Registry) -> None:
    """The purge judges the sessions the mark's walk of repositories/ found: in a repository that holds
    nothing else, in a nested one, with the start time lost (judged by the data), beside tags named like the
    layout's directories; young ones stay, and a dry run reports what a run removes."""
    reg.push_image("team/app", "_uploads", "a")
    old = time.time() - 10_000

    def stale(name: str, lose_start: bool = False) -> str:
        upload_id = reg.uploads.start(name)
        if lose_start:
            (reg.root / layout.upload_started_at(name, upload_id)).unlink()
        else:
            reg.driver.write_bytes(layout.upload_started_at(name, upload_id), b"2000-01-01T00:00:00+00:00")
        os.utime(reg.root / layout.upload_data(name, upload_id), (old, old))
        return upload_id

    expected = sorted([("team/app", stale("team/app")), ("only/uploads", stale("only/uploads")),
                       ("a/b/c/deep", stale("a/b/c/deep", lose_start=True))])
    fresh = [(name, reg.uploads.start(name)) for name in ("team/app", "only/uploads", "young")]
    dry = reg.gc(later=False, upload_purge_age=3600, dry_run=True)
    assert sorted((u.repository, u.upload_id) for u in dry.uploads_purged) == expected
    report = reg.gc(later=False, upload_purge_age=3600)
    assert sorted((u.repository, u.upload_id) for u in report.uploads_purged) == expected
    assert sorted(reg.uploads.all_sessions()) == sorted(fresh)
    assert reg.gc(later=False, upload_purge_age=3600).uploads_purged == ()


def _in_the_settle(action: Callable[[], None]) -> Progress:
    """A progress callback that runs `action` once, in the settle: after the quarantine, before the final re-mark
    (what a client racing GC does at the worst moment; no thread, no timing)."""
    done: list[str] = []

    def progress(phase: str, _done: int, _total: int, _bytes: int) -> None:
        if phase == "settle" and not done:
            done.append(phase)
            action()

    return progress


def test_a_link_made_while_quarantined_puts_the_blob_back(reg: Registry) -> None:
    """The race the final re-mark closes: a repository links the blob after GC decided to remove it."""
    orphan = reg.orphan(b"about to be mounted")
    linked: list[bool] = []

    def link() -> None:
        linked.append(not reg.has_blob(orphan))  # quarantined by now
        reg.driver.write_bytes(layout.layer_link("team/late", orphan), layout.link_content(orphan))

    report = reg.gc(settle=0.01, progress=_in_the_settle(link))
    assert linked == [True]
    assert report.blobs_removed == () and report.rescued == 1
    assert reg.blobs.is_linked("team/late", orphan)


def test_a_revision_pushed_while_quarantined_keeps_its_manifest_blob(reg: Registry) -> None:
    image = reg.push_image("team/app", "v1", "repushed")
    content = reg.manifests.get("team/app", image).content
    reg.manifests.delete("team/app", image)
    pushed: list[bool] = []

    def repush() -> None:
        pushed.append(not reg.has_blob(image))  # quarantined by now
        # What a PUT that checked the blob just before the quarantine writes next: the revision link.
        reg.driver.write_bytes(layout.revision_link("team/other", image), layout.link_content(image))

    report = reg.gc(settle=0.01, progress=_in_the_settle(repush))
    assert pushed == [True] and report.blobs_removed == ()
    assert reg.has_blob(image) and reg.manifests.get("team/other", image).content == content


def test_a_tag_set_while_quarantined_keeps_the_revision(reg: Registry) -> None:
    untagged = reg.push_image("team/app", None, "tagged-late")
    tagged: list[bool] = []

    def tag() -> None:
        tagged.append(not reg.manifests.exists("team/app", untagged))  # quarantined by now
        reg.driver.write_bytes(layout.tag_current_link("team/app", "late"), layout.link_content(untagged))

    report = reg.gc(delete_untagged=True, settle=0.01, progress=_in_the_settle(tag))
    assert tagged == [True] and report.manifests_removed == () and report.blobs_removed == ()
    assert report.rescued == 2  # the revision, and its manifest blob with it
    assert reg.manifests.get("team/app", "late").digest == untagged and reg.has_blob(untagged)


def test_an_interrupted_settle_puts_everything_back(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    orphan = reg.orphan(b"interrupted")
    untagged = reg.push_image("team/app", None, "interrupted")

    def interrupt(seconds: float) -> None:
        assert not reg.has_blob(orphan) and not reg.manifests.exists("team/app", untagged)
        raise KeyboardInterrupt

    monkeypatch.setattr("secreg.registry.gc.time.sleep", interrupt)
    with pytest.raises(KeyboardInterrupt):
        reg.gc(delete_untagged=True, settle=1.0)
    assert reg.has_blob(orphan) and reg.has_blob(untagged) and reg.manifests.exists("team/app", untagged)
    assert reg.driver.list(GC_DIR) == ["lock"]


def test_an_interrupted_run_is_undone_by_the_next(reg: Registry) -> None:
    image = reg.push_image("team/app", "v1", "crash")
    reg.driver.move(layout.blob_dir(image), f"{GC_DIR}/0123/{layout.blob_dir(image)[len(layout.V2) + 1:]}")
    assert not reg.has_blob(image)
    report = reg.gc()
    assert report.blobs_removed == () and reg.has_blob(image)
    assert reg.driver.list(GC_DIR) == ["lock"]


def test_one_run_at_a_time(reg: Registry) -> None:
    holder = reg.driver.open_append(GC_LOCK)
    assert holder.try_lock()
    try:
        with pytest.raises(GcBusy):
            reg.gc()
        assert reg.gc(dry_run=True).dry_run  # a dry run reads only and needs no lock
    finally:
        holder.close()


def test_cli_reports_text_and_json(reg: Registry) -> None:
    orphan = reg.orphan(b"x" * 2048)
    time.sleep(1.3)  # older than the clock allowance, so --grace 0 finds it

    def run(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            status = main(["gc", "--storage", str(reg.root), "--grace", "0", *args])
        return status, out.getvalue()

    status, text = run("--dry-run")
    assert status == 0 and f"would remove blob {orphan} (2.0 KiB)" in text and "gc (dry run):" in text
    status, text = run("--json")
    report = json.loads(text)
    assert status == 0 and report["blobs_removed"] == [{"digest": str(orphan), "size": 2048}]
    assert report["bytes_freed"] == 2048 and report["dry_run"] is False
    assert not reg.has_blob(orphan)
    status, text = run()
    assert status == 0 and "gc: removed 0 blob(s) (0 bytes)" in text
    assert main(["gc", "--storage", str(reg.root / "missing")]) == 2


def test_a_manifest_nested_past_the_recursion_limit_keeps_what_it_mentions(reg: Registry) -> None:
    """An index written by another registry into a shared store, nested 100,000 levels deep (json.loads raised
    RecursionError, which stopped the run): unreadable, so every digest written in it is kept, the untagged
    child manifest and a blob only it names included; the rest of the run goes on."""
    child = reg.push_image("team/deep", None, "child")
    named = reg.orphan(b"named only by the deep index")
    orphan = reg.orphan(b"named by nothing")
    depth = 100_000
    content = (b'{"schemaVersion": 2, "mediaType": "' + OCI_INDEX.encode() + b'", "manifests": [{"mediaType": "'
               + OCI_MANIFEST.encode() + b'", "digest": "' + str(child).encode() + b'", "size": 1}], '
               + b'"annotations": {"x": "' + str(named).encode() + b'"}, "deep": ' + b"[" * depth + b"]" * depth
               + b"}")
    index = reg.push_blob("team/deep", content)
    reg.driver.write_bytes(layout.revision_link("team/deep", index), layout.link_content(index))
    reg.driver.write_bytes(layout.revision_media_type("team/deep", index), OCI_INDEX.encode())
    reg.driver.write_bytes(layout.tag_index_link("team/deep", "v1", index), layout.link_content(index))
    reg.driver.write_bytes(layout.tag_current_link("team/deep", "v1"), layout.link_content(index))
    report = reg.gc(delete_untagged=True)
    assert removed_blobs(report) == {orphan}
    assert report.manifests_removed == ()
    assert reg.manifests.get("team/deep", child).content
    assert reg.has_blob(named) and reg.has_blob(index)
