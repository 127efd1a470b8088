"""Small-request workloads beyond (4)/(5): manifest HEAD and GET by tag and by digest, the token endpoint with
HTTP Basic, many small requests multiplexed on one HTTP/2 connection, and HTTP/2 blobs against secreg's own
HTTP/1.1.

Workloads that compare secreg with itself (token vs `/v2/`, h2 vs HTTP/1.1) keep the `go` side of a pair for
the baseline and say so in `info["baseline"]`; the pairs still alternate which one runs first.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.client import BenchError, Blob, Client, MiB, curl, have, run_tool, timed, wrk
from bench.results import Sample, Target, Workload
from bench.servers import Server, cpu_seconds
from bench.workloads import ACCEPT, REPO, Settings, load1, mb_per_s, measuring


def head_load(server: Server, path: str, headers: dict[str, str], connections: int, duration: float) -> Sample:
    """HEAD requests from two `bench.headload` processes (like wrk -t2), `connections` in all."""
    url = f"{server.url}{path}"
    argv = [sys.executable, "-m", "bench.headload", url, str(server.ca)]
    header_lines = [f"{k}: {v}" for k, v in headers.items()]
    split = [connections // 2 + connections % 2, connections // 2]
    processes = [subprocess.Popen([*argv, str(n), str(duration), *header_lines], stdout=subprocess.PIPE,
                                  cwd=Path(__file__).resolve().parents[1]) for n in split if n]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=duration + 60)
        if process.returncode != 0:
            raise BenchError(f"{server.name}: bench.headload exited with {process.returncode}")
        results.append(json.loads(out))
    statuses: dict[str, int] = {}
    for result in results:
        for code, count in result["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    if set(statuses) != {"200"}:
        raise BenchError(f"{server.name}: HEAD {path} answered {statuses}")
    seconds = max(r["seconds"] for r in results)
    return Sample(sum(r["rps"] for r in results), seconds,
                  {"requests": statuses["200"], "client": "bench.headload x2", "load1": load1()})


def _wrk_sample(url: str, headers: dict[str, str], cfg: Settings, script: Path | None) -> Sample:
    result = wrk(url, headers, cfg.connections, cfg.duration, script=script)
    if result["non_2xx"] or result["socket_errors"]:
        raise BenchError(f"{url}: {result['non_2xx']} non-2xx responses, {result['socket_errors']} socket errors")
    return Sample(result.pop("rps"), result.pop("seconds"), {**result, "load1": load1()})


def self_pairs(w: Workload, server: Server, reps: int, measured: Callable[[], Sample],
               baseline: Callable[[], Sample]) -> None:
    """`reps` pairs on one server: the measured variant on the secreg side, its baseline on the go side."""
    for rep in range(reps):
        order = [("secreg", measured), ("go", baseline)]
        if rep % 2:
            order.reverse()
        done = {}
        for side, run in order:
            before = cpu_seconds(server.pid)
            sample = run()
            sample.extra["server_cpu_seconds"] = round(cpu_seconds(server.pid) - before, 3)
            done[side] = sample
        w.add_pair(done["secreg"], done["go"])


def manifest_variants(cfg: Settings, servers: list[Server], token: Callable[[], str], digest: str,
                      selected: set[str]) -> list[Workload]:
    """(4b) manifest HEAD by tag, GET and HEAD by digest, with a bearer token, secreg vs Go."""
    variants = {
        "manifest_head": ("HEAD", "latest", "(4b) manifest HEAD by tag"),
        "manifest_get_digest": ("GET", digest, "(4b) manifest GET by digest"),
        "manifest_head_digest": ("HEAD", digest, "(4b) manifest HEAD by digest"),
    }
    out = []
    from bench.workloads import pairs

    for name, (method, reference, title) in variants.items():
        if name not in selected:
            continue
        w = Workload(name, f"{title}, {cfg.connections} conns, bearer token", "req/s", True, Target(">=", 1.2))
        w.notes.append((f"wrk -t2 -c{cfg.connections} -d{cfg.duration:g}s, keep-alive, GET" if method == "GET" else
                        f"HEAD from bench.headload (asyncio, 2 processes, {cfg.connections} keep-alive connections "
                        f"in all, {cfg.duration:g} s: wrk and h2load cannot send HEAD)")
                       + ", Accept header of a docker client, bearer token")
        if method == "GET" and not have("wrk"):
            w.status = "skipped: wrk not installed"
            out.append(w)
            continue
        path = f"/v2/{REPO}/manifests/{reference}"

        def headers() -> dict[str, str]:
            return {"Accept": ACCEPT, "Authorization": f"Bearer {token()}"}

        def run(server: Server, rep: int, path: str = path, method: str = method) -> Sample:
            if method == "HEAD":
                return head_load(server, path, headers(), cfg.connections, cfg.duration)
            return _wrk_sample(f"{server.url}{path}", headers(), cfg, None)

        with measuring(w):
            for server in servers:  # warm-up
                if method == "HEAD":
                    head_load(server, path, headers(), cfg.connections, 1)
                else:
                    wrk(f"{server.url}{path}", headers(), cfg.connections, 1)

            pairs(w, servers, cfg.reps, run)
        out.append(w)
    return out


def token_basic(cfg: Settings, secreg: Server, token: Callable[[], str]) -> Workload:
    """(5c) `GET /auth/token` with Basic credentials, repeated by one client, against secreg's own `/v2/`."""
    w = Workload("token_basic", f"(5c) GET /auth/token with Basic, {cfg.connections} conns, vs own /v2/",
                 "req/s", True, Target(">=", 0.5))
    w.info["baseline"] = "secreg GET /v2/ with a bearer token, same server, same wrk settings"
    w.notes.append(f"wrk -t2 -c{cfg.connections} -d{cfg.duration:g}s: the same user and password on every "
                   "request (what CI, podman and containerd do on each pull), scope repository:bench/app:pull; "
                   "the Go column is secreg's own /v2/ rate (Go's registry has no token server)")
    if not have("wrk"):
        w.status = "skipped: wrk not installed"
        return w
    basic = base64.b64encode(f"admin:{secreg.admin_password}".encode()).decode()
    query = urllib.parse.urlencode({"service": "secreg", "scope": f"repository:{REPO}:pull"})
    token_path = f"/auth/token?{query}"
    with measuring(w):
        if cfg.quick:
            # An uncached bcrypt check takes 0.3 s or more here: a 1 s wrk run may complete none. The smoke
            # run times three requests in a row on one connection instead.
            w.notes.append("--quick: 3 sequential requests on one connection per side instead of wrk")
            self_pairs(w, secreg, cfg.reps,
                       lambda: _sequential(secreg, token_path, {"Authorization": f"Basic {basic}"}, 3),
                       lambda: _sequential(secreg, "/v2/", {"Authorization": f"Bearer {token()}"}, 3))
            return w
        def tokens() -> Sample:
            result = wrk(f"{secreg.url}{token_path}", {"Authorization": f"Basic {basic}"}, cfg.connections,
                         cfg.duration)
            if result["non_2xx"]:
                raise BenchError(f"token endpoint: {result['non_2xx']} non-2xx responses")
            # wrk gives up on a request after 2 s (a socket error "timeout"): with bcrypt uncached, requests
            # queue up that long; they count as not done, and the next run waits until the server is idle.
            _settle(secreg)
            return Sample(result.pop("rps"), result.pop("seconds"), {**result, "load1": load1()})

        wrk(f"{secreg.url}{token_path}", {"Authorization": f"Basic {basic}"}, cfg.connections, 1)
        _settle(secreg)
        self_pairs(w, secreg, cfg.reps, tokens,
                   lambda: _wrk_sample(f"{secreg.url}/v2/", {"Authorization": f"Bearer {token()}"}, cfg, None))
    return w


def _settle(server: Server, timeout: float = 60.0) -> None:
    """Until `GET /v2/` answers within 50 ms (work queued by the previous run is done), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    with Client(server) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            client.request("GET", "/v2/")
            if time.perf_counter() - start < 0.05:
                return
            time.sleep(0.2)


def _sequential(server: Server, path: str, headers: dict[str, str], count: int) -> Sample:
    with Client(server) as client:
        start = time.perf_counter()
        for _ in range(count):
            client.request("GET", path, headers=headers, expect=(200,))
        seconds = time.perf_counter() - start
    return Sample(count / seconds, seconds, {"requests": count, "load1": load1()})


# --- HTTP/2 -------------------------------------------------------------------------------------------------

_H2LOAD_RATE = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_H2LOAD_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_H2LOAD_PROTOCOL = re.compile(r"Application protocol: (\S+)")
_H2LOAD_REQUESTS = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, \d+ failed, (\d+) errored")


def h2load(url: str, headers: dict[str, str], *, clients: int, streams: int, duration: float, http1: bool
           ) -> dict[str, Any]:
    """Run h2load for `duration` seconds; requests/s, the protocol it negotiated and its own CPU time."""
    argv = ["h2load", "-t1", f"-c{clients}", f"-m{streams}", f"-D{max(1, round(duration))}"]
    if http1:
        argv.append("--h1")
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    run = run_tool(argv, timeout=duration + 60)
    rate, status, protocol, requests = (p.search(run.stdout) for p in (
        _H2LOAD_RATE, _H2LOAD_STATUS, _H2LOAD_PROTOCOL, _H2LOAD_REQUESTS))
    if run.returncode != 0 or not rate or not status or not requests:
        raise BenchError(f"h2load failed ({run.returncode}): {run.stderr[-300:]} {run.stdout[-800:]}")
    ok, *rest = (int(x) for x in status.groups())
    done, errored = (int(x) for x in requests.groups())
    if http1 and not ok and not sum(rest):
        # h2load 1.52 records an HTTP/1.1 status only from a status line with a reason phrase, and Hypercorn
        # sends none ("HTTP/1.1 200 "): count completed responses (the status was checked with curl first).
        ok = done
    if sum(rest) or not ok or errored > clients * streams:  # a timed run cuts the requests in flight
        raise BenchError(f"h2load: {ok} 2xx, {rest} other responses, {errored} errored")
    return {"rps": float(rate.group(3)), "protocol": protocol.group(1) if protocol else None,
            "responses": ok, "h2load_cpu_seconds": round(run.cpu, 3)}


def h2_small_requests(cfg: Settings, servers: list[Server]) -> Workload:
    """(5d) manifest GETs: 32 streams on one h2 connection vs 8 HTTP/1.1 connections, both from h2load."""
    streams, connections = (8, 4) if cfg.quick else (32, 8)
    w = Workload("h2_small_requests", f"(5d) manifest GET, {streams} streams on 1 h2 connection vs "
                 f"{connections} HTTP/1.1 connections", "req/s", True, Target(">=", 1.0))
    w.info["baseline"] = f"secreg over HTTP/1.1 with {connections} connections (h2load --h1), same server"
    w.notes.append(f"h2load -t1 -D{cfg.duration:g}: -c1 -m{streams} (ALPN h2) against -c{connections} --h1; "
                   "manifest GET by tag, no auth; the Go registry's h2 rate on one connection is in info")
    if not have("h2load"):
        w.status = "skipped: h2load (nghttp2-client) not installed"
        return w
    secreg = next(s for s in servers if s.name == "secreg")
    path = f"/v2/{REPO}/manifests/latest"
    headers = {"Accept": ACCEPT}

    def run(server: Server, http1: bool) -> Sample:
        result = h2load(f"{server.url}{path}", headers, clients=connections if http1 else 1,
                        streams=1 if http1 else streams, duration=cfg.duration, http1=http1)
        wanted = "http/1.1" if http1 else "h2"
        if result["protocol"] != wanted:
            raise BenchError(f"{server.name}: h2load negotiated {result['protocol']}, not {wanted}")
        return Sample(result.pop("rps"), cfg.duration, {**result, "load1": load1()})

    with measuring(w):
        for server in servers:
            _, fields = curl(server, ["-H", f"Accept: {ACCEPT}"], path, http2=False)
            if fields["status"] != 200:
                raise BenchError(f"{server.name}: GET {path} answered {fields['status']}")
        run(secreg, False)
        self_pairs(w, secreg, cfg.reps, lambda: run(secreg, False), lambda: run(secreg, True))
        w.info["go_h2_one_connection_rps"] = [run(s, False).value for s in servers if s.name == "go"]
    return w


def _h2load_once(server: Server, path: str, http1: bool, data: Path | None = None) -> tuple[float, float]:
    """One request with h2load (nghttp2's C client, the Go-style client here): its own seconds and CPU time.
    With `data`, a POST carrying that file (the monolithic upload of the spec: POST ...?digest=)."""
    argv = ["h2load", "-n1", "-c1", "-m1"]
    if http1:
        argv.append("--h1")
    if data is not None:
        argv += ["-d", str(data), "-H", "Content-Type: application/octet-stream"]
    run = run_tool([*argv, f"{server.url}{path}"], timeout=300)
    rate, requests = _H2LOAD_RATE.search(run.stdout), _H2LOAD_REQUESTS.search(run.stdout)
    if run.returncode != 0 or not rate or not requests or requests.group(1) != "1" or requests.group(2) != "0":
        raise BenchError(f"h2load failed ({run.returncode}): {run.stderr[-300:]} {run.stdout[-600:]}")
    seconds = float(rate.group(1)) / (1000 if rate.group(2) == "ms" else 1)
    return seconds, run.cpu


def h2_blobs_vs_h1(cfg: Settings, secreg: Server, base: bytes, selected: set[str]) -> list[Workload]:
    """(5e) blob pull and push over h2 against the same over HTTP/1.1, on one secreg offering both, with h2load
    (`h2_pull_vs_h1`, `h2_push_vs_h1`) and with curl (`..._curl`)."""
    out: list[Workload] = []
    files = cfg.workdir / "h2-own"
    files.mkdir(parents=True, exist_ok=True)
    counter = iter(range(100_000))
    pulled = Blob(base, cfg.blob_size, "h2-own-pull")
    with Client(secreg) as client:
        client.push_monolithic(REPO, pulled)

    def pull(tool: str, http2: bool) -> Sample:
        path = f"/v2/{REPO}/blobs/{pulled.digest}"
        if tool == "h2load":
            seconds, cpu = _h2load_once(secreg, path, http1=not http2)
        else:
            run, fields = curl(secreg, [], path, http2=http2)
            if fields["status"] != 200 or fields["downloaded"] != pulled.size or \
                    fields["http_version"] != ("2" if http2 else "1.1"):
                raise BenchError(f"pull gave {fields}")
            seconds, cpu = fields["seconds"], run.cpu
        return Sample(mb_per_s(pulled.size, seconds), seconds, {"client_cpu_seconds": round(cpu, 3), "load1": load1()})

    def push(tool: str, http2: bool) -> Sample:
        blob = Blob(base, cfg.blob_size, f"h2-own-push-{next(counter)}")
        data = blob.write_to(files / "push")
        os.sync()
        if tool == "h2load":
            seconds, cpu = _h2load_once(secreg, f"/v2/{REPO}/blobs/uploads/?digest={blob.digest}", not http2, data)
        else:
            with Client(secreg) as client:
                location, post_seconds, _ = timed(lambda: client.start_upload(REPO))
            separator = "&" if "?" in location else "?"
            run, fields = curl(secreg, ["-X", "PUT", "-T", str(data), "-H", "Content-Type: application/octet-stream"],
                               f"{location}{separator}digest={blob.digest}", http2=http2)
            if fields["status"] != 201 or fields["http_version"] != ("2" if http2 else "1.1"):
                raise BenchError(f"push gave {fields}")
            seconds, cpu = post_seconds + fields["seconds"], run.cpu
        with Client(secreg) as client:  # untimed: the blob is there
            client.request("HEAD", f"/v2/{REPO}/blobs/{blob.digest}", expect=(200,))
        return Sample(mb_per_s(blob.size, seconds), seconds, {"client_cpu_seconds": round(cpu, 3), "load1": load1()})

    notes = {
        "h2load": "h2load -n1 -c1 (nghttp2's C client), one request on a new TLS connection, h2 against --h1 on "
                  "the same server; push = POST ...?digest= with the blob as body (-d), checked by a HEAD after",
        "curl": "curl --http2 against --http1.1 on the same server, -o /dev/null, time_total; push = POST over "
                "HTTP/1.1 (Python client, its time added), then curl -T PUT ?digest=",
    }
    for name, tool, action in (("h2_pull_vs_h1", "h2load", "pull"), ("h2_push_vs_h1", "h2load", "push"),
                               ("h2_pull_vs_h1_curl", "curl", "pull"), ("h2_push_vs_h1_curl", "curl", "push")):
        if name not in selected:
            continue
        w = Workload(name, f"(5e) blob {action} {cfg.blob_size // MiB} MiB, {tool}: h2 vs own HTTP/1.1", "MB/s",
                     True, Target(">=", 0.9))
        w.info["baseline"] = f"secreg over HTTP/1.1 ({tool}), same server"
        w.notes.append(notes[tool])
        if not have(tool):
            w.status = f"skipped: {tool} not installed"
            out.append(w)
            continue
        run = pull if action == "pull" else push
        with measuring(w):
            if action == "pull":
                run(tool, True)
                run(tool, False)
            self_pairs(w, secreg, cfg.reps * (3 if action == "pull" else 1),
                       lambda r=run, t=tool: r(t, True), lambda r=run, t=tool: r(t, False))  # type: ignore[misc]
        out.append(w)
    return out
