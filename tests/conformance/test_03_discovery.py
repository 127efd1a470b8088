"""`03_discovery_test.go` (Content Discovery: tags and referrers), with `05_referrers.go` and
`06_tags_list_test.go` of the earlier layouts.

`OCI-Filters-Applied`: the newest suite expects the value `artifactType` (the filter's name), as spec.md
says; `05_referrers.go` expected the artifact type itself. We follow the spec.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conformance.classic import (
    ARTIFACT_TYPE_FILTER,
    EMPTY_JSON_DIGEST,
    NAMESPACE,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_ARTIFACT_TYPE_A,
    TEST_ANNOTATION_KEY,
    TEST_TAG_NAME,
    Blob,
    ClassicData,
    delete_ok,
    ok,
    post_put_blob,
    put_manifest,
    tag_list,
)

State = dict[str, Any]
NUM_TAGS = 4
TAGS = f"/v2/{NAMESPACE}/tags/list"
REFERRERS = f"/v2/{NAMESPACE}/referrers"
MANIFESTS = f"/v2/{NAMESPACE}/manifests"
BLOBS = f"/v2/{NAMESPACE}/blobs"


def _push_referrer(client: httpx.Client, manifest: Blob, subject: Blob, media_type: str = OCI_MANIFEST) -> None:
    r = put_manifest(client, manifest.digest, manifest, media_type=media_type)
    assert ok(r), r.text
    assert r.headers["OCI-Subject"] == subject.digest


# --- Setup ---------------------------------------------------------------------------------------------

def test_populate_registry_with_test_blob(client: httpx.Client, data: ClassicData) -> None:
    assert ok(post_put_blob(client, data.configs[2]))


def test_populate_registry_with_test_layer(client: httpx.Client, data: ClassicData) -> None:
    assert ok(post_put_blob(client, data.layer))


def test_populate_registry_with_test_tags(client: httpx.Client, data: ClassicData, state: State) -> None:
    for i in range(NUM_TAGS):
        assert ok(put_manifest(client, f"test{i}", data.manifests[2]))
    state["tag_list"] = tag_list(client.get(TAGS))


def test_references_setup(client: httpx.Client, data: ClassicData) -> None:
    assert data.empty_json.digest == EMPTY_JSON_DIGEST
    assert ok(post_put_blob(client, data.empty_json))
    # Reference blob and referrers before the subject is pushed: the spec requires accepting them.
    assert ok(post_put_blob(client, data.ref_blob_a))
    _push_referrer(client, data.refs_a_config, data.manifests[4])
    _push_referrer(client, data.refs_a_layer, data.manifests[4])
    _push_referrer(client, data.refs_index, data.manifests[4], OCI_INDEX)
    assert ok(post_put_blob(client, data.configs[4]))
    assert ok(post_put_blob(client, data.layer))
    assert ok(put_manifest(client, TEST_TAG_NAME, data.manifests[4]))
    # ... and after it.
    assert ok(post_put_blob(client, data.ref_blob_b))
    _push_referrer(client, data.refs_b_config, data.manifests[4])
    _push_referrer(client, data.refs_b_layer, data.manifests[4])
    # A subject that is never pushed.
    _push_referrer(client, data.refs_c_layer, data.manifests[3])


# --- Test content discovery endpoints (listing tags) ---------------------------------------------------

def test_get_request_to_list_tags_should_yield_200_response(client: httpx.Client, state: State) -> None:
    r = client.get(TAGS)
    assert r.status_code == 200
    state["tag_list"] = tag_list(r)
    state["num_tags"] = len(state["tag_list"])
    assert state["num_tags"] == NUM_TAGS + 1  # test0..3 and tagtest0


def test_get_number_of_tags_should_be_limitable_by_n_query_parameter(client: httpx.Client,
                                                                     state: State) -> None:
    results = state["num_tags"] // 2
    r = client.get(TAGS, params={"n": results})
    assert r.status_code == 200
    state["tag_list"] = tag_list(r)
    assert len(state["tag_list"]) == results


def test_get_start_of_tag_is_set_by_last_query_parameter(client: httpx.Client, state: State) -> None:
    results = state["num_tags"] // 2
    first = tag_list(client.get(TAGS, params={"n": results}))
    last = first[results - 1]
    r = client.get(TAGS, params={"n": results, "last": last})
    assert r.status_code == 200
    page = tag_list(r)
    # The Go spec checks its own first page again (a tautology); what it means is checked here.
    assert len(page) <= results and page and all(tag > last for tag in page)
    assert last in first


# --- Test content discovery endpoints (listing references) ---------------------------------------------

def test_get_request_to_nonexistent_blob_should_result_in_empty_200_response(client: httpx.Client,
                                                                              data: ClassicData) -> None:
    r = client.get(f"{REFERRERS}/{data.dummy_digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.json()["manifests"] == []


def test_get_request_to_existing_blob_should_yield_200(client: httpx.Client, data: ClassicData) -> None:
    r = client.get(f"{REFERRERS}/{data.manifests[4].digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    # 05_referrers.go: a Docker-Content-Digest header, if any, must name configs[4] (secreg sends none).
    assert r.headers.get("Docker-Content-Digest", data.configs[4].digest) == data.configs[4].digest
    manifests = r.json()["manifests"]
    assert len(manifests) == 5
    assert manifests[0]["digest"] != manifests[1]["digest"]
    for entry in manifests:
        assert len(entry["annotations"]) == 1
        assert entry["annotations"][TEST_ANNOTATION_KEY] == data.annotation_values[entry["digest"]]
    # 05_referrers.go predates the index artifact: its four image-manifest referrers.
    assert len([m for m in manifests if m["mediaType"] == OCI_MANIFEST]) == 4


def test_get_request_to_existing_blob_with_filter_should_yield_200(client: httpx.Client,
                                                                   data: ClassicData) -> None:
    r = client.get(f"{REFERRERS}/{data.manifests[4].digest}", params={"artifactType": REF_ARTIFACT_TYPE_A})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    # Filtering is implemented, so the header is there and the list holds the two type-A artifacts.
    assert r.headers["OCI-Filters-Applied"] == ARTIFACT_TYPE_FILTER
    manifests = r.json()["manifests"]
    assert len(manifests) == 2
    for entry in manifests:
        assert len(entry["annotations"]) == 1
        assert entry["annotations"][TEST_ANNOTATION_KEY] == data.annotation_values[entry["digest"]]


def test_get_request_to_missing_manifest_should_yield_200(client: httpx.Client, data: ClassicData) -> None:
    r = client.get(f"{REFERRERS}/{data.manifests[3].digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    manifests = r.json()["manifests"]
    assert len(manifests) == 1 and manifests[0]["digest"] == data.refs_c_layer.digest


# --- Teardown (manifests before blobs) -----------------------------------------------------------------

def _references(data: ClassicData) -> list[str]:
    return [data.refs_index.digest, data.manifests[2].digest, data.manifests[4].digest, data.refs_a_config.digest,
            data.refs_a_layer.digest, TEST_TAG_NAME, data.refs_b_config.digest, data.refs_b_layer.digest,
            data.refs_c_layer.digest]


def test_delete_created_manifest_and_associated_tags(client: httpx.Client, data: ClassicData) -> None:
    for reference in _references(data):
        assert delete_ok(client.delete(f"{MANIFESTS}/{reference}"), 404), reference


def test_delete_config_blob_created_in_tests(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{BLOBS}/{data.configs[2].digest}"))


def test_delete_layer_blob_created_in_setup(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{BLOBS}/{data.layer.digest}"))


def test_references_teardown(client: httpx.Client, data: ClassicData) -> None:
    for manifest in (data.refs_index, data.refs_a_config, data.refs_a_layer, data.manifests[4],
                     data.refs_b_config, data.refs_b_layer):
        assert delete_ok(client.delete(f"{MANIFESTS}/{manifest.digest}"), 404)
    for blob in (data.configs[4], data.ref_blob_a, data.ref_blob_b, data.empty_json):
        assert delete_ok(client.delete(f"{BLOBS}/{blob.digest}"), 404)
    # Every referrer is gone with its manifest.
    assert client.get(f"{REFERRERS}/{data.manifests[4].digest}").json()["manifests"] == []


def test_teardown_with_blobs_deleted_before_manifests(client: httpx.Client) -> None:
    """OCI_DELETE_MANIFEST_BEFORE_BLOBS=0: the referrers setup again, blobs deleted first."""
    other = ClassicData()
    name = f"{NAMESPACE}-blobs-first"
    for blob in (other.empty_json, other.ref_blob_a, other.ref_blob_b, other.configs[4], other.layer):
        assert ok(post_put_blob(client, blob, name))
    assert ok(put_manifest(client, TEST_TAG_NAME, other.manifests[4], name))
    for manifest in (other.refs_a_config, other.refs_a_layer, other.refs_b_config, other.refs_b_layer):
        assert ok(put_manifest(client, manifest.digest, manifest, name))
    for blob in (other.configs[4], other.ref_blob_a, other.ref_blob_b, other.empty_json):
        assert client.delete(f"/v2/{name}/blobs/{blob.digest}").status_code == 202
    for manifest in (other.refs_a_config, other.refs_a_layer, other.manifests[4], other.refs_b_config,
                     other.refs_b_layer):
        assert client.delete(f"/v2/{name}/manifests/{manifest.digest}").status_code == 202


# --- 06_tags_list_test.go: Tags List, on the four tags of 05_manifest_upload_test.go --------------------

def test_tags_list_setup(client: httpx.Client, data: ClassicData) -> None:
    name = f"{NAMESPACE}-tags"
    assert ok(post_put_blob(client, data.configs[2], name))
    assert ok(post_put_blob(client, data.layer, name))
    for i in range(NUM_TAGS):
        assert put_manifest(client, f"test{i}", data.manifests[2], name).status_code == 201


def test_tags_list_get_request_to_list_tags_should_yield_200_response(client: httpx.Client,
                                                                      state: State) -> None:
    r = client.get(f"/v2/{NAMESPACE}-tags/tags/list")
    assert r.status_code == 200
    state["old_tags"] = r.json()["tags"]


def test_tags_list_get_request_to_manifest_url_tag_should_yield_200_response(client: httpx.Client,
                                                                            state: State) -> None:
    tags = state["old_tags"]
    assert tags
    r = client.get(f"/v2/{NAMESPACE}-tags/manifests/{tags[0]}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200


def test_tags_list_get_number_of_tags_should_be_limitable_by_n_query_parameter(client: httpx.Client,
                                                                               state: State) -> None:
    results = len(state["old_tags"]) // 2
    r = client.get(f"/v2/{NAMESPACE}-tags/tags/list", params={"n": results})
    assert r.status_code == 200
    state["last_tag_list"] = r.json()["tags"]
    assert len(state["last_tag_list"]) == results


def test_tags_list_get_start_of_tag_is_set_by_last_query_parameter(client: httpx.Client, state: State) -> None:
    results = len(state["old_tags"]) // 2
    last = state["last_tag_list"][results - 1]
    r = client.get(f"/v2/{NAMESPACE}-tags/tags/list", params={"n": results, "last": last})
    assert r.status_code == 200
    assert "test3" in r.json()["tags"]
