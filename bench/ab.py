"""`python -m bench.ab`: secreg against itself under two settings, in one run (for the levers of issue 15).

Both servers run side by side on one certificate and token key; the wrk runs alternate A, B, A, B, ... so load
from elsewhere on the machine falls on both alike. Reported per workload: requests/s median (min-max) of each,
B/A per pair, and server CPU per request (ms; the steadier figure on a shared machine).

    python -m bench.ab --a '{"http": {"workers": 1}}' --b '{"http": {"workers": "auto"}}'
    git archive main | tar -x -C /tmp/old && python -m bench.ab --a-code /tmp/old    # old code as A, this as B
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from bench import workloads as wl
from bench.cli import fetch_token
from bench.client import random_base, wrk
from bench.servers import Server, cpu_seconds, make_certificates, start_secreg
from bench.small import head_load

DIGEST = "{digest}"  # the test manifest's digest, filled in once it is pushed
PATHS = {
    "manifest_get": f"/v2/{wl.REPO}/manifests/latest",
    "v2_get": "/v2/",
    "manifest_head": f"/v2/{wl.REPO}/manifests/latest",
    "manifest_get_digest": f"/v2/{wl.REPO}/manifests/{DIGEST}",
    "manifest_head_digest": f"/v2/{wl.REPO}/manifests/{DIGEST}",
    # (5c): the same user's password on every request, as CI, podman and containerd send it
    "token_basic": "/auth/token?" + urllib.parse.urlencode({"service": "secreg",
                                                            "scope": f"repository:{wl.REPO}:pull"}),
}


def _describe(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} ({min(values):.4g}-{max(values):.4g})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--a", default="{}", help="settings of A (JSON, deep-merged into the bench defaults)")
    parser.add_argument("--b", default="{}", help="settings of B")
    parser.add_argument("--a-code", type=Path, help="a source tree (e.g. from git archive) A runs from (PYTHONPATH)")
    parser.add_argument("--b-code", type=Path, help="the same for B (default: the installed secreg)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", default=",".join(PATHS), help=f"workloads: {','.join(PATHS)}")
    args = parser.parse_args(argv)
    settings = {"a": json.loads(args.a), "b": json.loads(args.b)}
    with tempfile.TemporaryDirectory(prefix="secreg-ab-") as tmp:
        work = Path(tmp)
        certs = make_certificates(work / "certs")
        with start_secreg(work / "a", certs, auth=True, extra=settings["a"], code=args.a_code) as a, \
                start_secreg(work / "b", certs, auth=True, extra=settings["b"], code=args.b_code) as b:
            servers = {"a": a, "b": b}
            base = random_base(1 << 20)
            push = {name: fetch_token(s, f"repository:{wl.REPO}:pull,push") for name, s in servers.items()}
            digest = ""
            for name, server in servers.items():
                digest = wl.put_test_manifest([server], base, push[name])
            report: dict[str, Any] = {"a": settings["a"], "b": settings["b"], "workloads": {},
                                      "a_code": str(args.a_code or ""), "b_code": str(args.b_code or "")}
            for workload in args.only.split(","):
                path = PATHS[workload].replace(DIGEST, digest)
                runs: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
                pull = {name: fetch_token(s, f"repository:{wl.REPO}:pull") for name, s in servers.items()}
                for name, server in servers.items():  # warm-up
                    _load(server, path, _headers(pull[name], workload, server), args.connections, 1, workload)
                for rep in range(args.reps):
                    pull = {name: fetch_token(s, f"repository:{wl.REPO}:pull") for name, s in servers.items()}
                    for name in ("a", "b") if rep % 2 == 0 else ("b", "a"):  # which one runs first alternates
                        server = servers[name]
                        before = cpu_seconds(server.pid)
                        result = _load(server, path, _headers(pull[name], workload, server), args.connections,
                                       args.duration, workload)
                        cpu = cpu_seconds(server.pid) - before
                        if result["non_2xx"] or result["socket_errors"]:
                            raise SystemExit(f"{workload} {name}: {result['non_2xx']} non-2xx, "
                                             f"{result['socket_errors']} socket errors")
                        runs[name].append({"rps": result["rps"],
                                           "cpu_ms": 1000 * cpu / max(1, result["requests"])})
                ratios = [b_["rps"] / a_["rps"] for a_, b_ in zip(runs["a"], runs["b"], strict=True)]
                line = {
                    "a_rps": _describe([r["rps"] for r in runs["a"]]),
                    "b_rps": _describe([r["rps"] for r in runs["b"]]),
                    "b_over_a": _describe(ratios),
                    "a_cpu_ms_per_request": _describe([r["cpu_ms"] for r in runs["a"]]),
                    "b_cpu_ms_per_request": _describe([r["cpu_ms"] for r in runs["b"]]),
                    "runs": runs,
                }
                report["workloads"][workload] = line
                print(f"{workload}: A {line['a_rps']} req/s, B {line['b_rps']} req/s, B/A {line['b_over_a']}; "
                      f"CPU ms/request A {line['a_cpu_ms_per_request']}, B {line['b_cpu_ms_per_request']}",
                      flush=True)
    print(json.dumps(report))
    return 0


def _load(server: Server, path: str, headers: dict[str, str], connections: int, duration: float,
          workload: str) -> dict[str, Any]:
    """wrk's result for a GET; for a HEAD (which wrk cannot send) `bench.headload`'s, in the same shape."""
    if "head" not in workload:
        return wrk(f"{server.url}{path}", headers, connections, duration)
    sample = head_load(server, path, headers, connections, duration)
    return {"rps": sample.value, "requests": sample.extra["requests"], "non_2xx": 0, "socket_errors": 0}


def _headers(token: str, workload: str, server: Server) -> dict[str, str]:
    if workload == "token_basic":
        return {"Authorization": "Basic " + base64.b64encode(f"admin:{server.admin_password}".encode()).decode()}
    return {"Accept": wl.ACCEPT, "Authorization": f"Bearer {token}"}


if __name__ == "__main__":
    raise SystemExit(main())
