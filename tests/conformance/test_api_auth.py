"""`api.go`'s authentication, against secreg as it ships (token auth on): on a 401 the Go client parses
`WWW-Authenticate` with its own regexes, asks the realm for a token for exactly the challenged scope (basic
auth, `service` and `scope` parameters, `token` or `access_token` back), retries, and caches the header per
(host, repository, pull|push|method) (`OCI_CACHE_AUTH`, on by default).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.conformance.testdata import MT_OCI_IMAGE, REPO1, REPO2, DataSet, GenOpts, digest_of
from tests.server import RunningServer, run_secreg

_TYPE = re.compile(r"(?i).*(bearer|basic).*")
_PARAMS = re.compile(r'([a-zA-z]+)="(.+?)"')
_REPO = re.compile(r"/v2/([a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*)"
                   r"(/(?:blobs|manifests|tags|referrers)/(?:[^/]+)|/blobs/uploads/[^/]*)")


class GoClient:
    """`api.Do` with `apiWithAuth(user, pass, cacheAuth=true)`."""

    def __init__(self, server: RunningServer, user: str, password: str) -> None:
        self.server = server
        self.user, self.password = user, password
        self.cache: dict[str, str] = {}
        self.challenges = 0
        self.http = server.client()

    def close(self) -> None:
        self.http.close()

    def _cache_key(self, method: str, path: str) -> str:
        repo = ""
        if path != "/v2/":
            match = _REPO.search(path)
            assert match, f"could not extract repo from path {path}"
            repo = match.group(1)
        kind = {"GET": "pull", "HEAD": "pull", "POST": "push", "PATCH": "push", "PUT": "push"}.get(method, method)
        return f"{self.server.host_port}:{repo}:{kind}"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        key = self._cache_key(method, path)
        headers = dict(kwargs.pop("headers", None) or {})
        if key in self.cache:
            headers["Authorization"] = self.cache[key]
        r = self.http.request(method, path, headers=headers, **kwargs)
        if r.status_code == 401:
            self.challenges += 1
            headers["Authorization"] = self.cache[key] = self._auth_header(r)
            r = self.http.request(method, path, headers=headers, **kwargs)
        return r

    def _auth_header(self, response: httpx.Response) -> str:
        header = response.headers.get("WWW-Authenticate", "")
        assert header, "status code or header invalid for adding auth"
        kind = _TYPE.sub(r"\1", header).lower()
        assert kind == "bearer", f"failed to parse auth header: {header}"
        params = {name.lower(): value for name, value in _PARAMS.findall(header)}
        query = {"service": params.get("service", "")}
        if params.get("scope"):
            query["scope"] = params["scope"]
        realm = urljoin(str(response.request.url), params["realm"])
        with httpx.Client(verify=self.server.ssl_context(), timeout=60) as auth:
            r = auth.get(realm, params=query, headers={"Accept": "application/json"},
                         auth=(self.user, self.password))
        assert r.status_code == 200, f"invalid status on auth request: {r.status_code}"
        info = r.json()
        return f"Bearer {info.get('access_token') or info['token']}"


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """secreg with its defaults (token auth on), deletes on."""
    with run_secreg(tmp_path_factory.mktemp("secure-registry"), {"storage": {"delete": {"enabled": True}}}) as s:
        yield s


@pytest.fixture()
def go(secure_server: RunningServer) -> Iterator[GoClient]:
    assert secure_server.admin_password
    client = GoClient(secure_server, "admin", secure_server.admin_password)
    yield client
    client.close()


def _push_blob(go: GoClient, repo: str, body: bytes) -> str:
    dig = digest_of(body)
    r = go.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    r = go.request("PUT", r.headers["Location"], params={"digest": dig}, content=body,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return dig


def test_ping_with_auth(go: GoClient) -> None:
    r = go.request("GET", "/v2/")
    assert r.status_code == 200 and go.challenges == 1


def test_push_pull_and_delete_with_auth(go: GoClient) -> None:
    td = DataSet("image")
    dig = td.gen_manifest_full(GenOpts(tag="image"))
    for blob, body in td.blobs.items():
        assert _push_blob(go, REPO1, body) == blob
    body = td.manifests[dig]
    r = go.request("PUT", f"/v2/{REPO1}/manifests/image", content=body, headers={"Content-Type": MT_OCI_IMAGE})
    assert r.status_code == 201, r.text
    r = go.request("GET", f"/v2/{REPO1}/manifests/image", headers={"Accept": MT_OCI_IMAGE})
    assert r.status_code == 200 and r.content == body
    r = go.request("HEAD", f"/v2/{REPO1}/manifests/{dig}", headers={"Accept": MT_OCI_IMAGE})
    assert r.status_code == 200
    r = go.request("DELETE", f"/v2/{REPO1}/manifests/{dig}")
    assert r.status_code == 202, r.text
    # One challenge per (repository, pull|push|DELETE): the cached header serves every later request.
    assert go.challenges == 3


def test_cached_auth_is_reused(go: GoClient) -> None:
    assert go.request("GET", f"/v2/{REPO1}/tags/list").status_code in (200, 404)
    challenges = go.challenges
    assert go.request("GET", f"/v2/{REPO1}/referrers/{digest_of(b'x')}").status_code == 200
    assert go.challenges == challenges


def test_blob_mount_with_auth(go: GoClient) -> None:
    dig = _push_blob(go, REPO2, b"mount me with auth")
    r = go.request("POST", f"/v2/{REPO1}/blobs/uploads/", params={"mount": dig, "from": REPO2})
    assert r.status_code == 201
