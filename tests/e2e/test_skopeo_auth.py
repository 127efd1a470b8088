"""skopeo against secreg with token auth on (the default): credentials through the token server, TLS verified.

skopeo verifies TLS on 127.0.0.1 (unlike dockerd), so the registry stays on the IPv4 loopback here. It
talks to the token realm from the registry's challenge with Basic credentials from --creds, asking for
exactly the scope each operation needs: pull for inspect and list-tags, pull,push for copy, delete for delete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.oci import write_oci_layout
from tests.server import RunningServer, run_secreg

from .harness import skopeo, skopeo_json

pytestmark = pytest.mark.e2e

ALICE_PASSWORD = "alice-skopeo-password"


def _trust(server: RunningServer, directory: Path) -> Path:
    """A --cert-dir holding only our CA (an explicit cert dir replaces /etc/docker/certs.d)."""
    directory.mkdir()
    (directory / "ca.crt").write_bytes(server.ca.read_bytes())
    return directory


def _add_user(server: RunningServer, name: str, password: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    subprocess.run(
        [sys.executable, "-m", "secreg", "user", "add", name, "--password-stdin",
         "--auth-dir", str(server.workdir / "auth")],
        input=password + "\n", text=True, capture_output=True, env=env, check=True, timeout=60,
    )


def test_skopeo_copy_inspect_list_tags_delete_with_credentials(tmp_path: Path, skopeo_bin: str) -> None:
    source = tmp_path / "source"
    digest = write_oci_layout(source, "v1", layers=3)
    with run_secreg(tmp_path / "server", {"storage": {"delete": {"enabled": True}}}) as server:
        assert server.admin_password, server.log()
        certs = str(_trust(server, tmp_path / "trust"))
        admin = f"admin:{server.admin_password}"
        ref = f"docker://{server.host_port}/team/app:v1"

        skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", admin, f"oci:{source}:v1", ref)
        inspected = skopeo_json("inspect", "--cert-dir", certs, "--creds", admin, ref)
        assert inspected["Digest"] == digest
        assert len(inspected["Layers"]) == 3

        # Registry to registry: the blobs are mounted across repositories with one token for both.
        copy = f"docker://{server.host_port}/team/copy:v2"
        skopeo("copy", "--src-cert-dir", certs, "--dest-cert-dir", certs,
               "--src-creds", admin, "--dest-creds", admin, ref, copy)
        tags = skopeo_json("list-tags", "--cert-dir", certs, "--creds", admin,
                           f"docker://{server.host_port}/team/copy")
        assert tags["Tags"] == ["v2"]

        out = tmp_path / "out"
        skopeo("copy", "--src-cert-dir", certs, "--src-creds", admin, ref, f"oci:{out}:v1")
        index = json.loads((out / "index.json").read_text())
        assert index["manifests"][0]["digest"] == digest

        skopeo("delete", "--cert-dir", certs, "--creds", admin, copy)
        tags = skopeo_json("list-tags", "--cert-dir", certs, "--creds", admin,
                           f"docker://{server.host_port}/team/copy")
        assert tags["Tags"] == []
        assert skopeo("inspect", "--cert-dir", certs, "--creds", admin, copy, check=False).returncode != 0


def test_skopeo_refuses_bad_credentials_and_other_users_repositories(tmp_path: Path, skopeo_bin: str) -> None:
    source = tmp_path / "source"
    write_oci_layout(source, "v1", layers=1)
    with run_secreg(tmp_path / "server") as server:
        certs = str(_trust(server, tmp_path / "trust"))
        _add_user(server, "alice", ALICE_PASSWORD)
        ref = f"docker://{server.host_port}/alice/app:v1"

        wrong = skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", "alice:not-her-password",
                       f"oci:{source}:v1", ref, check=False)
        assert wrong.returncode != 0
        assert "incorrect username or password" in wrong.stderr, wrong.stderr

        skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", f"alice:{ALICE_PASSWORD}",
               f"oci:{source}:v1", ref)
        assert skopeo_json("inspect", "--cert-dir", certs, "--creds", f"alice:{ALICE_PASSWORD}", ref)

        anonymous = skopeo("inspect", "--cert-dir", certs, "--no-creds", ref, check=False)
        assert anonymous.returncode != 0
        assert "unauthorized" in anonymous.stderr.lower() or "denied" in anonymous.stderr.lower()

        # alice owns alice/** by the default policy, nothing else: pushing to team/ is refused.
        elsewhere = skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", f"alice:{ALICE_PASSWORD}",
                           f"oci:{source}:v1", f"docker://{server.host_port}/team/app:v1", check=False)
        assert elsewhere.returncode != 0
        assert "denied" in elsewhere.stderr.lower() or "unauthorized" in elsewhere.stderr.lower()
        print(f"\n[skopeo wrong password] {wrong.stderr.strip()}\n[skopeo anonymous] {anonymous.stderr.strip()}"
              f"\n[skopeo push elsewhere] {elsewhere.stderr.strip()}")
