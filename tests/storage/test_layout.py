"""Every path is built and parsed in layout.py: what it builds, it parses back."""

from __future__ import annotations

from secreg.digest import Digest
from secreg.storage import layout

D = Digest.of(b"layout")
E = Digest.of(b"other", "sha512")


def test_parse_what_is_built() -> None:
    assert layout.parse_blob_path(layout.blob_data(E)) == E
    assert layout.parse_blob_path(layout.blob_dir(D)) is None
    assert layout.parse_repository_path(layout.layer_link("a/b", D)) == layout.RepositoryPath("a/b", "layer", D)
    assert layout.parse_repository_path(layout.revision_link("a", E)) == layout.RepositoryPath("a", "revision", E)
    assert layout.parse_repository_path(layout.tag_current_link("a/b/c", "v1")) == \
        layout.RepositoryPath("a/b/c", "tag", tag="v1")
    assert layout.parse_repository_path(layout.tag_index_link("a", "v1", D)) == \
        layout.RepositoryPath("a", "tag_index", D, "v1")
    for name, path in (("a/b", layout.upload_data("a/b", "u")), ("a", layout.upload_started_at("a", "u")),
                       ("a", layout.upload_hash_state("a", "u", "sha256"))):
        assert layout.parse_repository_path(path) == layout.RepositoryPath(name, "upload", upload_id="u")
    assert layout.is_revision_link(layout.revision_link("x", D))
    assert not layout.is_revision_link(layout.layer_link("x", D))


def test_other_paths_are_not_links() -> None:
    for path in (layout.revision_media_type("a", D), layout.uploads_dir("a") + "/u", layout.referrer_entry("a", D, E),
                 f"{layout.layer_link_dir('a', D)}.tmp/link", layout.GC_LOCK, "elsewhere/link",
                 f"{layout.REPOSITORIES}/a/_layers/sha256/not-hex/link"):
        assert layout.parse_repository_path(path) is None, path


def test_quarantine_round_trip() -> None:
    run = layout.gc_run_dir("r1")
    assert run.startswith(layout.GC_DIR + "/")
    moved = layout.quarantined(run, layout.blob_data(D))
    assert moved.startswith(run + "/blobs/")
    assert layout.unquarantined(run, moved) == layout.blob_data(D)


def test_walk_hints_name_the_one_file_the_parsers_take() -> None:
    for path in (layout.blob_data(D), layout.blob_data(E)):
        assert layout.blob_file_of(path.rpartition("/")[0]) == "data"
    # Tags may be named like the layout's own directories (`_layers`, `current`, `index`, `tags`, `revisions`).
    tags = ("v1", "_layers", "_manifests", "current", "index", "tags", "revisions", "_uploads")
    for path in (layout.layer_link("a/b", D), layout.revision_link("a", E), layout.revision_link("a/b/c", D),
                 layout.layer_link("x/tags", D), layout.layer_link("tags", E),
                 *(layout.tag_current_link(name, tag) for tag in tags for name in ("a", "a/b/c", "tags")),
                 *(layout.tag_index_link(name, tag, digest) for tag in tags for name in ("a", "a/b/c")
                   for digest in (D, E))):
        directory, _, name = path.rpartition("/")
        assert layout.link_file_of(directory) == name == "link", path
    for directory in (layout.BLOBS, f"{layout.BLOBS}/sha256", f"{layout.BLOBS}/sha256/ab"):
        assert layout.blob_file_of(directory) is None, directory
    # A repository's own directory is walked, whatever its name: only `_` components make a link directory.
    for directory in (f"{layout.REPOSITORIES}/x/revisions/sha256/{D.hex}", f"{layout.REPOSITORIES}/a/b/c/d",
                      f"{layout.REPOSITORIES}/a/_layers/sha256", f"{layout.REPOSITORIES}/a/_manifests/revisions",
                      layout.tag_dir("a", "v1"), layout.upload_data("a", "u").rpartition("/")[0],
                      f"{layout.REPOSITORIES}/a/_referrers/sha256/{D.hex}/sha256",
                      *(d for tag in tags for d in (layout.tag_dir("a", tag), f"{layout.tag_dir('a/b', tag)}/index",
                                                    f"{layout.tag_dir('a', tag)}/index/sha256"))):
        assert layout.link_file_of(directory) is None, directory
