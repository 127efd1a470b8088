"""The UI over a registry whose storage is an S3 bucket (the moto emulator): the same pages, through the
same registry model and browse queries, with no path or driver knowledge in the UI."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.objectstores import ObjectStore, moto_server
from tests.server import RunningServer, run_secreg
from tests.storage.test_driver_s3 import moto  # noqa: F401  (the session's moto server)
from tests.ui.conftest import api_client, csrf_of, ui_login, write_policy
from tests.ui.test_pages import push_image


@pytest.fixture(scope="module")
def s3_server(moto: ObjectStore, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
              ) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("ui-s3")
    write_policy(workdir)
    config = {"storage": {"s3": moto.s3_settings(f"ui-{uuid.uuid4().hex[:10]}"), "delete": {"enabled": True}}}
    with run_secreg(workdir, config) as server:
        yield server


def test_browse_inspect_and_delete_on_s3(s3_server: RunningServer) -> None:
    password = s3_server.admin_password or ""
    with api_client(s3_server, "admin", password, "public/ons3") as api:
        digest, size = push_image(api, "public/ons3", "1.0", "s3", labels={"where": "bucket"})
        api.put("/v2/public/ons3/manifests/2.0", content=api.get(
            f"/v2/public/ons3/manifests/{digest}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        ).content, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        with s3_server.client() as ui:
            assert ui_login(ui, "admin", password).status_code == 303
            listing = ui.get("/ui/").text
            row = listing.split('>public/ons3</a>', 1)[1].split("</tr>", 1)[0]
            assert re.findall(r"<td[^>]*>([^<]*)</td>", row)[0] == "2"
            tags = ui.get("/ui/repo/public/ons3").text
            assert re.findall(r'<tr data-tag="([^"]+)">', tags) in (["1.0", "2.0"], ["2.0", "1.0"])
            page = ui.get("/ui/repo/public/ons3/-/manifest/1.0").text
            assert f'<code id="digest">{digest}</code>' in page and f"({size} bytes, compressed)" in page
            assert "<th>where</th><td>bucket</td>" in page
            storage = ui.get("/ui/admin/storage").text
            assert re.search(r"<dt>Blobs</dt><dd>[1-9]\d*</dd>", storage)
            r = ui.post("/ui/repo/public/ons3/-/tag/2.0/delete", data={"csrf": csrf_of(tags)})
            assert r.status_code == 303
            assert api.get("/v2/public/ons3/tags/list").json()["tags"] == ["1.0"]


def test_an_internal_error_page_keeps_the_security_headers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With the bucket gone the UI answers 500; Starlette renders that page outside the UI's middleware, so it
    carries the CSP, framing and no-store headers itself."""
    workdir = tmp_path_factory.mktemp("ui-s3-down")
    with moto_server(workdir) as store:
        config = {"auth": {"enabled": False}, "storage": {"s3": store.s3_settings(f"down-{uuid.uuid4().hex[:8]}")}}
        served = run_secreg(workdir / "server", config)
        server = served.__enter__()
    try:  # the object store has stopped; the registry serves on
        with server.client() as client:
            r = client.get("/ui/")
        assert r.status_code == 500 and "internal error" in r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers.get_list("content-security-policy") == [r.headers["content-security-policy"]]
    finally:
        served.__exit__(None, None, None)
