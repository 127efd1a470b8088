"""Manifest, tag, catalog and referrers endpoints against a real server over TLS."""

from __future__ import annotations

import base64
import json

import httpx

from tests.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    error_code,
    image_manifest,
    manifest_bytes,
    push_blob,
    push_image,
    put_manifest,
    sha256,
)


def test_push_pull_by_tag_and_digest_bytes_identical(client: httpx.Client) -> None:
    digest, body = push_image(client, "man/basic", "v1")
    for reference in ("v1", digest):
        r = client.get(f"/v2/man/basic/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == body
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.headers["ETag"] == f'"{digest}"' and r.headers["Content-Length"] == str(len(body))
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0" and "X-Cache" not in r.headers
        h = client.head(f"/v2/man/basic/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        assert h.status_code == 200 and h.content == b"" and h.headers["Content-Length"] == str(len(body))
        assert {k: v for k, v in h.headers.items() if k != "x-request-id"} == {
            k: v for k, v in r.headers.items() if k != "x-request-id"}


def test_put_by_digest_with_tag_params(client: httpx.Client) -> None:
    config, layer = b'{"a":1}', b"layer"
    push_blob(client, "man/tagparams", config)
    push_blob(client, "man/tagparams", layer)
    body = manifest_bytes(image_manifest(config, [layer]))
    r = client.put(f"/v2/man/tagparams/manifests/{sha256(body)}", params=[("tag", "a"), ("tag", "b")],
                   content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v2/man/tagparams/manifests/{sha256(body)}"
    assert client.get("/v2/man/tagparams/tags/list").json()["tags"] == ["a", "b"]
    wrong = sha256(b"something else")
    r = client.put(f"/v2/man/tagparams/manifests/{wrong}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_unknown_fields_kept_and_docker_types(client: httpx.Client) -> None:
    config, layer = b'{"docker":true}', b"docker layer"
    push_blob(client, "man/docker", config)
    push_blob(client, "man/docker", layer)
    document = {
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": descriptor("application/vnd.docker.container.image.v1+json", config),
        "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", layer)],
        "x-unknown-field": {"kept": [1, 2, 3]},
    }
    body = json.dumps(document, separators=(",", ":"), sort_keys=False).encode() + b"\n"
    digest = put_manifest(client, "man/docker", "amd64", body, DOCKER_MANIFEST).headers["Docker-Content-Digest"]
    r = client.get("/v2/man/docker/manifests/amd64", headers={"Accept": DOCKER_MANIFEST})
    assert r.content == body and r.headers["Content-Type"] == DOCKER_MANIFEST
    manifest_list = {
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": digest, "size": len(body),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }
    put_manifest(client, "man/docker", "multi", manifest_list, DOCKER_LIST)
    r = client.get("/v2/man/docker/manifests/multi", headers={"Accept": f"{DOCKER_LIST}, {DOCKER_MANIFEST}"})
    assert r.status_code == 200 and r.headers["Content-Type"] == DOCKER_LIST


def test_index_content_negotiation(client: httpx.Client) -> None:
    digest, body = push_image(client, "man/index", "child")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}]}
    put_manifest(client, "man/index", "latest", index, OCI_INDEX)
    r = client.get("/v2/man/index/manifests/latest", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert "Accept" in r.json()["errors"][0]["message"]
    r = client.get("/v2/man/index/manifests/latest", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    assert client.get("/v2/man/index/manifests/latest").status_code == 200  # no Accept: anything


def test_index_with_missing_child(client: httpx.Client) -> None:
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"nope"), "size": 4}]}
    r = put_manifest(client, "man/badindex", "x", index, OCI_INDEX, expect=400)
    assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"


def test_missing_blobs_rejected_except_foreign_layers(client: httpx.Client) -> None:
    config = b"{}"
    push_blob(client, "man/missing", config)
    r = put_manifest(client, "man/missing", "t", image_manifest(config, [b"never pushed"]), expect=400)
    assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    foreign = {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
               "digest": sha256(b"windows base"), "size": 12, "urls": ["https://example.com/layer"]}
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(
        "application/vnd.oci.image.config.v1+json", config), "layers": [foreign]}
    put_manifest(client, "man/missing", "foreign", document)


def test_invalid_manifests(client: httpx.Client) -> None:
    cases = [
        (b"not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (json.dumps({"schemaVersion": 1, "name": "x"}).encode(),
         "application/vnd.docker.distribution.manifest.v1+json"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"digest": "bad"}}).encode(),
         OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "config": {}}).encode(), "application/x-unknown"),
    ]
    for body, media_type in cases:
        r = put_manifest(client, "man/invalid", "t", body, media_type, expect=400)
        assert error_code(r) == "MANIFEST_INVALID", body


def test_manifest_size_limit(client: httpx.Client) -> None:
    config = b'{"big": true}'
    push_blob(client, "man/big", config)
    document = image_manifest(config, [], annotations={"pad": "x" * (4 * 1024 * 1024 - 500)})
    body = manifest_bytes(document)
    assert len(body) < 4 * 1024 * 1024
    put_manifest(client, "man/big", "ok", body)
    document["annotations"] = {"pad": "x" * (4 * 1024 * 1024 + 10)}
    r = put_manifest(client, "man/big", "too", manifest_bytes(document), expect=413)
    assert error_code(r) == "SIZE_INVALID"


def test_artifact_with_subject_and_referrers(client: httpx.Client) -> None:
    subject_digest, subject_body = push_image(client, "man/art", "app")
    empty = b"{}"
    push_blob(client, "man/art", empty)
    sbom = b'{"sbom": true}'
    push_blob(client, "man/art", sbom)
    artifact = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": EMPTY_JSON, "digest": sha256(empty), "size": 2,
                   "data": base64.b64encode(empty).decode()},
        "layers": [descriptor("application/spdx+json", sbom)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_body)},
        "annotations": {"org.example": "yes"},
    }
    r = put_manifest(client, "man/art", sha256(manifest_bytes(artifact)), artifact)
    assert r.headers["OCI-Subject"] == subject_digest
    sig = dict(artifact, artifactType="application/vnd.example.signature")
    sig_digest = put_manifest(client, "man/art", sha256(manifest_bytes(sig)), sig).headers["Docker-Content-Digest"]
    r = client.get(f"/v2/man/art/referrers/{subject_digest}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    found = r.json()["manifests"]
    assert {m["artifactType"] for m in found} == {"application/spdx+json", "application/vnd.example.signature"}
    assert all(m["annotations"] == {"org.example": "yes"} for m in found)
    r = client.get(f"/v2/man/art/referrers/{subject_digest}", params={"artifactType": "application/spdx+json"})
    assert [m["artifactType"] for m in r.json()["manifests"]] == ["application/spdx+json"]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    # Empty index, not 404, for a subject with no referrers (even one that does not exist).
    r = client.get(f"/v2/man/art/referrers/{sha256(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    # Deleting a referrer removes it from the list.
    assert client.delete(f"/v2/man/art/manifests/{sig_digest}").status_code == 202
    r = client.get(f"/v2/man/art/referrers/{subject_digest}")
    assert len(r.json()["manifests"]) == 1
    r = client.get("/v2/man/art/referrers/sha256:bad")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_embedded_data_must_match(client: httpx.Client) -> None:
    empty = b"{}"
    push_blob(client, "man/data", empty)
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": EMPTY_JSON, "digest": sha256(empty), "size": 2,
                           "data": base64.b64encode(b"[]").decode()}, "layers": []}
    r = put_manifest(client, "man/data", "t", document, expect=400)
    assert error_code(r) == "MANIFEST_INVALID"


def test_delete_by_tag_and_by_digest(client: httpx.Client) -> None:
    digest, _ = push_image(client, "man/del", "one")
    client.put("/v2/man/del/manifests/two", content=client.get(f"/v2/man/del/manifests/{digest}").content,
               headers={"Content-Type": OCI_MANIFEST})
    assert client.delete("/v2/man/del/manifests/one").status_code == 202
    assert client.get("/v2/man/del/manifests/one").status_code == 404
    assert client.get(f"/v2/man/del/manifests/{digest}").status_code == 200  # only the tag went
    assert client.delete(f"/v2/man/del/manifests/{digest}").status_code == 202
    r = client.get(f"/v2/man/del/manifests/{digest}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert client.get("/v2/man/del/manifests/two").status_code == 404  # its tags went with it
    assert client.get("/v2/man/del/tags/list").json()["tags"] == []
    r = client.delete(f"/v2/man/del/manifests/{digest}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"


def test_unknown_manifest(client: httpx.Client) -> None:
    r = client.get("/v2/man/none/manifests/latest")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = client.get(f"/v2/man/none/manifests/{sha256(b'x')}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"


def test_tags_list_pagination(client: httpx.Client) -> None:
    digest, body = push_image(client, "man/tags", "base")
    for tag in ("c", "a", "b", "e", "d"):
        put_manifest(client, "man/tags", tag, body)
    r = client.get("/v2/man/tags/tags/list")
    assert r.json() == {"name": "man/tags", "tags": ["a", "b", "base", "c", "d", "e"]}
    r = client.get("/v2/man/tags/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    link = r.headers["Link"]
    assert link == '</v2/man/tags/tags/list?n=2&last=b>; rel="next"'
    r = client.get(link[1 : link.index(">")])
    assert r.json()["tags"] == ["base", "c"]
    r = client.get("/v2/man/tags/tags/list", params={"n": 10, "last": "c"})
    assert r.json()["tags"] == ["d", "e"] and "Link" not in r.headers
    r = client.get("/v2/man/tags/tags/list", params={"n": "-1"})
    assert r.status_code == 400 and error_code(r) == "PAGINATION_NUMBER_INVALID"
    r = client.get("/v2/man/never-pushed/tags/list")
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"


def test_catalog_pagination(client: httpx.Client) -> None:
    for name in ("cat/zeta", "cat/alpha", "cat/mid"):
        push_image(client, name, "v1")
    names = client.get("/v2/_catalog").json()["repositories"]
    assert names == sorted(names)
    assert {"cat/alpha", "cat/mid", "cat/zeta"} <= set(names)
    r = client.get("/v2/_catalog", params={"n": 1, "last": "cat/alpha"})
    assert r.json()["repositories"] == ["cat/mid"]
    assert r.headers["Link"].startswith("</v2/_catalog?n=1&last=cat")


def test_bad_references(client: httpx.Client) -> None:
    r = client.get("/v2/man/basic/manifests/bad:tag:x")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    # Neither a tag nor a digest names nothing that exists: 404, as the OCI conformance suite requires.
    r = client.get("/v2/man/basic/manifests/-notatag")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = client.put("/v2/man/basic/manifests/v1", params={"tag": "bad tag"}, content=b"{}",
                   headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400
