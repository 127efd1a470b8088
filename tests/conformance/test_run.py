"""`run.go` (`TestAll`, the newer layout), with every API and data option on: the "1.1+dev" defaults of
`config.go` (digest headers required, tag parameters, upload cancel) plus anonymous mounts, the referrers
API, empty blobs and sha512.

Order as in `TestAll`: ping, the empty repository, the blob APIs per digest algorithm, one workflow per
data set (push, tag list, head, pull, referrers, delete), then the manifest error cases. A Go fallback that
the suite would only report as a skip (`errRegUnsupported`) fails here.

"sparse" (OCI_DATA_SPARSE, off by default): spec.md lets a registry refuse a manifest whose descriptors
name content it does not hold, as long as it answers MANIFEST_BLOB_UNKNOWN; secreg refuses, like the
reference registry does for image manifests, so that data set has its own test asserting the refusal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conformance.runner import (
    blob_delete,
    blob_get,
    blob_get_exists_full,
    blob_head,
    blob_head_exists,
    blob_mount,
    blob_patch_chunked,
    blob_patch_stream,
    blob_post_cancel,
    blob_post_only,
    blob_post_put,
    blob_push_any,
    chunk_min_length,
    manifest_delete,
    manifest_get,
    manifest_get_exists,
    manifest_head,
    manifest_head_exists,
    manifest_put,
    ping,
    referrer_matches,
    referrers_list,
    tag_list,
)
from tests.conformance.testdata import (
    CHUNK_MIN,
    MT_OCI_IMAGE,
    MT_OCI_LAYER_PRE,
    REPO1,
    REPO2,
    DataSet,
    GenOpts,
    Unsupported,
    detect_media_type,
    digest_of,
    generate_data_sets,
    rand_text,
)

ALGORITHMS = ("sha256", "sha512")
DATA_SETS = (
    "image", "image-uncompressed", "large-manifest", "index", "nested-index", "empty-index", "artifact",
    "artifact-index", "artifact-without-layers", "artifacts-with-subject", "index-with-subject",
    "missing-subject", "data-field", "non-distributable-layers", "custom-fields", "no-layers", "sha512",
    "tag-param-sha256", "tag-param-sha512", "bad-digest-image",
)
BLOB_API_TESTS = (
    "post only", "post+put", "chunked single", "stream", "mount", "mount anonymous", "mount missing",
    "post cancel", "chunked multi", "chunked multi and put chunk", "chunked out-of-order",
    "chunked out-of-order and put chunk",
)
BAD_DIGEST_TESTS = ("bad digest post only", "bad digest post+put", "bad digest chunked",
                    "bad digest chunked and put chunk", "bad digest stream")
PUSH_APIS: dict[str, Callable[..., Any]] = {
    "post+put": blob_post_put, "post only": blob_post_only, "stream": blob_patch_stream,
    "chunked": blob_patch_chunked,
}


@pytest.fixture(scope="module")
def data_sets() -> dict[str, DataSet]:
    return generate_data_sets()


def _delete_blob(client: httpx.Client, repo: str, dig: str) -> None:
    """`TestDeleteBlob`: delete, then (atomic) a HEAD must already say 404."""
    blob_delete(client, repo, dig)
    assert blob_head(client, repo, dig).status_code == 404


# --- ping, empty ---------------------------------------------------------------------------------------

def test_ping(client: httpx.Client) -> None:
    ping(client)


def test_empty_tag_list(client: httpx.Client) -> None:
    assert tag_list(client, REPO1) == []


def test_empty_referrers(client: httpx.Client) -> None:
    index, _ = referrers_list(client, REPO1, digest_of(rand_text().encode()))
    assert index["manifests"] == []


# --- blobs, per digest algorithm -----------------------------------------------------------------------

@pytest.mark.parametrize("algo", ALGORITHMS)
def test_blobs_get_missing(client: httpx.Client, algo: str) -> None:
    dig, _ = DataSet("blobs").gen_blob(GenOpts(blob_size=512, algo=algo))
    assert blob_get(client, REPO1, dig).status_code == 404


@pytest.mark.parametrize("name", BLOB_API_TESTS)
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_blobs(client: httpx.Client, algo: str, name: str) -> None:
    td = DataSet(f"blobs-{algo}")
    size = 512
    if name.startswith(("chunked multi", "chunked out-of-order")):
        size = chunk_min_length(client, REPO1) * 3 - 5  # spans three chunks
    dig, _ = td.gen_blob(GenOpts(blob_size=size, algo=algo))
    if name == "post only":
        blob_post_only(client, REPO1, dig, td)
    elif name == "post+put":
        blob_post_put(client, REPO1, dig, td)
    elif name.startswith("chunked"):
        blob_patch_chunked(client, REPO1, dig, td, put_last_chunk=name.endswith("put chunk"),
                           out_of_order="out-of-order" in name)
    elif name == "stream":
        blob_patch_stream(client, REPO1, dig, td)
    elif name == "post cancel":
        blob_post_cancel(client, REPO1)
    elif name == "mount":
        blob_push_any(client, REPO2, dig, td)
        blob_mount(client, REPO1, REPO2, dig, td)
    elif name == "mount anonymous":
        blob_push_any(client, REPO2, dig, td)
        blob_mount(client, REPO1, "", dig, td)
    elif name == "mount missing":
        # Not in repo2: the registry must open an upload session instead (202); the fallback PUT then works.
        with pytest.raises(Unsupported):
            blob_mount(client, REPO1, REPO2, dig, td)
    if name != "post cancel":
        blob_head_exists(client, REPO1, dig, td)
        blob_get_exists_full(client, REPO1, dig, td)
    _delete_blob(client, REPO1, dig)
    if name in ("mount", "mount anonymous"):
        _delete_blob(client, REPO2, dig)


def test_blobs_out_of_order_chunk_then_recovering_get_on_the_same_connection(client: httpx.Client) -> None:
    """What "chunked out-of-order" does, with chunks big enough to arrive after the 416 is decided: the GET
    that recovers the offset reuses the connection, so the refused chunk must not leave it unusable."""
    chunk = os.urandom(2 * 1024 * 1024)
    for _ in range(10):
        location = client.post(f"/v2/{REPO1}/blobs/uploads/", headers={"Content-Length": "0"}).headers["Location"]
        r = client.patch(location, content=chunk, headers={"Content-Range": f"{len(chunk)}-{2 * len(chunk) - 1}"})
        assert r.status_code == 416
        assert client.get(location).status_code == 204
    # A chunk too big to read through: the refusal says the connection closes, so no client reuses it.
    location = client.post(f"/v2/{REPO1}/blobs/uploads/").headers["Location"]
    big = os.urandom(6 * 1024 * 1024)
    r = client.patch(location, content=big, headers={"Content-Range": f"1-{len(big)}"})
    assert r.status_code == 416 and r.headers["Connection"] == "close"
    assert client.get(location).status_code == 204


# name: (Range header, status, the slice of the 2048-byte blob a 206 carries)
RANGE_TESTS: dict[str, tuple[str, int, tuple[int, int] | None]] = {
    "range 500-1499": ("bytes=500-1499", 206, (500, 1500)),
    "range 500-": ("bytes=500-", 206, (500, 2048)),
    "range -500": ("bytes=-500", 206, (1548, 2048)),
    "range 2000-5000": ("bytes=2000-5000", 206, (2000, 2048)),
    "range 500-0": ("bytes=500-0", 416, None),
    "range 5000-10000": ("bytes=5000-10000", 416, None),
}


@pytest.mark.parametrize("name", list(RANGE_TESTS))
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_blobs_range_requests(client: httpx.Client, algo: str, name: str) -> None:
    td = DataSet(f"blobs-{algo}")
    dig, body = td.gen_blob(GenOpts(blob_size=2048, algo=algo))
    blob_push_any(client, REPO1, dig, td)
    header, status, part = RANGE_TESTS[name]
    r = blob_get(client, REPO1, dig, headers={"Range": header})
    # A full 200 would be the Go fallback, "range request unsupported": a failure with every option on.
    assert r.status_code == status, f"{r.status_code} {r.headers}"
    if part is not None:
        start, end = part
        assert r.content == body[start:end]
        assert r.headers["Content-Length"] == str(end - start)
        assert r.headers["Content-Range"] in (f"bytes {start}-{end - 1}/2048", f"bytes {start}-{end - 1}/*")
    _delete_blob(client, REPO1, dig)


@pytest.mark.parametrize("api", list(PUSH_APIS))
@pytest.mark.parametrize("name", ["empty", "emptyJSON"])
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_blobs_well_known_content(client: httpx.Client, algo: str, name: str, api: str) -> None:
    """The zero-byte blob (OCI_DATA_EMPTY_BLOB) and `{}`, pushed with each upload API in turn."""
    td = DataSet(f"blobs-{algo}")
    content = b"" if name == "empty" else b"{}"
    dig = digest_of(content, algo)
    td.blobs[dig] = content
    PUSH_APIS[api](client, REPO1, dig, td)
    blob_head_exists(client, REPO1, dig, td)
    blob_get_exists_full(client, REPO1, dig, td)
    _delete_blob(client, REPO1, dig)


@pytest.mark.parametrize("name", BAD_DIGEST_TESTS)
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_blobs_bad_digest(client: httpx.Client, algo: str, name: str) -> None:
    td = DataSet(f"blobs-{algo}")
    dig, _ = td.gen_blob(GenOpts(blob_size=CHUNK_MIN * 3 - 5, algo=algo))
    td.blobs[dig] += b"oh no"  # the bytes no longer match the digest
    if name == "bad digest post only":
        blob_post_only(client, REPO1, dig, td, bad_digest=True)
    elif name == "bad digest post+put":
        blob_post_put(client, REPO1, dig, td, bad_digest=True)
    elif name.startswith("bad digest chunked"):
        blob_patch_chunked(client, REPO1, dig, td, bad_digest=True)
    else:
        blob_patch_stream(client, REPO1, dig, td, bad_digest=True)
    assert blob_head(client, REPO1, dig).status_code == 404  # nothing was stored


# --- data sets -----------------------------------------------------------------------------------------

def _push(client: httpx.Client, td: DataSet) -> None:
    """`TestPush`: blobs, then manifests by digest (with tag parameters where the set says so), then tags."""
    for dig in td.blobs:
        blob_push_any(client, REPO1, dig, td)
    for dig in td.man_order:
        tags = [tag for tag, d in td.tags.items() if d == dig] if dig in td.tag_param else []
        r = manifest_put(client, REPO1, dig, dig, td, tags=tags, bad_digest=dig in td.bad_digest)
        echoed = {t.strip() for value in r.headers.get_list("OCI-Tag") for t in value.split(",")}
        for tag in tags:
            assert tag in echoed, f"header missing OCI-Tag: {tag}"
            td.tag_pushed.add(tag)
    for tag, dig in td.tags.items():
        if tag not in td.tag_pushed:
            manifest_put(client, REPO1, tag, dig, td)
            td.tag_pushed.add(tag)


def _tag_list(client: httpx.Client, td: DataSet) -> None:
    """`TestList`: every tag is listed, and `last` splits the sorted listing exactly."""
    tags = tag_list(client, REPO1)
    for tag in td.tags:
        assert tag in tags, f"missing tag {tag!r} from listing"
    if len(tags) >= 2:
        ordered = sorted(tags)
        end = len(ordered) // 2
        last = ordered[end - 1]
        partial = tag_list(client, REPO1, last=last)
        for tag in ordered[:end]:
            assert tag not in partial, f"tag {tag!r} returned when last set to {last!r}"
        for tag in ordered[end:]:
            assert tag in partial, f"tag {tag!r} missing when last set to {last!r}"


def _head(client: httpx.Client, td: DataSet) -> None:
    for tag, dig in td.tags.items():
        if dig not in td.skip_pull:
            manifest_head_exists(client, REPO1, tag, dig, td)
    for dig in td.man_order:
        if dig not in td.skip_pull:
            manifest_head_exists(client, REPO1, dig, dig, td)
    for dig in td.blobs:
        blob_head_exists(client, REPO1, dig, td)


def _pull(client: httpx.Client, td: DataSet) -> None:
    for tag, dig in td.tags.items():
        if dig not in td.skip_pull:
            manifest_get_exists(client, REPO1, tag, dig, td)
    for dig in td.man_order:
        if dig not in td.skip_pull:
            manifest_get_exists(client, REPO1, dig, dig, td)
    for dig in td.blobs:
        blob_get_exists_full(client, REPO1, dig, td)


def _referrers(client: httpx.Client, td: DataSet) -> None:
    """`TestReferrers`: every referrer listed; each artifactType filter applied, announced, and exact."""
    for subject, goals in td.referrers.items():
        index, _ = referrers_list(client, REPO1, subject)
        for goal in goals:
            assert any(referrer_matches(e, goal) for e in index["manifests"]), f"entry missing: {goal}"
        for artifact_type in {goal.get("artifactType", "") for goal in goals}:
            index, r = referrers_list(client, REPO1, subject, artifact_type)
            applied = [f.strip() for f in r.headers.get("OCI-Filters-Applied", "").split(",")]
            assert "artifactType" in applied, "registry does not set the expected OCI-Filters-Applied header"
            for goal in goals:
                if goal.get("artifactType", "") == artifact_type:
                    assert any(referrer_matches(e, goal) for e in index["manifests"]), f"entry missing: {goal}"
            for entry in index["manifests"]:
                assert entry.get("artifactType", "") == artifact_type, f"filter included {entry}"


def _delete(client: httpx.Client, td: DataSet) -> None:
    """`TestDelete`: tags, then manifests in reverse push order, then blobs; each gone at once (atomic)."""
    for tag in td.tags:
        if tag in td.tag_pushed:
            manifest_delete(client, REPO1, tag)
            assert manifest_head(client, REPO1, tag).status_code == 404
    for dig in reversed(td.man_order):
        manifest_delete(client, REPO1, dig)
        assert manifest_head(client, REPO1, dig).status_code == 404
    for dig in td.blobs:
        _delete_blob(client, REPO1, dig)


@pytest.mark.parametrize("name", DATA_SETS)
def test_data(client: httpx.Client, data_sets: dict[str, DataSet], name: str) -> None:
    td = data_sets[name]
    _push(client, td)
    _tag_list(client, td)
    _head(client, td)
    _pull(client, td)
    _referrers(client, td)
    _delete(client, td)


def test_data_sparse(client: httpx.Client) -> None:
    """"sparse": an image missing a layer, an index missing a manifest. Refused with MANIFEST_BLOB_UNKNOWN."""
    td = DataSet("sparse")
    sparse_image = td.gen_manifest_full(GenOpts(tag="sparse-image"))
    removed = next(d for d in td.blobs if td.desc[d]["mediaType"].startswith(MT_OCI_LAYER_PRE))
    del td.blobs[removed]
    image = td.gen_manifest_full(GenOpts(platform={"architecture": "amd64", "os": "linux"}))
    random_digest = digest_of(rand_text().encode())
    td.desc[random_digest] = {"mediaType": MT_OCI_IMAGE, "digest": random_digest, "size": 1024}
    index = td.gen_index([{"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"}],
                         [image, random_digest], GenOpts(tag="sparse-index"))
    for dig in td.blobs:
        blob_push_any(client, REPO1, dig, td)
    for dig in td.man_order:  # sparse image, complete image, sparse index
        if dig == image:
            manifest_put(client, REPO1, dig, dig, td)
            continue
        r = client.put(f"/v2/{REPO1}/manifests/{dig}", content=td.manifests[dig],
                       headers={"Content-Type": detect_media_type(td.manifests[dig])})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", r.text
    assert manifest_head(client, REPO1, sparse_image).status_code == 404
    assert manifest_head(client, REPO1, index).status_code == 404
    _delete(client, DataSet("sparse", man_order=[image], blobs=td.blobs))


# --- manifest errors -----------------------------------------------------------------------------------

def test_missing_manifest_by_digest(client: httpx.Client) -> None:
    assert manifest_get(client, REPO1, digest_of(os.urandom(1024))).status_code == 404


def test_missing_manifest_by_tag(client: httpx.Client) -> None:
    assert manifest_get(client, REPO1, f"missing-{rand_text().lower()[:20]}").status_code == 404


def test_invalid_digest_format(client: httpx.Client) -> None:
    """"invalid-digest-format": PUT and GET `sha256:baddigeststring` (manifest-put, manifest-get)."""
    td = DataSet("invalid-manifest-digest")
    dig = td.gen_manifest_full(GenOpts(layer_count=1))
    for blob in td.blobs:
        blob_push_any(client, REPO1, blob, td)
    manifest_put(client, REPO1, "sha256:baddigeststring", dig, td, bad_digest=True)
    assert manifest_get(client, REPO1, "sha256:baddigeststring").status_code in (404, 400)
    _delete(client, td)
