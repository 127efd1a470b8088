"""Input built to break parsers answers 4xx with the spec's error body, never a 500 or a logged traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oci import (
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    error_code,
    manifest_bytes,
    push_blob,
    put_manifest,
    sha256,
)
from tests.server import RunningServer, run_secreg

HUGE = "9" * 5000  # int() refuses more than 4,300 digits
NOT_ASCII = ["\u00b2", "\u2460", "\u0663"]  # str.isdigit() says yes to "²" and "①", int() to neither; "٣" is a digit


def _no_traceback(server: RunningServer) -> None:
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


@pytest.mark.parametrize("value", [*NOT_ASCII, HUGE, "1" * 19, " 5", "+5", "1_0"])
def test_counts_in_query_strings(client: httpx.Client, open_server: RunningServer, value: str) -> None:
    push_blob(client, "ints/repo", b"x")
    for path, name in [("/v2/_catalog", "n"), ("/v2/ints/repo/tags/list", "n"), ("/v1/search", "n"),
                       ("/v1/search", "page")]:
        r = client.get(path, params={name: value, "q": "ints"})
        assert r.status_code == 400, (path, name, r.status_code, r.text)
        assert error_code(r) == "PAGINATION_NUMBER_INVALID"
    _no_traceback(open_server)


def test_range_offsets(client: httpx.Client, open_server: RunningServer) -> None:
    digest = push_blob(client, "ints/range", b"0123456789")
    blob = f"/v2/ints/range/blobs/{digest}"
    r = client.get(blob, headers={"Range": f"bytes={HUGE}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */10"
    r = client.get(blob, headers={"Range": f"bytes=2-{HUGE}"})
    assert r.status_code == 206 and r.content == b"23456789"
    r = client.get(blob, headers={"Range": f"bytes=-{HUGE}"})
    assert r.status_code == 206 and r.content == b"0123456789"
    for odd in NOT_ASCII:  # not a range this server knows: ignored, the whole blob (RFC 9110)
        r = client.get(blob, headers={"Range": f"bytes={odd}-".encode()})
        assert r.status_code == 200 and r.content == b"0123456789"
    _no_traceback(open_server)


def test_content_range_offsets(client: httpx.Client, open_server: RunningServer) -> None:
    location = client.post("/v2/ints/patch/blobs/uploads/").headers["Location"]
    for header in [f"0-{HUGE}", f"{HUGE}-{HUGE}", "0-\u00b2".encode()]:
        r = client.patch(location, content=b"abc", headers={"Content-Range": header})
        assert r.status_code == 416, r.text
        assert error_code(r) == "BLOB_UPLOAD_INVALID" or r.json()["errors"]
    r = client.patch(location, content=b"abc", headers={"Content-Range": "0-2"})
    assert r.status_code == 202  # the session survived the refusals
    _no_traceback(open_server)


def test_deeply_nested_manifest(client: httpx.Client, open_server: RunningServer) -> None:
    for depth in (100, 1000, 100_000):
        body = b'{"schemaVersion": 2, "mediaType": "%s", "annotations": {"a": "b"}, "x": ' % OCI_MANIFEST.encode()
        body += b"[" * depth + b"]" * depth + b"}"
        r = put_manifest(client, "ints/nested", "deep", body, OCI_MANIFEST, expect=400)
        assert error_code(r) == "MANIFEST_INVALID" and "nested deeper than" in r.text
    _no_traceback(open_server)


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(constant)

    return json.loads(text, parse_constant=refuse)


def _with_subject(client: httpx.Client, name: str) -> tuple[dict[str, Any], str]:
    config = b"{}"
    push_blob(client, name, config)
    base = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
            "config": {"mediaType": EMPTY_JSON, "digest": sha256(config), "size": len(config)}}
    subject = put_manifest(client, name, "base", base).headers["Docker-Content-Digest"]
    body = manifest_bytes(base)
    return {**base, "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(body)}}, subject


def test_json_go_clients_refuse_is_manifest_invalid(client: httpx.Client, open_server: RunningServer) -> None:
    """UTF-16, a byte-order mark, NaN, and numbers where the image spec has strings (annotations, platform) were
    stored: pullers (Go's encoding/json into typed structs) could not read them, and a NaN in an artifact's
    annotations made its subject's whole referrers list invalid JSON for every client."""
    artifact, subject = _with_subject(client, "json/strict")
    good = json.dumps({**artifact, "annotations": {"a": "b"}})
    index_entry = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
    bodies = [
        good.encode("utf-16"),
        good.encode("utf-32"),
        b"\xef\xbb\xbf" + good.encode(),
        good.replace('"b"', "NaN").encode(),
        good.replace('"b"', "-Infinity").encode(),
        json.dumps({**artifact, "annotations": {"a": 5}}).encode(),
        json.dumps({**artifact, "config": {**artifact["config"], "annotations": {"a": None}}}).encode(),
        json.dumps({**artifact, "config": {**artifact["config"], "artifactType": 7}}).encode(),
    ]
    for body in bodies:
        r = put_manifest(client, "json/strict", sha256(body), body, expect=400)
        assert error_code(r) == "MANIFEST_INVALID", (body[:80], r.text)
    for platform in ["linux", {"os": 5}, {"os": "linux", "architecture": "amd64", "features": "sse4"}]:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{**index_entry, "platform": platform}]}
        r = put_manifest(client, "json/strict", "idx", index, OCI_INDEX, expect=400)
        assert error_code(r) == "MANIFEST_INVALID", (platform, r.text)
    put_manifest(client, "json/strict", sha256(good.encode()), good.encode())
    r = client.get(f"/v2/json/strict/referrers/{subject}")
    assert r.status_code == 200
    entries = _strict_json(r.text)["manifests"]  # type: ignore[index]
    assert [e["annotations"] for e in entries] == [{"a": "b"}]
    _no_traceback(open_server)


# --- a full disk -------------------------------------------------------------------------------------------------

@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real filesystem that fills up (needs root, as CI runs)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {result.stderr!r}")
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_507_and_the_upload_stays_resumable(tmp_path: Path, small_disk: Path) -> None:
    config = {"auth": {"enabled": False}, "storage": {"filesystem": {"rootdirectory": str(small_disk / "data")}}}
    data = os.urandom(6 * 1024 * 1024)
    with run_secreg(tmp_path / "server", config) as server, server.client() as c:
        location = c.post("/v2/full/repo/blobs/uploads/").headers["Location"]
        r = c.patch(location, content=data[: 1024 * 1024], headers={"Content-Range": f"0-{1024 * 1024 - 1}"})
        assert r.status_code == 202
        location = r.headers["Location"]
        r = c.patch(location, content=data[1024 * 1024 :],
                    headers={"Content-Range": f"{1024 * 1024}-{len(data) - 1}"})
        assert r.status_code == 507, r.text
        assert r.json()["errors"][0]["message"].startswith("storage is full")
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "errno 28" in ready.json()["checks"]["storage"]
        # Room again (an operator grew the volume): the same session continues from what it holds.
        subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
        status = c.get(location)
        assert status.status_code == 204
        held = int(status.headers["Range"].split("-")[1]) + 1
        assert held >= 1024 * 1024
        r = c.patch(status.headers["Location"], content=data[held:],
                    headers={"Content-Range": f"{held}-{len(data) - 1}"})
        assert r.status_code == 202, r.text

        r = c.put(r.headers["Location"], params={"digest": sha256(data)})
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/full/repo/blobs/{sha256(data)}").content == data
        log = server.log()
    assert "Traceback" not in log
    assert len(re.findall(r"storage is full", log)) == 1, log[-3000:]
    shutil.rmtree(tmp_path / "server", ignore_errors=True)


def test_a_trailing_newline_never_passes_for_a_valid_name(client: httpx.Client, open_server: RunningServer) -> None:
    """`$` in a Python pattern also matches before a final newline: `v1%0A` was stored as the tag "v1\\n", a
    directory no other registry can read. Each is now refused as any other invalid tag, digest or upload id."""
    config, layer = b'{"newline": true}', b"newline layer"
    push_blob(client, "newline/app", config)
    push_blob(client, "newline/app", layer)
    body = manifest_bytes({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha256(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": sha256(layer), "size": len(layer)}]})
    headers = {"Content-Type": OCI_MANIFEST}

    def answer(r: httpx.Response) -> tuple[int, str]:
        return r.status_code, error_code(r)

    invalid_tag = answer(client.put("/v2/newline/app/manifests/v1!", content=body, headers=headers))
    assert invalid_tag[0] == 400
    for reference in ("v1%0A", "v1%0a", "v1%0D%0A"):
        assert answer(client.put(f"/v2/newline/app/manifests/{reference}", content=body, headers=headers)) \
            == invalid_tag, reference
        assert answer(client.get(f"/v2/newline/app/manifests/{reference}")) == answer(
            client.get("/v2/newline/app/manifests/v1!")), reference
    digest = sha256(layer)
    assert answer(client.get(f"/v2/newline/app/blobs/{digest}%0A")) == answer(
        client.get(f"/v2/newline/app/blobs/{digest}!"))
    upload = client.post("/v2/newline/app/blobs/uploads/").headers["location"].rsplit("/", 1)[1].split("?")[0]
    assert client.get(f"/v2/newline/app/blobs/uploads/{upload}").status_code == 204
    assert answer(client.get(f"/v2/newline/app/blobs/uploads/{upload}%0A")) == (404, "BLOB_UPLOAD_UNKNOWN")
    assert client.get("/v2/newline/app/tags/list").json()["tags"] in (None, [])
    assert not list((open_server.storage / "docker/registry/v2/repositories/newline/app").rglob("*\n*"))
    _no_traceback(open_server)
