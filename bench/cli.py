"""`python -m bench`: flags, the phases (which servers each group of workloads needs), the report."""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import growth, small
from bench import workloads as wl
from bench.client import BenchError, Client, MiB, have, random_base
from bench.results import SCHEMA, Target, Workload, machine, markdown_notes, markdown_table, versions, write_json
from bench.servers import (
    GO_REGISTRY_ENV,
    RssSampler,
    Server,
    go_registry_binary,
    go_registry_version,
    go_token_auth,
    haproxy_binary,
    make_certificates,
    start_go,
    start_haproxy,
    start_secreg,
)
from secreg.tls import CertificateFiles

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"
DOCKER_NAME = "registry.bench.test"  # resolves to the registries' address inside the private dockerd only

AUTH_EXTRA = ["manifest_head", "manifest_get_digest", "manifest_head_digest", "token_basic"]
H2_EXTRA = ["h2_small_requests", "h2_pull_vs_h1", "h2_push_vs_h1", "h2_pull_vs_h1_curl", "h2_push_vs_h1_curl"]
GROWTH = [
    "catalog_page", "catalog_page_growth", "tags_page", "tags_page_growth", "mount_no_from",
    "mount_no_from_growth", "manifest_get_store", "manifest_get_store_growth", "gc_store", "gc_store_growth",
]
ORDER = [
    "blob_pull", "blob_push", "blob_push_chunked",
    "manifest_get", "v2_get", *AUTH_EXTRA,
    "h2_blob_pull", "h2_blob_push", *H2_EXTRA,
    "docker_push_pull",
    "rss_blob_workloads", "rss_1gib_push",
    "proxy_cold_pull", "proxy_warm_pull", "proxy_ceiling",
    *GROWTH,
]
EXTRA = ["manifest_get_open", "v2_get_open"]  # without auth; only with --only
BLOB_PHASE = {"blob_pull", "blob_push", "blob_push_chunked", "rss_blob_workloads", "rss_1gib_push"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--reps", type=int, default=None, help="repetitions per workload and registry (default 5)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one repetition, 1 s load runs (the smoke test uses this)")
    p.add_argument("--only", default="", help=f"comma-separated workloads: {','.join(ORDER + EXTRA)}")
    p.add_argument("--duration", type=float, default=None, help="seconds per wrk run (default 15)")
    p.add_argument("--connections", type=int, default=None, help="wrk connections (default 32)")
    p.add_argument("--blob-mib", type=int, default=None, help="blob size for (1)-(3), (5b) (default 256)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file (default {DEFAULT_OUTPUT})")
    p.add_argument("--workdir", type=Path, help="where servers keep their files (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (server logs) afterwards")
    args = p.parse_args(argv)
    selected = [n.strip() for n in args.only.split(",") if n.strip()] or list(ORDER)
    unknown = [n for n in selected if n not in ORDER + EXTRA]
    if unknown:
        p.error(f"unknown workload(s): {', '.join(unknown)}; choose from {', '.join(ORDER + EXTRA)}")
    args.selected = selected
    return args


def settings_from(args: argparse.Namespace, workdir: Path) -> wl.Settings:
    quick = args.quick
    blob = (args.blob_mib or (8 if quick else 256)) * MiB
    return wl.Settings(
        reps=args.reps or (1 if quick else 5),
        quick=quick,
        blob_size=blob,
        chunk_size=min(blob, (2 if quick else 16) * MiB),
        big_size=(32 if quick else 1024) * MiB,
        duration=args.duration or (1 if quick else 15),
        connections=args.connections or (4 if quick else 32),
        docker_layers=5,
        docker_layer_size=(256 * 1024) if quick else 20 * MiB,
        workdir=workdir,
    )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summary_line(w: Workload) -> str:
    data = w.to_json()
    if w.status != "ok":
        return f"{w.name}: {w.status}"
    ratio = data["ratio_median"]
    return (f"{w.name}: secreg {data['secreg']['median']:.4g} {w.unit}, Go {data['go']['median']:.4g} {w.unit}, "
            f"ratio {ratio:.2f} ({w.elapsed:.0f} s)" if ratio is not None else f"{w.name}: no ratio")


# --- auth -------------------------------------------------------------------------------------------------


class AuthUnavailable(Exception):
    """secreg does not issue tokens (auth not wired in, or no admin password printed)."""


def _default_workers() -> int:
    from secreg.config import load_settings

    return load_settings(None, None, base_dir=Path.cwd()).workers


def fetch_token(server: Server, scope: str) -> str:
    credentials = base64.b64encode(f"admin:{server.admin_password}".encode()).decode()
    query = urllib.parse.urlencode({"service": "secreg", "scope": scope})
    with Client(server) as client:
        r = client.request("GET", f"/auth/token?{query}", headers={"Authorization": f"Basic {credentials}"})
    if r.status != 200:
        raise AuthUnavailable(f"GET /auth/token answered {r.status}")
    document = json.loads(r.body)
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        raise AuthUnavailable("the token endpoint returned no token")
    return token


def check_auth(secreg: Server) -> None:
    if secreg.admin_password is None:
        raise AuthUnavailable("secreg printed no admin password")
    with Client(secreg) as client:
        status = client.request("GET", "/v2/").status
    if status != 401:
        raise AuthUnavailable(f"GET /v2/ without a token answered {status}, not 401")
    fetch_token(secreg, f"repository:{wl.REPO}:pull")


# --- phases -----------------------------------------------------------------------------------------------


class Tokens:
    """A bearer token for `scope` from secreg's token server, fetched again once it is `max_age` s old (tokens
    live `auth.token.expiration`, 300 s by default: renewed well before that). Call it for the current one."""

    def __init__(self, server: Server, scope: str, max_age: float = 120.0) -> None:
        self.server, self.scope, self.max_age = server, scope, max_age
        self._token, self._at = "", 0.0

    def __call__(self) -> str:
        if not self._token or time.monotonic() - self._at > self.max_age:
            self._token = fetch_token(self.server, self.scope)
            self._at = time.monotonic()
        return self._token


def blob_phase(
    cfg: wl.Settings, files: CertificateFiles, base: bytes, selected: set[str], out: dict[str, Workload]
) -> None:
    """(1)-(3) and (7) with secreg's default settings, auth on: both registries take secreg's bearer tokens
    (the Go registry verifying them with `auth.token`, as in the auth phase)."""
    with start_secreg(cfg.workdir / "blobs-secreg", files, auth=True) as secreg:
        check_auth(secreg)
        with (
            start_go(cfg.workdir / "blobs-go", files, extra=go_token_auth(secreg)) as go,
            RssSampler([secreg, go]) as rss,
        ):
            servers = [secreg, go]
            token = Tokens(secreg, f"repository:{wl.REPO}:pull,push")
            steps: list[tuple[str, Callable[[], Workload]]] = [
                ("blob_pull", lambda: wl.blob_pull(cfg, servers, base, rss, token)),
                ("blob_push", lambda: wl.blob_push(cfg, servers, base, rss, token)),
                ("blob_push_chunked", lambda: wl.blob_push_chunked(cfg, servers, base, rss, token)),
                ("rss_1gib_push", lambda: wl.rss_big_push(cfg, servers, base, rss, token)),
            ]
            for name, step in steps:
                if name in selected:
                    run_step(name, step, out)
            if "rss_blob_workloads" in selected:
                out["rss_blob_workloads"] = wl.rss_blob_workloads(
                    [out[n] for n in ("blob_pull", "blob_push", "blob_push_chunked") if n in out])


def open_phase(
    cfg: wl.Settings, files: CertificateFiles, base: bytes, selected: set[str], out: dict[str, Workload]
) -> None:
    """Small requests without auth (only with --only): both registries with auth off."""
    with (
        start_secreg(cfg.workdir / "open-secreg", files) as secreg,
        start_go(cfg.workdir / "open-go", files) as go,
    ):
        servers = [secreg, go]
        wl.put_test_manifest(servers, base, None)
        open_steps = [
            ("manifest_get_open", lambda: wl.small_requests(
                cfg, servers, "manifest_get_open", "manifest GET by tag, no auth",
                f"/v2/{wl.REPO}/manifests/latest", wl.no_token, None)),
            ("v2_get_open", lambda: wl.small_requests(
                cfg, servers, "v2_get_open", "GET /v2/, no auth", "/v2/", wl.no_token, None)),
        ]
        for name, step in open_steps:
            if name in selected:
                run_step(name, step, out)


def auth_phase(
    cfg: wl.Settings, files: CertificateFiles, base: bytes, selected: set[str], out: dict[str, Workload]
) -> None:
    wanted = [n for n in ("manifest_get", "v2_get", *AUTH_EXTRA) if n in selected]
    titles = {
        "manifest_get": f"(4) manifest GET by tag, {cfg.connections} conns, bearer token",
        "v2_get": f"(5) GET /v2/, {cfg.connections} conns, bearer token",
    } | {name: name for name in AUTH_EXTRA}
    with start_secreg(cfg.workdir / "auth-secreg", files, auth=True) as secreg:
        try:
            check_auth(secreg)
        except (AuthUnavailable, BenchError, OSError) as exc:
            for name in wanted:
                out[name] = Workload(name, titles[name], "req/s", True, status=f"skipped: auth not available ({exc})")
                log(summary_line(out[name]))
            return
        with start_go(cfg.workdir / "auth-go", files, extra=go_token_auth(secreg)) as go:
            servers = [secreg, go]
            push_token = fetch_token(secreg, f"repository:{wl.REPO}:pull,push")
            digest = wl.put_test_manifest(servers, base, push_token)
            pull_token = Tokens(secreg, f"repository:{wl.REPO}:pull")

            paths = {"manifest_get": f"/v2/{wl.REPO}/manifests/latest", "v2_get": "/v2/"}
            targets = {"manifest_get": Target(">=", 1.2), "v2_get": Target(">=", 1.2)}
            for name in [n for n in wanted if n in paths]:
                run_step(name, lambda n=name: wl.small_requests(  # type: ignore[misc]
                    cfg, servers, n, titles[n], paths[n], pull_token, targets[n]), out)
            for w in small.manifest_variants(cfg, servers, pull_token, digest, selected):
                out[w.name] = w
                log(summary_line(w))
            if "token_basic" in selected:
                run_step("token_basic", lambda: small.token_basic(cfg, secreg, pull_token), out)


def h2_phase(
    cfg: wl.Settings, files: CertificateFiles, base: bytes, selected: set[str], out: dict[str, Workload]
) -> None:
    with (
        start_secreg(cfg.workdir / "h2-secreg", files, http2=True) as secreg,
        start_go(cfg.workdir / "h2-go", files) as go,
    ):
        start = time.monotonic()
        for w in wl.h2_blobs(cfg, [secreg, go], base, selected):
            out[w.name] = w
            log(summary_line(w))
        if "h2_small_requests" in selected:
            wl.put_test_manifest([secreg, go], base, None)
            run_step("h2_small_requests", lambda: small.h2_small_requests(cfg, [secreg, go]), out)
        for w in small.h2_blobs_vs_h1(cfg, secreg, base, selected):
            out[w.name] = w
            log(summary_line(w))
        log(f"HTTP/2 phase took {time.monotonic() - start:.0f} s")


def growth_phase(cfg: wl.Settings, files: CertificateFiles, selected: set[str], out: dict[str, Workload]) -> None:
    large_sizes = growth.QUICK_LARGE if cfg.quick else growth.LARGE
    start = time.monotonic()
    small = growth.build_store(cfg.workdir / "growth-small", growth.SMALL)
    large = growth.build_store(cfg.workdir / "growth-large", large_sizes)
    log(f"growth stores written in {time.monotonic() - start:.0f} s ({large_sizes})")
    with contextlib.ExitStack() as stack:
        served = []
        for store in (small, large):
            label = store.root.name
            secreg = stack.enter_context(start_secreg(cfg.workdir / f"{label}-secreg", files, storage=store.root))
            go = stack.enter_context(start_go(cfg.workdir / f"{label}-go", files, extra={
                "storage": {"filesystem": {"rootdirectory": str(store.root)}}}))
            served.append((store, [secreg, go]))
        for w in growth.page_workloads(cfg.reps, served[0], served[1], selected):
            out[w.name] = w
            log(summary_line(w))
    if selected & {"gc_store", "gc_store_growth"}:
        for w in growth.gc_workloads(max(1, min(cfg.reps, 3)), small, large, cfg.workdir, selected):
            out[w.name] = w
            log(summary_line(w))


def docker_phase(cfg: wl.Settings, files: CertificateFiles, out: dict[str, Workload]) -> None:
    from tests.e2e.harness import ipv6_loopback_available, start_docker_engine, trust_ca

    title = f"(6) docker push + pull, {cfg.docker_layers} layers"
    missing = [tool for tool in ("docker", "dockerd") if not have(tool)]
    if missing or os.geteuid() != 0:
        reason = f"{', '.join(missing)} not installed" if missing else "dockerd needs root"
        out["docker_push_pull"] = Workload("docker_push_pull", title, "s", False, status=f"skipped: {reason}")
        return
    host = "::1" if ipv6_loopback_available() else "127.0.0.1"
    with contextlib.ExitStack() as stack:
        try:
            engine = stack.enter_context(start_docker_engine(cfg.workdir / "docker", hosts={DOCKER_NAME: host}))
        except Exception as exc:  # the engine is optional: report why it is missing, run the rest
            out["docker_push_pull"] = Workload("docker_push_pull", title, "s", False,
                                               status=f"skipped: docker engine did not start ({str(exc)[:300]})")
            return
        secreg = stack.enter_context(start_secreg(cfg.workdir / "docker-secreg", files, host=host))
        go = stack.enter_context(start_go(cfg.workdir / "docker-go", files, host=host))
        for server in (secreg, go):
            stack.enter_context(trust_ca(files.ca_cert, f"{DOCKER_NAME}:{server.port}"))
        run_step("docker_push_pull", lambda: wl.docker_push_pull(cfg, engine, [secreg, go], DOCKER_NAME), out)


PROXY_PHASE = {"proxy_cold_pull", "proxy_warm_pull", "proxy_ceiling"}


def proxy_phase(cfg: wl.Settings, files: CertificateFiles, selected: set[str], out: dict[str, Workload]) -> None:
    """secreg as a pull-through cache of a Go registry (both on loopback, one CA)."""
    with start_go(cfg.workdir / "proxy-upstream", files) as upstream:
        cache = {"proxy": {"upstreams": [{"name": "up", "url": upstream.url, "ca": str(files.ca_cert),
                                          "prefix": "up"}]}}
        with contextlib.ExitStack() as stack:
            proxy = stack.enter_context(start_secreg(cfg.workdir / "proxy-secreg", files, extra=cache))
            ceiling, missing = None, None
            if "proxy_ceiling" in selected:
                if haproxy_binary() is None:
                    missing = "haproxy not installed"
                else:  # the reference: a TLS proxy doing less than a cache, in C (stopped by PID with the stack)
                    ceiling = stack.enter_context(start_haproxy(cfg.workdir / "proxy-haproxy", files, upstream))
            for w in wl.proxy_pulls(cfg, proxy, upstream, "up", selected, ceiling, missing):
                out[w.name] = w
                log(summary_line(w))


def guarded(names: set[str], phase: Callable[[], None], out: dict[str, Workload]) -> None:
    """A phase that cannot even start its servers marks its workloads as errors; the others still run."""
    try:
        phase()
    except Exception as exc:  # report it in the table and the JSON, keep going
        log(f"phase failed: {type(exc).__name__}: {exc}")
        for name in sorted(names - set(out)):
            out[name] = Workload(name, name, "", True, status=f"error: {type(exc).__name__}: {exc}"[:2000])


def run_step(name: str, step: Callable[[], Workload], out: dict[str, Workload]) -> None:
    log(f"{name} ...")
    w = step()
    out[name] = w
    log(summary_line(w))


@contextlib.contextmanager
def work_directory(requested: Path | None, keep: bool) -> Iterator[Path]:
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="secreg-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"work directory kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# The targets against distribution 3.x, and what they mean against 2.8.2 (3.x serves small requests
# ~3x and takes pushes ~1.3x faster than 2.8.2 here): (3.x target, 2.8.2 target).
RELATIVE_TARGETS = {
    "manifest_get": (1.2, 3.5), "v2_get": (1.2, 3.5), "manifest_head": (1.2, 3.5),
    "manifest_get_digest": (1.2, 3.5), "manifest_head_digest": (1.2, 3.5),
    "blob_push": (1.5, 2.0), "blob_push_chunked": (1.5, 2.0),
}


def retarget(workloads: dict[str, Workload], go_version: str | None) -> str:
    """Set the ratio targets for the Go registry the run compared with; returns which set was used."""
    generation = "3.x" if go_version and re.search(r"(^|[^\d.])v?3\.\d", go_version) else "2.8.2"
    for name, (v3, v2) in RELATIVE_TARGETS.items():
        if name in workloads:
            workloads[name].target = Target(">=", v3 if generation == "3.x" else v2)
    return generation


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = set(args.selected)
    go_binary = go_registry_binary()
    if go_binary is None:
        chosen = os.environ.get(GO_REGISTRY_ENV, "").strip()
        print(f"bench: {GO_REGISTRY_ENV}={chosen} is not an executable" if chosen else
              "bench: docker-registry (the Go reference registry, Debian package docker-registry) is not "
              f"installed; or name a distribution build with {GO_REGISTRY_ENV}=/path/to/registry", file=sys.stderr)
        return 2
    go_version = go_registry_version(go_binary)
    log(f"comparing with {go_binary} ({go_version})")
    started = time.time()
    out: dict[str, Workload] = {}
    with work_directory(args.workdir, args.keep) as workdir:
        cfg = settings_from(args, workdir)
        certs = make_certificates(workdir / "certs", [DOCKER_NAME])
        base = random_base(min(cfg.blob_size, 16 * MiB))
        names = ", ".join(n for n in ORDER + EXTRA if n in selected)
        log(f"reps {cfg.reps}, blob {cfg.blob_size // MiB} MiB, workloads: {names}")
        phases: list[tuple[set[str], Callable[[], None]]] = [
            (BLOB_PHASE, lambda: blob_phase(cfg, certs, base, selected, out)),
            (set(EXTRA), lambda: open_phase(cfg, certs, base, selected, out)),
            ({"manifest_get", "v2_get", *AUTH_EXTRA}, lambda: auth_phase(cfg, certs, base, selected, out)),
            ({"h2_blob_pull", "h2_blob_push", *H2_EXTRA}, lambda: h2_phase(cfg, certs, base, selected, out)),
            ({"docker_push_pull"}, lambda: docker_phase(cfg, certs, out)),
            (PROXY_PHASE, lambda: proxy_phase(cfg, certs, selected, out)),
            (set(GROWTH), lambda: growth_phase(cfg, certs, selected, out)),
        ]
        for wanted, phase in phases:
            if selected & wanted:
                guarded(selected & wanted, phase, out)
    targets_for = retarget(out, go_version)
    ordered = [out[n] for n in ORDER + EXTRA if n in out]
    table = markdown_table(ordered)
    notes = markdown_notes(ordered)
    document = {
        "schema": SCHEMA,
        "started_at": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(),
        "duration_seconds": round(time.time() - started, 1),
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "settings": {
            "reps": cfg.reps, "quick": cfg.quick, "blob_bytes": cfg.blob_size, "chunk_bytes": cfg.chunk_size,
            "big_push_bytes": cfg.big_size, "wrk_seconds": cfg.duration, "wrk_connections": cfg.connections,
            "docker_layers": cfg.docker_layers, "docker_layer_bytes": cfg.docker_layer_size,
            "order": "pairs back to back; secreg first in even repetitions, Go first in odd ones",
            "ratio": "secreg/Go per pair, then median (and min, max) of those ratios",
            "secreg": "python -m secreg serve, default workers and settings (auth on), fresh storage; auth off "
                      "for (5b), (6), the pull-through cache (7a)-(7c) and the store-growth rows (9)",
            "secreg_auth": {"(1)-(3), (7) peak RSS": True, "(4), (5), (4b), (5c)": True, "(5b), (5d), (5e)": False,
                            "(6) docker": False, "(7a)-(7c) cache": False, "(9) growth": False,
                            "*_open (--only)": False},
            "go_auth": "auth.token verifying secreg's tokens (bench.servers.go_token_auth) wherever secreg has auth on",
            "secreg_workers": _default_workers(),  # what `secreg serve` starts with default settings
            "go": f"{go_binary} serve via tests/e2e/harness.start_go_registry (its default log settings)",
            "go_registry_binary": go_binary,
            "go_registry_version": go_version,
            "targets_for": targets_for,
        },
        "machine": machine(),
        "versions": versions(go_version),
        "workloads": {w.name: w.to_json() for w in ordered},
        "table": table,
        "notes": notes,
    }
    write_json(args.output, document)
    print(table)
    print()
    print(notes)
    log(f"wrote {args.output} ({document['duration_seconds']:.0f} s)")
    return 1 if any(w.status.startswith("error") for w in ordered) else 0
