"""`python -m bench.s3`: the S3 driver against the filesystem driver in the same run.

One secreg on the filesystem and one on OpenStack Swift (s3api) on loopback (both `secreg serve`, auth off, one
worker), the same blobs: push (POST + one PATCH + PUT, streamed) and pull (GET, streamed) of `--blob-mib` MiB,
MB/s per repetition (median reported), and the peak RSS of the S3-backed server across a 1 GiB push, on a fresh
server (target < 150 MiB: uploads are streamed in parts, never held) and after the workload above. Writes
bench/results/s3-latest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.servers import process_tree, rss_bytes
from tests.objectstores import swift_available, swift_server
from tests.server import RunningServer, run_secreg

MiB = 1024 * 1024
PIECE = MiB
OUTPUT = Path(__file__).resolve().parent / "results" / "s3-latest.json"


def _pieces(block: bytes, size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        piece = block[: min(PIECE, size - sent)]
        sent += len(piece)
        yield piece


def _digest(block: bytes, size: int) -> str:
    hasher = hashlib.sha256()
    for piece in _pieces(block, size):
        hasher.update(piece)
    return f"sha256:{hasher.hexdigest()}"


def push(client: httpx.Client, name: str, block: bytes, size: int) -> tuple[str, float]:
    digest = _digest(block, size)
    started = time.perf_counter()
    location = client.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
    r = client.patch(location, content=_pieces(block, size),
                     headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    r.raise_for_status()
    r = client.put(r.headers["Location"], params={"digest": digest})
    r.raise_for_status()
    return digest, time.perf_counter() - started


def pull(client: httpx.Client, name: str, digest: str) -> float:
    started = time.perf_counter()
    with client.stream("GET", f"/v2/{name}/blobs/{digest}") as r:
        r.raise_for_status()
        for _ in r.iter_raw(PIECE):
            pass
    return time.perf_counter() - started


def _rss(pid: int) -> int:
    """Summed RSS of the server process and its children: with `http.workers` above 1 a push may be served by a
    spawned worker, not the serving process."""
    return rss_bytes(process_tree(pid))


def peak_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    """Highest summed RSS of the server's processes while `stop` is unset (sampled every 20 ms)."""
    high = 0
    while not stop.wait(0.02):
        high = max(high, _rss(pid))
    out.append(high)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__)
    p.add_argument("--blob-mib", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=1024, help="size of the RSS push (default 1 GiB)")
    p.add_argument("--output", type=Path, default=OUTPUT)
    args = p.parse_args(argv)
    if not swift_available():
        print("bench.s3: OpenStack Swift is not installed (apt-get install swift-proxy ...)", file=sys.stderr)
        return 1
    block = bytes(range(256)) * (PIECE // 256)
    block = hashlib.sha256(block).digest() * (PIECE // 32)  # not all-equal bytes, still cheap
    size = args.blob_mib * MiB
    results: dict[str, Any] = {"blob_mib": args.blob_mib, "reps": args.reps}
    with tempfile.TemporaryDirectory(prefix="secreg-bench-s3-") as scratch:
        root = Path(scratch)
        with swift_server(root / "swift") as store:
            configs = {
                "filesystem": {"auth": {"enabled": False}},
                "s3": {"auth": {"enabled": False}, "storage": {"s3": store.s3_settings("bench")}},
            }
            for label, config in configs.items():
                with run_secreg(root / label, config, timeout=60) as server, \
                        httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=600) as client:
                    pushes, pulls = [], []
                    for rep in range(args.reps):
                        digest, seconds = push(client, f"bench/{label}{rep}", block[rep:] + block[:rep], size)
                        pushes.append(size / MiB / seconds)
                        pulls.append(size / MiB / pull(client, f"bench/{label}{rep}", digest))
                    results[label] = {"push_mib_s": round(statistics.median(pushes), 1),
                                      "pull_mib_s": round(statistics.median(pulls), 1)}
                    if label == "s3":
                        # After the pushes and pulls above: what a busy server reaches.
                        results["s3"]["rss_after_workload_1gib_push_mib"] = _big_push(
                            server, client, block, args.big_mib)
            # A fresh server: the push alone (the target).
            with run_secreg(root / "s3-rss", configs["s3"], timeout=60) as server, \
                    httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=600) as client:
                results["s3"]["rss_idle_mib"] = round(_rss(server.process.pid) / MiB, 1)
                results["s3"]["rss_1gib_push_mib"] = _big_push(server, client, block, args.big_mib)
    results["ratio_s3_to_filesystem"] = {
        k: round(results["s3"][k] / results["filesystem"][k], 2) for k in ("push_mib_s", "pull_mib_s")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def _big_push(server: RunningServer, client: httpx.Client, block: bytes, mib: int) -> float:
    stop, out = threading.Event(), []
    sampler = threading.Thread(target=peak_rss, args=(server.process.pid, stop, out))
    sampler.start()
    try:
        push(client, "bench/big", block, mib * MiB)
    finally:
        stop.set()
        sampler.join()
    return round(out[0] / MiB, 1)


if __name__ == "__main__":
    sys.exit(main())
