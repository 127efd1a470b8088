"""Random requests over every registry route, HTTP/1.1 and h2, against a real server: whatever the method, name,
reference, query and headers, the answer is never a 5xx, an error carries the spec's JSON body, nothing
leaks a traceback or a path, and the server logs nothing as unhandled. Deterministic (derandomized, bounded)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oci import EMPTY_JSON, OCI_MANIFEST, push_blob, put_manifest, sha256
from tests.server import RunningServer

CONFIG = b"{}"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                       "config": {"mediaType": EMPTY_JSON, "digest": sha256(CONFIG), "size": len(CONFIG)}}).encode()
SEGMENTS = ["fz", "base", "..", ".", "_catalog", "_uploads", "tags", "manifests", "blobs", "uploads", "A", "%2F",
            "%2e%2e", "%00", "%ff", "sha256:" + "a" * 64, "md5:00", "t", "", "v2", "a" * 300]
TAILS = ["tags/list", "manifests/t", f"manifests/{sha256(MANIFEST)}", "manifests/sha512:" + "0" * 128,
         f"blobs/{sha256(CONFIG)}", "blobs/sha384:" + "0" * 96, "blobs/uploads/", "blobs/uploads/nosuch",
         "blobs/uploads/00000000-0000-0000-0000-000000000000", f"referrers/{sha256(MANIFEST)}", ""]
VALUES = [sha256(CONFIG), "sha512:" + "a" * 128, "sha256:xyz", "-1", "0", "9" * 30, "\u00b2", "fz/base", "..", ""]
HEADERS = {
    "Range": ["bytes=0-0", "bytes=5-1", "bytes=-1", "bytes=0-", "bytes=1-2,3-4", "x"],
    "Content-Range": ["0-0", "0-1", "5-9", "1-0", "x", "0-" + "9" * 30],
    "Accept": ["*/*", "text/html", OCI_MANIFEST, ",,"],
    "Content-Type": [OCI_MANIFEST, "application/octet-stream", "x/y;;", "application/vnd.oci.image.index.v1+json"],
}
BODIES = [b"", b"{}", b"[]", b'{"schemaVersion": 2}', b'{"schemaVersion": 2, "x": NaN}', MANIFEST, CONFIG,
          MANIFEST.decode().encode("utf-16")]
# No space: httpx refuses a header value that begins or ends with one.
printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=16)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], dict[str, str], bytes | None]:
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]))
    parts = draw(st.lists(st.one_of(st.sampled_from(SEGMENTS), printable), min_size=1, max_size=3))
    name = "/".join(quote(part, safe=":%") for part in parts)
    path = f"/v2/{draw(st.sampled_from([name, 'fz/base']))}/{draw(st.sampled_from(TAILS))}"
    params = draw(st.lists(st.tuples(st.sampled_from(["n", "last", "digest", "mount", "from", "tag", "artifactType"]),
                                     st.one_of(st.sampled_from(VALUES), printable)), max_size=3))
    headers = {key: draw(st.one_of(st.sampled_from(values), printable))
               for key, values in HEADERS.items() if draw(st.booleans())}
    with_body = method in ("PUT", "POST", "PATCH")
    body = draw(st.one_of(st.sampled_from(BODIES), st.binary(max_size=64))) if with_body else None
    return method, path, params, headers, body


@pytest.fixture(scope="module", params=["http/1.1", "h2"])
def fuzz_client(request: pytest.FixtureRequest, open_server: RunningServer) -> Iterator[httpx.Client]:
    with open_server.client(http2=request.param == "h2") as client:
        push_blob(client, "fz/base", CONFIG)
        put_manifest(client, "fz/base", "t", MANIFEST)
        yield client


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)
    for leak in (b"Traceback", b'File "', b"/tmp/", b"site-packages"):
        assert leak not in response.content, response.text
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert response.headers["content-type"] == "application/json", response.headers
        errors = response.json()["errors"]
        assert errors and all(isinstance(e["code"], str) and isinstance(e["message"], str) for e in errors)


@settings(max_examples=150, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
def test_random_requests_answer_4xx_with_the_spec_body(
        fuzz_client: httpx.Client, request: tuple[str, str, list[tuple[str, str]], dict[str, str], bytes | None]
) -> None:
    method, path, params, headers, body = request
    _check(fuzz_client.request(method, path, params=params, headers=headers, content=body))


def test_nothing_was_logged_as_unhandled(open_server: RunningServer) -> None:
    """After the random requests above (same module server): no traceback in the server's log."""
    log = open_server.log()
    assert "Traceback" not in log and "unhandled" not in log and "Error in ASGI" not in log, log[-3000:]
