"""`conformance/api.go` of the newer layout (`run.go`), ported: the request helpers.

`api.go`'s request helpers become functions that assert what its `apiExpect*` options check; where the Go
helper falls back to a less capable API and reports `errRegUnsupported` (a skip in the Go report), these
raise `Unsupported`, so a test that wants every optional feature fails on it. The data they push comes from
`testdata.py` (`testdata.go`'s generator, `DataSet`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import httpx

from tests.conformance.testdata import (
    CHUNK_MIN,
    MT_OCI_IMAGE,
    MT_OCI_INDEX,
    MT_OCTET_STREAM,
    DataSet,
    Descriptor,
    Unsupported,
    detect_media_type,
    detect_subject,
)

# --- api.go ----------------------------------------------------------------------------------------------

def _verify_digest(response: httpx.Response, dig: str) -> None:
    """`VerifyDigest` with RequireDigestHeader (OCI_API_*_DIGEST_HEADER on)."""
    header = response.headers.get("Docker-Content-Digest")
    assert header, "registry did not return a Docker-Content-Digest header"
    assert header == dig, f"Docker-Content-Digest header value expected {dig}, received {header}"


def _verify_location(client: httpx.Client, location: str | None, body: bytes) -> None:
    """`BlobVerifyLocation`: the Location of a finished upload serves the blob."""
    assert location, "location header missing"
    r = client.get(location)
    assert r.status_code == 200 and r.content == body, f"failed to verify returned location {location}"


def _uploads(repo: str) -> str:
    return f"/v2/{repo}/blobs/uploads/"


def _octet(length: int, **extra: str) -> dict[str, str]:
    return {"Content-Type": MT_OCTET_STREAM, "Content-Length": str(length), **extra}


def blob_delete(client: httpx.Client, repo: str, dig: str) -> None:
    r = client.delete(f"/v2/{repo}/blobs/{dig}")
    assert r.status_code in (202, 404, 405), f"blob delete failed: {r.status_code} {r.text}"
    if r.status_code == 405:
        raise Unsupported(f"registry returned status {r.status_code}")


def blob_get(client: httpx.Client, repo: str, dig: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.get(f"/v2/{repo}/blobs/{dig}", headers=headers)


def blob_get_exists_full(client: httpx.Client, repo: str, dig: str, td: DataSet) -> None:
    r = blob_get(client, repo, dig)
    assert r.status_code == 200, r.text
    body = td.blobs.get(dig)
    if body is not None:
        assert r.content == body, "body contents mismatch"
        assert r.headers["Content-Length"] == str(len(body))
    _verify_digest(r, dig)


def blob_head(client: httpx.Client, repo: str, dig: str) -> httpx.Response:
    return client.head(f"/v2/{repo}/blobs/{dig}")


def blob_head_exists(client: httpx.Client, repo: str, dig: str, td: DataSet) -> None:
    r = blob_head(client, repo, dig)
    assert r.status_code == 200 and r.content == b""
    body = td.blobs.get(dig)
    if body is not None:
        assert r.headers["Content-Length"] == str(len(body))
    _verify_digest(r, dig)


def blob_mount(client: httpx.Client, repo: str, source: str, dig: str, td: DataSet) -> None:
    """Mount from `source` (anonymous when empty); falls back to an upload and raises Unsupported on 202."""
    body = td.blobs[dig]
    params = {"mount": dig, **({"from": source} if source else {})}
    r = client.post(_uploads(repo), params=params)
    assert r.status_code in (201, 202), f"blob post failed: {r.status_code} {r.text}"
    location = r.headers.get("Location")
    assert location, "blob post did not return a location"
    fell_back = r.status_code == 202
    if fell_back:
        r = client.put(location, params={"digest": dig}, content=body, headers=_octet(len(body)))
        assert r.status_code == 201, f"blob put failed: {r.status_code} {r.text}"
        location = r.headers.get("Location")
    _verify_digest(r, dig)
    _verify_location(client, location, body)
    if fell_back:
        raise Unsupported("registry returned status 202, fell back to blob POST+PUT")


def chunk_min_length(client: httpx.Client, repo: str) -> int:
    """What "chunked single" learns: the larger of the suite's minimum and the registry's OCI-Chunk-Min-Length."""
    r = client.post(_uploads(repo), headers={"Content-Length": "0"})
    assert r.status_code == 202
    client.delete(r.headers["Location"])
    header = r.headers.get("OCI-Chunk-Min-Length")
    if header is not None:
        assert header.isdigit(), f"parsing OCI-Chunk-Min-Length size {header!r} failed"
        return max(CHUNK_MIN, int(header))
    return CHUNK_MIN


def blob_patch_chunked(client: httpx.Client, repo: str, dig: str, td: DataSet, *, bad_digest: bool = False,
                       put_last_chunk: bool = False, out_of_order: bool = False) -> str | None:
    """`BlobPatchChunked`: three chunks (at least CHUNK_MIN each), optionally the last one in the closing PUT,
    optionally preceded each by an out-of-order chunk that must get 416 and a GET that recovers the offset.
    Returns the OCI-Chunk-Min-Length the POST advertised."""
    body = td.blobs[dig]
    r = client.post(_uploads(repo), headers={"Content-Length": "0"})
    assert r.status_code == 202, f"blob post failed: {r.status_code}"
    minimum = r.headers.get("OCI-Chunk-Min-Length")
    location = r.headers.get("Location", "")
    chunk = len(body) // 3 + 1
    if minimum is not None:
        assert minimum.isdigit(), f"parsing OCI-Chunk-Min-Length size {minimum!r} failed"
        chunk = max(chunk, int(minimum))
    chunk = min(max(chunk, CHUNK_MIN), len(body))
    last_byte = -1
    final: httpx.Response | None = None
    while last_byte < len(body) - 1:
        if out_of_order:
            assert location, "blob request did not return a location"
            bad_start = last_byte + 1 + chunk
            if bad_start >= len(body):
                bad_start = 0
            bad_last = min(bad_start + chunk - 1, len(body) - 1)
            as_put = put_last_chunk and bad_last == len(body) - 1
            r = client.request("PUT" if as_put else "PATCH", location, params={"digest": dig} if as_put else None,
                               content=body[bad_start : bad_last + 1],
                               headers=_octet(bad_last - bad_start + 1, **{"Content-Range": f"{bad_start}-{bad_last}"}))
            assert r.status_code == 416, f"blob out of order chunk: {r.status_code} {r.text}"
            # Recover with a GET to the same URL, which names the location and range to continue from.
            r = client.get(location)
            assert r.status_code == 204, f"blob chunked upload get request: {r.status_code}"
            location = r.headers.get("Location") or location
            range_header = r.headers.get("Range", "")
            assert range_header.startswith("0-"), f"content-range header is missing the 0- prefix: {range_header!r}"
            if last_byte >= 0:
                assert int(range_header[2:]) == last_byte, f"range {range_header!r}, expected 0-{last_byte}"
        assert location, "blob request did not return a location"
        start = last_byte + 1
        last_byte = min(start + chunk - 1, len(body) - 1)
        headers = _octet(last_byte - start + 1, **{"Content-Range": f"{start}-{last_byte}"})
        if put_last_chunk and last_byte == len(body) - 1:
            r = client.put(location, params={"digest": dig}, content=body[start : last_byte + 1], headers=headers)
            assert r.status_code == (400 if bad_digest else 201), f"blob patch failed: {r.status_code} {r.text}"
            final = r
        else:
            r = client.patch(location, content=body[start : last_byte + 1], headers=headers)
            assert r.status_code == 202, f"blob patch failed: {r.status_code} {r.text}"
            location = r.headers.get("Location", "")
    if not put_last_chunk or final is None:
        assert location, "blob patch did not return a location"
        r = client.put(location, params={"digest": dig}, headers=_octet(0))
        assert r.status_code == (400 if bad_digest else 201), f"blob put failed: {r.status_code} {r.text}"
        final = r
    if not bad_digest:
        _verify_digest(final, dig)
        _verify_location(client, final.headers.get("Location"), body)
    return minimum


def blob_patch_stream(client: httpx.Client, repo: str, dig: str, td: DataSet, *, bad_digest: bool = False) -> None:
    """`BlobPatchStream`: one PATCH without Content-Range or Content-Length (chunked encoding), then PUT."""
    body = td.blobs[dig]
    r = client.post(_uploads(repo), headers={"Content-Length": "0"})
    assert r.status_code == 202 and r.headers.get("Location"), "blob post did not return a location"
    r = client.patch(r.headers["Location"], content=iter([body]), headers={"Content-Type": MT_OCTET_STREAM})
    assert r.status_code == 202 and r.headers.get("Location"), f"blob patch failed: {r.status_code} {r.text}"
    r = client.put(r.headers["Location"], params={"digest": dig}, headers=_octet(0))
    if bad_digest:
        assert r.status_code == 400, f"blob put: {r.status_code}"
        return
    assert r.status_code == 201 and r.headers.get("Location"), f"blob put failed: {r.status_code} {r.text}"
    _verify_digest(r, dig)
    _verify_location(client, r.headers["Location"], body)


def blob_post_cancel(client: httpx.Client, repo: str) -> None:
    r = client.post(_uploads(repo))
    assert r.status_code == 202 and r.headers.get("Location"), "blob post did not return a location"
    r = client.delete(r.headers["Location"], headers={"Content-Length": "0"})
    assert r.status_code == 204, f"blob cancel failed: {r.status_code}"


def blob_post_only(client: httpx.Client, repo: str, dig: str, td: DataSet, *, bad_digest: bool = False) -> None:
    """`BlobPostOnly`: the whole blob in `POST ?digest=`; a 202 falls back to PUT and raises Unsupported."""
    body = td.blobs[dig]
    r = client.post(_uploads(repo), params={"digest": dig}, content=body, headers=_octet(len(body)))
    if bad_digest:
        assert r.status_code in (400, 202), f"blob post: {r.status_code}"
    else:
        assert r.status_code in (201, 202) and r.headers.get("Location"), f"blob post failed: {r.status_code}"
    if r.status_code == 202:
        r = client.put(r.headers["Location"], params={"digest": dig}, content=body, headers=_octet(len(body)))
        assert r.status_code == (400 if bad_digest else 201), f"blob put failed: {r.status_code}"
        raise Unsupported("registry does not support content in the POST, fallback to PUT")
    if bad_digest:
        return
    _verify_digest(r, dig)
    _verify_location(client, r.headers["Location"], body)


def blob_post_put(client: httpx.Client, repo: str, dig: str, td: DataSet, *, bad_digest: bool = False) -> None:
    body = td.blobs[dig]
    r = client.post(_uploads(repo))
    assert r.status_code == 202 and r.headers.get("Location"), "blob post did not return a location"
    r = client.put(r.headers["Location"], params={"digest": dig}, content=body, headers=_octet(len(body)))
    if bad_digest:
        assert r.status_code == 400, f"blob put: {r.status_code}"
        return
    assert r.status_code == 201, f"blob put failed: {r.status_code} {r.text}"
    _verify_digest(r, dig)
    _verify_location(client, r.headers.get("Location"), body)


_BLOB_APIS = (blob_post_put, blob_post_only, blob_patch_stream, blob_patch_chunked)
_next_api = itertools.cycle(range(len(_BLOB_APIS)))


def blob_push_any(client: httpx.Client, repo: str, dig: str, td: DataSet) -> None:
    """`TestPushBlobAny`: the Go runner spreads pushes over every upload API; so does this, in turn."""
    api = _BLOB_APIS[next(_next_api)]
    api(client, repo, dig, td)


_ACCEPT = [("Accept", MT_OCI_INDEX), ("Accept", MT_OCI_IMAGE)]


def manifest_delete(client: httpx.Client, repo: str, reference: str) -> None:
    r = client.delete(f"/v2/{repo}/manifests/{reference}")
    assert r.status_code in (202, 404, 400, 405), f"manifest delete failed: {r.status_code} {r.text}"
    if r.status_code in (400, 405):
        raise Unsupported(f"registry returned status {r.status_code}")


def manifest_get(client: httpx.Client, repo: str, reference: str) -> httpx.Response:
    return client.get(f"/v2/{repo}/manifests/{reference}", headers=_ACCEPT)


def manifest_head(client: httpx.Client, repo: str, reference: str) -> httpx.Response:
    return client.head(f"/v2/{repo}/manifests/{reference}", headers=_ACCEPT)


def manifest_get_exists(client: httpx.Client, repo: str, reference: str, dig: str, td: DataSet) -> None:
    r = manifest_get(client, repo, reference)
    assert r.status_code == 200, f"manifest get failed: {r.status_code} {r.text}"
    body = td.manifests[dig]
    assert r.content == body, "body contents mismatch"
    assert r.headers["Content-Type"] == detect_media_type(body)
    assert r.headers["Content-Length"] == str(len(body))
    _verify_digest(r, dig)


def manifest_head_exists(client: httpx.Client, repo: str, reference: str, dig: str, td: DataSet) -> None:
    r = manifest_head(client, repo, reference)
    assert r.status_code == 200 and r.content == b"", f"manifest head failed: {r.status_code}"
    body = td.manifests[dig]
    assert r.headers["Content-Type"] == detect_media_type(body)
    assert r.headers["Content-Length"] == str(len(body))
    _verify_digest(r, dig)


def manifest_put(client: httpx.Client, repo: str, reference: str, dig: str, td: DataSet, *,
                 tags: Iterable[str] = (), bad_digest: bool = False) -> httpx.Response:
    """`ManifestPut` with the referrers API on: OCI-Subject when the manifest has a subject, the digest
    header, and a Location that serves the same bytes with the same Content-Type."""
    body = td.manifests[dig]
    media_type = detect_media_type(body)
    r = client.put(f"/v2/{repo}/manifests/{reference}", params=[("tag", t) for t in tags], content=body,
                   headers={"Content-Type": media_type})
    if bad_digest:
        assert r.status_code == 400, f"manifest put: {r.status_code} {r.text}"
        return r
    assert r.status_code == 201, f"manifest put failed: {r.status_code} {r.text}"
    subject = detect_subject(body)
    if subject is not None:
        assert r.headers.get("OCI-Subject") == subject["digest"], "missing or wrong OCI-Subject"
    _verify_digest(r, dig)
    location = r.headers.get("Location")
    assert location, "manifest put did not return a location"
    got = client.get(location, headers=_ACCEPT)
    assert got.status_code == 200 and got.content == body, "failed to verify returned location"
    assert got.headers["Content-Type"] == media_type
    assert got.headers["Content-Length"] == str(len(body))
    return r


def ping(client: httpx.Client) -> None:
    assert client.get("/v2/").status_code == 200


def referrers_list(client: httpx.Client, repo: str, dig: str,
                   artifact_type: str | None = None) -> tuple[dict[str, Any], httpx.Response]:
    params = {"artifactType": artifact_type} if artifact_type is not None else None
    r = client.get(f"/v2/{repo}/referrers/{dig}", params=params)
    assert r.status_code == 200, f"referrers: {r.status_code} {r.text}"
    assert r.headers["Content-Type"] == MT_OCI_INDEX
    index = r.json()
    assert index.get("mediaType") == MT_OCI_INDEX and index.get("schemaVersion") == 2, \
        "referrers response is not a valid OCI index (media type and schema version)"
    return index, r


def tag_list(client: httpx.Client, repo: str, last: str | None = None) -> list[str]:
    """`TagList`: 200 with a listing, or 404 for a repository that does not exist (an empty list here)."""
    r = client.get(f"/v2/{repo}/tags/list", params={"last": last} if last is not None else None)
    assert r.status_code in (200, 404), f"tag list: {r.status_code}"
    return list(r.json()["tags"]) if r.status_code == 200 else []


def referrer_matches(entry: Descriptor, goal: Descriptor) -> bool:
    annotations = entry.get("annotations") or {}
    return (entry.get("digest") == goal["digest"] and entry.get("mediaType") == goal["mediaType"]
            and entry.get("size") == goal["size"] and entry.get("artifactType", "") == goal.get("artifactType", "")
            and all(annotations.get(k) == v for k, v in (goal.get("annotations") or {}).items()))
