"""Cost growth: what one page, mount or manifest GET costs as a store grows, and what `gc` costs on it.

Stores are written straight to disk in the reference layout (`secreg.storage.layout`), not pushed: 10,000
repositories by pushing would take longer than the whole benchmark. Both registries then serve the *same*
tree (no auth, warm page cache), so a difference is the server's, not the data's. Each figure is the median
time of `REQUESTS` requests on one keep-alive connection after a warm-up; the growth workloads divide the big
store's median by the small store's, per repetition and per registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.client import BenchError, Client
from bench.results import Sample, Target, Workload
from bench.servers import Server, go_registry_binary
from secreg.digest import Digest
from secreg.storage import layout

REQUESTS = 40
GROWTH_LIMIT = 2.0
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class Sizes:
    repositories: int  # repositories in the catalog (each with one tag and two layer links)
    tags: int  # tags of the repository TAGS_REPO
    blobs: int  # extra (unreferenced) blobs, for manifest GET and gc


SMALL = Sizes(100, 100, 100)
LARGE = Sizes(10_000, 10_000, 100_000)
QUICK_LARGE = Sizes(400, 400, 1_000)
TAGS_REPO = "growth/tags"
PROBE_REPO = "growth/probe"  # holds the manifest the manifest-GET workload reads


@dataclass(frozen=True)
class Store:
    root: Path
    sizes: Sizes
    manifest: Digest
    mount_blob: Digest  # linked only from the last repository in lexical order


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _blob(root: Path, data: bytes) -> Digest:
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    _put(root / layout.blob_data(digest), data)
    return digest


def _repository(root: Path, name: str, manifest: Digest, layers: list[Digest], tags: list[str]) -> None:
    link = layout.link_content(manifest)
    _put(root / layout.revision_link(name, manifest), link)
    _put(root / layout.revision_media_type(name, manifest), MANIFEST_TYPE.encode())
    for tag in tags:
        _put(root / layout.tag_current_link(name, tag), link)
        _put(root / layout.tag_dir(name, tag) / "index" / manifest.algorithm / manifest.hex / "link", link)
    for layer in layers:
        _put(root / layout.layer_link(name, layer), layout.link_content(layer))


def build_store(root: Path, sizes: Sizes) -> Store:
    """A store with `sizes` in the reference layout (a few seconds for the large one on this machine)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    config_digest = _blob(root, config.encode())
    layer = _blob(root, b"growth layer\n" * 64)
    manifest_bytes = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": str(config_digest)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 64 * 13,
                    "digest": str(layer)}],
    }).encode()
    manifest = _blob(root, manifest_bytes)
    mount_blob = _blob(root, b"mount me\n")
    names = [f"growth/r{i:05d}" for i in range(sizes.repositories)]
    for index, name in enumerate(names):
        extra = [mount_blob] if index == len(names) - 1 else []
        _repository(root, name, manifest, [config_digest, layer, *extra], ["latest"])
    _repository(root, TAGS_REPO, manifest, [config_digest, layer], [f"t{i:05d}" for i in range(sizes.tags)])
    _repository(root, PROBE_REPO, manifest, [config_digest, layer], ["latest"])
    for i in range(sizes.blobs):
        _blob(root, f"unreferenced {i}\n".encode())
    return Store(root, sizes, manifest, mount_blob)


def median_ms(server: Server, requests: Callable[[int], tuple[str, str]], expect: int, count: int = REQUESTS
              ) -> float:
    """Median milliseconds of `count` requests (`requests(i)` gives method and path) on one connection."""
    times = []
    with Client(server) as client:
        for i in range(-3, count):  # three warm-up requests
            method, path = requests(i)
            headers = {"Content-Length": "0"} if method == "POST" else {"Accept": MANIFEST_TYPE}
            start = time.perf_counter()
            r = client.request(method, path, headers=headers)
            elapsed = time.perf_counter() - start
            if r.status != expect:
                raise BenchError(f"{server.name}: {method} {path} -> {r.status}: {r.body[:300]!r}")
            if i >= 0:
                times.append(elapsed * 1000)
    return statistics.median(times)


def page_requests(store: Store) -> dict[str, tuple[Callable[[int], tuple[str, str]], int]]:
    """Per workload: the requests and the status each must get."""
    mount = str(store.mount_blob)
    run = uuid.uuid4().hex[:8]
    return {
        "catalog_page": (lambda i: ("GET", "/v2/_catalog?n=100"), 200),
        "tags_page": (lambda i: ("GET", f"/v2/{TAGS_REPO}/tags/list?n=100"), 200),
        # A new target repository per request: the mount must search the store (Go answers 202 instead).
        "mount_no_from": (lambda i: ("POST", f"/v2/growth/m{run}{i + 3:04d}/blobs/uploads/?mount={mount}"), 0),
        "manifest_get_store": (lambda i: ("GET", f"/v2/{PROBE_REPO}/manifests/latest"), 200),
    }


TITLES = {
    "catalog_page": "catalog page n=100",
    "tags_page": "tags list page n=100",
    "mount_no_from": "mount without `from`",
    "manifest_get_store": "manifest GET by tag",
}
AXIS = {"catalog_page": "repositories", "tags_page": "tags", "mount_no_from": "repositories",
        "manifest_get_store": "blobs"}


def _size_of(name: str, sizes: Sizes) -> int:
    return {"repositories": sizes.repositories, "tags": sizes.tags, "blobs": sizes.blobs}[AXIS[name]]


def page_workloads(reps: int, small: tuple[Store, list[Server]], large: tuple[Store, list[Server]],
                   selected: set[str]) -> list[Workload]:
    """For each selected page workload: its cost at the large size (secreg vs Go) and its growth."""
    out: list[Workload] = []
    for name in [n for n in TITLES if n in selected or f"{n}_growth" in selected]:
        lo, hi = _size_of(name, small[0].sizes), _size_of(name, large[0].sizes)
        cost = Workload(name, f"(9) {TITLES[name]}, {hi:,} {AXIS[name]}", "ms", False,
                        None if name == "mount_no_from" else Target("<=", 1.0))
        growth = Workload(f"{name}_growth", f"(9) {TITLES[name]}: cost at {hi:,} / at {lo:,} {AXIS[name]}", "x",
                          False, Target("<=", GROWTH_LIMIT, absolute=True))
        note = (f"median of {REQUESTS} requests on one keep-alive connection after 3 warm-ups, no auth, "
                f"one store tree served by both (written in the reference layout)")
        if name == "mount_no_from":
            note += ("; secreg searches every repository for the blob (it links it when one is readable: 201), "
                     "Go answers 202 and opens an upload (it mounts only with `from`), so the ratio is no target")
        cost.notes.append(note)
        growth.notes.append(note + "; growth = big median / small median of the same repetition")
        try:
            for rep in range(reps):
                order = ["secreg", "go"] if rep % 2 == 0 else ["go", "secreg"]
                got: dict[str, tuple[float, float]] = {}
                for side in order:
                    values = []
                    for store, servers in (small, large):
                        server = next(s for s in servers if s.name == side)
                        requests, expect = page_requests(store)[name]
                        status = expect or (201 if side == "secreg" else 202)
                        values.append(median_ms(server, requests, status))
                    got[side] = (values[0], values[1])
                cost.add_pair(Sample(got["secreg"][1], got["secreg"][1] / 1000),
                              Sample(got["go"][1], got["go"][1] / 1000))
                growth.add_pair(Sample(got["secreg"][1] / got["secreg"][0], 0, {"small_ms": got["secreg"][0]}),
                                Sample(got["go"][1] / got["go"][0], 0, {"small_ms": got["go"][0]}))
        except (BenchError, OSError) as exc:
            cost.status = growth.status = f"error: {exc}"[:2000]
        out += [w for w in (cost, growth) if w.name in selected]
    return out


# --- gc ---------------------------------------------------------------------------------------------------


def _gc_seconds(side: str, store: Store, workdir: Path) -> float:
    if side == "secreg":
        argv = [sys.executable, "-m", "secreg", "gc", "--storage", str(store.root), "--dry-run"]
    else:
        binary = go_registry_binary()
        if binary is None:
            raise BenchError("no Go registry binary")
        config = workdir / f"gc-{store.sizes.blobs}.yml"
        config.write_text(json.dumps({"version": "0.1", "storage": {"filesystem": {
            "rootdirectory": str(store.root)}}}))
        argv = [binary, "garbage-collect", "--dry-run", str(config)]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, env=environment)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"{side} gc failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}")
    return seconds


def gc_workloads(reps: int, small: Store, large: Store, workdir: Path, selected: set[str]) -> list[Workload]:
    cost = Workload("gc_store", f"(9) gc --dry-run, {large.sizes.blobs:,} blobs, {large.sizes.repositories:,} "
                    "repositories", "s", False, Target("<=", 1.0))
    growth = Workload("gc_store_growth", f"(9) gc --dry-run: time at {large.sizes.blobs:,} / at "
                      f"{small.sizes.blobs:,} blobs", "x", False)
    note = ("wall time of `secreg gc --dry-run` and `registry garbage-collect --dry-run` (process start included) "
            "on the same store tree; mark walks every repository, sweep every blob")
    cost.notes.append(note)
    growth.notes.append(note + "; growth is linear by nature (every blob is looked at): reported, no target")
    try:
        for rep in range(reps):
            order = ["secreg", "go"] if rep % 2 == 0 else ["go", "secreg"]
            got = {side: (_gc_seconds(side, small, workdir), _gc_seconds(side, large, workdir)) for side in order}
            cost.add_pair(Sample(got["secreg"][1], got["secreg"][1]), Sample(got["go"][1], got["go"][1]))
            growth.add_pair(Sample(got["secreg"][1] / got["secreg"][0], 0), Sample(got["go"][1] / got["go"][0], 0))
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        cost.status = growth.status = f"error: {exc}"[:2000]
    return [w for w in (cost, growth) if w.name in selected]
