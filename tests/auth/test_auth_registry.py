"""Token auth on a real `secreg serve` (secure by default): challenges, scopes on every route, catalog filtering."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.oci import error_code, push_blob, push_image, sha256
from tests.server import RunningServer, run_secreg, token, worker_environment


def add_user(server: RunningServer, name: str, password: str, *groups: str) -> None:
    command = [sys.executable, "-m", "secreg", "user", "add", name, "--password-stdin",
               "--auth-dir", str(server.workdir / "auth")]
    for group in groups:
        command += ["--group", group]
    subprocess.run(command, input=password, text=True, check=True, capture_output=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("auth-registry"), {"storage": {"delete": {"enabled": True}}}) as s:
        add_user(s, "alice", "alice-password")
        add_user(s, "bob", "bob-password")
        yield s


def authed(server: RunningServer, bearer: str) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {bearer}"})


def admin_token(server: RunningServer, *scopes: str) -> str:
    assert server.admin_password
    return token(server, "admin", server.admin_password, *scopes)


def test_first_start_creates_admin_and_files(server: RunningServer) -> None:
    assert server.admin_password and len(server.admin_password) >= 16
    htpasswd = server.workdir / "auth" / "htpasswd"
    assert stat.S_IMODE(htpasswd.stat().st_mode) == 0o600
    assert htpasswd.read_text().startswith("admin:$2y$")
    assert (server.workdir / "auth" / "policy.yaml").exists()
    assert server.admin_password not in htpasswd.read_text()


def test_anonymous_gets_challenge_for_exact_scope(server: RunningServer) -> None:
    realm = f'realm="https://127.0.0.1:{server.port}/auth/token",service="secreg"'
    with server.client() as c:
        r = c.get("/v2/")
        assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
        assert r.headers["WWW-Authenticate"] == f"Bearer {realm}"
        cases = {
            ("GET", "/v2/team/app/manifests/latest"): "repository:team/app:pull",
            ("HEAD", f"/v2/team/app/blobs/{sha256(b'x')}"): "repository:team/app:pull",
            ("POST", "/v2/team/app/blobs/uploads/"): "repository:team/app:pull,push",
            ("PUT", "/v2/team/app/manifests/v1"): "repository:team/app:pull,push",
            ("PATCH", "/v2/team/app/blobs/uploads/00000000-0000-4000-8000-000000000000"):
                "repository:team/app:pull,push",
            ("DELETE", "/v2/team/app/manifests/v1"): "repository:team/app:delete",
            ("GET", "/v2/team/app/tags/list"): "repository:team/app:pull",
            ("GET", f"/v2/team/app/referrers/{sha256(b'x')}"): "repository:team/app:pull",
            ("GET", "/v2/_catalog"): "registry:catalog:*",
        }
        for (method, path), scope in cases.items():
            r = c.request(method, path)
            assert r.status_code == 401, (method, path)
            assert r.headers["WWW-Authenticate"] == f'Bearer {realm},scope="{scope}"', (method, path)
        r = c.get("/v2/", headers={"Authorization": "Bearer not.a.token"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        assert c.get("/healthz").status_code == 200


def test_admin_pushes_and_pulls(server: RunningServer) -> None:
    bearer = admin_token(server, "repository:team/app:pull,push,delete")
    with authed(server, bearer) as c:
        digest, body = push_image(c, "team/app", "1.0")
        assert c.get("/v2/team/app/manifests/1.0").content == body
        assert c.get("/v2/").status_code == 200


def test_token_for_one_repository_is_refused_on_another(server: RunningServer) -> None:
    bearer = admin_token(server, "repository:team/app:pull,push")
    with authed(server, bearer) as c:
        r = c.get("/v2/team/other/tags/list")
        assert r.status_code == 401
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        assert 'scope="repository:team/other:pull"' in r.headers["WWW-Authenticate"]


def test_pull_only_token_cannot_push(server: RunningServer) -> None:
    bearer = admin_token(server, "repository:team/app:pull")
    with authed(server, bearer) as c:
        assert c.get("/v2/team/app/tags/list").status_code == 200
        r = c.post("/v2/team/app/blobs/uploads/")
        assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        r = c.delete("/v2/team/app/manifests/1.0")
        assert r.status_code == 401


def test_user_is_downscoped_to_own_namespace(server: RunningServer) -> None:
    bearer = token(server, "alice", "alice-password", "repository:alice/app:pull,push",
                   "repository:team/app:pull,push")
    with authed(server, bearer) as c:
        push_image(c, "alice/app", "v1")
        r = c.post("/v2/team/app/blobs/uploads/")
        assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]


def test_mount_needs_pull_on_source(server: RunningServer) -> None:
    secret = b"admin-only layer"
    with authed(server, admin_token(server, "repository:team/secret:pull,push")) as c:
        digest = push_blob(c, "team/secret", secret)
    bearer = token(server, "alice", "alice-password", "repository:alice/steal:pull,push",
                   "repository:team/secret:pull")
    with authed(server, bearer) as c:
        r = c.post("/v2/alice/steal/blobs/uploads/", params={"mount": digest, "from": "team/secret"})
        assert r.status_code == 202  # quietly an ordinary upload, not a mount
        r = c.post("/v2/alice/steal/blobs/uploads/", params={"mount": digest})
        assert r.status_code == 202
        assert c.get(f"/v2/alice/steal/blobs/{digest}").status_code == 404
    # Alice may mount from her own repository.
    with authed(server, token(server, "alice", "alice-password", "repository:alice/a:pull,push",
                              "repository:alice/b:pull,push")) as c:
        own = push_blob(c, "alice/a", b"alice layer")
        r = c.post("/v2/alice/b/blobs/uploads/", params={"mount": own, "from": "alice/a"})
        assert r.status_code == 201


def test_a_known_digest_is_no_key_to_another_repository(server: RunningServer) -> None:
    """Knowing a blob's digest is not having it: every way of claiming one in a repository of one's own without
    sending its bytes (a monolithic upload or a session closed with the digest and no or other content, a manifest
    naming it) is refused, and the blob stays unreadable there, though it exists in the store."""
    secret = b"another team's layer"
    with authed(server, admin_token(server, "repository:team/hidden:pull,push")) as c:
        digest = push_blob(c, "team/hidden", secret)
    bearer = token(server, "alice", "alice-password", "repository:alice/claim:pull,push")
    with authed(server, bearer) as c:
        for body in (b"", b"something else"):
            r = c.post("/v2/alice/claim/blobs/uploads/", params={"digest": digest}, content=body)
            assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID", body
            session = c.post("/v2/alice/claim/blobs/uploads/").headers["location"]
            r = c.put(session, params={"digest": digest}, content=body)
            assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID", body
        config_bytes = b'{"architecture": "amd64", "os": "linux"}'
        config = push_blob(c, "alice/claim", config_bytes)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                               "size": len(config_bytes)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                                "size": len(secret)}]}
        r = c.put("/v2/alice/claim/manifests/v1", json=manifest,
                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN", r.text
        assert c.get(f"/v2/alice/claim/blobs/{digest}").status_code == 404
        assert c.head(f"/v2/alice/claim/blobs/{digest}").status_code == 404


def test_catalog_lists_only_pullable(server: RunningServer) -> None:
    with authed(server, admin_token(server, "repository:bob/tools:pull,push")) as c:
        push_image(c, "bob/tools", "v1")
    with authed(server, admin_token(server, "registry:catalog:*")) as c:
        names = c.get("/v2/_catalog").json()["repositories"]
        assert {"team/app", "alice/app", "bob/tools"} <= set(names)
    alice_catalog = token(server, "alice", "alice-password", "registry:catalog:*")
    with authed(server, alice_catalog) as c:
        r = c.get("/v2/_catalog")
        assert r.status_code == 200
        names = r.json()["repositories"]
        assert "alice/app" in names and all(n.startswith("alice/") for n in names)


def test_path_like_names_never_reach_storage(server: RunningServer) -> None:
    bearer = admin_token(server, "repository:team/app:pull")
    with authed(server, bearer) as c:
        for bad in ("..%2F..%2Fetc", "team/../../etc", "team/%2e%2e/x"):
            r = c.get(f"/v2/{bad}/tags/list")
            assert r.status_code in (400, 401, 404), bad
            if r.status_code == 400:
                assert error_code(r) == "NAME_INVALID"
    r = httpx.get(f"{server.url}/auth/token", params={"service": "secreg", "scope": "repository:../etc:pull"},
                  auth=("admin", server.admin_password or ""), verify=server.ssl_context())
    assert r.status_code == 400 and "invalid repository name" in r.text


def test_docker_login_flow_refresh_token(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get("/auth/token", params={"account": "alice", "client_id": "docker", "offline_token": "true",
                                         "service": "secreg"}, auth=("alice", "alice-password"))
        assert r.status_code == 200
        refresh = r.json()["refresh_token"]
        assert r.json()["expires_in"] > 0
        r = c.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh,
                                         "service": "secreg", "client_id": "docker",
                                         "scope": "repository:alice/app:pull,push"})
        assert r.status_code == 200
        bearer = r.json()["access_token"]
    with authed(server, bearer) as c:
        assert c.get("/v2/alice/app/tags/list").status_code == 200


def test_wrong_password_and_rate_limit(server: RunningServer) -> None:
    with server.client() as c:
        statuses = [c.get("/auth/token", params={"service": "secreg"}, auth=("bob", "wrong")).status_code
                    for _ in range(8)]
        assert statuses[0] == 401 and 429 in statuses
        r = c.get("/auth/token", params={"service": "secreg"}, auth=("bob", "wrong"))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert error_code(r) == "TOOMANYREQUESTS"


def test_second_start_prints_no_password(server: RunningServer, tmp_path: Path) -> None:
    assert "shown only this once" in server.log()
    with run_secreg(server.workdir / "again", {}) as first:
        assert first.admin_password
    with run_secreg(server.workdir / "again", {}) as second:
        assert second.admin_password is None


def test_auth_off_is_explicit_and_logged(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {"auth": {"enabled": False}}) as s:
        assert "AUTHENTICATION IS OFF" in s.log()
        with s.client() as c:
            assert c.get("/v2/").status_code == 200
        # once, by `secreg serve` (it also said so once more from every worker's app; a worker is serving by now)
        assert s.log().lower().count("authentication is off") == 1, s.log()


def test_mount_challenge_names_the_source(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post("/v2/alice/b/blobs/uploads/", params={"mount": sha256(b"m"), "from": "team/src"})
        assert r.status_code == 401
        assert 'scope="repository:alice/b:pull,push repository:team/src:pull"' in r.headers["WWW-Authenticate"]
        r = c.post("/v2/alice/b/blobs/uploads/", params={"mount": sha256(b"m"), "from": "../bad"})
        assert 'scope="repository:alice/b:pull,push"' in r.headers["WWW-Authenticate"]


def test_login_rate_limit_counts_across_workers(tmp_path: Path) -> None:
    """With two workers, failures answered by either count once: the lockout comes after `attempts` failures,
    not after up to twice as many."""
    config = {"http": {"workers": 2}, "auth": {"ratelimit": {"attempts": 4, "window": 60, "lockout": 60}}}
    with run_secreg(tmp_path, config) as running:
        shared = Path(worker_environment(running.process.pid)["_SECREG_SHARED_DIR"])
        for attempt in range(4):
            with running.client() as client:  # a new connection each: the kernel spreads them over the workers
                r = client.get("/auth/token", params={"service": "secreg"}, auth=("admin", f"wrong-{attempt}"))
            assert r.status_code == 401, (attempt, r.text)
        for _ in range(6):  # whichever worker answers, the account is locked, even for the right password
            with running.client() as client:
                r = client.get("/auth/token", params={"service": "secreg"}, auth=("admin", running.admin_password))
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0, r.text
        assert (shared / "ratelimit.sqlite").exists()
    assert not shared.exists()  # removed when secreg serve exits


def test_refused_upload_bodies_leave_the_connection_usable(tmp_path: Path) -> None:
    """A chunk refused before any handler runs (401 from the auth layer) is read and dropped, so the client can
    send its next request on the same connection; one too big to read says `Connection: close`."""
    with (
        run_secreg(tmp_path, {}) as running,
        authed(running, admin_token(running, "repository:drain/one:pull,push")) as client,
    ):
        chunk = os.urandom(2 * 1024 * 1024)
        location = client.post("/v2/drain/one/blobs/uploads/").headers["Location"]
        for _ in range(10):
            r = client.patch(location, content=chunk, headers={"Authorization": "Bearer not-a-token"})
            assert r.status_code == 401 and "connection" not in r.headers
            assert client.get(location).status_code == 204
        r = client.patch(location, content=os.urandom(6 * 1024 * 1024), headers={"Authorization": "Bearer x"})
        assert r.status_code == 401 and r.headers["Connection"] == "close"
        assert client.get(location).status_code == 204
