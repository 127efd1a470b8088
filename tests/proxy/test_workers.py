"""Single flight per server, not per process: a `secreg serve` with two worker processes caching the Go
registry fetches a missing blob, a manifest by tag and a manifest by digest once, however the kernel spreads
the clients over the workers."""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.server import RunningServer, run_secreg

from .test_pull import ACCEPT, proxy_config, upstream_entry
from .upstreams import Pusher, Upstream, random_bytes

SIZE = 32 * 1024 * 1024
CLIENTS = 12
_START = re.compile(r"^process_start_time_seconds (\S+)$", re.M)


def _wait_for_workers(server: RunningServer, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True,
                                  check=False).stdout.split()
        if len(children) == count - 1:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count} workers did not start:\n{server.log()}")


def _pull(server: RunningServer, digest: str, delay: float) -> tuple[int, str, int, str, str]:
    """(status, digest of the body, bytes, X-Cache, which worker answered): the worker is told apart by the
    process_* metrics it reports on the same connection."""
    time.sleep(delay)  # clients arrive one after the other, as the workers accept them
    hasher = hashlib.sha256()
    received = 0
    with server.client(limits=httpx.Limits(max_connections=1)) as client:
        with client.stream("GET", f"/v2/go/workers/blob/blobs/{digest}") as response:
            for chunk in response.iter_bytes():
                hasher.update(chunk)
                received += len(chunk)
        metrics = client.get("/metrics").text
    match = _START.search(metrics)
    worker = match.group(1) if match else "?"
    return response.status_code, "sha256:" + hasher.hexdigest(), received, response.headers.get("x-cache", ""), worker


def test_two_workers_fetch_a_missing_blob_once(tmp_path: Path, go_hub: Upstream, go_pusher: Pusher) -> None:
    config = {**proxy_config(upstream_entry("go", go_hub, "go")), "http": {"workers": 2}}
    with run_secreg(tmp_path / "cache", config) as server:
        _wait_for_workers(server, 2)
        both = False
        for attempt in range(6):  # a new blob each time, until the clients of one reached both workers
            data = random_bytes(SIZE, seed=7000 + attempt)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            path = tmp_path / f"blob-{attempt}"
            path.write_bytes(data)
            go_pusher.blob_file("workers/blob", path, digest)
            with ThreadPoolExecutor(CLIENTS) as pool:
                results = list(pool.map(_pull, [server] * CLIENTS, [digest] * CLIENTS,
                                        [i * 0.02 for i in range(CLIENTS)]))
            assert all(r[:3] == (200, digest, SIZE) for r in results), [r[:4] for r in results]
            # One download (a fresh worker's first request is also answered 401 once: the challenge it learns).
            downloads = re.findall(rf'"GET /v2/workers/blob/blobs/{digest} HTTP/1.1" 200 ', go_hub.log())
            assert len(downloads) == 1, go_hub.log()[-3000:]
            # Clients served while the blob was still on its way in, by both workers: the second worker
            # followed the first one's fetch instead of asking the upstream itself.
            missed_by = {worker for _status, _digest, _size, cache, worker in results if cache == "miss"}
            assert "?" not in missed_by
            if len(missed_by) == 2:
                both = True
                break
        assert both, "the clients never reached both workers while a blob was being fetched"
        # The clients had every byte once it was verified; the commit, then the staging clean-up, follow.
        staging = server.storage / "docker/registry/v2/_proxy"
        deadline = time.monotonic() + 60
        while list(staging.glob("*/data")) or list(staging.glob("*.claim")):
            assert time.monotonic() < deadline, sorted(staging.iterdir())
            time.sleep(0.05)


def _worker_of(client: httpx.Client) -> str:
    match = _START.search(client.get("/metrics").text)
    assert match, "no process_start_time_seconds in /metrics"
    return match.group(1)


def _clients_on_both_workers(server: RunningServer) -> list[tuple[httpx.Client, str]]:
    """CLIENTS connections, kept open, at least one on each worker (told apart by their process metrics)."""
    clients: list[tuple[httpx.Client, str]] = []
    for _ in range(100):
        client = server.client(limits=httpx.Limits(max_connections=1))
        clients.append((client, _worker_of(client)))
        if len(clients) >= CLIENTS and len({worker for _, worker in clients}) == 2:
            return clients
    raise AssertionError("100 connections never reached both workers")


def _together(clients: list[tuple[httpx.Client, str]], path: str) -> list[tuple[int, str, str, str]]:
    """Every client GETs `path` at once: (status, digest, X-Cache, worker) each."""
    barrier = threading.Barrier(len(clients))

    def get(pair: tuple[httpx.Client, str]) -> tuple[int, str, str, str]:
        client, worker = pair
        barrier.wait(timeout=60)
        r = client.get(path, headers=ACCEPT)
        return r.status_code, r.headers.get("docker-content-digest", ""), r.headers.get("x-cache", ""), worker

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(get, clients))


def test_two_workers_fetch_a_missing_manifest_once(tmp_path: Path, go_hub: Upstream, go_pusher: Pusher) -> None:
    config = {**proxy_config(upstream_entry("go", go_hub, "go", ttl="1h")), "http": {"workers": 2}}
    with run_secreg(tmp_path / "cache", config) as server:
        _wait_for_workers(server, 2)
        clients = _clients_on_both_workers(server)
        try:
            shared = {"tag": False, "digest": False}
            for attempt in range(8):  # new images, until the misses of each kind were answered by both workers
                for kind in ("tag", "digest"):
                    tag = f"{kind}-{attempt}"
                    digest, _, _ = go_pusher.image("workers/app", tag, [random_bytes(1000, seed=7100 + attempt)],
                                                   label=tag)
                    results = _together(clients, f"/v2/go/workers/app/manifests/{tag if kind == 'tag' else digest}")
                    assert all(r[:2] == (200, digest) for r in results), results
                    # Counted where the upstream answered 200: a worker's first request is answered 401 once
                    # (the htpasswd challenge it learns), which asks for nothing.
                    log = go_hub.log()
                    heads = log.count(f'"HEAD /v2/workers/app/manifests/{tag} HTTP/1.1" 200 ')
                    gets = log.count(f'"GET /v2/workers/app/manifests/{digest} HTTP/1.1" 200 ')
                    assert (heads, gets) == ((1, 1) if kind == "tag" else (0, 1)), (kind, results, log[-3000:])
                    # Both workers answered clients with what the flight brought in ("miss", not a cached
                    # "hit"): the second one waited for the first one's upstream exchange instead of asking.
                    if {worker for *_, cache, worker in results if cache == "miss"} == {w for _, w in clients}:
                        shared[kind] = True
                if all(shared.values()):
                    break
            assert all(shared.values()), f"a miss was never answered by both workers: {shared}"
            staging = server.storage / "docker/registry/v2/_proxy"
            assert not list(staging.glob("*.claim")), sorted(staging.iterdir())
        finally:
            for client, _ in clients:
                client.close()
