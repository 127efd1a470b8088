"""`secreg gc` against the storage of a running registry while clients push: no pushed image may lose a blob."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from secreg.digest import Digest
from secreg.storage import layout
from tests.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, manifest_bytes, push_blob, sha256
from tests.server import RunningServer, run_secreg

CONFIG = {"auth": {"enabled": False}, "storage": {"delete": {"enabled": True}}}
REPOSITORIES = ("live/a", "live/b", "team/c")
PUSH_SECONDS = 10.0  # at least; longer until enough was pushed and collected (a loaded machine)


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str
    digest: str
    manifest: bytes
    media_type: str
    blobs: tuple[str, ...]  # config and layers (for an index: its children's, checked through them)
    children: tuple[Image, ...] = ()


@dataclass
class Shared:
    images: list[Image] = field(default_factory=list)
    garbage: list[tuple[str, bytes]] = field(default_factory=list)  # (digest, data) uploaded then deleted
    skipped_indexes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def pick(self, rng: random.Random, repository: str | None = None, other_than: str | None = None) -> Image | None:
        with self.lock:
            pool = [i for i in self.images if not i.children and (repository is None or i.repository == repository)
                    and i.repository != other_than]
            return rng.choice(pool) if pool else None


def run_gc(storage: Path, *args: str) -> dict[str, Any]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    result = subprocess.run(
        [sys.executable, "-m", "secreg", "gc", "--storage", str(storage), "--json", *args],
        check=False, capture_output=True, env=environment, timeout=120, cwd=storage.parent,
    )
    assert result.returncode == 0, result.stderr.decode()
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def upload(client: httpx.Client, name: str, data: bytes, rng: random.Random) -> str:
    """Monolithic POST, or POST + PATCH + PUT, at random."""
    if rng.random() < 0.5:
        return push_blob(client, name, data)
    digest = sha256(data)
    r = client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    half = len(data) // 2
    r = client.patch(location, content=data[:half], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    r = client.put(r.headers["Location"], params={"digest": digest}, content=data[half:])
    assert r.status_code == 201, r.text
    return digest


def put_manifest(client: httpx.Client, name: str, reference: str, body: bytes, media_type: str) -> httpx.Response:
    return client.put(f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type})


def push_image(client: httpx.Client, shared: Shared, rng: random.Random, worker: int, n: int,
               tag: str | None) -> Image:
    """A new config and a new random layer, plus one of: another new layer, a layer the repository already
    links (not uploaded again: only HEAD, as clients do), a layer mounted from another repository, or a
    layer uploaded anew whose earlier copy was deleted (its blob may be in GC's hands right now)."""
    name = rng.choice(REPOSITORIES)
    config = json.dumps({"worker": worker, "n": n, "nonce": rng.random()}).encode()
    layers = [upload(client, name, rng.randbytes(rng.randint(1, 64) * 1024), rng)]
    kind = rng.choice(("new", "reuse", "mount", "revive"))
    old = shared.pick(rng, repository=name) if kind == "reuse" else None
    source = shared.pick(rng, other_than=name) if kind == "mount" else None
    if old is not None:
        digest = old.blobs[1]
        assert client.head(f"/v2/{name}/blobs/{digest}").status_code == 200
        layers.append(digest)
    elif source is not None:
        digest = source.blobs[-1]
        r = client.post(f"/v2/{name}/blobs/uploads/", params={"mount": digest, "from": source.repository})
        assert r.status_code == 201, f"mount of {digest} from {source.repository}: {r.status_code} {r.text}"
        layers.append(digest)
    elif kind == "revive" and shared.garbage:
        with shared.lock:
            _, data = shared.garbage.pop(rng.randrange(len(shared.garbage)))
        layers.append(upload(client, name, data, rng))
    else:
        layers.append(upload(client, name, rng.randbytes(rng.randint(1, 64) * 1024), rng))
    config_digest = upload(client, name, config, rng)
    sizes = {config_digest: len(config)}
    for digest in layers:
        r = client.head(f"/v2/{name}/blobs/{digest}")
        assert r.status_code == 200, f"{digest} in {name}: {r.status_code}"
        sizes[digest] = int(r.headers["Content-Length"])
    body = manifest_bytes({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": sizes[d]} for d in layers],
    })
    r = put_manifest(client, name, tag or sha256(body), body, OCI_MANIFEST)
    assert r.status_code == 201, f"manifest {name}:{tag}: {r.status_code} {r.text}"
    return Image(name, tag or "", r.headers["Docker-Content-Digest"], body, OCI_MANIFEST,
                 (config_digest, *layers))


def make_garbage(client: httpx.Client, shared: Shared, rng: random.Random) -> None:
    """A blob uploaded and deleted again, sometimes with an image that used it: what GC frees meanwhile."""
    name = rng.choice(REPOSITORIES)
    data = rng.randbytes(rng.randint(1, 32) * 1024)
    digest = push_blob(client, name, data)
    if rng.random() < 0.5:
        config = json.dumps({"garbage": rng.random()}).encode()
        body = manifest_bytes({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": push_blob(client, name, config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": len(data)}],
        })
        r = put_manifest(client, name, f"garbage-{rng.random()}", body, OCI_MANIFEST)
        assert r.status_code == 201, r.text
        assert client.delete(f"/v2/{name}/manifests/{r.headers['Docker-Content-Digest']}").status_code == 202
        assert client.delete(f"/v2/{name}/blobs/{sha256(config)}").status_code == 202
    assert client.delete(f"/v2/{name}/blobs/{digest}").status_code == 202
    with shared.lock:
        shared.garbage.append((digest, data))


def pusher(server: RunningServer, shared: Shared, worker: int) -> None:
    rng = random.Random(worker)
    n = 0
    try:
        with server.client() as client:
            while not shared.stop.is_set():
                n += 1
                roll = rng.random()
                if roll < 0.25:
                    make_garbage(client, shared, rng)
                elif roll < 0.35:
                    children = [push_image(client, shared, rng, worker, n * 10 + i, None) for i in range(2)]
                    name = children[0].repository
                    children = [c for c in children if c.repository == name]
                    body = manifest_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                        {"mediaType": OCI_MANIFEST, "digest": c.digest, "size": len(c.manifest)} for c in children]})
                    tag = f"index-{worker}-{n}"
                    r = put_manifest(client, name, tag, body, OCI_INDEX)
                    if r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text:
                        # The pusher stalled longer than the clock allowance between children and index while
                        # `--delete-untagged --grace 0` ran: the children went, the index was refused (not lost).
                        shared.skipped_indexes += 1
                        continue
                    assert r.status_code == 201, f"index {name}:{tag}: {r.status_code} {r.text}"
                    index = Image(name, tag, r.headers["Docker-Content-Digest"], body, OCI_INDEX, (),
                                  tuple(children))
                    with shared.lock:
                        shared.images.append(index)
                else:
                    image = push_image(client, shared, rng, worker, n, f"w{worker}-{n}")
                    with shared.lock:
                        shared.images.append(image)
    except (AssertionError, KeyError, httpx.HTTPError) as exc:  # reported by the main thread
        shared.errors.append(f"pusher {worker}: {exc!r}")
        shared.stop.set()


def verify_pull(client: httpx.Client, storage: Path, image: Image, by_tag: bool = True) -> None:
    accept = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    references = [image.tag, image.digest] if by_tag and image.tag else [image.digest]
    for reference in references:
        r = client.get(f"/v2/{image.repository}/manifests/{reference}", headers=accept)
        assert r.status_code == 200, f"{image.repository}:{reference}: {r.status_code} {r.text}"
        assert r.content == image.manifest and r.headers["Docker-Content-Digest"] == image.digest
    assert sha256(image.manifest) == image.digest
    assert (storage / layout.blob_data(Digest.parse(image.digest))).is_file()
    for digest in image.blobs:
        r = client.get(f"/v2/{image.repository}/blobs/{digest}")
        assert r.status_code == 200, f"{image.repository}@{digest}: {r.status_code} {r.text}"
        assert sha256(r.content) == digest
        assert (storage / layout.blob_data(Digest.parse(digest))).is_file()
    for child in image.children:
        verify_pull(client, storage, child, by_tag=False)


def test_gc_while_pushing_never_loses_a_blob(tmp_path: Path) -> None:
    with run_secreg(tmp_path, CONFIG) as server:
        shared = Shared()
        threads = [threading.Thread(target=pusher, args=(server, shared, w)) for w in range(2)]
        for thread in threads:
            thread.start()
        reports: list[dict[str, Any]] = []
        deadline, give_up = time.monotonic() + PUSH_SECONDS, time.monotonic() + 180

        def enough() -> bool:  # what the assertions below need: a slow machine pushes longer, not fewer
            return (len(reports) >= 2 and len(shared.images) > 20
                    and sum(len(r["blobs_removed"]) for r in reports) > 0)

        try:
            while (not shared.stop.is_set() and time.monotonic() < give_up
                   and (time.monotonic() < deadline or not enough())):
                # `--grace 0`, the harshest: nothing is spared for being young but the clock allowance.
                reports.append(run_gc(server.storage, "--grace", "0",
                                      *(["--delete-untagged"] if len(reports) % 2 else [])))
        finally:
            shared.stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert not shared.errors, shared.errors
        time.sleep(1.2)
        reports.append(run_gc(server.storage, "--grace", "0", "--delete-untagged"))

        pushed = {d for image in shared.images for i in (image, *image.children) for d in (i.digest, *i.blobs)}
        removed = {b["digest"] for report in reports for b in report["blobs_removed"]}
        revived = removed & pushed  # deleted as garbage first, uploaded again later: must be back now
        assert len(reports) >= 3 and sum(len(r["blobs_removed"]) for r in reports[:-1]) > 0, reports
        assert len(shared.images) > 20
        with server.client() as client:
            for image in shared.images:
                verify_pull(client, server.storage, image)
        assert not {m["digest"] for r in reports for m in r["manifests_removed"]} & {
            i.digest for image in shared.images for i in (image, *image.children)}
        print(f"{len(shared.images)} images, {len(reports)} gc runs, {len(removed)} blobs freed, "
              f"{sum(r['rescued'] for r in reports)} rescued "
              f"({len(revived)} of them uploaded again later), {shared.skipped_indexes} indexes refused")


def test_deleted_manifests_and_blobs_are_freed(tmp_path: Path) -> None:
    with run_secreg(tmp_path, CONFIG) as server, server.client() as client:
        def image(name: str, tag: str, layers: list[bytes]) -> tuple[str, list[str], bytes]:
            config = json.dumps({"image": f"{name}:{tag}"}).encode()
            digests = [push_blob(client, name, config)]
            for layer in layers:
                digests.append(push_blob(client, name, layer))
            body = manifest_bytes({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digests[0], "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": sha256(data), "size": len(data)} for data in layers],
            })
            r = put_manifest(client, name, tag, body, OCI_MANIFEST)
            assert r.status_code == 201, r.text
            return r.headers["Docker-Content-Digest"], digests, body

        shared_layer, own_layer = os.urandom(40_000), os.urandom(30_000)
        keep, keep_blobs, keep_body = image("apps/keep", "v1", [shared_layer])
        gone, gone_blobs, _ = image("apps/gone", "v1", [own_layer, shared_layer])
        untagged, untagged_blobs, _ = image("apps/gone", "temp", [os.urandom(1000)])
        assert client.delete(f"/v2/apps/gone/manifests/{gone}").status_code == 202
        for digest in gone_blobs:
            assert client.delete(f"/v2/apps/gone/blobs/{digest}").status_code == 202
        assert client.delete("/v2/apps/gone/manifests/temp").status_code == 202  # the tag only
        time.sleep(1.2)

        dry = run_gc(server.storage, "--grace", "0", "--delete-untagged", "--dry-run")
        report = run_gc(server.storage, "--grace", "0", "--delete-untagged")
        freed = {b["digest"] for b in report["blobs_removed"]}
        assert freed == {gone, gone_blobs[0], sha256(own_layer), untagged}
        assert {b["digest"] for b in dry["blobs_removed"]} == freed
        assert report["bytes_freed"] == sum(b["size"] for b in report["blobs_removed"]) > 30_000
        assert [m["digest"] for m in report["manifests_removed"]] == [untagged]
        for digest in freed:
            assert not (server.storage / layout.blob_data(Digest.parse(digest))).exists()
        # The untagged image's layers stay: its repository still links them.
        assert client.get(f"/v2/apps/gone/blobs/{untagged_blobs[1]}").status_code == 200
        assert client.get(f"/v2/apps/gone/manifests/{untagged}").status_code == 404
        verify_pull(client, server.storage, Image("apps/keep", "v1", keep, keep_body, OCI_MANIFEST,
                                                  tuple(keep_blobs)))
        assert run_gc(server.storage, "--grace", "0", "--delete-untagged")["blobs_removed"] == []


def test_scheduled_gc_runs_inside_the_server(tmp_path: Path) -> None:
    """gc.schedule: the server collects by itself and counts it in /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    config = {"auth": {"enabled": False}, "storage": {"delete": {"enabled": True}},
              "gc": {"grace": 0, "schedule": {"enabled": True, "interval": 1, "delay": 0}}}
    with run_secreg(tmp_path, config) as server, server.client() as client:
        orphan = push_blob(client, "sched/app", b"orphan bytes")
        assert client.delete(f"/v2/sched/app/blobs/{orphan}").status_code == 202
        hex_ = orphan.split(":")[1]
        data = server.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

        def completed_runs() -> float:
            for family in text_string_to_metric_families(client.get("/metrics").text):
                if family.name == "secreg_gc_runs":
                    return sum(s.value for s in family.samples if s.labels.get("result") == "ok")
            return 0.0

        deadline = time.monotonic() + 60
        while data.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not data.exists(), server.log()[-3000:]
        before = completed_runs()  # the run that quarantined the blob counts when it ends
        while completed_runs() <= before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert completed_runs() > before
