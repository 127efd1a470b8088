"""`02_push_test.go` (Push workflow), with the first layout's `02_blob_upload_streamed_test.go`,
`03_blob_upload_monolithic_test.go`, `04_blob_upload_chunked_test.go`, `05_manifest_upload_test.go` and
`push_test.go`, whose specs the newest file kept, reworded or dropped; the dropped ones are here too.

Run as with OCI_AUTOMATIC_CROSSMOUNT=1: secreg always mounts a blob named without `from` when the caller may
pull a repository that holds it, so the "automatic content discovery disabled" spec (mutually exclusive with
the enabled one) does not apply.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conformance.classic import (
    CROSSMOUNT_NAMESPACE,
    EMPTY_JSON_DIGEST,
    EMPTY_LAYER_TEST_TAG,
    NAMESPACE,
    NONEXISTENT_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_ARTIFACT_TYPE_INDEX,
    TEST_ANNOTATION_KEY,
    TEST_TAG_NAME,
    Blob,
    ClassicData,
    delete_ok,
    descriptor,
    marshal_indent,
    ok,
    post_put_blob,
    put_manifest,
)

State = dict[str, Any]
OCTET = {"Content-Type": "application/octet-stream"}
BLOBS = f"/v2/{NAMESPACE}/blobs"
MANIFESTS = f"/v2/{NAMESPACE}/manifests"


# --- Setup (the newest file uploads what its artifact specs reference) ---------------------------------

def test_upload_empty_json_blob_needed_for_further_tests(client: httpx.Client, data: ClassicData) -> None:
    assert data.empty_json.digest == EMPTY_JSON_DIGEST
    assert ok(post_put_blob(client, data.empty_json))


def test_upload_blob_needed_for_further_tests(client: httpx.Client, data: ClassicData) -> None:
    assert ok(post_put_blob(client, data.ref_blob_a))


# --- Blob Upload Streamed ------------------------------------------------------------------------------

def test_patch_request_with_blob_in_body_should_yield_202_response(client: httpx.Client, data: ClassicData,
                                                                   state: State) -> None:
    r = client.post(f"{BLOBS}/uploads/")
    assert r.headers["Location"]
    # No Content-Range and no Content-Length: a streamed body (Go sends it chunked, as httpx does here).
    r = client.patch(r.headers["Location"], content=iter([data.blob_a.content]), headers=OCTET)
    assert r.status_code == 202, r.text
    state["last"] = r


def test_put_request_to_session_url_with_digest_should_yield_201_response(client: httpx.Client,
                                                                          data: ClassicData, state: State) -> None:
    # The Go spec sets a Content-Length header of the blob's size with no body; Go's client drops that header
    # and sends `Content-Length: 0`, which is what an empty closing PUT carries here too.
    r = client.put(state["last"].headers["Location"], params={"digest": data.blob_a.digest}, headers=OCTET)
    assert r.status_code == 201, r.text
    assert r.headers["Location"]


# --- Blob Upload Monolithic ----------------------------------------------------------------------------

def test_get_nonexistent_blob_should_result_in_404_response(client: httpx.Client, data: ClassicData) -> None:
    assert client.get(f"{BLOBS}/{data.dummy_digest}").status_code == 404


def test_post_request_with_digest_and_blob_should_yield_a_201_or_202(client: httpx.Client, data: ClassicData,
                                                                     state: State) -> None:
    config = data.configs[1]
    r = client.post(f"{BLOBS}/uploads/", params={"digest": config.digest}, content=config.content,
                    headers={**OCTET, "Content-Length": config.length})
    assert r.headers["Location"]
    # The first layout required 201 ("POST request with digest and blob should yield a 201"); secreg
    # supports single-POST uploads, so it answers 201 either way.
    assert r.status_code == 201, r.text
    state["last"] = r


def test_get_request_to_blob_url_from_prior_request_should_yield_200_or_404_based_on_response_code(
        client: httpx.Client, data: ClassicData, state: State) -> None:
    r = client.get(f"{BLOBS}/{data.configs[1].digest}")
    assert r.status_code == (404 if state["last"].status_code == 202 else 200)


def test_post_request_should_yield_a_session_id(client: httpx.Client, state: State) -> None:
    r = client.post(f"{BLOBS}/uploads/")
    assert r.status_code == 202
    state["last"] = r


def test_put_upload_of_a_blob_should_yield_a_201_response(client: httpx.Client, data: ClassicData,
                                                          state: State) -> None:
    config = data.configs[1]
    r = client.put(state["last"].headers["Location"], params={"digest": config.digest}, content=config.content,
                   headers={**OCTET, "Content-Length": config.length})
    assert r.headers["Location"] and r.status_code == 201


def test_get_request_to_existing_blob_should_yield_200_response(client: httpx.Client, data: ClassicData) -> None:
    assert client.get(f"{BLOBS}/{data.configs[1].digest}").status_code == 200


def test_put_upload_of_a_layer_blob_should_yield_a_201_response(client: httpx.Client, data: ClassicData) -> None:
    r = post_put_blob(client, data.layer)
    assert r.headers["Location"] and r.status_code == 201


def test_get_request_to_existing_layer_should_yield_200_response(client: httpx.Client,
                                                                 data: ClassicData) -> None:
    assert client.get(f"{BLOBS}/{data.layer.digest}").status_code == 200


# --- Blob Upload Chunked -------------------------------------------------------------------------------

def test_out_of_order_blob_upload_should_return_416(client: httpx.Client, data: ClassicData) -> None:
    r = client.post(f"{BLOBS}/uploads/", headers={"Content-Length": "0"})
    assert r.headers["Location"]
    # Rebuild the chunked blob if the registry's minimum chunk is above our chunk size.
    minimum = r.headers.get("OCI-Chunk-Min-Length")
    if minimum is not None:
        assert minimum.isdigit()
        if int(minimum) > len(data.chunk1):
            data.setup_chunked_blob(int(minimum) * 2 - 2)
    r = client.patch(r.headers["Location"], content=data.chunk2, headers={
        **OCTET, "Content-Length": str(len(data.chunk2)), "Content-Range": data.chunk2_range})
    assert r.status_code == 416


def test_patch_request_with_first_chunk_should_return_202(client: httpx.Client, data: ClassicData,
                                                          state: State) -> None:
    r = client.post(f"{BLOBS}/uploads/", headers={"Content-Length": "0"})
    assert r.headers["Location"]
    state["prev"] = r
    r = client.patch(r.headers["Location"], content=data.chunk1, headers={
        **OCTET, "Content-Length": str(len(data.chunk1)), "Content-Range": data.chunk1_range})
    assert r.status_code == 202
    assert r.headers["Range"] == data.chunk1_range
    state["last"] = r


def test_retry_previous_blob_chunk_should_return_416(client: httpx.Client, data: ClassicData,
                                                     state: State) -> None:
    r = client.patch(state["prev"].headers["Location"], content=data.chunk1, headers={
        **OCTET, "Content-Length": str(len(data.chunk1)), "Content-Range": data.chunk1_range})
    assert r.status_code == 416


def test_get_on_stale_blob_upload_should_return_204_with_a_range_and_location(
        client: httpx.Client, data: ClassicData, state: State) -> None:
    r = client.get(state["prev"].headers["Location"])
    assert r.status_code == 204
    assert r.headers["Location"]
    assert r.headers["Range"] == data.chunk1_range
    state["last"] = r


def test_patch_request_with_second_chunk_should_return_202(client: httpx.Client, data: ClassicData,
                                                           state: State) -> None:
    r = client.patch(state["last"].headers["Location"], content=data.chunk2, headers={
        **OCTET, "Content-Length": str(len(data.chunk2)), "Content-Range": data.chunk2_range})
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data.blob_b.content) - 1}"
    assert r.headers["Location"]
    state["last"] = r


def test_put_request_with_digest_should_return_201(client: httpx.Client, data: ClassicData,
                                                   state: State) -> None:
    r = client.put(state["last"].headers["Location"], params={"digest": data.blob_b.digest},
                   headers={**OCTET, "Content-Length": "0"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"]


def test_put_request_with_final_chunk_should_return_201(client: httpx.Client, data: ClassicData) -> None:
    """The first layout closed the session with the second chunk in the PUT itself."""
    r = client.post(f"{BLOBS}/uploads/", headers={"Content-Length": "0"})
    r = client.patch(r.headers["Location"], content=data.chunk1, headers={
        **OCTET, "Content-Length": str(len(data.chunk1)), "Content-Range": data.chunk1_range})
    assert r.status_code == 202
    r = client.put(r.headers["Location"], params={"digest": data.blob_b.digest}, content=data.chunk2, headers={
        **OCTET, "Content-Length": str(len(data.chunk2)), "Content-Range": data.chunk2_range})
    assert r.headers["Location"] and r.status_code == 201, r.text


# --- Cross-Repository Blob Mount -----------------------------------------------------------------------

def test_cross_mounting_of_a_blob_without_the_from_argument_should_yield_session_id(
        client: httpx.Client, data: ClassicData) -> None:
    r = client.post(f"/v2/{CROSSMOUNT_NAMESPACE}/blobs/uploads/", params={"mount": data.dummy_digest})
    assert r.status_code == 202
    assert r.headers["Location"]


def test_post_request_to_mount_another_repositorys_blob_should_return_201_or_202(
        client: httpx.Client, data: ClassicData, state: State) -> None:
    r = client.post(f"/v2/{CROSSMOUNT_NAMESPACE}/blobs/uploads/",
                    params={"mount": data.blob_a.digest, "from": NAMESPACE})
    assert r.status_code in (201, 202)
    assert r.status_code == 201  # secreg mounts
    state["last"] = r


def test_get_request_to_test_digest_within_cross_mount_namespace_should_return_200(
        client: httpx.Client, data: ClassicData, state: State) -> None:
    last = state["last"]
    assert last.headers["Location"] == f"/v2/{CROSSMOUNT_NAMESPACE}/blobs/{data.blob_a.digest}"
    assert client.get(last.headers["Location"]).status_code == 200


def test_cross_mounting_of_nonexistent_blob_should_yield_session_id(client: httpx.Client,
                                                                     data: ClassicData) -> None:
    # The Go spec only runs when the previous mount answered 202; here the mount of a blob `from` does not
    # hold answers so, and the session it opens lives in the target repository.
    r = client.post(f"/v2/{CROSSMOUNT_NAMESPACE}/blobs/uploads/",
                    params={"mount": data.dummy_digest, "from": NAMESPACE})
    assert r.status_code == 202
    assert r.headers["Location"].startswith(f"/v2/{CROSSMOUNT_NAMESPACE}/blobs/uploads/")


def test_cross_mounting_without_from_and_automatic_content_discovery_enabled_should_return_a_201(
        client: httpx.Client, data: ClassicData) -> None:
    r = client.post(f"/v2/{CROSSMOUNT_NAMESPACE}/blobs/uploads/", params={"mount": data.blob_a.digest})
    assert r.status_code == 201


# --- Manifest Upload -----------------------------------------------------------------------------------

def test_get_nonexistent_manifest_should_return_404(client: httpx.Client) -> None:
    assert client.get(f"{MANIFESTS}/{NONEXISTENT_MANIFEST}").status_code == 404


def test_put_should_accept_a_manifest_upload(client: httpx.Client, data: ClassicData) -> None:
    for i in range(4):
        r = put_manifest(client, f"test{i}", data.manifests[1])
        assert r.headers["Location"] and r.status_code == 201, r.text


def test_registry_should_accept_a_manifest_upload_with_no_layers(client: httpx.Client, data: ClassicData,
                                                                 state: State) -> None:
    r = put_manifest(client, EMPTY_LAYER_TEST_TAG, data.empty_layer_manifest)
    # The suite only warns when this is refused; secreg accepts it.
    assert r.status_code == 201, r.text
    assert r.headers["Location"]
    state["empty_layer_ref"] = r.headers["Location"]


def test_get_request_to_manifest_url_digest_should_yield_200_response(client: httpx.Client,
                                                                      data: ClassicData) -> None:
    r = client.get(f"{MANIFESTS}/{data.manifests[1].digest}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200


def test_registry_should_accept_a_manifest_upload_with_custom_config_media_type_as_artifact_type(
        client: httpx.Client, data: ClassicData, state: State) -> None:
    r = put_manifest(client, data.refs_a_config.digest, data.refs_a_config)
    assert ok(r), "PUT manifest fails"
    state["config_type_pushed"] = True


def test_registry_should_accept_a_manifest_upload_with_custom_artifact_type(
        client: httpx.Client, data: ClassicData, state: State) -> None:
    r = put_manifest(client, data.refs_a_layer.digest, data.refs_a_layer)
    assert ok(r), "PUT manifest fails"
    state["artifact_type_pushed"] = True


def test_registry_should_accept_a_manifest_upload_with_image_index(client: httpx.Client, data: ClassicData,
                                                                   state: State) -> None:
    assert ok(post_put_blob(client, data.configs[0]))
    assert ok(put_manifest(client, TEST_TAG_NAME, data.manifests[0]))
    index = Blob(marshal_indent({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": REF_ARTIFACT_TYPE_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, data.manifests[0].content)],
        "annotations": {TEST_ANNOTATION_KEY: "test index"},
    }))
    assert ok(put_manifest(client, index.digest, index, media_type=OCI_INDEX)), "PUT index fails"
    state["index"] = index


def test_registry_should_accept_a_manifest_upload_with_nested_image_index(client: httpx.Client,
                                                                          state: State) -> None:
    inner: Blob = state["index"]
    nested = Blob(marshal_indent({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": REF_ARTIFACT_TYPE_INDEX,
        "manifests": [descriptor(OCI_INDEX, inner.content)],
        "annotations": {TEST_ANNOTATION_KEY: "test index"},
    }))
    assert ok(put_manifest(client, nested.digest, nested, media_type=OCI_INDEX)), "PUT index fails"


def test_dangling_subject(client: httpx.Client, data: ClassicData) -> None:
    # The artifact's layer is uploaded first: like the reference registry, secreg refuses a manifest whose
    # blobs it does not hold (the spec allows that, with MANIFEST_BLOB_UNKNOWN); only the subject may dangle.
    assert ok(post_put_blob(client, data.ref_blob_b))
    r = put_manifest(client, data.refs_c_layer.digest, data.refs_c_layer)
    assert ok(r), "PUT manifest with 'dangling' subject fails, but must not"
    assert r.headers["OCI-Subject"] == data.manifests[3].digest
    assert client.get(f"{MANIFESTS}/{data.manifests[3].digest}").status_code == 404


# --- Teardown (manifests before blobs) -----------------------------------------------------------------

def test_delete_manifest_created_in_tests(client: httpx.Client, data: ClassicData, state: State) -> None:
    assert delete_ok(client.delete(f"{MANIFESTS}/{data.manifests[1].digest}"))
    if state.get("config_type_pushed"):
        assert delete_ok(client.delete(f"{MANIFESTS}/{data.refs_a_config.digest}"))
    if state.get("artifact_type_pushed"):
        assert delete_ok(client.delete(f"{MANIFESTS}/{data.refs_a_layer.digest}"))
    if state.get("empty_layer_ref"):
        assert delete_ok(client.delete(f"{MANIFESTS}/{data.empty_layer_manifest.digest}"))


def test_delete_config_blob_created_in_tests(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{BLOBS}/{data.configs[1].digest}"), 404)


def test_delete_layer_blob_created_in_setup(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{BLOBS}/{data.layer.digest}"), 404)
    assert delete_ok(client.delete(f"{BLOBS}/{data.empty_json.digest}"), 404)


def test_teardown_with_blobs_deleted_before_manifests(client: httpx.Client) -> None:
    """OCI_DELETE_MANIFEST_BEFORE_BLOBS=0: blobs go while the manifests that use them are still there."""
    other = ClassicData()
    name = f"{NAMESPACE}-blobs-first"
    for blob in (other.configs[1], other.layer):
        assert ok(post_put_blob(client, blob, name))
    assert ok(put_manifest(client, "test0", other.manifests[1], name))
    assert ok(put_manifest(client, EMPTY_LAYER_TEST_TAG, other.empty_layer_manifest, name))
    assert delete_ok(client.delete(f"/v2/{name}/blobs/{other.configs[1].digest}"), 404)
    assert delete_ok(client.delete(f"/v2/{name}/blobs/{other.layer.digest}"), 404)
    assert client.delete(f"/v2/{name}/manifests/{other.manifests[1].digest}").status_code == 202
    assert client.delete(f"/v2/{name}/manifests/{other.empty_layer_manifest.digest}").status_code == 202

