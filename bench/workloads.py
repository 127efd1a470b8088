"""What each workload does. Every timed operation runs against both registries back to back; the order within
a pair alternates per repetition (secreg first, then Go first, ...), and `os.sync()` runs before each push so
one registry's write-back never lands in the other's measurement."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import (
    BenchError,
    Blob,
    Client,
    MiB,
    curl,
    have,
    timed,
    verify_pull,
    wrk,
)
from bench.results import Sample, Target, Workload
from bench.servers import RssSampler, Server, cpu_seconds, process_tree, rss_bytes
from tests.e2e.harness import free_port

REPO = "bench/app"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join([
    MANIFEST_TYPE,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


@dataclass(frozen=True)
class Settings:
    reps: int
    quick: bool
    blob_size: int
    chunk_size: int
    big_size: int
    duration: float
    connections: int
    docker_layers: int
    docker_layer_size: int
    workdir: Path


# A pull takes ~0.2 s and both registries run it at what one curl process can decrypt (the client is the
# bottleneck: its CPU time equals the wall time), so single pairs differ by +-15% from noise alone; more pairs
# make the median ratio say something (30 pairs in a probe: median 1.00, mean 1.04).
PULL_REPS_FACTOR = 3


def mb_per_s(size: int, seconds: float) -> float:
    return size / 1e6 / seconds


def no_token() -> str | None:
    return None


def pairs(workload: Workload, servers: list[Server], reps: int, run: Callable[[Server, int], Sample],
          token: Callable[[], str | None] = no_token) -> None:
    """`reps` pairs, alternating which registry goes first. Each sample also records the server's CPU time
    (all its processes and threads) during the run: unlike wall time, it barely depends on how busy the
    shared machine is. `token()` runs before each measured run, so a token it fetches anew (secreg checks the
    password: a bcrypt) stays out of the run's server CPU time."""
    by_name = {s.name: s for s in servers}
    for rep in range(reps):
        order = ["secreg", "go"] if rep % 2 == 0 else ["go", "secreg"]
        done = {}
        for name in order:
            token()
            before = cpu_seconds(by_name[name].pid)
            sample = run(by_name[name], rep)
            sample.extra["server_cpu_seconds"] = round(cpu_seconds(by_name[name].pid) - before, 3)
            done[name] = sample
        workload.add_pair(done["secreg"], done["go"])


@contextlib.contextmanager
def measuring(workload: Workload, rss: RssSampler | None = None) -> Iterator[Workload]:
    """Times the workload, turns a failure into an `error:` status, records peak RSS if sampled."""
    start = time.monotonic()
    if rss is not None:
        rss.window()
    try:
        yield workload
    except (BenchError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        workload.status = f"error: {exc}"[:2000]
    finally:
        workload.elapsed = time.monotonic() - start
        if rss is not None:
            peaks = rss.window()
            workload.info["peak_rss_mib"] = {name: round(v / MiB, 1) for name, v in peaks.items()}


# --- (1)-(3): blobs over HTTP/1.1 -------------------------------------------------------------------


def bearer(token: str | None) -> list[str]:
    """curl's arguments sending `token` (none without one)."""
    return ["-H", f"Authorization: Bearer {token}"] if token else []


def auth_note(w: Workload, token: Callable[[], str | None]) -> None:
    w.notes.append("bearer token from secreg's token server (secreg's default: auth on; the Go registry verifies "
                   "it with auth.token)" if token() else "no auth")


def blob_pull(cfg: Settings, servers: list[Server], base: bytes, rss: RssSampler,
              token: Callable[[], str | None] = no_token) -> Workload:
    w = Workload("blob_pull", f"(1) blob pull {cfg.blob_size // MiB} MiB, HTTP/1.1", "MB/s", True,
                 Target(">=", 1.0))
    w.notes.append("curl --http1.1 -o /dev/null, one GET on a new TLS connection per run (handshake included), "
                   "curl's own time_total; curl's CPU (wait4) in client_cpu_seconds; blob verified by hash "
                   "once, untimed; one warm-up pull each; 3x the repetitions of the other workloads (a pull is "
                   "short and client-bound, so single pairs are noisy)")
    auth_note(w, token)
    if not have("curl"):
        w.status = "skipped: curl not installed"
        return w
    blob = Blob(base, cfg.blob_size, "pull")
    for server in servers:
        with Client(server, token()) as client:
            client.push_monolithic(REPO, blob)
        verify_pull(server, REPO, blob, token())
    with measuring(w, rss):
        def run(server: Server, rep: int) -> Sample:
            tool, fields = curl(server, bearer(token()), f"/v2/{REPO}/blobs/{blob.digest}", http2=False)
            if fields["status"] != 200 or fields["downloaded"] != blob.size:
                raise BenchError(f"{server.name}: pull gave {fields}")
            return Sample(mb_per_s(blob.size, fields["seconds"]), fields["seconds"],
                          {"client_cpu_seconds": round(tool.cpu, 3), "load1": load1()})

        for server in servers:
            run(server, -1)
        pairs(w, servers, cfg.reps * PULL_REPS_FACTOR, run, token)
    w.info["client_ceiling_mb_per_s"] = client_ceiling(cfg, base)
    w.notes.append("client_ceiling_mb_per_s: the same blob from `openssl s_server -WWW` (C, no registry logic, "
                   "same certificate) with curl and with the Python client used for pushes: what one TLS stream "
                   "on this machine can carry")
    return w


def load1() -> float:
    """The 1-minute load average: this machine is shared, so each sample says how busy it was."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def blob_push(cfg: Settings, servers: list[Server], base: bytes, rss: RssSampler,
              token: Callable[[], str | None] = no_token) -> Workload:
    w = Workload("blob_push", f"(2) blob push {cfg.blob_size // MiB} MiB monolithic (POST + PUT)", "MB/s", True,
                 Target(">=", 2.0))
    w.notes.append("POST opens the session, PUT ?digest= carries the whole blob (Content-Length); a new blob "
                   "per repetition; os.sync() before each run; time covers POST + PUT until 201")
    auth_note(w, token)
    with measuring(w, rss):
        blobs: dict[int, Blob] = {}

        def run(server: Server, rep: int) -> Sample:
            if rep not in blobs:  # a new blob per repetition, the same for both registries
                blobs[rep] = Blob(base, cfg.blob_size, f"push-{rep}")
            blob = blobs[rep]
            os.sync()
            with Client(server, token()) as client:
                _, seconds, cpu = timed(lambda: client.push_monolithic(REPO, blob))
            return Sample(mb_per_s(blob.size, seconds), seconds,
                          {"client_cpu_seconds": round(cpu, 3), "client_cpu_share": round(cpu / seconds, 2),
                           "load1": load1()})

        pairs(w, servers, cfg.reps, run, token)
    return w


def blob_push_chunked(cfg: Settings, servers: list[Server], base: bytes, rss: RssSampler,
                      token: Callable[[], str | None] = no_token) -> Workload:
    chunks = -(-cfg.blob_size // cfg.chunk_size)
    title = f"(3) blob push {cfg.blob_size // MiB} MiB chunked ({chunks} x {cfg.chunk_size // MiB} MiB PATCH + PUT)"
    w = Workload("blob_push_chunked", title, "MB/s", True, Target(">=", 2.0))
    w.notes.append("POST, PATCHes with Content-Range following each returned Location, PUT ?digest= without "
                   "body; one keep-alive connection; os.sync() before each run")
    auth_note(w, token)
    with measuring(w, rss):
        blobs: dict[int, Blob] = {}

        def run(server: Server, rep: int) -> Sample:
            if rep not in blobs:
                blobs[rep] = Blob(base, cfg.blob_size, f"chunked-{rep}")
            blob = blobs[rep]
            os.sync()
            with Client(server, token()) as client:
                _, seconds, cpu = timed(lambda: client.push_chunked(REPO, blob, cfg.chunk_size))
            return Sample(mb_per_s(blob.size, seconds), seconds,
                          {"client_cpu_seconds": round(cpu, 3), "client_cpu_share": round(cpu / seconds, 2),
                           "load1": load1()})

        pairs(w, servers, cfg.reps, run, token)
    return w


def rss_blob_workloads(done: list[Workload]) -> Workload:
    w = Workload("rss_blob_workloads", "(7) peak RSS during (1)–(3)", "MiB", False)
    w.notes.append("summed VmRSS of every process of the server (from /proc/PID/statm, children included), "
                   "sampled every 10 ms; one pair per workload (1), (2), (3)")
    for workload in done:
        peaks = workload.info.get("peak_rss_mib")
        if peaks and workload.status == "ok":
            w.add_pair(Sample(peaks["secreg"], workload.elapsed, {"during": workload.name}),
                       Sample(peaks["go"], workload.elapsed, {"during": workload.name}))
    if not w.samples["secreg"]:
        w.status = "skipped: none of (1)–(3) ran"
    return w


def rss_big_push(cfg: Settings, servers: list[Server], base: bytes, rss: RssSampler,
                 token: Callable[[], str | None] = no_token) -> Workload:
    size_text = f"{cfg.big_size // (1024 * MiB)} GiB" if cfg.big_size >= 1024 * MiB else f"{cfg.big_size // MiB} MiB"
    w = Workload("rss_1gib_push", f"(7) peak RSS during a {size_text} monolithic push", "MiB", False,
                 Target("<=", 150, absolute=True))
    w.notes.append("peak of the summed RSS of the server's processes while it receives the blob; idle RSS "
                   "just before is in idle_mib; throughput in push_mb_per_s")
    auth_note(w, token)
    with measuring(w):
        def run(server: Server, rep: int) -> Sample:
            blob = Blob(base, cfg.big_size, f"big-{rep}")
            os.sync()
            idle = rss_bytes(process_tree(server.pid))
            rss.window()
            with Client(server, token()) as client:
                _, seconds, _ = timed(lambda: client.push_monolithic(REPO, blob))
            peak = rss.window()[server.name]
            return Sample(round(peak / MiB, 1), seconds,
                          {"idle_mib": round(idle / MiB, 1), "push_mb_per_s": round(mb_per_s(blob.size, seconds))})

        pairs(w, servers, max(1, min(cfg.reps, 3)), run, token)
    return w


def client_ceiling(cfg: Settings, base: bytes) -> dict[str, Any]:
    """Median MB/s of curl and of the Python client pulling the blob from `openssl s_server -WWW`."""
    if not have("openssl"):
        return {"skipped": "openssl not installed"}
    root = cfg.workdir / "ceiling"
    root.mkdir(parents=True, exist_ok=True)
    blob = Blob(base, cfg.blob_size, "ceiling")
    blob.write_to(root / "blob")
    certs = cfg.workdir / "certs"
    port = free_port()
    process = subprocess.Popen(
        ["openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{port}", "-cert", str(certs / "server.crt"),
         "-key", str(certs / "server.key"), "-WWW"],
        cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, list[float]] = {"curl": [], "python": []}
    try:
        server = Server("openssl", "127.0.0.1", port, process.pid, certs / "ca.crt", root / "none.log")
        deadline = time.monotonic() + 10
        while True:
            try:
                curl(server, [], "/blob", http2=False)
                break
            except BenchError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for _ in range(max(3, cfg.reps)):
            _, fields = curl(server, [], "/blob", http2=False)
            results["curl"].append(mb_per_s(fields["downloaded"], fields["seconds"]))
            with Client(server) as client:
                # s_server -WWW answers HTTP/1.0 without Content-Length: read until it closes.
                received, seconds, _ = timed(lambda: client.pull_until_close("/blob"))
            results["python"].append(mb_per_s(received, seconds))
    except (BenchError, OSError) as exc:
        return {"error": str(exc)[:300]}
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    return {name: round(statistics.median(values)) for name, values in results.items()}


# --- (4), (5): small requests with wrk ---------------------------------------------------------------------


def _manifest(client: Client, base: bytes) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = Blob(base, 4096, "layer")
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    location = client.start_upload(REPO)
    client.request("PUT", f"{location}{'&' if '?' in location else '?'}digest={config_digest}", body=config,
                   headers={"Content-Type": "application/octet-stream"}, expect=(201,))
    client.push_monolithic(REPO, layer)
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.size,
                    "digest": layer.digest}],
    }).encode()


def put_test_manifest(servers: list[Server], base: bytes, token: str | None) -> str:
    """Push the test image's manifest as `latest` to every server; its digest (the same bytes everywhere)."""
    digest = ""
    for server in servers:
        with Client(server, token) as client:
            manifest = _manifest(client, base)
            client.put_manifest(REPO, "latest", manifest, MANIFEST_TYPE)
            r = client.request("GET", f"/v2/{REPO}/manifests/latest", headers={"Accept": ACCEPT})
            if r.status != 200 or r.body != manifest:
                raise BenchError(f"{server.name}: manifest did not come back ({r.status})")
            digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return digest


def small_requests(
    cfg: Settings,
    servers: list[Server],
    name: str,
    title: str,
    path: str,
    token: Callable[[], str | None],
    target: Target | None,
) -> Workload:
    w = Workload(name, title, "req/s", True, target)
    w.notes.append(f"wrk -t2 -c{cfg.connections} -d{cfg.duration:g}s --latency, keep-alive, "
                   "Accept header of a docker client" + (", bearer token" if token() else ", no auth")
                   + "; wrk_cpu_share_of_one_core shows whether wrk itself saturates")
    if not have("wrk"):
        w.status = "skipped: wrk not installed"
        return w
    def headers() -> dict[str, str]:
        bearer = token()
        return {"Accept": ACCEPT} | ({"Authorization": f"Bearer {bearer}"} if bearer else {})

    with measuring(w):
        def run(server: Server, rep: int) -> Sample:
            result = wrk(f"{server.url}{path}", headers(), cfg.connections, cfg.duration)
            if result["non_2xx"] or result["socket_errors"]:
                raise BenchError(f"{server.name}: {result['non_2xx']} non-2xx responses, "
                                 f"{result['socket_errors']} socket errors")
            return Sample(result.pop("rps"), result.pop("seconds"), {**result, "load1": load1()})

        for server in servers:  # warm-up: caches, connection set-up paths
            wrk(f"{server.url}{path}", headers(), cfg.connections, 1)
        pairs(w, servers, cfg.reps, run, token)
    return w


# --- (5b): HTTP/2 with curl --------------------------------------------------------------------------------


def h2_blobs(cfg: Settings, servers: list[Server], base: bytes, selected: set[str]) -> list[Workload]:
    out: list[Workload] = []
    if not have("curl"):
        for name in ("h2_blob_pull", "h2_blob_push"):
            if name in selected:
                out.append(Workload(name, f"(5b) {name}", "MB/s", True, status="skipped: curl not installed"))
        return out
    note = ("curl --http2 (libcurl/nghttp2, C), -o /dev/null; curl's own time_total; curl's CPU from wait4 in "
            "client_cpu_seconds; http_version checked to be 2")
    files = cfg.workdir / "h2-files"
    files.mkdir(parents=True, exist_ok=True)
    if "h2_blob_pull" in selected:
        w = Workload("h2_blob_pull", f"(5b) blob pull {cfg.blob_size // MiB} MiB, HTTP/2", "MB/s", True,
                     None)
        w.notes.append(note)
        with measuring(w):
            blob = Blob(base, cfg.blob_size, "h2-pull")
            for server in servers:
                with Client(server) as client:
                    client.push_monolithic(REPO, blob)

            def pull(server: Server, rep: int) -> Sample:
                run, fields = curl(server, [], f"/v2/{REPO}/blobs/{blob.digest}", http2=True)
                if fields["status"] != 200 or fields["downloaded"] != blob.size or fields["http_version"] != "2":
                    raise BenchError(f"{server.name}: HTTP/2 pull gave {fields}")
                return Sample(mb_per_s(blob.size, fields["seconds"]), fields["seconds"],
                              {"client_cpu_seconds": round(run.cpu, 3), "load1": load1()})

            for server in servers:
                pull(server, -1)
            pairs(w, servers, cfg.reps, pull)
        out.append(w)
    if "h2_blob_push" in selected:
        w = Workload("h2_blob_push", f"(5b) blob push {cfg.blob_size // MiB} MiB monolithic, HTTP/2", "MB/s", True)
        w.notes.append(note + "; the POST that opens the session goes over HTTP/1.1 (Python client) and its time "
                       "is added")
        with measuring(w):
            paths: dict[int, tuple[Blob, Path]] = {}

            def push(server: Server, rep: int) -> Sample:
                if rep not in paths:
                    for _, old in paths.values():
                        old.unlink(missing_ok=True)
                    blob = Blob(base, cfg.blob_size, f"h2-push-{rep}")
                    paths[rep] = (blob, blob.write_to(files / f"push-{rep}"))
                blob, path = paths[rep]
                os.sync()
                with Client(server) as client:
                    location, post_seconds, _ = timed(lambda: client.start_upload(REPO))
                separator = "&" if "?" in location else "?"
                run, fields = curl(server, ["-X", "PUT", "-T", str(path), "-H",
                                            "Content-Type: application/octet-stream"],
                                   f"{location}{separator}digest={blob.digest}", http2=True)
                if fields["status"] != 201 or fields["http_version"] != "2":
                    raise BenchError(f"{server.name}: HTTP/2 push gave {fields}")
                seconds = post_seconds + fields["seconds"]
                return Sample(mb_per_s(blob.size, seconds), seconds,
                              {"client_cpu_seconds": round(run.cpu, 3), "load1": load1()})

            pairs(w, servers, cfg.reps, push)
        out.append(w)
    shutil.rmtree(files, ignore_errors=True)
    return out


# --- (6): the docker CLI ----------------------------------------------------------------------------------


def docker_push_pull(cfg: Settings, engine: Any, servers: list[Server], name: str) -> Workload:
    """`docker push` then (after removing the image) `docker pull` of a fresh image per repetition."""
    total = cfg.docker_layers * cfg.docker_layer_size
    w = Workload("docker_push_pull",
                 f"(6) docker push + pull, {cfg.docker_layers} layers, {total / MiB:.0f} MiB", "s", False,
                 Target("<=", 1.0))
    tls = ("TLS verified against the CA via certs.d" if servers[0].host == "::1"
           else "no IPv6 loopback: dockerd skips TLS verification for 127.0.0.0/8")
    w.notes.append(f"wall time of `docker push` plus `docker pull` (private dockerd, vfs storage driver), a new "
                   f"image per repetition (build untimed), registry addressed as {name}:PORT resolving to "
                   f"{servers[0].host} inside dockerd only, {tls}; auth off")
    from tests.e2e.harness import build_image, image_id

    with measuring(w):
        local: dict[int, str] = {}  # rep -> a local reference of that repetition's image

        def run(server: Server, rep: int) -> Sample:
            source = local.pop(rep, None) or build_image(
                engine, f"bench/src:{rep}", layers=cfg.docker_layers, layer_size=cfg.docker_layer_size,
                seed=1000 + rep)
            ref = f"{name}:{server.port}/bench/app:{rep}"
            engine.run("tag", source, ref)
            os.sync()
            start = time.monotonic()
            out = engine.run("push", ref).stdout
            push_seconds = time.monotonic() - start
            if out.count("Pushed") != cfg.docker_layers:
                raise BenchError(f"{server.name}: docker push did not push every layer:\n{out}")
            # Remove the image under every name so that the pull has to fetch and extract every layer.
            engine.run("rmi", "--force", image_id(engine, ref))
            start = time.monotonic()
            engine.run("pull", ref)
            pull_seconds = time.monotonic() - start
            if rep in seen:
                engine.run("rmi", "--force", image_id(engine, ref))
            else:
                local[rep] = ref  # the other registry of this pair gets the very same image
                seen.add(rep)
            return Sample(push_seconds + pull_seconds, push_seconds + pull_seconds,
                          {"push_seconds": round(push_seconds, 3), "pull_seconds": round(pull_seconds, 3),
                           "load1": load1()})

        seen: set[int] = set()
        pairs(w, servers, cfg.reps, run)
    return w


# --- (7): pulls through the pull-through cache ---------------------------------------------------------


def proxy_pulls(cfg: Settings, proxy: Server, upstream: Server, prefix: str, selected: set[str],
                ceiling: Server | None = None, ceiling_missing: str | None = None) -> list[Workload]:
    """Blob pulls through secreg caching `upstream` (the Go registry) under `prefix`, against pulling the same
    blob straight from the upstream: cold (every repetition a blob the cache has never seen) and warm. With
    `ceiling` (haproxy terminating TLS and re-encrypting to the upstream), the cold repetitions are triples:
    through the cache, through haproxy, direct, in a rotating order; (7c) is haproxy against the direct pull of
    the same triple."""
    size = cfg.blob_size
    out: list[Workload] = []
    base = os.urandom(min(size, 16 * MiB))
    with Client(upstream) as client:
        warm_blob = Blob(base, size, "warm")
        client.push_monolithic(REPO, warm_blob)
        cold_blobs = [Blob(base, size, f"cold-{rep}") for rep in range(cfg.reps + 2)]
        for blob in cold_blobs:
            client.push_monolithic(REPO, blob)
    servers = [proxy, upstream]

    def pull(server: Server, blob: Blob) -> Sample:
        path = f"/v2/{prefix}/{REPO}/blobs/{blob.digest}" if server is proxy else f"/v2/{REPO}/blobs/{blob.digest}"
        tool, fields = curl(server, [], path, http2=False)
        if fields["status"] != 200 or fields["downloaded"] != blob.size:
            raise BenchError(f"{server.name}: pull gave {fields}")
        return Sample(mb_per_s(blob.size, fields["seconds"]), fields["seconds"],
                      {"client_cpu_seconds": round(tool.cpu, 3), "load1": load1()})

    if selected & {"proxy_cold_pull", "proxy_ceiling"}:
        cold = Workload("proxy_cold_pull", f"(7a) cold pull {size // MiB} MiB through the cache vs direct from "
                        "the upstream", "MB/s", True, Target(">=", 0.8))
        cold.notes.append("secreg caching a Go registry (loopback, TLS) under a prefix: each repetition pulls a "
                          "blob the cache has never seen (secreg fetches it from the upstream while streaming it to "
                          "curl); 'go' is curl pulling the same kind of blob directly from that upstream")
        top = Workload("proxy_ceiling", f"(7c) ceiling of any TLS proxy: pull {size // MiB} MiB through haproxy "
                       "vs direct from the upstream", "MB/s", True)
        top.notes.append("reference row, measured in the same triples as (7a): the 'secreg' side is curl pulling "
                         "the blob through haproxy (Debian's, tcp mode: TLS terminated with the same certificate, "
                         "re-encrypted to the Go upstream, whose certificate it verifies), which does strictly "
                         "less than a cache (no hash, no disk write) in optimized C; 'go' is the same triple's "
                         "direct pull. info.cold_over_ceiling: (7a)'s cache pull over haproxy's, per triple")
        if ceiling is None:
            top.status = f"skipped: {ceiling_missing or 'haproxy not started'}"
        unused = iter(cold_blobs)
        with measuring(cold):
            pull(proxy, next(unused))  # warm-up: the cache's upstream connection and token
            pull(upstream, next(unused))
            if ceiling is not None:
                pull(ceiling, warm_blob)
            members = [proxy, upstream] if ceiling is None else [proxy, ceiling, upstream]
            over: list[float] = []
            for rep in range(cfg.reps):
                done: dict[str, Sample] = {}
                for server in members[rep % len(members):] + members[:rep % len(members)]:
                    before, up_before = cpu_seconds(server.pid), cpu_seconds(upstream.pid)
                    sample = pull(server, next(unused) if server is proxy else warm_blob)
                    sample.extra["server_cpu_seconds"] = round(cpu_seconds(server.pid) - before, 3)
                    if server is not upstream:
                        sample.extra["upstream_cpu_seconds"] = round(cpu_seconds(upstream.pid) - up_before, 3)
                    done[server.name] = sample
                cold.add_pair(done[proxy.name], done[upstream.name])
                if ceiling is not None:
                    top.add_pair(done[ceiling.name], done[upstream.name])
                    over.append(done[proxy.name].value / done[ceiling.name].value)
            if over:
                summary = {"median": round(statistics.median(over), 3), "min": round(min(over), 3),
                           "max": round(max(over), 3)}
                cold.info["cold_over_ceiling"] = top.info["cold_over_ceiling"] = summary
                cold.notes.append(f"through the cache over through haproxy, per triple: {summary['median']:.2f} "
                                  f"({summary['min']:.2f}–{summary['max']:.2f}); see (7c)")
        top.elapsed = cold.elapsed
        if ceiling is not None and cold.status != "ok":
            top.status = cold.status  # the triples failed together
        if "proxy_cold_pull" in selected:
            out.append(cold)
        if "proxy_ceiling" in selected:
            out.append(top)
    if "proxy_warm_pull" in selected:
        w = Workload("proxy_warm_pull", f"(7b) warm pull {size // MiB} MiB from the cache vs direct from the "
                     "upstream", "MB/s", True, Target(">=", 1.0))
        w.notes.append("the same blob pulled through the cache after it was cached once (served from secreg's "
                       "storage), against curl pulling it directly from the Go upstream; one untimed pull after "
                       "the fetch, as (1) has after its push: the fetch writes past the page cache, so that first "
                       "read comes from the disk (info.first_read)")
        with measuring(w):
            pull(proxy, warm_blob)  # the fetch from the upstream
            first = pull(proxy, warm_blob)
            w.info["first_read"] = {"mb_per_s": round(first.value, 1), "seconds": round(first.seconds, 3)}
            pull(upstream, warm_blob)
            pairs(w, servers, cfg.reps * PULL_REPS_FACTOR, lambda server, rep: pull(server, warm_blob))
        out.append(w)
    return out
