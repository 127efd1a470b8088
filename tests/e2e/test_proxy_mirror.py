"""secreg as the mirror of real clients: a docker engine with `registry-mirrors` pulling a Docker Hub short
name, and a private containerd pulling through `hosts.toml` mirror entries (`?ns=` routing to two upstreams).

"Docker Hub" is a local Go registry (htpasswd) holding a `library/...` image made with `docker import`; the
second upstream is a secreg with token auth. Docker Hub's own names resolve to 127.0.0.1 inside the test's
dockerd, so a fallback past the mirror can never leave the machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.upstreams import Pusher, Upstream
from tests.server import RunningServer, run_secreg

from .harness import DockerBinaries, DockerEngine, image_exists, start_containerd, start_docker_engine

POLICY = """\
rules:
  - account: group:admins
    repository: "**"
    actions: ["*"]
    catalog: true
  - account: anonymous
    repository: "library/**"
    actions: [pull]
  - account: anonymous
    repository: "hub/**"
    actions: [pull]
  - account: anonymous
    repository: "sec/**"
    actions: [pull]
"""
DOCKER_HUB_NAMES = ("registry-1.docker.io", "index.docker.io", "auth.docker.io", "registry.docker.io")
IMAGE = "e2emirror"
CTR_IMAGE = "e2emirror-ctr"  # the containerd test's own Docker Hub image


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, go_hub: Upstream, token_upstream: Upstream
           ) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("mirror")
    (workdir / "auth").mkdir()
    (workdir / "auth" / "policy.yaml").write_text(POLICY)
    upstreams: list[dict[str, Any]] = [
        {"name": "hub", "url": go_hub.url, "ca": str(go_hub.ca), "username": go_hub.username,
         "password": go_hub.password, "prefix": "hub", "dockerhub": True, "ttl": "10m"},
        {"name": "sec", "url": token_upstream.url, "ca": str(token_upstream.ca), "username": token_upstream.username,
         "password": token_upstream.password, "prefix": "sec"},
    ]
    with run_secreg(workdir, {"proxy": {"upstreams": upstreams}}) as server:
        yield server


@pytest.fixture(scope="module")
def mirror_engine(tmp_path_factory: pytest.TempPathFactory, docker_binaries: DockerBinaries,
                  mirror: RunningServer) -> Iterator[DockerEngine]:
    with start_docker_engine(
        tmp_path_factory.mktemp("mirror-engine"),
        hosts={name: "127.0.0.1" for name in DOCKER_HUB_NAMES},
        daemon_config={"registry-mirrors": [mirror.url], "debug": True},
        docker_bin=docker_binaries.docker, dockerd_bin=docker_binaries.dockerd,
    ) as engine:
        yield engine


def _rootfs_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, text in (("etc/os-release", 'NAME="secreg mirror test"\n'), ("hello.txt", "through the mirror\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 946684800
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_docker_pulls_a_short_name_through_registry_mirrors(mirror_engine: DockerEngine, go_hub: Upstream,
                                                            mirror: RunningServer, tmp_path: Path) -> None:
    engine = mirror_engine
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(_rootfs_tar())
    hub_name = go_hub.url.removeprefix("https://")
    engine.run("import", str(tarball), f"{hub_name}/library/{IMAGE}:latest")
    engine.login(hub_name, go_hub.username, go_hub.password)
    engine.run("push", f"{hub_name}/library/{IMAGE}:latest")
    engine.run("rmi", f"{hub_name}/library/{IMAGE}:latest")
    engine.logout(hub_name)
    assert not image_exists(engine, f"{IMAGE}:latest")

    engine.run("pull", f"{IMAGE}:latest")

    assert image_exists(engine, f"{IMAGE}:latest")
    info = json.loads(engine.run("info", "--format", "{{json .RegistryConfig.Mirrors}}").stdout)
    assert info == [mirror.url + "/"]
    assert f"{mirror.url}/v2/library/{IMAGE}/manifests/latest" in engine.log_text() or \
        f'"/v2/library/{IMAGE}/manifests/latest"' in mirror.log()
    assert f"/v2/library/{IMAGE}/manifests/latest" in mirror.log()
    assert go_hub.requests_to("GET", f"/v2/library/{IMAGE}/manifests/") >= 1
    # A second engine-side pull after `rmi` is served from the cache: the hub sees no new blob GET.
    blob_gets = go_hub.requests_to("GET", f"/v2/library/{IMAGE}/blobs/")
    engine.run("rmi", f"{IMAGE}:latest")
    engine.run("pull", f"{IMAGE}:latest")
    assert go_hub.requests_to("GET", f"/v2/library/{IMAGE}/blobs/") == blob_gets


def _oci_image(pusher: Pusher, name: str, tag: str) -> str:
    layer_tar = _rootfs_tar()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]}}).encode()
    config_digest = pusher.blob(name, config)
    layer_digest = pusher.blob(name, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                    "size": len(layer)}],
    }).encode()
    return pusher.manifest(name, tag, manifest)


def test_containerd_pulls_through_hosts_toml_mirrors(tmp_path: Path, mirror: RunningServer, go_hub: Upstream,
                                                     token_upstream: Upstream, containerd_bin: str) -> None:
    """Both upstreams get their images here: the "Docker Hub" one of its own name (it once pulled the image
    the docker test pushed, and failed when run alone)."""
    for upstream, name, tag in ((go_hub, f"library/{CTR_IMAGE}", "latest"), (token_upstream, "tools/ctrtest", "v1")):
        pusher = Pusher(upstream)
        try:
            digest = _oci_image(pusher, name, tag)
        finally:
            pusher.close()
    second_host = token_upstream.url.removeprefix("https://")
    hosts_dir = tmp_path / "certs.d"
    for upstream_host in ("docker.io", second_host):
        directory = hosts_dir / upstream_host
        directory.mkdir(parents=True)
        # `server` is where containerd goes when the mirror fails: a dead loopback port, never the internet.
        (directory / "hosts.toml").write_text(
            'server = "https://127.0.0.1:9"\n\n'
            f'[host."{mirror.url}"]\n  capabilities = ["pull", "resolve"]\n  ca = "{mirror.ca}"\n'
        )
    with start_containerd(tmp_path / "containerd") as containerd:
        containerd.ctr("images", "pull", "--hosts-dir", str(hosts_dir), "--snapshotter", "native",
                       f"docker.io/library/{CTR_IMAGE}:latest")
        containerd.ctr("images", "pull", "--hosts-dir", str(hosts_dir), "--snapshotter", "native",
                       f"{second_host}/tools/ctrtest:v1")
        listed = containerd.ctr("images", "ls", "--quiet").stdout.split()
    assert f"docker.io/library/{CTR_IMAGE}:latest" in listed and f"{second_host}/tools/ctrtest:v1" in listed
    log = mirror.log()
    assert f"/v2/library/{CTR_IMAGE}/manifests/latest" in log  # as containerd asked, with ?ns=docker.io
    assert token_upstream.requests_to("GET", f"/v2/tools/ctrtest/manifests/{digest}") + \
        token_upstream.requests_to("GET", "/v2/tools/ctrtest/manifests/v1") >= 1
