"""`04_management_test.go` (Content Management), with the earlier `04_content_management_test.go`,
`07_manifest_delete_test.go`, `08_manifest_delete_test.go`, `08_blob_delete_test.go`,
`09_blob_delete_test.go` and `07_error_codes_test.go`.

The newest file requires deletes to work (202 everywhere). The earlier ones were written for registries
that refuse them ("DELETE request to manifest URL (tag) MUST fail", "unless tag deletion is disallowed");
those specs run against a second secreg with deletes off (the default), where secreg answers
405 UNSUPPORTED as spec.md allows.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conformance.classic import (
    ERROR_CODES,
    INVALID_MANIFEST_CONTENT,
    NAMESPACE,
    OCI_MANIFEST,
    TEST_TAG_NAME,
    ClassicData,
    error_codes_of,
    ok,
    post_put_blob,
    put_manifest,
    tag_list,
)

State = dict[str, Any]
TAGS = f"/v2/{NAMESPACE}/tags/list"
MANIFESTS = f"/v2/{NAMESPACE}/manifests"
BLOBS = f"/v2/{NAMESPACE}/blobs"


# --- Setup ---------------------------------------------------------------------------------------------

def test_populate_registry_with_test_config_blob(client: httpx.Client, data: ClassicData) -> None:
    assert ok(post_put_blob(client, data.configs[3]))


def test_populate_registry_with_test_layer(client: httpx.Client, data: ClassicData) -> None:
    assert ok(post_put_blob(client, data.layer))


def test_populate_registry_with_test_tag(client: httpx.Client, data: ClassicData) -> None:
    assert ok(put_manifest(client, TEST_TAG_NAME, data.manifests[3]))


def test_populate_registry_with_test_digest(client: httpx.Client, data: ClassicData) -> None:
    # In the whole Go run configs[0] is still there from the push workflow; this module runs on its own.
    assert ok(post_put_blob(client, data.configs[0]))
    assert ok(put_manifest(client, data.manifests[0].digest, data.manifests[0]))


def test_check_how_many_tags_there_are_before_anything_gets_deleted(client: httpx.Client,
                                                                    state: State) -> None:
    r = client.get(TAGS)
    assert r.status_code == 200
    state["num_tags"] = len(r.json()["tags"])


# --- Manifest delete -----------------------------------------------------------------------------------

def test_delete_request_to_manifest_tag_should_return_202(client: httpx.Client) -> None:
    r = client.delete(f"{MANIFESTS}/{TEST_TAG_NAME}")
    assert r.status_code == 202, r.text


def test_delete_request_to_manifest_digest_should_return_202(client: httpx.Client, data: ClassicData) -> None:
    r = client.delete(f"{MANIFESTS}/{data.manifests[0].digest}")
    assert r.status_code == 202, r.text


def test_get_request_to_deleted_manifest_url_should_yield_404_response(client: httpx.Client,
                                                                       data: ClassicData) -> None:
    # 07/08_manifest_delete_test.go; the later "unless delete is disallowed" form also accepted 200.
    assert client.get(f"{MANIFESTS}/{data.manifests[0].digest}").status_code == 404
    # The tag went, the manifest it pointed at stays (deleting a tag only untags).
    assert client.get(f"{MANIFESTS}/{TEST_TAG_NAME}").status_code == 404
    assert client.get(f"{MANIFESTS}/{data.manifests[3].digest}").status_code == 200


def test_get_request_to_tags_list_should_reflect_manifest_deletion(client: httpx.Client, state: State) -> None:
    r = client.get(TAGS)
    assert r.status_code in (200, 404)
    expect_tags = state["num_tags"] - 1
    if r.status_code == 200:
        assert len(tag_list(r)) == expect_tags
    else:
        assert expect_tags == 0


def test_delete_request_to_manifest_digest_should_yield_202_response_unless_already_deleted(
        client: httpx.Client, data: ClassicData) -> None:
    """The earlier form: the digest the deleted tag pointed at, which is still there."""
    assert client.delete(f"{MANIFESTS}/{data.manifests[3].digest}").status_code in (202, 404)
    assert client.get(f"{MANIFESTS}/{data.manifests[3].digest}").status_code == 404


# --- Blob delete ---------------------------------------------------------------------------------------

def test_delete_request_to_config_blob_url_should_yield_202_response(client: httpx.Client,
                                                                     data: ClassicData) -> None:
    r = client.delete(f"{BLOBS}/{data.configs[3].digest}")
    assert r.status_code == 202, r.text


def test_delete_request_to_layer_blob_url_should_yield_202_response(client: httpx.Client,
                                                                    data: ClassicData) -> None:
    r = client.delete(f"{BLOBS}/{data.layer.digest}")
    assert r.status_code == 202, r.text


def test_get_request_to_deleted_blob_url_should_yield_404_response(client: httpx.Client,
                                                                   data: ClassicData) -> None:
    assert client.get(f"{BLOBS}/{data.configs[3].digest}").status_code == 404
    assert client.get(f"{BLOBS}/{data.layer.digest}").status_code == 404


# --- Against a registry with deletes disabled ----------------------------------------------------------

def test_closed_setup(closed: httpx.Client, data: ClassicData) -> None:
    for blob in (data.configs[3], data.layer):
        assert ok(post_put_blob(closed, blob))
    for i in range(4):
        assert put_manifest(closed, f"test{i}", data.manifests[3]).status_code == 201


def test_delete_request_to_manifest_tag_should_return_202_unless_tag_deletion_is_disallowed_400_405(
        closed: httpx.Client) -> None:
    r = closed.delete(f"{MANIFESTS}/test0")
    assert r.status_code in (400, 405, 202)
    assert r.status_code == 405
    assert error_codes_of(r)[0] == "UNSUPPORTED"


def test_delete_request_to_manifest_url_tag_must_fail(closed: httpx.Client) -> None:
    r = closed.delete(f"{MANIFESTS}/test0")
    assert 400 <= r.status_code < 500


def test_get_request_to_manifest_url_should_reveal_that_delete_failed(closed: httpx.Client,
                                                                      data: ClassicData) -> None:
    r = closed.get(f"{MANIFESTS}/{data.manifests[3].digest}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert closed.get(f"{MANIFESTS}/test0").status_code == 200


def test_get_request_to_deleted_manifest_url_should_yield_404_response_unless_delete_is_disallowed(
        closed: httpx.Client, data: ClassicData) -> None:
    r = closed.delete(f"{MANIFESTS}/{data.manifests[3].digest}")
    assert r.status_code == 405 and error_codes_of(r)[0] == "UNSUPPORTED"
    assert closed.get(f"{MANIFESTS}/{data.manifests[3].digest}").status_code in (404, 200)


def test_delete_request_to_blob_url_is_refused_and_blob_stays(closed: httpx.Client, data: ClassicData) -> None:
    """04_management_test.go's tolerant form: 405 means `blobDeleteAllowed = false`, so the blob stays."""
    r = closed.delete(f"{BLOBS}/{data.configs[3].digest}")
    assert r.status_code in (202, 404, 405)
    assert r.status_code == 405
    assert closed.get(f"{BLOBS}/{data.configs[3].digest}").status_code == 200


# --- 07_error_codes_test.go ----------------------------------------------------------------------------

def test_400_response_body_should_contain_oci_conforming_json_message(closed: httpx.Client) -> None:
    r = closed.put(f"{MANIFESTS}/sha256:totallywrong", content=INVALID_MANIFEST_CONTENT,
                   headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400
    assert error_codes_of(r)[0] in ERROR_CODES


def test_response_from_delete_request_to_manifest_url_tag_should_have_oci_conforming_code(
        closed: httpx.Client) -> None:
    r = closed.delete(f"{MANIFESTS}/test0")
    assert error_codes_of(r)[0] in ERROR_CODES
