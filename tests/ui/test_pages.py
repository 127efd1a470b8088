"""The UI over real HTTPS against a real `secreg serve`, without a browser: who sees what, what each page
shows, CSRF and the security headers, and that every change goes through the registry and auth files."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from secreg.ui.app import PAGES
from tests.e2e.processes import dying_with_parent
from tests.oci import OCI_INDEX, OCI_LAYER, OCI_MANIFEST, descriptor, push_blob, put_manifest
from tests.server import RunningServer, free_port, run_secreg, stop_process_group
from tests.ui.conftest import DEV_PASSWORD, api_client, csrf_of, token, ui_login, write_policy

XSS_LABEL = "<script>window.__xss=1</script>"
XSS_ANNOTATION = '"><img src=x onerror="window.__xss=2">'
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"


def push_image(client: httpx.Client, name: str, tag: str, seed: str, labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None, arch: str = "amd64",
               subject: dict[str, Any] | None = None, artifact_type: str | None = None) -> tuple[str, int]:
    """An image of two layers; returns (digest, config + layers size)."""
    config = json.dumps({"architecture": arch, "os": "linux", "created": "2025-03-04T05:06:07.123456789Z",
                         "config": {"Labels": labels or {}}, "seed": seed}).encode()
    layers = [f"{seed}-layer-{i}".encode() * (100 * (i + 1)) for i in range(2)]
    for blob in (config, *layers):
        push_blob(client, name, blob)
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                                "layers": [descriptor(OCI_LAYER, layer) for layer in layers]}
    if annotations:
        document["annotations"] = annotations
    if subject:
        document["subject"] = subject
    if artifact_type:
        document["artifactType"] = artifact_type
    r = put_manifest(client, name, tag, document)
    return r.headers["Docker-Content-Digest"], len(config) + sum(len(layer) for layer in layers)


@pytest.fixture(scope="module")
def content(ui_server: RunningServer) -> dict[str, Any]:
    password = ui_server.admin_password
    assert password
    names = ["public/hello", "public/multi", "secret/thing"]
    found: dict[str, Any] = {}
    with api_client(ui_server, "admin", password, *names) as client:
        found["hello"] = push_image(client, "public/hello", "1.0", "hello", labels={"maintainer": XSS_LABEL},
                                    annotations={"org.example.note": XSS_ANNOTATION})
        put_manifest(client, "public/hello", "latest", client.get(
            "/v2/public/hello/manifests/1.0", headers={"Accept": OCI_MANIFEST}).content)
        hello_digest, hello_size = found["hello"]
        subject = {"mediaType": OCI_MANIFEST, "digest": hello_digest,
                   "size": len(client.get(f"/v2/public/hello/manifests/{hello_digest}",
                                          headers={"Accept": OCI_MANIFEST}).content)}
        found["signature"] = push_image(client, "public/hello", "sig-holder", "sig", subject=subject,
                                        artifact_type=SIGNATURE_TYPE)
        client.delete("/v2/public/hello/manifests/sig-holder")  # only reachable as a referrer
        amd = push_image(client, "public/multi", "amd", "amd", arch="amd64")
        arm = push_image(client, "public/multi", "arm", "arm", arch="arm64")
        att = push_image(client, "public/multi", "att", "att", arch="unknown")
        children = []
        for (digest, _), platform, extra in ((amd, {"os": "linux", "architecture": "amd64"}, None),
                                             (arm, {"os": "linux", "architecture": "arm64"}, None),
                                             (att, {"os": "unknown", "architecture": "unknown"},
                                              {"vnd.docker.reference.type": "attestation-manifest",
                                               "vnd.docker.reference.digest": amd[0]})):
            size = len(client.get(f"/v2/public/multi/manifests/{digest}", headers={"Accept": OCI_MANIFEST}).content)
            child = {"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": platform}
            if extra:
                child["annotations"] = extra
            children.append(child)
        r = put_manifest(client, "public/multi", "1", {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                       "manifests": children}, media_type=OCI_INDEX)
        found["multi"] = (r.headers["Docker-Content-Digest"], amd, arm, att)
        found["secret"] = push_image(client, "secret/thing", "1.0", "secret")
    with api_client(ui_server, "dev", DEV_PASSWORD, "dev/app") as client:
        found["dev"] = push_image(client, "dev/app", "1.0", "dev")
    return found


@pytest.fixture()
def anonymous(ui_server: RunningServer) -> Iterator[httpx.Client]:
    with ui_server.client() as client:
        yield client


@pytest.fixture()
def admin(ui_server: RunningServer) -> Iterator[httpx.Client]:
    with ui_server.client() as client:
        assert ui_login(client, "admin", ui_server.admin_password or "").status_code == 303
        yield client


@pytest.fixture()
def dev(ui_server: RunningServer) -> Iterator[httpx.Client]:
    with ui_server.client() as client:
        assert ui_login(client, "dev", DEV_PASSWORD).status_code == 303
        yield client


def repository_names(html: str) -> list[str]:
    table = html.split('id="repositories"', 1)[-1] if 'id="repositories"' in html else ""
    return re.findall(r'<a href="/ui/repo/[^"]+">([^<]+)</a>', table)


def test_logout_ends_the_session_even_for_a_copied_cookie(ui_server: RunningServer) -> None:
    with ui_server.client() as client:
        assert ui_login(client, "dev", DEV_PASSWORD).status_code == 303
        copied = dict(client.cookies)
        page = client.get("/ui/").text
        assert 'id="current-user">dev<' in page
        r = client.post("/ui/logout", data={"csrf": csrf_of(page)})
        assert r.status_code == 303
        assert 'id="current-user"' not in client.get("/ui/").text
    with ui_server.client(cookies=copied) as replay:
        assert 'id="current-user"' not in replay.get("/ui/").text


def test_root_redirects_browsers_to_the_ui(anonymous: httpx.Client) -> None:
    r = anonymous.get("/")
    assert r.status_code == 302 and r.headers["location"] == "/ui/"


def test_security_headers_and_session_cookie(anonymous: httpx.Client, ui_server: RunningServer) -> None:
    for path in ("/ui/", "/ui/login", "/ui/static/ui.js", "/ui/nope"):
        r = anonymous.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
    with ui_server.client() as fresh:
        cookie = fresh.get("/ui/login").headers["set-cookie"]
    assert cookie.startswith("__Host-secreg_session=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Max-Age=1800", "Path=/"):
        assert flag in cookie
    html = anonymous.get("/ui/login").text
    assert "<script>" not in html and "<script src=\"/ui/static/ui.js\" defer></script>" in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert "http://" not in html and "https://" not in html, "no third-party assets"


def test_anonymous_browses_exactly_what_anonymous_may_pull(anonymous: httpx.Client, content: dict[str, Any]) -> None:
    assert repository_names(anonymous.get("/ui/").text) == ["public/hello", "public/multi"]
    assert anonymous.get("/ui/repo/public/hello").status_code == 200
    for path in ("/ui/repo/secret/thing", "/ui/repo/dev/app", "/ui/repo/secret/thing/-/manifest/1.0",
                 f"/ui/repo/secret/thing/-/manifest/{content['secret'][0]}", "/ui/repo/nothing/here",
                 "/ui/repo/..%2f..%2fetc/-/manifest/1.0", "/ui/repo/UPPER"):
        r = anonymous.get(path)
        assert r.status_code == 404, path
        assert "log in" in r.text
    assert "Delete" not in anonymous.get("/ui/repo/public/hello").text


def test_each_user_sees_only_what_they_may_pull(admin: httpx.Client, dev: httpx.Client,
                                                content: dict[str, Any]) -> None:
    assert repository_names(admin.get("/ui/").text) == ["dev/app", "public/hello", "public/multi", "secret/thing"]
    assert repository_names(dev.get("/ui/").text) == ["dev/app", "public/hello", "public/multi"]
    assert repository_names(dev.get("/ui/?q=HELLO").text) == ["public/hello"]
    assert dev.get("/ui/repo/secret/thing").status_code == 404


def test_repository_list_shows_tag_count_size_and_last_push(admin: httpx.Client, content: dict[str, Any]) -> None:
    html = admin.get("/ui/").text
    row = html.split('href="/ui/repo/public/hello">public/hello</a>', 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells[0] == "2"  # 1.0 and latest
    assert cells[1].endswith(("B", "KiB"))
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", cells[2])


def test_manifest_page_shows_layers_pull_commands_labels_escaped(admin: httpx.Client, ui_server: RunningServer,
                                                                content: dict[str, Any]) -> None:
    digest, size = content["hello"]
    html = admin.get("/ui/repo/public/hello/-/manifest/1.0").text
    assert f"docker pull {ui_server.host_port}/public/hello:1.0" in html
    assert f"docker pull {ui_server.host_port}/public/hello@{digest}" in html
    assert f'<code id="digest">{digest}</code>' in html
    assert html.count('<td class="muted">application/vnd.oci.image.layer.v1.tar+gzip</td>') == 2
    assert f"({size} bytes, compressed)" in html
    assert "2025-03-04 05:06:07 UTC" in html
    assert XSS_LABEL not in html and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert XSS_ANNOTATION not in html and "&#34;&gt;&lt;img src=x onerror=&#34;window.__xss=2&#34;&gt;" in html
    # the referrer pushed with a subject is listed under its image, as a signature
    signatures = html.split("<h3>Signatures</h3>", 1)[1].split("</table>", 1)[0]
    assert content["signature"][0] in signatures and SIGNATURE_TYPE in signatures


def test_a_config_nested_past_the_json_bound_leaves_the_manifest_page_up(admin: httpx.Client,
                                                                       ui_server: RunningServer) -> None:
    """A config blob is any pusher's bytes: one 100,000 levels deep raised RecursionError in the page's
    json.loads (a 500 for every viewer). The page shows the manifest without the config's facts."""
    password = ui_server.admin_password
    assert password
    config = b"[" * 100_000 + b"]" * 100_000
    with api_client(ui_server, "admin", password, "public/deep") as client:
        push_blob(client, "public/deep", config)
        put_manifest(client, "public/deep", "1", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                                                  "config": descriptor("application/vnd.oci.image.config.v1+json",
                                                                       config)})
    page = admin.get("/ui/repo/public/deep/-/manifest/1")
    assert page.status_code == 200 and "docker pull" in page.text
    log = ui_server.log()
    assert "RecursionError" not in log and "unhandled error" not in log, log[-3000:]


def test_index_page_lists_platforms_with_their_own_size_and_attestations(admin: httpx.Client,
                                                                         content: dict[str, Any]) -> None:
    index, amd, arm, att = content["multi"]
    html = admin.get(f"/ui/repo/public/multi/-/manifest/{index}").text
    table = html.split('id="platforms"', 1)[1].split("</table>", 1)[0]
    rows = table.split("<tr>")[2:]
    assert len(rows) == 2, "the attestation is not a platform"
    assert "linux/amd64" in rows[0] and amd[0] in rows[0] and att[0] in rows[0]
    assert "linux/arm64" in rows[1] and arm[0] in rows[1]
    from secreg.ui.logic import human_size
    assert human_size(amd[1]) in rows[0] and human_size(arm[1]) in rows[1]
    tags = admin.get("/ui/repo/public/multi").text
    assert "2 platforms" in tags


def test_tags_sort_and_paginate(admin: httpx.Client, ui_server: RunningServer) -> None:
    with api_client(ui_server, "admin", ui_server.admin_password or "", "public/many") as client:
        digest, _ = push_image(client, "public/many", "t000", "many")
        body = client.get(f"/v2/public/many/manifests/{digest}", headers={"Accept": OCI_MANIFEST}).content
        for i in range(1, 60):
            put_manifest(client, "public/many", f"t{i:03d}", body)
    first = admin.get("/ui/repo/public/many").text
    tags = re.findall(r'<tr data-tag="([^"]+)">', first)
    assert len(tags) == 50 and tags[0] == "t059", "newest push first"
    assert "Page 1 of 2 (60)" in first
    second = re.findall(r'<tr data-tag="([^"]+)">', admin.get("/ui/repo/public/many?page=2").text)
    assert len(second) == 10 and set(second).isdisjoint(tags)
    by_name = re.findall(r'<tr data-tag="([^"]+)">', admin.get("/ui/repo/public/many?sort=name").text)
    assert by_name[:3] == ["t000", "t001", "t002"]


def test_every_state_changing_route_refuses_a_missing_or_foreign_csrf_token(
        admin: httpx.Client, ui_server: RunningServer, content: dict[str, Any]) -> None:
    posts = [p for p in PAGES if "POST" in p.methods]
    assert len(posts) >= 9
    values = {"name": "public/hello", "tag": "1.0", "reference": content["hello"][0], "user": "dev"}
    with ui_server.client() as stranger:
        other_token = csrf_of(stranger.get("/ui/login").text)  # valid, but for another session
    for spec in posts:
        path = "/ui" + re.sub(r"\{(\w+)(?::path)?\}", lambda m: values[m.group(1)], spec.path)
        for form in ({}, {"csrf": "forged"}, {"csrf": other_token}):
            r = admin.post(path, data={**form, "username": "admin", "password": "x", "name": "evil",
                                       "groups": "admins", "mode": "run"})
            assert r.status_code == 403, (path, form, r.status_code)
        r = admin.post(path, data={"csrf": csrf_of(admin.get("/ui/").text)},
                       headers={"Origin": "https://evil.example"})
        assert r.status_code == 403, path
    # nothing happened
    assert admin.get("/ui/repo/public/hello/-/manifest/1.0").status_code == 200
    assert "evil" not in admin.get("/ui/admin/users").text


def _read_response(tls: ssl.SSLSocket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
    response.begin()
    response.read()
    return response


def test_a_post_refused_before_its_body_arrives_leaves_the_connection_usable(ui_server: RunningServer) -> None:
    """Any answer that goes out before the body was read (here the form check's 400 on a Content-Type; the
    cross-site 403 has its own test) first waits for the rest of a small body (secreg.requestbody's
    SettleUnreadBody), so the next request on the same connection is answered: Hypercorn closed the connection
    after such an answer without a `Connection: close`, and a client reusing it got "server disconnected"."""
    body = b"csrf=" + b"x" * 40
    raw = socket.create_connection(("127.0.0.1", ui_server.port), timeout=60)
    with ui_server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /ui/logout HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                    % (ui_server.host_port.encode(), len(body)))
        time.sleep(0.3)  # the body comes later: before the fix the answer (and the close) came first
        tls.sendall(body)
        refused = _read_response(tls)
        assert refused.status == 400 and refused.getheader("connection") is None
        tls.sendall(b"GET /ui/login HTTP/1.1\r\nHost: %s\r\n\r\n" % ui_server.host_port.encode())
        assert _read_response(tls).status == 200


def test_a_form_cut_off_by_the_client_is_one_info_line(ui_server: RunningServer) -> None:
    """A browser that goes away halfway through a form's body: logged as the API logs it, not as an unhandled
    error (three tracebacks, "Error in ASGI Framework")."""
    served = '"method": "POST", "path": "/ui/login"'  # an access-log line: the request is over
    before = ui_server.log().count(served)
    raw = socket.create_connection(("127.0.0.1", ui_server.port), timeout=60)
    with ui_server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /ui/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n" % ui_server.host_port.encode())
        assert tls.recv(100).startswith(b"HTTP/1.1 100 ")  # the form is being read (a close before: never served)
        tls.sendall(b"username=a")
    deadline = time.monotonic() + 30
    while ui_server.log().count(served) == before:
        assert time.monotonic() < deadline, ui_server.log()[-3000:]
        time.sleep(0.1)
    log = ui_server.log()
    assert "ui: client went away during POST /ui/login" in log
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


def test_a_post_whose_unread_body_is_too_large_says_connection_close(ui_server: RunningServer) -> None:
    """A body declared past the drain limit is not waited for: the answer goes out at once and closes."""
    raw = socket.create_connection(("127.0.0.1", ui_server.port), timeout=60)
    with ui_server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /ui/logout HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n" % (ui_server.host_port.encode(), 1 << 30))
        refused = _read_response(tls)
        assert refused.status == 400 and refused.getheader("connection") == "close"


def test_a_non_admin_sees_no_admin_pages_and_gets_403(dev: httpx.Client, anonymous: httpx.Client) -> None:
    html = dev.get("/ui/").text
    assert "/ui/admin/" not in html and 'id="current-user">dev<' in html
    csrf = csrf_of(html)
    for client in (dev, anonymous):
        for path in ("/ui/admin/users", "/ui/admin/policy", "/ui/admin/storage",
                     "/ui/admin/policy?user=dev&repository=x&action=pull"):
            assert client.get(path).status_code == 403, path
    for path in ("/ui/admin/users", "/ui/admin/users/admin/delete", "/ui/admin/users/dev/groups",
                 "/ui/admin/users/admin/password", "/ui/admin/users/admin/revoke", "/ui/admin/gc"):
        assert dev.post(path, data={"csrf": csrf, "name": "x", "groups": "admins", "mode": "run"}).status_code == 403
    assert "admins" not in dev.get("/ui/").text


def test_delete_tag_and_manifest_through_the_ui(admin: httpx.Client, ui_server: RunningServer) -> None:
    password = ui_server.admin_password or ""
    with api_client(ui_server, "admin", password, "public/gone") as client:
        digest, _ = push_image(client, "public/gone", "a", "gone")
        body = client.get(f"/v2/public/gone/manifests/{digest}", headers={"Accept": OCI_MANIFEST}).content
        for tag in ("b", "c", "keep"):
            put_manifest(client, "public/gone", tag, body)
        csrf = csrf_of(admin.get("/ui/repo/public/gone").text)
        r = admin.post("/ui/repo/public/gone/-/tag/a/delete", data={"csrf": csrf})
        assert r.status_code == 303
        assert "Deleted tag a." in admin.get(r.headers["location"]).text
        assert client.get("/v2/public/gone/tags/list").json()["tags"] == ["b", "c", "keep"]
        confirm = admin.get(f"/ui/repo/public/gone/-/manifest/{digest}/delete").text
        going = confirm.split('id="tags-going"', 1)[1].split("</ul>", 1)[0]
        assert re.findall(r"<code>([^<]+)</code>", going) == ["b", "c", "keep"]
        r = admin.post(f"/ui/repo/public/gone/-/manifest/{digest}/delete", data={"csrf": csrf})
        assert r.status_code == 303
        assert client.get(f"/v2/public/gone/manifests/{digest}").status_code == 404
        assert client.get("/v2/public/gone/tags/list").json()["tags"] == []
    log = ui_server.log()
    assert '"event": "manifest.delete"' in log or "manifest.delete" in log


def test_a_user_may_delete_only_where_the_policy_allows(dev: httpx.Client, content: dict[str, Any]) -> None:
    assert "Delete tag" in dev.get("/ui/repo/dev/app").text
    page = dev.get("/ui/repo/public/hello").text
    assert "Delete tag" not in page
    r = dev.post("/ui/repo/public/hello/-/tag/1.0/delete", data={"csrf": csrf_of(page)})
    assert r.status_code == 403
    assert dev.get(f"/ui/repo/public/hello/-/manifest/{content['hello'][0]}/delete").status_code == 403


def test_users_added_in_the_ui_log_in_at_the_token_endpoint(admin: httpx.Client, ui_server: RunningServer) -> None:
    csrf = csrf_of(admin.get("/ui/admin/users").text)
    r = admin.post("/ui/admin/users", data={"csrf": csrf, "name": "carol", "groups": "team, ops", "password": ""})
    assert r.status_code == 200, r.text
    password = re.search(r'<code id="generated-password">([^<]+)</code>', r.text).group(1)  # type: ignore[union-attr]
    assert token(ui_server, "carol", password)
    html = admin.get("/ui/admin/users").text
    assert re.search(r'aria-label="groups of carol"', html) and 'value="ops team"' in html
    r = admin.post("/ui/admin/users/carol/groups", data={"csrf": csrf, "groups": "team"})
    assert 'value="team"' in r.text
    # "Revoke logins": carol's docker login (a refresh token) stops working, her password does not.
    with ui_server.client() as client:
        login = client.get("/auth/token", params={"service": "secreg", "offline_token": "true", "client_id": "docker"},
                           auth=("carol", password))
        grant = {"grant_type": "refresh_token", "refresh_token": login.json()["refresh_token"],
                 "client_id": "docker", "service": "secreg"}
        assert client.post("/auth/token", data=grant).status_code == 200
        r = admin.post("/ui/admin/users/carol/revoke", data={"csrf": csrf})
        assert r.status_code == 200 and "revoked the docker logins of carol" in r.text
        assert client.post("/auth/token", data=grant).status_code == 401
        assert client.get("/auth/token", params={"service": "secreg"}, auth=("carol", password)).status_code == 200
    r = admin.post("/ui/admin/users/carol/password", data={"csrf": csrf, "generate": "on"})
    new_password = re.search(r'<code id="generated-password">([^<]+)</code>', r.text).group(1)  # type: ignore[union-attr]
    with ui_server.client() as client:
        assert client.get("/auth/token", params={"service": "secreg"}, auth=("carol", password)).status_code == 401
        carol_ui = ui_server.client()
        assert ui_login(carol_ui, "carol", new_password).status_code == 303
        assert 'id="current-user">carol<' in carol_ui.get("/ui/").text
        r = admin.post("/ui/admin/users/carol/delete", data={"csrf": csrf})
        assert "deleted user carol" in r.text
        # the deleted user's session ends at once
        assert 'id="current-user"' not in carol_ui.get("/ui/").text
        carol_ui.close()
        assert client.get("/auth/token", params={"service": "secreg"}, auth=("carol", new_password)).status_code == 401
    r = admin.post("/ui/admin/users", data={"csrf": csrf, "name": "Bad Name", "password": "whatever-long"})
    assert r.status_code == 400 and "invalid user name" in r.text


def test_policy_page_explains_a_decision(admin: httpx.Client) -> None:
    html = admin.get("/ui/admin/policy", params={"user": "dev", "repository": "dev/app", "action": "delete"}).text
    verdict = html.split('id="verdict"', 1)[1].split("</p>", 1)[0]
    assert "allow: rule 2" in verdict and "${user}/**" in verdict
    html = admin.get("/ui/admin/policy", params={"user": "anonymous", "repository": "secret/x", "action": "pull"}).text
    assert "deny: no rule grants it" in html
    assert html.count("<li><code>rule ") == 3


def test_storage_and_gc_panel(admin: httpx.Client, ui_server: RunningServer) -> None:
    html = admin.get("/ui/admin/storage").text
    assert re.search(r"<dt>Blobs</dt><dd>\d+</dd>", html)
    largest = re.findall(r'<tr><td><a href="/ui/repo/[^"]+">([^<]+)</a>', html.split('id="largest"', 1)[1])
    assert "public/multi" in largest and "secret/thing" in largest
    csrf = csrf_of(html)
    dry = admin.post("/ui/admin/gc", data={"csrf": csrf, "mode": "dry-run"}).text
    assert "Dry run: would free" in dry
    done = admin.post("/ui/admin/gc", data={"csrf": csrf, "mode": "run"}).text
    assert "Freed" in done and "Last run" in done and "(ui)" in done


def test_login_failures_count_against_the_token_endpoint_limit(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("ui-ratelimit")
    write_policy(workdir)
    config = {"auth": {"ratelimit": {"attempts": 3, "window": 60, "lockout": 60}}}
    with run_secreg(workdir, config) as server, server.client() as client:
        for _ in range(3):
            r = ui_login(client, "admin", "wrong-password")
            assert r.status_code == 401 and "incorrect username or password" in r.text
        r = ui_login(client, "admin", server.admin_password or "")
        assert r.status_code == 429 and "Retry-After" in r.headers
        # docker login is throttled by the same failures
        r = client.get("/auth/token", params={"service": "secreg"}, auth=("admin", server.admin_password or ""))
        assert r.status_code == 429


def test_ui_can_be_turned_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("ui-off")
    with run_secreg(workdir, {"ui": {"enabled": False}}) as server, server.client() as client:
        assert client.get("/ui/").status_code == 404
        assert client.get("/").status_code == 404
        assert client.get("/v2/").status_code == 401


def test_with_authentication_off_everyone_browses_and_nobody_administers(open_server: RunningServer) -> None:
    from tests.oci import push_image as push_simple

    with open_server.client() as client:
        push_simple(client, "open/ui", "1.0", seed="open-ui")
        html = client.get("/ui/").text
        assert "open/ui" in html and "authentication off" in html and "/ui/login" not in html
        assert "Delete tag" in client.get("/ui/repo/open/ui").text
        assert client.get("/ui/admin/users").status_code == 403


def test_ui_changes_are_audited_like_the_cli(admin: httpx.Client, ui_server: RunningServer) -> None:
    csrf = csrf_of(admin.get("/ui/admin/users").text)
    assert admin.post("/ui/admin/users", data={"csrf": csrf, "name": "audited", "password": "audited-pw-1"}
                      ).status_code == 200
    assert admin.post("/ui/admin/users/audited/delete", data={"csrf": csrf}).status_code == 200
    events = [json.loads(line) for line in ui_server.log().splitlines() if line.startswith('{"time"')]
    mine = [(e["event"], e["by"]) for e in events if e.get("user") == "audited" and "by" in e]
    # The deletion also revokes the user's refresh tokens in the revocation list (secreg.auth.revocation).
    assert mine == [("user.add", "ui:admin"), ("user.delete", "ui:admin"), ("refresh.revoked", "ui:admin")]
    assert any(e.get("event") == "login.ok" and e.get("via") == "ui" for e in events)


def test_without_storage_delete_enabled_nothing_can_be_deleted(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("ui-nodelete")
    write_policy(workdir)
    with run_secreg(workdir, {}) as server, server.client() as client:
        password = server.admin_password or ""
        with api_client(server, "admin", password, "public/kept") as api:
            digest, _ = push_image(api, "public/kept", "1.0", "kept")
        assert ui_login(client, "admin", password).status_code == 303
        page = client.get("/ui/repo/public/kept").text
        assert "Delete" not in page and "Delete" not in client.get("/ui/repo/public/kept/-/manifest/1.0").text
        csrf = csrf_of(page)
        r = client.post("/ui/repo/public/kept/-/tag/1.0/delete", data={"csrf": csrf})
        assert r.status_code == 409 and "storage.delete.enabled" in r.text
        assert client.post(f"/ui/repo/public/kept/-/manifest/{digest}/delete", data={"csrf": csrf}).status_code == 409
        assert client.get(f"/ui/repo/public/kept/-/manifest/{digest}/delete").status_code == 409
        assert client.get("/ui/repo/public/kept/-/manifest/1.0").status_code == 200


def test_sessions_work_across_workers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two worker processes share the signing key: a session made by one is good in the other."""
    workdir = tmp_path_factory.mktemp("ui-workers")
    with run_secreg(workdir, {"http": {"workers": 2}}) as server:
        with server.client() as client:
            assert ui_login(client, "admin", server.admin_password or "").status_code == 303
            cookies = dict(client.cookies)
        for _ in range(12):  # a new connection each time: the kernel spreads them over both workers
            with server.client(cookies=cookies) as fresh:
                r = fresh.get("/ui/admin/users")
                assert r.status_code == 200 and 'id="current-user">admin<' in r.text
        key = workdir / "auth" / "ui-session.key"
        assert key.stat().st_mode & 0o777 == 0o600


def test_cosign_style_signature_tags_are_listed_under_their_image(admin: httpx.Client, ui_server: RunningServer,
                                                                  content: dict[str, Any]) -> None:
    digest = content["hello"][0]
    tag = digest.replace(":", "-") + ".sig"
    with api_client(ui_server, "admin", ui_server.admin_password or "", "public/hello") as client:
        signature, _ = push_image(client, "public/hello", tag, "cosign-sig",
                                  artifact_type="application/vnd.dev.cosign.simplesigning.v1+json")
    html = admin.get("/ui/repo/public/hello/-/manifest/1.0").text
    signatures = html.split("<h3>Signatures</h3>", 1)[1].split("</table>", 1)[0]
    assert signature in signatures and f"tag {tag}" in signatures


def test_a_cross_site_post_is_refused_and_its_connection_stays_usable(ui_server: RunningServer) -> None:
    """The Origin check answers before any handler reads the form: the form is dropped first, so the client's
    next request on the same connection is answered (Hypercorn closes a connection with an unread body)."""
    import socket

    form = b"csrf=x&name=" + b"a" * 20000
    with socket.create_connection(("127.0.0.1", ui_server.port), timeout=30) as raw, \
            ui_server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"POST /ui/admin/users HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(form))
        time.sleep(0.3)  # the form after the headers, as a browser or httpx may send it (a server that answers
        sock.sendall(form)  # before reading it would have closed the connection by now)
        first = b""
        while b"Cross-site request refused." not in first:
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 403 ") and b"connection: close" not in first.lower()
        sock.sendall(b"GET /ui/login HTTP/1.1\r\nHost: x\r\n\r\n")
        second = sock.recv(65536)
        assert second.startswith(b"HTTP/1.1 200 "), second[:200]


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui/", "/\\evil.example",
                                    "/ui//evil.example", "/ui/..//evil.example", "javascript:alert(1)",
                                    "/ui/\r\nLocation: https://evil.example"])
def test_login_never_redirects_off_the_ui(ui_server: RunningServer, target: str) -> None:
    """The `next` a login link carries is someone else's input: after logging in, only a page of this UI."""
    with ui_server.client() as client:
        form = client.get("/ui/login", params={"next": target})
        assert "evil" not in form.text and "javascript:" not in form.text
        r = client.post("/ui/login", data={"csrf": csrf_of(form.text), "username": "dev", "password": DEV_PASSWORD,
                                           "next": target})
        assert r.status_code == 303 and r.headers["location"] == "/ui/", r.headers.get("location")
        kept = client.post("/ui/login", data={"csrf": csrf_of(client.get("/ui/login").text), "username": "dev",
                                              "password": DEV_PASSWORD, "next": "/ui/repo/dev/app?sort=name"})
        assert kept.headers["location"] == "/ui/repo/dev/app?sort=name"


@pytest.mark.parametrize(("public_url", "cookie", "secure"), [
    ("https://registry.example", "__Host-secreg_session=", True),  # behind a TLS-terminating proxy
    ("", "secreg_session=", False),  # plain HTTP as the browser sees it: a Secure cookie would never come back
])
def test_behind_a_tls_proxy_the_cookie_stays_secure(tmp_path: Path, public_url: str, cookie: str,
                                                    secure: bool) -> None:
    port = free_port()
    args = ["--insecure-http", "--addr", f"127.0.0.1:{port}"] + (["--public-url", public_url] if public_url else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    subprocess.run([sys.executable, "-m", "secreg", "certs", "generate", "--out", str(tmp_path / "certs"), "--host",
                    "localhost"], check=True, capture_output=True, env=env)  # the token key (TLS is the proxy's)
    process = subprocess.Popen(dying_with_parent([sys.executable, "-m", "secreg", "serve", *args]), cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ui/login", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "secreg did not start"
                time.sleep(0.1)
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith(cookie) and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        assert ("; Secure" in set_cookie) is secure, set_cookie
    finally:
        stop_process_group(process)
