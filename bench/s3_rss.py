"""`python -m bench.s3_rss`: peak RSS of a 1 GiB push through the S3 driver, fresh and after load, several runs.

Each run starts a fresh `secreg serve` (auth off, the default `http.workers`: two here) on the chosen object store
and measures the peak VmRSS, summed over the server's process tree (the supervisor and its workers), across a
`--big-mib` push on the fresh server, then after a workload (`--load-rounds` rounds of `--parallel` concurrent
pushes and pulls of `--blob-mib` MiB), then once more. Where the memory sits is read from /proc/PID/smaps of
every process of the tree at the end of each push (the brk heap, anonymous mappings — glibc's per-thread arenas
and large buffers — and file-backed pages, summed) with the thread and process counts. Prints min / median / max
per phase and writes bench/results/s3-rss-latest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from bench.s3 import PIECE, MiB, _rss, peak_rss, pull, push
from bench.servers import process_tree
from tests.objectstores import ObjectStore, moto_server, swift_server
from tests.server import RunningServer, run_secreg

OUTPUT = Path(__file__).resolve().parent / "results" / "s3-rss-latest.json"


def memory_map(pid: int) -> dict[str, float]:
    """RSS by kind of mapping, MiB, summed over the process tree of `pid` (the server and its workers), with the
    number of threads and of processes it has."""
    kinds = {"heap": 0, "anon": 0, "file": 0}
    threads = processes = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/smaps").read_text().splitlines()
            member_threads = len(list(Path(f"/proc/{member}/task").iterdir()))
        except OSError:  # gone meanwhile (a worker restarting)
            continue
        current = "anon"
        for line in lines:
            fields = line.split()
            if not fields:
                continue
            if not fields[0].endswith(":"):  # a mapping's header line: address perms offset dev inode [path]
                path = fields[5] if len(fields) > 5 else ""
                current = "heap" if path == "[heap]" else "file" if path.startswith("/") else "anon"
            elif fields[0] == "Rss:":
                kinds[current] += int(fields[1]) * 1024
        threads += member_threads
        processes += 1
    return {**{k: round(v / MiB, 1) for k, v in kinds.items()}, "threads": threads, "processes": processes}


def measured_push(server: RunningServer, client: httpx.Client, block: bytes, mib: int, name: str
                  ) -> dict[str, Any]:
    pid = server.process.pid
    stop, high = threading.Event(), list[int]()
    sampler = threading.Thread(target=peak_rss, args=(pid, stop, high))
    sampler.start()
    try:
        push(client, name, block, mib * MiB)
    except httpx.HTTPError:
        print(server.log()[-6000:], file=sys.stderr)  # why the server failed, before the work directory goes
        raise
    finally:
        stop.set()
        sampler.join()
    return {"peak_mib": round(high[0] / MiB, 1), "after_mib": round(_rss(pid) / MiB, 1), "map": memory_map(pid)}


def workload(client: httpx.Client, block: bytes, mib: int, rounds: int, parallel: int, tag: str) -> None:
    def one(i: int) -> None:
        name = f"load/{tag}{i}"
        data = block[i:] + block[:i]
        digest, _ = push(client, name, data, mib * MiB)
        pull(client, name, digest)

    with ThreadPoolExecutor(parallel) as pool:
        for r in range(rounds):
            list(pool.map(one, range(r * parallel, (r + 1) * parallel)))


def _store(kind: str, root: Path) -> AbstractContextManager[ObjectStore]:
    return moto_server(root) if kind == "moto" else swift_server(root / "swift")


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": round(statistics.median(values), 1), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.s3_rss", description=__doc__)
    p.add_argument("--store", choices=("moto", "swift"), default="swift")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=1024)
    p.add_argument("--blob-mib", type=int, default=64)
    p.add_argument("--load-rounds", type=int, default=2)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeatable)")
    p.add_argument("--output", type=Path, default=OUTPUT)
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    block = hashlib.sha256(b"secreg").digest() * (PIECE // 32)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="secreg-bench-rss-") as scratch:
        root = Path(scratch)
        with _store(args.store, root) as store:
            for run in range(args.runs):
                config = {"auth": {"enabled": False}, "storage": {"s3": store.s3_settings(f"rss{run}")}}
                with run_secreg(root / f"run{run}", config, env=env, timeout=60) as server, \
                        httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=900) as client:
                    record: dict[str, Any] = {"idle_mib": round(_rss(server.process.pid) / MiB, 1)}
                    record["fresh"] = measured_push(server, client, block, args.big_mib, "big/fresh")
                    workload(client, block, args.blob_mib, args.load_rounds, args.parallel, "a")
                    record["after_load"] = measured_push(server, client, block[7:] + block[:7], args.big_mib,
                                                         "big/load")
                    workload(client, block, args.blob_mib, args.load_rounds, args.parallel, "b")
                    record["after_more_load"] = measured_push(server, client, block[9:] + block[:9],
                                                              args.big_mib, "big/load2")
                runs.append(record)
                print(json.dumps(record), flush=True)
    summary: dict[str, Any] = {"store": args.store, "env": env, "big_mib": args.big_mib, "blob_mib": args.blob_mib,
                               "load_rounds": args.load_rounds, "parallel": args.parallel, "runs": runs}
    for phase in ("fresh", "after_load", "after_more_load"):
        summary[f"{phase}_peak_mib"] = _spread([r[phase]["peak_mib"] for r in runs])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
