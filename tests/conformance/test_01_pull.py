"""`01_pull_test.go` (Pull workflow), with `01_base_api_route_test.go` and the older `pull_test.go`.

Setup pushes configs[0..1], the layer, manifests[0] by tag and manifests[1] by digest; teardown deletes the
manifests before the blobs (OCI_DELETE_MANIFEST_BEFORE_BLOBS, the default); the last test runs the other order.
"""

from __future__ import annotations

import httpx

from tests.conformance.classic import (
    ERROR_CODES,
    NAMESPACE,
    NONEXISTENT_MANIFEST,
    OCI_MANIFEST,
    TEST_TAG_NAME,
    ClassicData,
    delete_ok,
    error_codes_of,
    ok,
    post_put_blob,
    put_manifest,
)

ACCEPT = {"Accept": OCI_MANIFEST}
BLOBS = f"/v2/{NAMESPACE}/blobs"
MANIFESTS = f"/v2/{NAMESPACE}/manifests"


# --- 01_base_api_route_test.go: Base API Route ---------------------------------------------------------

def test_get_request_to_base_api_route_must_return_200_response(client: httpx.Client) -> None:
    assert client.get("/v2/").status_code == 200


# --- Setup ---------------------------------------------------------------------------------------------

def test_populate_registry_with_test_blob_config0(client: httpx.Client, data: ClassicData) -> None:
    assert ok(post_put_blob(client, data.configs[0]))


def test_populate_registry_with_test_blob_config1(client: httpx.Client, data: ClassicData) -> None:
    assert ok(post_put_blob(client, data.configs[1]))


def test_populate_registry_with_test_layer(client: httpx.Client, data: ClassicData) -> None:
    assert ok(post_put_blob(client, data.layer))


def test_populate_registry_with_test_manifest_by_tag(client: httpx.Client, data: ClassicData) -> None:
    assert ok(put_manifest(client, TEST_TAG_NAME, data.manifests[0]))


def test_populate_registry_with_test_manifest_by_digest(client: httpx.Client, data: ClassicData) -> None:
    assert ok(put_manifest(client, data.manifests[1].digest, data.manifests[1]))


# --- Pull blobs ----------------------------------------------------------------------------------------

def test_head_request_to_nonexistent_blob_should_result_in_404_response(client: httpx.Client,
                                                                         data: ClassicData) -> None:
    assert client.head(f"{BLOBS}/{data.dummy_digest}").status_code == 404


def test_head_request_to_existing_blob_should_yield_200(client: httpx.Client, data: ClassicData) -> None:
    r = client.head(f"{BLOBS}/{data.configs[0].digest}")
    assert r.status_code == 200
    assert r.headers.get("Docker-Content-Digest", data.configs[0].digest) == data.configs[0].digest


def test_get_nonexistent_blob_should_result_in_404_response(client: httpx.Client, data: ClassicData) -> None:
    assert client.get(f"{BLOBS}/{data.dummy_digest}").status_code == 404


def test_get_request_to_existing_blob_url_should_yield_200(client: httpx.Client, data: ClassicData) -> None:
    r = client.get(f"{BLOBS}/{data.configs[0].digest}")
    assert r.status_code == 200 and r.content == data.configs[0].content


# --- Pull manifests ------------------------------------------------------------------------------------

def test_head_request_to_nonexistent_manifest_should_return_404(client: httpx.Client) -> None:
    # ".INVALID_MANIFEST_NAME" is not even a valid tag: still 404, as the reference registry's router answers.
    assert client.head(f"{MANIFESTS}/{NONEXISTENT_MANIFEST}").status_code == 404


def test_head_request_to_manifest0_path_digest_should_yield_200_response(client: httpx.Client,
                                                                         data: ClassicData) -> None:
    r = client.head(f"{MANIFESTS}/{data.manifests[0].digest}", headers=ACCEPT)
    assert r.status_code == 200
    assert r.headers.get("Docker-Content-Digest", data.manifests[0].digest) == data.manifests[0].digest


def test_head_request_to_manifest1_path_digest_should_yield_200_response(client: httpx.Client,
                                                                         data: ClassicData) -> None:
    r = client.head(f"{MANIFESTS}/{data.manifests[1].digest}", headers=ACCEPT)
    assert r.status_code == 200
    assert r.headers.get("Docker-Content-Digest", data.manifests[1].digest) == data.manifests[1].digest


def test_head_request_to_manifest_path_tag_should_yield_200_response(client: httpx.Client,
                                                                     data: ClassicData) -> None:
    r = client.head(f"{MANIFESTS}/{TEST_TAG_NAME}", headers=ACCEPT)
    assert r.status_code == 200
    assert r.headers.get("Docker-Content-Digest", data.manifests[0].digest) == data.manifests[0].digest


def test_get_nonexistent_manifest_should_return_404(client: httpx.Client) -> None:
    assert client.get(f"{MANIFESTS}/{NONEXISTENT_MANIFEST}").status_code == 404


def test_get_request_to_manifest0_path_digest_should_yield_200_response(client: httpx.Client,
                                                                        data: ClassicData) -> None:
    r = client.get(f"{MANIFESTS}/{data.manifests[0].digest}", headers=ACCEPT)
    assert r.status_code == 200 and r.content == data.manifests[0].content


def test_get_request_to_manifest1_path_digest_should_yield_200_response(client: httpx.Client,
                                                                        data: ClassicData) -> None:
    r = client.get(f"{MANIFESTS}/{data.manifests[1].digest}", headers=ACCEPT)
    assert r.status_code == 200 and r.content == data.manifests[1].content


def test_get_request_to_manifest_path_tag_should_yield_200_response(client: httpx.Client,
                                                                    data: ClassicData) -> None:
    r = client.get(f"{MANIFESTS}/{TEST_TAG_NAME}", headers=ACCEPT)
    assert r.status_code == 200 and r.content == data.manifests[0].content


# --- pull_test.go (the first layout): the tag comes from the listing -----------------------------------

def test_get_request_to_list_tags_should_yield_200_response(client: httpx.Client,
                                                            state: dict[str, object]) -> None:
    r = client.get(f"/v2/{NAMESPACE}/tags/list")
    assert r.status_code == 200
    state["tags"] = r.json()["tags"]


def test_get_request_to_manifest_url_tag_should_yield_200_response(client: httpx.Client,
                                                                   state: dict[str, object]) -> None:
    tags = state["tags"]
    assert isinstance(tags, list) and tags
    assert client.get(f"{MANIFESTS}/{tags[0]}", headers=ACCEPT).status_code == 200


# --- Error codes ---------------------------------------------------------------------------------------

def test_400_response_body_should_contain_oci_conforming_json_message(client: httpx.Client) -> None:
    # Newest form: a GET; the earlier forms PUT the invalid manifest to the same reference.
    r = client.get(f"{MANIFESTS}/sha256:totallywrong", headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code in (400, 404)
    if r.status_code == 400:
        assert error_codes_of(r)[0] in ERROR_CODES
    r = client.put(f"{MANIFESTS}/sha256:totallywrong", content=b"blablabla", headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_codes_of(r)[0] in ERROR_CODES


# --- Teardown (manifests before blobs) -----------------------------------------------------------------

def test_delete_manifest0_created_in_setup(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{MANIFESTS}/{data.manifests[0].digest}"))


def test_delete_manifest1_created_in_setup(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{MANIFESTS}/{data.manifests[1].digest}"))


def test_delete_config0_blob_created_in_setup(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{BLOBS}/{data.configs[0].digest}"), 404)


def test_delete_config1_blob_created_in_setup(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{BLOBS}/{data.configs[1].digest}"), 404)


def test_delete_layer_blob_created_in_setup(client: httpx.Client, data: ClassicData) -> None:
    assert delete_ok(client.delete(f"{BLOBS}/{data.layer.digest}"), 404)


def test_teardown_with_blobs_deleted_before_manifests(client: httpx.Client) -> None:
    """OCI_DELETE_MANIFEST_BEFORE_BLOBS=0: the same setup, blobs deleted while the manifests still use them."""
    other = ClassicData()
    name = f"{NAMESPACE}-blobs-first"
    for blob in (other.configs[0], other.configs[1], other.layer):
        assert ok(post_put_blob(client, blob, name))
    assert ok(put_manifest(client, TEST_TAG_NAME, other.manifests[0], name))
    assert ok(put_manifest(client, other.manifests[1].digest, other.manifests[1], name))
    for blob in (other.configs[0], other.configs[1], other.layer):
        r = client.delete(f"/v2/{name}/blobs/{blob.digest}")
        assert r.status_code == 202, r.text
    for manifest in other.manifests[:2]:
        r = client.delete(f"/v2/{name}/manifests/{manifest.digest}")
        assert r.status_code == 202, r.text
