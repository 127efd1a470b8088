"""The upstream client against real registries over TLS: Basic (Go registry, htpasswd) and the Bearer token
flow (secreg), token reuse, errors, HTTPS-only redirects."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from secreg.config.proxy import Upstream as UpstreamSettings
from secreg.digest import Digest
from secreg.proxy.metrics import ProxyMetrics
from secreg.proxy.upstream import UpstreamClient, UpstreamError, UpstreamNotFound, _safe_url, parse_challenge
from tests.oci import OCI_MANIFEST

from .upstreams import Pusher, Upstream, random_bytes

ACCEPT = [OCI_MANIFEST]


def client_for(upstream: Upstream, *, credentials: bool = True, ca: Path | None = None) -> UpstreamClient:
    settings = UpstreamSettings(
        name="up", url=upstream.url, prefix="up", ttl=60, ca=ca or upstream.ca,
        username=upstream.username if credentials else "", password=upstream.password if credentials else "",
    )
    return UpstreamClient(settings, ProxyMetrics(CollectorRegistry()))


class _Collected:
    """A download's sink that keeps every byte (in pieces of at most 64 KiB, smaller than the TLS reads)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._buffer = memoryview(bytearray(64 * 1024))

    def buffer(self) -> memoryview:
        return self._buffer

    def room(self) -> int:
        return len(self._buffer)

    def received(self, count: int) -> None:
        self.data += self._buffer[:count]


async def _pull(client: UpstreamClient, name: str, tag: str) -> tuple[bytes, bytes]:
    head = await client.head_manifest(name, tag, ACCEPT)
    fetched = await client.get_manifest(name, tag, ACCEPT)
    assert head.digest == fetched.digest == Digest.of(fetched.content)
    layer = json.loads(fetched.content)["layers"][0]
    digest = Digest.parse(layer["digest"])
    assert await client.head_blob(name, digest) == layer["size"]
    sink = _Collected()
    async with client.open_blob(name, digest) as body:
        size = body.size
        await body.copy(sink, lambda total: None)
    data = bytes(sink.data)
    assert size == len(data)
    return fetched.content, data


@pytest.mark.parametrize("which", ["go", "secreg"])
def test_pulls_through_the_upstreams_auth(which: str, request: pytest.FixtureRequest) -> None:
    upstream: Upstream = request.getfixturevalue("go_hub" if which == "go" else "token_upstream")
    pusher: Pusher = request.getfixturevalue("go_pusher" if which == "go" else "token_pusher")
    layer = random_bytes(300_000, seed=1)
    pusher.image("team/app", "v1", [layer])
    pusher.image("team/other", "v1", [random_bytes(1000, seed=2)])

    async def run() -> None:
        client = client_for(upstream)
        try:
            _, data = await _pull(client, "team/app", "v1")
            assert data == layer
            await _pull(client, "team/other", "v1")
            if which == "secreg":
                # One token per repository scope, reused for every request of that repository.
                assert client.token_fetches == 2
                await _pull(client, "team/app", "v1")
                assert client.token_fetches == 2
            with pytest.raises(UpstreamNotFound):
                await client.get_manifest("team/app", "no-such-tag", ACCEPT)
        finally:
            await client.aclose()

    asyncio.run(run())
    assert upstream.password not in upstream.log()


@pytest.mark.parametrize("which", ["go", "secreg"])
def test_wrong_or_missing_credentials_are_an_upstream_error(which: str, request: pytest.FixtureRequest) -> None:
    upstream: Upstream = request.getfixturevalue("go_hub" if which == "go" else "token_upstream")

    async def run() -> UpstreamError:
        client = client_for(upstream, credentials=False)
        try:
            with pytest.raises(UpstreamError) as caught:
                await client.get_manifest("team/app", "v1", ACCEPT)
            return caught.value
        finally:
            await client.aclose()

    error = asyncio.run(run())
    assert error.status == 401
    assert "credentials" in str(error)


def test_a_foreign_ca_is_refused(go_hub: Upstream, token_upstream: Upstream) -> None:
    async def run() -> None:
        client = client_for(go_hub, ca=token_upstream.ca)  # the other upstream's CA did not sign this one
        try:
            with pytest.raises(UpstreamError, match="ConnectError"):
                await client.head_manifest("team/app", "v1", ACCEPT)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_parse_challenge() -> None:
    bearer = parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",scope="a:b:c"')
    assert bearer is not None and (bearer.scheme, bearer.realm, bearer.service) == (
        "bearer", "https://auth.example/token", "registry.example")
    basic = parse_challenge('Basic realm="upstream"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("Negotiate abc") is None


def test_urls_in_logs_and_errors_carry_no_credentials() -> None:
    assert _safe_url("https://user:secret@blobs.example:8443/storage/x?X-Amz-Signature=abc#f") == \
        "https://blobs.example:8443/storage/x"
    assert _safe_url("https://registry.example/v2/") == "https://registry.example/v2/"
