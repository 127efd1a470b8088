"""Scaling out, end to end: three `secreg serve --role registry` replicas and one `--role auth` token server on
a real object store (OpenStack Swift with s3api, on loopback), behind HAProxy re-encrypting TLS (it terminates
with the registry's certificate, routes /auth/ to the token server and everything else round-robin to the
replicas, no stickiness, and verifies the replicas' certificates against our CA). The real docker CLI, through
a dockerd that verifies TLS (registry.e2e.test resolves to ::1 for it only), pushes and pulls through the
balancer; one replica is killed mid-push; GC runs against the bucket while pushes go on.

Every replica is started from the same config file and copies of the same certs/ and auth/.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from secreg.cli.main import main as secreg_main
from tests.objectstores import ObjectStore, swift_available, swift_server
from tests.server import RunningServer, free_port, run_secreg, stop_process_group

from .conftest import require_binary, unavailable
from .harness import STRICT_NAME, DockerEngine, MiB, build_image, image_id, trust_ca
from .processes import dying_with_parent

pytestmark = pytest.mark.e2e
NAME = "team/scaled"


@dataclass
class Cluster:
    balancer_port: int
    auth: RunningServer
    replicas: list[RunningServer]
    store: ObjectStore
    bucket: str
    config: Path
    haproxy: subprocess.Popen[bytes]

    @property
    def name(self) -> str:
        return f"{STRICT_NAME}:{self.balancer_port}"

    def token(self, *scopes: str) -> dict[str, str]:
        with self.auth.client() as client:
            r = client.get("/auth/token", params={"service": "secreg", "scope": list(scopes)},
                           auth=("admin", self.auth.admin_password or ""))
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def served(self, replica: RunningServer, marker: str) -> int:
        return sum(1 for line in replica.log().splitlines() if marker in line)


_HAPROXY = """global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    option http-server-close
frontend registry
    bind [::1]:{port} ssl crt {pem}
    use_backend token if {{ path_beg /auth/ }}
    default_backend replicas
backend token
    server auth [::1]:{auth} ssl verify required ca-file {ca} verifyhost {name}
backend replicas
    balance roundrobin
    option httpchk GET /healthz
    default-server inter 300ms fall 1 rise 2 ssl verify required ca-file {ca} verifyhost {name} check check-ssl
{servers}
"""


@pytest.fixture(scope="module")
def swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    if not swift_available():
        unavailable("OpenStack Swift (swift-proxy, swift-object, ...) is not installed")
    with swift_server(tmp_path_factory.mktemp("swift")) as store:
        yield store


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, swift: ObjectStore, verifying_engine: DockerEngine
            ) -> Iterator[Cluster]:
    haproxy_bin = require_binary("haproxy", "haproxy", default="/usr/sbin/haproxy")
    root = tmp_path_factory.mktemp("scaled")
    certs = root / "certs"
    assert secreg_main(["certs", "generate", "--out", str(certs), "--host", STRICT_NAME, "--ip", "::1"]) == 0
    bucket = f"scaled-{uuid.uuid4().hex[:8]}"
    config = {"storage": {"s3": swift.s3_settings(bucket), "delete": {"enabled": True}}}
    with ExitStack() as stack:
        (root / "auth-server").mkdir()
        shutil.copytree(certs, root / "auth-server" / "certs")
        auth = stack.enter_context(run_secreg(root / "auth-server", config, args=["--role", "auth"], host="::1"))
        replicas = []
        for index in range(3):
            workdir = root / f"replica{index}"
            workdir.mkdir()
            shutil.copytree(certs, workdir / "certs")
            shutil.copytree(auth.workdir / "auth", workdir / "auth")
            replicas.append(stack.enter_context(
                run_secreg(workdir, config, args=["--role", "registry"], host="::1")))
        pem = root / "balancer.pem"
        pem.write_bytes((certs / "server.crt").read_bytes() + (certs / "server.key").read_bytes())
        pem.chmod(0o600)
        port = free_port("::1")
        servers = "\n".join(f"    server r{i} [::1]:{r.port}" for i, r in enumerate(replicas))
        (root / "haproxy.cfg").write_text(_HAPROXY.format(
            port=port, pem=pem, auth=auth.port, ca=certs / "ca.crt", name=STRICT_NAME, servers=servers))
        log = open(root / "haproxy.log", "wb")  # noqa: SIM115  (closed by the stack)
        stack.callback(log.close)
        haproxy = subprocess.Popen(dying_with_parent([haproxy_bin, "-db", "-f", str(root / "haproxy.cfg")]),
                                   stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop_process_group, haproxy)
        _wait_balancer(port, certs / "ca.crt", haproxy, root / "haproxy.log")
        stack.enter_context(trust_ca(certs / "ca.crt", f"{STRICT_NAME}:{port}"))
        (root / "config.yml").write_text((replicas[0].workdir / "config.yml").read_text())
        yield Cluster(port, auth, replicas, swift, bucket, root / "config.yml", haproxy)


def _wait_balancer(port: int, ca: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited: {log.read_text()}")
        try:
            r = httpx.get(f"https://[::1]:{port}/v2/", verify=False, timeout=2)  # noqa: S501 (readiness only)
            if r.status_code == 401:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"haproxy not ready: {log.read_text()}")


def _login(engine: DockerEngine, cluster: Cluster) -> None:
    out = engine.login(cluster.name, "admin", cluster.auth.admin_password or "")
    assert "Login Succeeded" in out.stdout, out.stdout + out.stderr


def test_docker_push_and_pull_through_the_balancer(cluster: Cluster, verifying_engine: DockerEngine) -> None:
    engine = verifying_engine
    _login(engine, cluster)
    ref = f"{cluster.name}/{NAME}:multi"
    built = build_image(engine, ref, layers=4, layer_size=3 * MiB, seed=131)
    engine.run("push", ref)
    engine.run("rmi", ref)
    engine.run("pull", ref)
    assert image_id(engine, ref) == built
    busy = [r for r in cluster.replicas if cluster.served(r, "/v2/team/scaled/blobs/") > 0]
    assert len(busy) >= 2, "the balancer sent every blob request to one replica"


def test_a_chunked_upload_continued_on_each_replica(cluster: Cluster) -> None:
    a, b, c = cluster.replicas
    auth = cluster.token(f"repository:{NAME}:pull,push")
    data = os.urandom(12 * MiB + 9)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    cut = 7 * MiB
    octets = {"Content-Type": "application/octet-stream"}
    with a.client(headers=auth) as ca, b.client(headers=auth) as cb, c.client(headers=auth) as cc:
        location = ca.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
        r = ca.patch(location, content=data[:cut], headers={**octets, "Content-Range": f"0-{cut - 1}"})
        assert r.status_code == 202, r.text
        r = cb.patch(r.headers["Location"], content=data[cut:],
                     headers={**octets, "Content-Range": f"{cut}-{len(data) - 1}"})
        assert r.status_code == 202, r.text
        r = cc.put(r.headers["Location"], params={"digest": digest})
        assert r.status_code == 201, r.text
        r = ca.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": f"bytes={cut - 3}-{cut + 3}"})
        assert r.status_code == 206 and r.content == data[cut - 3: cut + 4]


def test_gc_on_one_replica_while_another_serves_pushes(cluster: Cluster, verifying_engine: DockerEngine) -> None:
    engine = verifying_engine
    _login(engine, cluster)
    auth = cluster.token(f"repository:{NAME}:pull,push,delete")
    orphan = os.urandom(64 * 1024)
    orphan_digest = "sha256:" + hashlib.sha256(orphan).hexdigest()
    with cluster.replicas[0].client(headers=auth) as client:
        assert client.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": orphan_digest},
                           content=orphan).status_code == 201
        assert client.delete(f"/v2/{NAME}/blobs/{orphan_digest}").status_code == 202
    refs = [f"{cluster.name}/{NAME}:during-gc-{i}" for i in range(2)]
    built = {ref: build_image(engine, ref, layers=2, layer_size=2 * MiB, seed=200 + i) for i, ref in enumerate(refs)}
    results: dict[str, Any] = {}

    def collect() -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
        results["gc"] = subprocess.run(
            [sys.executable, "-m", "secreg", "gc", "--config", str(cluster.config), "--grace", "0", "--json"],
            capture_output=True, text=True, env=env, cwd=cluster.replicas[1].workdir, timeout=300)

    collector = threading.Thread(target=collect)
    collector.start()
    for ref in refs:
        engine.run("push", ref)
    collector.join()
    gc = results["gc"]
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert orphan_digest in gc.stdout
    for ref in refs:
        engine.run("rmi", ref)
        engine.run("pull", ref)
        assert image_id(engine, ref) == built[ref]


def test_a_replica_killed_mid_push_and_the_retry_succeeds(cluster: Cluster, verifying_engine: DockerEngine
                                                          ) -> None:
    engine = verifying_engine
    _login(engine, cluster)
    victim = cluster.replicas[2]
    started = '"method": "POST", "path": "/v2/team/scaled/blobs/uploads/"'
    # The victim must die while the push runs; a push that beats the watcher (a fast, quiet machine) is
    # repeated with larger layers, so the precondition never depends on the machine's speed.
    for attempt, layer_mib in enumerate((24, 48, 96)):
        ref = f"{cluster.name}/{NAME}:survivor{attempt}"
        built = build_image(engine, ref, layers=3, layer_size=layer_mib * MiB, seed=77 + attempt)
        before = cluster.served(victim, started)
        push = subprocess.Popen([engine.docker_bin, "push", ref], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=engine.env)
        deadline = time.monotonic() + 120
        while cluster.served(victim, started) == before and push.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # its PATCH is under way
        if push.poll() is None:
            break
        push.communicate(timeout=60)
    else:
        pytest.fail("every push ended before the replica could be killed")
    os.killpg(victim.process.pid, signal.SIGKILL)  # a crash: connections cut, nothing flushed
    victim.process.wait(timeout=10)
    output, _ = push.communicate(timeout=300)
    # docker's own retries (per layer) reach the surviving replicas once HAProxy marks the dead one down.
    assert push.returncode == 0, output
    engine.run("rmi", ref)
    engine.run("pull", ref)
    assert image_id(engine, ref) == built, output
