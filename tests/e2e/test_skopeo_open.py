"""skopeo (a real daemonless client) copies an image into secreg and back out over HTTPS, trusting only our CA."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.harness import skopeo, skopeo_json
from tests.oci import write_oci_layout
from tests.server import run_secreg


def test_skopeo_copy_in_and_out_trusting_only_our_ca(tmp_path: Path, skopeo_bin: str) -> None:
    source = tmp_path / "source"
    digest = write_oci_layout(source, "v1", layers=3)
    config = {"auth": {"enabled": False}, "storage": {"delete": {"enabled": True}}}
    with run_secreg(tmp_path / "server", config) as server:
        cert_dir = tmp_path / "trust"
        cert_dir.mkdir()
        (cert_dir / "ca.crt").write_bytes(server.ca.read_bytes())
        ref = f"docker://{server.host_port}/skopeo/app:v1"
        skopeo("copy", "--dest-cert-dir", str(cert_dir), f"oci:{source}:v1", ref)
        inspected = skopeo_json("inspect", "--cert-dir", str(cert_dir), ref)
        assert inspected["Digest"] == digest
        assert len(inspected["Layers"]) == 3
        # Copy between repositories (blob mounts), then list tags, then out to a layout again.
        skopeo("copy", "--src-cert-dir", str(cert_dir), "--dest-cert-dir", str(cert_dir), ref,
               f"docker://{server.host_port}/skopeo/copy:v2")
        tags = skopeo_json("list-tags", "--cert-dir", str(cert_dir), f"docker://{server.host_port}/skopeo/copy")
        assert tags["Tags"] == ["v2"]
        out = tmp_path / "out"
        skopeo("copy", "--src-cert-dir", str(cert_dir), ref, f"oci:{out}:v1")
        index = json.loads((out / "index.json").read_text())
        assert index["manifests"][0]["digest"] == digest
        # Without our CA, skopeo refuses the registry's certificate.
        untrusted = tmp_path / "empty"
        untrusted.mkdir()
        refused = skopeo("inspect", "--cert-dir", str(untrusted), ref, check=False)
        assert refused.returncode != 0 and "certificate" in refused.stderr.lower()
        skopeo("delete", "--cert-dir", str(cert_dir), f"docker://{server.host_port}/skopeo/copy:v2")
        tags = skopeo_json("list-tags", "--cert-dir", str(cert_dir), f"docker://{server.host_port}/skopeo/copy")
        assert tags["Tags"] == []
