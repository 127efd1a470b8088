"""Path traversal through every parameter of every route (repository names, tags, references, digests, upload ids,
the UI's path parameters), percent-encoded so no client normalises it away, on both storage layouts: a real server
on the filesystem and one on an S3 bucket (moto). Each request is refused with a 4xx (never a 500), and afterwards
no file or object anywhere carries the payloads' marker: nothing was written outside the tree `layout.py` builds."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import botocore.session

from secreg.api.routes import REGISTRY_ROUTES
from secreg.ui.app import PAGES
from tests.objectstores import ObjectStore
from tests.oci import push_blob
from tests.server import RunningServer, run_secreg
from tests.storage.test_driver_s3 import moto  # noqa: F401  (the session's moto server)

MARK = "escaped"
DOT_DOT = ["%2e%2e", "..%2f..%2f" + MARK, "%2e%2e%2f%2e%2e%2f" + MARK, "..%5c..%5c" + MARK, "%2e%2e%2f_layers",
           MARK + "%00", MARK + "%0a"]
SAFE = {"name": "trav/app", "reference": "v1", "digest": "sha256:" + "a" * 64, "tag": "v1", "user": "admin",
        "upload_id": str(uuid.UUID(int=1))}


def _requests() -> list[tuple[str, str]]:
    """(method, path) for every route and every parameter, each filled in turn with each payload."""
    templates = [(m, spec.path) for spec in REGISTRY_ROUTES for m in spec.methods if "{" in spec.path]
    templates += [(m, f"/ui{page.path}") for page in PAGES for m in page.methods if "{" in page.path]
    out = []
    for method, template in templates:
        for param in re.findall(r"\{(\w+)(?::\w+)?\}", template):
            for payload in DOT_DOT + ([f"sha256:{p}" for p in DOT_DOT] if param == "digest" else []) + (
                    [f"trav/{p}/app" for p in DOT_DOT] if param == "name" else []):
                values = {**SAFE, param: payload}
                out.append((method, re.sub(r"\{(\w+)(?::\w+)?\}", lambda m, v=values: v[m.group(1)], template)))
    return out


def _attack(server: RunningServer) -> None:
    with server.client() as client:
        push_blob(client, "trav/app", b"a blob so the repository exists")
        for method, path in _requests():
            query = {"mount": f"sha256:{'a' * 64}", "from": "..%2f" + MARK} if path.endswith("/uploads/") else {}
            r = client.request(method, path, params=query, content=b"{}")
            assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:300])
        for query in ({"from": f"../{MARK}", "mount": "sha256:" + "a" * 64}, {"digest": f"sha256:../{MARK}"}):
            r = client.post("/v2/trav/app/blobs/uploads/", params=query)
            assert r.status_code in (202, 400), r.text
        for path in ("/ui/static/%2e%2e/app.py", "/ui/static/..%2f..%2fconfig%2fdefaults.py",
                     "/ui/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/ui/static/..%5c..%5capp.py"):
            r = client.get(path)  # the package's own files, and nothing beside them
            assert r.status_code == 404 and "import" not in r.text and "root:" not in r.text, path
        assert client.get("/v2/_catalog").json()["repositories"] == ["trav/app"]
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


def test_traversal_on_the_filesystem(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {"auth": {"enabled": False}, "storage": {"delete": {"enabled": True}}}) as server:
        _attack(server)
    assert [str(p) for p in tmp_path.rglob(f"*{MARK}*")] == []
    tree = tmp_path / "data" / "docker" / "registry" / "v2"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["docker"]
    assert {p.name for p in (tree / "repositories").iterdir()} == {"trav"}


def test_traversal_on_s3(tmp_path: Path, moto: ObjectStore) -> None:  # noqa: F811
    bucket = f"trav-{uuid.uuid4().hex[:10]}"
    s3 = {**moto.s3_settings(bucket), "rootdirectory": "/registry"}
    with run_secreg(tmp_path, {"auth": {"enabled": False}, "storage": {"s3": s3, "delete": {"enabled": True}}}) \
            as server:
        _attack(server)
    client = botocore.session.get_session().create_client(
        "s3", region_name=moto.region, endpoint_url=moto.endpoint, aws_access_key_id=moto.accesskey,
        aws_secret_access_key=moto.secretkey)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert keys and all(k.startswith("registry/docker/registry/v2/") for k in keys), keys[:20]
    assert [k for k in keys if MARK in k or ".." in k.split("/") or "\\" in k] == []
    assert {k.split("/")[5] for k in keys if k.startswith("registry/docker/registry/v2/repositories/")} == {"trav"}

