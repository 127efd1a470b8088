"""No credential the registry holds is ever logged or shown, at `log.level: debug`: the object store's secret key,
the upstream registries' passwords (the right one and a wrong one, whose refusal the client sees), the metrics
token, users' passwords and the bearer, refresh and presigned-URL signatures handed out. A real server on an S3
bucket (the moto emulator) with a pull-through cache of a real token-auth upstream; the log, the audit file and
every answer a client or an administrator's browser gets (error bodies, UI pages, /metrics, /readyz) are
searched."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.objectstores import ObjectStore
from tests.oci import push_blob
from tests.proxy.upstreams import Pusher, Upstream, random_bytes, secreg_upstream
from tests.server import run_secreg, token
from tests.storage.test_driver_s3 import moto  # noqa: F401  (the session's moto server)
from tests.ui.conftest import add_user, csrf_of, ui_login

S3_SECRET = "s3-secret-key-never-logged-5d1c"
METRICS_TOKEN = "metrics-token-never-logged-93b0"
WRONG_UPSTREAM_PASSWORD = "wrong-upstream-password-never-logged-2e77"
USER_PASSWORD = "user-password-never-logged-c4f1"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with secreg_upstream(tmp_path_factory.mktemp("upstream")) as running:
        yield running


def _server(workdir: Path, moto: ObjectStore, upstream: Upstream) -> dict[str, object]:  # noqa: F811
    (workdir / "right.pw").write_text(upstream.password + "\n")
    (workdir / "wrong.pw").write_text(WRONG_UPSTREAM_PASSWORD + "\n")
    entry = {"url": upstream.url, "ca": str(upstream.ca), "username": upstream.username}
    return {
        "log": {"level": "debug", "audit": {"file": str(workdir / "audit.log")}},
        "metrics": {"token": METRICS_TOKEN},
        "storage": {"s3": {**moto.s3_settings(f"secrets-{uuid.uuid4().hex[:10]}"), "secretkey": S3_SECRET},
                    "redirect": {"enabled": True}, "delete": {"enabled": True}},
        "proxy": {"upstreams": [{**entry, "name": "good", "prefix": "good", "passwordfile": str(workdir / "right.pw")},
                                # the same upstream by another name (one host routes to one upstream)
                                {**entry, "name": "bad", "prefix": "bad", "passwordfile": str(workdir / "wrong.pw"),
                                 "url": upstream.url.replace("127.0.0.1", "localhost")}]},
    }


def test_no_secret_is_logged_or_shown(tmp_path: Path, moto: ObjectStore, upstream: Upstream) -> None:  # noqa: F811
    pusher = Pusher(upstream)
    try:
        manifest_digest, _, _ = pusher.image("team/app", "v1", [random_bytes(3000, seed=5)])
    finally:
        pusher.close()
    shown: list[str] = []  # everything a client saw
    handed_out: list[str] = []  # secrets the server gave clients: tokens, URL signatures
    with run_secreg(tmp_path, _server(tmp_path, moto, upstream)) as server:
        add_user(tmp_path, "alice", USER_PASSWORD)
        assert server.admin_password
        with server.client() as client:
            login = client.get("/auth/token", params={"service": "secreg", "offline_token": "true",
                                                      "client_id": "docker"}, auth=("admin", server.admin_password))
            handed_out.append(login.json()["refresh_token"])
            assert client.get("/auth/token", auth=("alice", "a-wrong-password")).status_code == 401
            for path in ("/metrics", "/readyz", "/healthz"):
                shown.append(client.get(path, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text)
        bearer = token(server, "admin", server.admin_password, "repository:good/team/app:pull",
                       "repository:bad/team/app:pull", "repository:local/app:pull,push")
        handed_out.append(bearer)
        with server.client(headers={"Authorization": f"Bearer {bearer}"}) as client:
            cached = client.get("/v2/good/team/app/manifests/v1",
                                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert cached.status_code == 200, cached.text
            refused = client.get("/v2/bad/team/app/manifests/v1",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert refused.status_code >= 400
            shown += [cached.text, refused.text, str(refused.headers)]
            digest = push_blob(client, "local/app", b"a blob on the bucket")
            redirect = client.get(f"/v2/local/app/blobs/{digest}", follow_redirects=False)
            assert redirect.status_code == 307, redirect.text
            signature = parse_qs(urlsplit(redirect.headers["location"]).query)["X-Amz-Signature"][0]
            handed_out.append(signature)
            assert httpx.get(redirect.headers["location"]).content == b"a blob on the bucket"
        with server.client() as browser:
            assert ui_login(browser, "admin", server.admin_password).status_code == 303
            for page in ("/ui/", "/ui/admin/users", "/ui/admin/policy", "/ui/admin/storage",
                         "/ui/repo/good/team/app", f"/ui/repo/good/team/app/-/manifest/{manifest_digest}"):
                r = browser.get(page)
                assert r.status_code == 200, (page, r.status_code)
                shown.append(r.text)
            r = browser.post("/ui/admin/users", data={"csrf": csrf_of(browser.get("/ui/admin/users").text),
                                                      "name": "bob", "password": USER_PASSWORD + "-bob"})
            shown.append(r.text)
        log = server.log()
    audit = (tmp_path / "audit.log").read_text()
    assert "login.failed" in audit and "DEBUG" in log.upper()  # the places searched are the ones written
    # The generated admin password is printed once at the first start, by design (README "Quick start").
    assert log.count(server.admin_password) == 1
    log = log.replace(server.admin_password, "")
    secrets = [S3_SECRET, METRICS_TOKEN, upstream.password, WRONG_UPSTREAM_PASSWORD, USER_PASSWORD,
               server.admin_password, *handed_out]
    for secret in secrets:
        assert secret not in log, _around(log, secret)
        assert secret not in audit, _around(audit, secret)
        for text in shown:
            assert secret not in text, _around(text, secret)
    assert not re.search(r"X-Amz-Signature=[0-9a-f]{16}", log)


def _around(text: str, secret: str) -> str:
    at = text.find(secret)
    return text[max(0, at - 300): at + 100]
