"""Manifests kept in memory by tag and by digest (secreg/registry/tagcache.py) against a real two-worker server
over TLS: a deletion or a new push through one worker is answered at once by the other, with the max age set so
long that only the shared change counters can tell it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.oci import OCI_MANIFEST, push_image
from tests.server import RunningServer, run_secreg

_START = re.compile(r"^process_start_time_seconds (\S+)$", re.M)
ACCEPT = {"Accept": OCI_MANIFEST}


def _worker_of(client: httpx.Client) -> str:
    match = _START.search(client.get("/metrics").text)
    assert match, "no process_start_time_seconds in /metrics"
    return match.group(1)


def _one_client_per_worker(server: RunningServer) -> list[httpx.Client]:
    """A kept-open connection on each of the two workers (told apart by their process metrics)."""
    kept: dict[str, httpx.Client] = {}
    opened: list[httpx.Client] = []
    for _ in range(200):
        client = server.client(limits=httpx.Limits(max_connections=1))
        opened.append(client)
        kept.setdefault(_worker_of(client), client)
        if len(kept) == 2:
            for other in opened:
                if other not in kept.values():
                    other.close()
            return list(kept.values())
    for client in opened:
        client.close()
    raise AssertionError("200 connections never reached both workers")


def _answers(clients: list[httpx.Client], reference: str) -> list[tuple[int, int]]:
    """(GET status, HEAD status) of `reference` from each worker."""
    path = f"/v2/mem/app/manifests/{reference}"
    return [(c.get(path, headers=ACCEPT).status_code, c.head(path, headers=ACCEPT).status_code) for c in clients]


def test_a_manifest_deleted_through_one_worker_is_gone_from_the_other_at_once(tmp_path: Path) -> None:
    config = {"auth": {"enabled": False}, "storage": {"delete": {"enabled": True}, "cache": {"tagmaxage": 3600}},
              "http": {"workers": 2}}
    with run_secreg(tmp_path, config) as server:
        clients = _one_client_per_worker(server)
        try:
            writer = clients[0]
            digest, body = push_image(writer, "mem/app", "v1")
            for client in clients:  # both workers have it in memory now, by tag and by digest
                for reference in ("v1", digest):
                    r = client.get(f"/v2/mem/app/manifests/{reference}", headers=ACCEPT)
                    assert (r.status_code, r.content, r.headers["Docker-Content-Digest"]) == (200, body, digest)
            assert writer.delete(f"/v2/mem/app/manifests/{digest}").status_code == 202
            assert _answers(clients, digest) == [(404, 404)] * 2
            assert _answers(clients, "v1") == [(404, 404)] * 2  # its tag went with it

            assert push_image(writer, "mem/app", "v1")[0] == digest  # pushed again: found again by both
            assert _answers(clients, digest) == [(200, 200)] * 2
            assert clients[1].delete(f"/v2/mem/app/manifests/{digest}").status_code == 202  # the other way round
            assert _answers(clients, digest) == [(404, 404)] * 2
        finally:
            for client in clients:
                client.close()
