"""/healthz, /readyz and /metrics on real servers over TLS; read-only maintenance mode from the environment."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from secreg.app import create_app
from secreg.auth.wiring import token_check
from secreg.config import load_settings
from secreg.observability import metrics as metrics_module
from secreg.observability.metrics import Metrics
from tests.auth.test_auth_registry import add_user
from tests.oci import error_code, push_image, sha256
from tests.server import RunningServer, run_secreg, token, worker_environment

OPEN = {"auth": {"enabled": False}}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: RunningServer, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of /metrics as {(name, labels): value}, parsed by prometheus_client's own parser."""
    with server.client(headers=headers or {}) as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Authed:
    server: RunningServer

    def token(self, user: str, password: str, *scopes: str) -> str:
        return token(self.server, user, password, *scopes)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("ops"), {}) as running:
        add_user(running, "alice", "alice-password")
        yield running


# --- health ------------------------------------------------------------------------------------------


def test_healthz_and_readyz_need_no_credentials(server: RunningServer) -> None:
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"storage": "ok", "token_key": "ok"}}
    assert ready.headers["cache-control"] == "no-store"
    probe_dir = server.storage / "docker" / "registry" / "v2" / "_readyz"
    assert probe_dir.is_dir() and not list(probe_dir.iterdir())  # written, read, deleted
    assert not (server.storage / "docker" / "registry" / "v2" / "repositories" / "_readyz").exists()


def test_readyz_names_the_failing_storage_check(tmp_path: Path) -> None:
    with run_secreg(tmp_path, OPEN) as running, running.client() as client:
        assert client.get("/readyz").json() == {"status": "ok", "checks": {"storage": "ok"}}
        probe_dir = running.storage / "docker" / "registry" / "v2" / "_readyz"
        probe_dir.rmdir()
        probe_dir.write_text("a file where the probe needs a directory")  # root ignores permissions
        failing = client.get("/readyz")
        assert failing.status_code == 503
        assert failing.json()["status"] == "unavailable"
        assert failing.json()["checks"]["storage"].startswith("failed: ")
        assert str(running.storage) not in failing.text  # no paths on a public endpoint
        assert client.get("/healthz").status_code == 200  # alive, just not ready
        probe_dir.unlink()
        assert client.get("/readyz").status_code == 200
    assert "readyz: storage probe failed" in running.log()


def test_token_check_fails_when_no_key_can_sign() -> None:
    assert token_check(None, None)() == "failed: no token key loaded"

    def broken(subject: str, access: list[object]) -> None:
        raise ValueError("key gone")

    service = SimpleNamespace(issuer=SimpleNamespace(issue=broken))
    assert token_check(service, None)() == "failed: cannot sign (ValueError)"  # type: ignore[arg-type]


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_template_with_bytes_and_latency(server: RunningServer) -> None:
    authed = Authed(server)
    before = scrape(server)
    alice = authed.token("alice", "alice-password", "repository:alice/app:pull,push")
    with server.client(headers={"Authorization": f"Bearer {alice}"}) as client:
        push_image(client, "alice/app", "1.0", seed="metrics")
        data = b"m" * 100_000
        digest = sha256(data)
        assert client.post("/v2/alice/app/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201
        assert client.get(f"/v2/alice/app/blobs/{digest}").content == data
    with server.client() as client:
        assert client.get("/v2/").status_code == 401
        assert client.get("/v2/", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        assert client.get("/auth/token", auth=("alice", "wrong")).status_code == 401
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    upload_route = "/v2/{name:path}/blobs/uploads/"
    blob_route = "/v2/{name:path}/blobs/{digest}"
    assert delta("secreg_http_requests_total", route=upload_route, method="POST", status="201") == 4
    assert delta("secreg_http_requests_total", route=blob_route, method="GET", status="200") == 1
    assert delta("secreg_http_requests_total", route="/v2/", method="GET", status="401") == 2
    assert not [k for k in after if ("route", "/v2/alice/app/blobs/uploads/") in k[1]]  # never raw paths
    assert delta("secreg_http_received_bytes_total", route=upload_route, method="POST") >= len(data)
    assert delta("secreg_http_sent_bytes_total", route=blob_route, method="GET") == len(data)
    assert delta("secreg_http_request_duration_seconds_count", route=blob_route, method="GET") == 1
    assert value(after, "secreg_http_request_duration_seconds_bucket", route=blob_route, method="GET",
                 le="+Inf") >= 1
    assert delta("secreg_auth_failures_total", reason="invalid_token") == 1
    assert delta("secreg_auth_failures_total", reason="bad_credentials") == 1
    assert value(after, "secreg_uploads_in_progress") == 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_uploads_in_progress_while_a_body_streams(server: RunningServer) -> None:
    token = Authed(server).token("alice", "alice-password", "repository:alice/slow:pull,push")
    release = threading.Event()
    started = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"x" * 1024
        started.set()
        release.wait(30)
        yield b"y" * 1024

    result: list[int] = []

    def upload() -> None:
        with server.client(headers={"Authorization": f"Bearer {token}"}) as client:
            location = client.post("/v2/alice/slow/blobs/uploads/").headers["Location"]
            result.append(client.patch(location, content=body()).status_code)

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        assert started.wait(30)
        deadline = time.monotonic() + 60
        while value(scrape(server), "secreg_uploads_in_progress") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert value(scrape(server), "secreg_uploads_in_progress") == 1
    finally:
        release.set()
        thread.join(30)
    assert result == [202]
    assert value(scrape(server), "secreg_uploads_in_progress") == 0


def test_metrics_token_is_required_when_configured(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {**OPEN, "metrics": {"token": "s3cret-scrape-token"}}) as running:
        with running.client() as client:
            assert client.get("/metrics").status_code == 401
            wrong = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-tokeX"})
            assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        samples = scrape(running, {"Authorization": "Bearer s3cret-scrape-token"})
    assert value(samples, "secreg_http_requests_total", route="/metrics", method="GET", status="401") == 2


@pytest.mark.parametrize(("client_host", "status"), [("203.0.113.7", 403), ("2001:db8::1", 403),
                                                     ("127.0.0.5", 200), ("::1", 200), ("::ffff:127.0.0.1", 200)])
def test_without_a_token_only_loopback_clients_may_scrape(tmp_path: Path, client_host: str, status: int) -> None:
    # In process (httpx's ASGI transport): no packet leaves the machine, the client address is what we say.
    settings = load_settings(None, {**OPEN, "storage": {"filesystem": {"rootdirectory": str(tmp_path)}}},
                             environ={})
    transport = httpx.ASGITransport(app=create_app(settings), client=(client_host, 40000))

    async def get() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="https://registry.test") as client:
            return (await client.get("/metrics")).status_code

    assert anyio.run(get) == status


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {**OPEN, "metrics": {"enabled": False}}) as running, running.client() as client:
        assert client.get("/metrics").status_code == 404


def test_record_gc_counts_runs_and_freed_bytes() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.record_gc(SimpleNamespace(dry_run=False, bytes_freed=1500, blobs_removed=(1, 2, 3), duration=2.5))
    metrics.record_gc(SimpleNamespace(dry_run=True, bytes_freed=999, blobs_removed=(1,), duration=1.0))
    metrics.record_gc_failure()
    registry = metrics.registry
    assert registry.get_sample_value("secreg_gc_runs_total", {"result": "ok"}) == 1
    assert registry.get_sample_value("secreg_gc_runs_total", {"result": "dry_run"}) == 1
    assert registry.get_sample_value("secreg_gc_runs_total", {"result": "failed"}) == 1
    assert registry.get_sample_value("secreg_gc_freed_bytes_total") == 1500
    assert registry.get_sample_value("secreg_gc_removed_blobs_total") == 3
    assert registry.get_sample_value("secreg_gc_last_duration_seconds") == 1.0
    assert (registry.get_sample_value("secreg_gc_last_run_timestamp_seconds") or 0) > time.time() - 60


def test_the_process_id_the_metrics_files_are_named_by_is_renewed_in_a_forked_child() -> None:
    # With several workers prometheus_client asks `_process_id` instead of os.getpid() on every update of a value.
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, str(metrics_module._process_id()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read, "rb") as answer:
        assert int(answer.read()) == child
    assert metrics_module._process_id() == os.getpid()


def _ping_counts(directory: Path) -> dict[str, float]:
    """GET /v1/_ping requests each worker counted, from its own file in the shared directory."""
    counts: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        for key, count, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if "secreg_http_requests" in key and '"/v1/_ping"' in key:
                counts[pid] = counts.get(pid, 0.0) + count
    return counts


def test_workers_share_their_metrics(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {**OPEN, "http": {"workers": 2}}) as running:
        shared = Path(worker_environment(running.process.pid)["PROMETHEUS_MULTIPROC_DIR"])
        sent = 0
        while sent < 300 and len(_ping_counts(shared)) < 2:  # until both workers have answered some
            for _ in range(10):  # a new connection each: the kernel spreads them over the workers
                with running.client() as client:
                    assert client.get("/v1/_ping").status_code == 200
                sent += 1
        per_worker = _ping_counts(shared)
        counts = [value(scrape(running), "secreg_http_requests_total", route="/v1/_ping", method="GET",
                        status="200") for _ in range(6)]
    assert len(per_worker) >= 2 and sum(per_worker.values()) == sent, per_worker
    assert counts == [float(sent)] * 6  # whichever worker answers the scrape, it reports the sum
    assert not shared.exists()  # removed when secreg serve exits


# --- maintenance mode --------------------------------------------------------------------------------


def test_readonly_from_the_environment_keeps_pulls_and_tokens_working(tmp_path: Path) -> None:
    with run_secreg(tmp_path / "first", {}) as running:
        add_user(running, "alice", "alice-password")
        token = Authed(running).token("alice", "alice-password", "repository:alice/ro:pull,push")
        with running.client(headers={"Authorization": f"Bearer {token}"}) as client:
            push_image(client, "alice/ro", "1.0", seed="ro")
    workdir = running.workdir
    env = {"SECREG_STORAGE_MAINTENANCE_READONLY_ENABLED": "true"}
    with run_secreg(workdir, {}, env=env) as readonly:
        authed = Authed(readonly)
        pull = authed.token("alice", "alice-password", "repository:alice/ro:pull")
        push = authed.token("alice", "alice-password", "repository:alice/ro:pull,push")
        for token in (pull, push):
            with readonly.client(headers={"Authorization": f"Bearer {token}"}) as client:
                assert client.get("/v2/alice/ro/tags/list").json()["tags"] == ["1.0"]
                manifest = client.get("/v2/alice/ro/manifests/1.0",
                                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
                assert manifest.status_code == 200
        with readonly.client(headers={"Authorization": f"Bearer {push}"}) as client:
            refused = client.post("/v2/alice/ro/blobs/uploads/")
            assert refused.status_code == 405 and error_code(refused) == "UNSUPPORTED"
            assert "read-only" in refused.json()["errors"][0]["message"]
            refused = client.put("/v2/alice/ro/manifests/2.0", content=manifest.content,
                                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            assert refused.status_code == 405
            ready = client.get("/readyz")
    assert ready.status_code == 200  # read-only is a mode, not a failure
