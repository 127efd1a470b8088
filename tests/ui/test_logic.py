"""The UI's view logic and sessions, without a server or a browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secreg.ui import logic
from secreg.ui.session import SessionSigner, load_secret

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
D = "sha256:" + "d" * 64


def test_human_size() -> None:
    assert logic.human_size(0) == "0 B"
    assert logic.human_size(1023) == "1023 B"
    assert logic.human_size(1536) == "1.5 KiB"
    assert logic.human_size(5 * 1024 * 1024) == "5.0 MiB"
    assert logic.human_size(3 * 1024**4) == "3.0 TiB"
    assert logic.human_size(None) == "-"


def test_image_view_sums_the_config_and_the_compressed_layers() -> None:
    document = {
        "schemaVersion": 2, "mediaType": logic.OCI_INDEX.replace("index", "manifest"),
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": A, "size": 100},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": B, "size": 1000},
                   {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": C, "size": 2000}],
        "annotations": {"org.opencontainers.image.source": "https://example.com/x"},
    }
    config = {"created": "2024-05-06T07:08:09.123456789Z", "os": "linux", "architecture": "arm64",
              "variant": "v8", "config": {"Labels": {"b": "2", "a": "<b>1</b>"}}}
    view = logic.image_view(D, "application/vnd.oci.image.manifest.v1+json", document, config)
    assert view.total_size == 3100
    assert [(layer.number, layer.size) for layer in view.layers] == [(1, 1000), (2, 2000)]
    assert view.config_size == 100
    assert view.created == "2024-05-06 07:08:09 UTC"
    assert view.platform == "linux/arm64/v8"
    assert view.labels == (("a", "<b>1</b>"), ("b", "2"))  # escaping is the template's job
    assert view.annotations == (("org.opencontainers.image.source", "https://example.com/x"),)


def test_image_view_survives_a_missing_config_and_odd_sizes() -> None:
    document = {"config": {"digest": A, "size": -5}, "layers": [{"digest": B, "size": True}, "junk"]}
    view = logic.image_view(D, "application/vnd.oci.image.manifest.v1+json", document, None)
    assert view.total_size == 0
    assert view.created == "-" and view.platform == "-" and view.labels == ()


def test_platform_rows_carry_their_own_size_and_attach_buildx_attestations() -> None:
    index = {"mediaType": logic.OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": A, "size": 500,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": B, "size": 500,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": C, "size": 300,
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": A}},
    ]}
    rows = logic.platform_rows(index, {A: 10_000, B: 12_000, C: 700})
    assert [(r.platform, r.digest, r.size) for r in rows] == [("linux/amd64", A, 10_000),
                                                             ("linux/arm64/v8", B, 12_000)]
    assert [a.digest for a in rows[0].attestations] == [C]
    assert rows[0].attestations[0].kind == "attestation"
    assert rows[1].attestations == ()


def test_an_attestation_of_an_unlisted_digest_is_still_shown() -> None:
    index = {"manifests": [{"digest": C, "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                                         "vnd.docker.reference.digest": D}}]}
    rows = logic.platform_rows(index, {})
    assert [(r.platform, r.digest, r.size) for r in rows] == [("-", C, None)]


def test_referrers_are_grouped_by_kind_newest_first() -> None:
    created = "org.opencontainers.image.created"
    rows = logic.referrer_rows([
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": A, "size": 10,
         "artifactType": "application/spdx+json", "annotations": {created: "2024-01-01T00:00:00Z"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": B, "size": 20,
         "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": C, "size": 30,
         "artifactType": "application/vnd.cyclonedx+json", "annotations": {created: "2025-01-01T00:00:00Z"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D, "size": 40,
         "artifactType": "application/vnd.in-toto+json"},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D, "size": 1,
         "artifactType": "application/x-thing"},
    ])
    groups = logic.group_referrers(rows)
    assert [g.kind for g in groups] == ["signature", "sbom", "attestation", "other"]
    assert [r.digest for r in groups[1].rows] == [C, A]  # the 2025 SBOM first
    assert groups[1].title == "SBOMs"
    assert logic.referrer_kind("application/vnd.cncf.notary.signature") == "signature"
    assert logic.referrer_kind("application/vnd.dev.sigstore.bundle.v0.3+json") == "attestation"


def test_cosign_tags_name_their_subject() -> None:
    assert logic.tag_subject("sha256-" + "a" * 64 + ".sig") == (A, "signature")
    assert logic.tag_subject("sha256-" + "a" * 64 + ".att") == (A, "attestation")
    assert logic.tag_subject("latest") is None


def test_pagination_and_search() -> None:
    items = list(range(101))
    page = logic.paginate(items, 3, 50)
    assert page.items == (100,) and page.pages == 3 and page.has_previous and not page.has_next
    assert logic.paginate(items, 99, 50).number == 3
    assert logic.paginate([], 1, 50).pages == 1
    assert [logic.page_number(v) for v in ("2", "0", "-1", "²", "x", None, "9" * 20)] == [2, 1, 1, 1, 1, 1, 1]
    assert logic.search(["team/web", "team/db", "other/web"], "WEB team") == ["team/web"]


def test_pull_commands() -> None:
    assert logic.pull_commands("reg:5000", "team/web", "1.0", A) == [
        "docker pull reg:5000/team/web:1.0", f"docker pull reg:5000/team/web@{A}"]
    assert logic.pull_commands("reg:5000", "team/web", None, A) == [f"docker pull reg:5000/team/web@{A}"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_are_signed_expire_and_renew(tmp_path: Path) -> None:
    clock = Clock()
    signer = SessionSigner(load_secret(tmp_path / "key"), 600, clock)
    session = signer.new("alice", "f1")
    cookie = signer.encode(session)
    assert signer.decode(cookie) == session
    body, _, signature = cookie.partition(".")
    forged = json.dumps({"s": "admin", "n": session.nonce, "e": session.expires, "f": "f1"}).encode()
    import base64
    forged_body = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    assert signer.decode(f"{forged_body}.{signature}") is None
    assert signer.decode(cookie + "x") is None and signer.decode("junk") is None and signer.decode("") is None
    other = SessionSigner(load_secret(tmp_path / "other"), 600, clock)
    assert other.decode(cookie) is None
    assert signer.renewed(session) is None
    clock.now += 400
    renewed = signer.renewed(session)
    assert renewed is not None and renewed.expires == clock.now + 600 and renewed.nonce == session.nonce
    clock.now += 201
    assert signer.decode(cookie) is None  # expired


def test_csrf_tokens_belong_to_one_session(tmp_path: Path) -> None:
    signer = SessionSigner(load_secret(tmp_path / "key"), 600)
    one, two = signer.new(), signer.new()
    assert signer.csrf_ok(one, signer.csrf_token(one))
    assert not signer.csrf_ok(two, signer.csrf_token(one))
    assert not signer.csrf_ok(one, "") and not signer.csrf_ok(None, signer.csrf_token(one))


def test_the_secret_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "ui-session.key"
    first = load_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_secret(path) == first and len(first) == 32
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="shorter"):
        load_secret(path)


def test_the_ui_talks_to_the_registry_model_and_auth_only() -> None:
    """No storage driver, no path, no api/ handler, no registry store below the model."""
    import ast

    forbidden = ("secreg.storage", "secreg.api", "secreg.registry.local", "secreg.registry.manifests",
                 "secreg.registry.blobs", "secreg.registry.uploads")
    package = Path(__file__).resolve().parents[2] / "secreg" / "ui"
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith(forbidden), f"{module.name} imports {name}"


def test_a_logout_voids_every_earlier_session_of_that_user(tmp_path: Path) -> None:
    from secreg.ui.session import Logouts

    clock = Clock()
    signer = SessionSigner(load_secret(tmp_path / "key"), 600, clock)
    logouts = Logouts(tmp_path / "logouts.json", 600, clock)
    before, other = signer.new("alice", "f"), signer.new("bob", "f")
    clock.now += 1
    logouts.record("alice")
    assert logouts.voids(before) and not logouts.voids(other)
    assert not logouts.voids(signer.new(""))
    clock.now += 1
    assert not logouts.voids(signer.new("alice", "f")), "a new login counts"
    assert (tmp_path / "logouts.json").stat().st_mode & 0o777 == 0o600
    assert not Logouts(tmp_path / "logouts.json", 600, clock).voids(other)  # another worker reads the file
    assert Logouts(tmp_path / "logouts.json", 600, clock).voids(before)


def test_after_login_only_pages_of_this_ui_are_followed() -> None:
    from secreg.ui.views import _next_url

    assert _next_url("/ui/repo/team/app?sort=name") == "/ui/repo/team/app?sort=name"
    for bad in (None, "", "https://evil.example/", "//evil.example/ui/", "/ui/..//evil.example", "/ui/\\evil",
                "/elsewhere", "/ui//evil.example", "/ui/\r\nSet-Cookie: x=1"):
        assert _next_url(bad) == "/ui/", bad
