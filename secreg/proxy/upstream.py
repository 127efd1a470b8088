"""The HTTPS client of one upstream registry: the distribution API with the upstream's own auth.

Auth follows what the upstream's 401 asks for: a Bearer challenge sends us to its token realm (HTTPS only,
with our Basic credentials when configured) for `repository:<name>:pull`; the token is kept per scope until it
expires, and once an upstream is known to want Bearer tokens the next repository's token is fetched before
its first request instead of after a 401. A Basic challenge gets the configured credentials.

Redirects (blob downloads are often sent to a storage host) are followed by hand, at most five: every hop
must be HTTPS again, and our Authorization header goes only to the upstream's own host.

Nothing here logs a credential, a token or a query string (pre-signed storage URLs carry signatures).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from secreg import jsonlimit
from secreg.config.proxy import Upstream
from secreg.digest import Digest
from secreg.errors import RegistryError
from secreg.proxy import download
from secreg.proxy.download import BlobBody, DownloadBroken, HttpxBody, Progress, Sink
from secreg.proxy.metrics import ProxyMetrics
from secreg.tls import suites

log = logging.getLogger("secreg.proxy")

MAX_REDIRECTS = 5
_TOKEN_MARGIN = 10.0  # seconds: a token this close to expiry is not sent again
_MAX_TOKEN_BODY = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PARAM = re.compile(r'([a-zA-Z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


class UpstreamError(Exception):
    """The upstream could not answer: unreachable, 5xx, throttled, refused our credentials, bad reply.
    `status` is the upstream's HTTP status when there was one."""

    def __init__(self, upstream: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"upstream {upstream}: {reason}")
        self.upstream = upstream
        self.reason = reason
        self.status = status


class UpstreamNotFound(Exception):
    """The upstream answered 404: it does not have this manifest, blob or repository."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" | "basic"
    realm: str = ""
    service: str = ""


@dataclass(frozen=True)
class ManifestHead:
    digest: Digest | None
    media_type: str
    size: int | None


@dataclass(frozen=True)
class FetchedManifest:
    content: bytes
    media_type: str
    digest: Digest | None  # as the upstream named it (Docker-Content-Digest), if it did


def parse_challenge(header: str) -> Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in
              _PARAM.finditer(rest)}
    return Challenge(scheme, params.get("realm", ""), params.get("service", ""))


def ssl_context(ca: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        context.load_verify_locations(cafile=ca)
    return context


def _safe_url(url: str) -> str:
    """`url` for a log line or an error: no query (signed storage URLs), no user info (a redirect may carry one)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class UpstreamClient:
    def __init__(self, upstream: Upstream, metrics: ProxyMetrics, manifest_limit: int = 4 * 1024 * 1024) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self.manifest_limit = manifest_limit
        self._host = urlsplit(upstream.url).netloc.lower()
        self._http = httpx.AsyncClient(
            verify=ssl_context(str(upstream.ca) if upstream.ca else None),
            timeout=httpx.Timeout(60.0, connect=10.0),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"User-Agent": "secreg-proxy/0.1", "Accept-Encoding": "identity"},
            trust_env=False,
        )
        self._challenge: Challenge | None = None
        self._ssl = ssl_context(str(upstream.ca) if upstream.ca else None)
        suites.read_ahead(self._ssl)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}
        self.token_fetches = 0  # tests and metrics: how often the token realm was asked

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the distribution API --------------------------------------------------------------------

    async def head_manifest(self, remote: str, reference: str, accept: list[str]) -> ManifestHead:
        """Raises UpstreamNotFound, UpstreamError."""
        response = await self._send("HEAD", f"/v2/{remote}/manifests/{reference}", remote,
                                    {"Accept": ", ".join(accept)}, kind="manifest_head")
        await response.aclose()
        return ManifestHead(_digest_header(response), _media_type(response), _length(response))

    async def get_manifest(self, remote: str, reference: str, accept: list[str]) -> FetchedManifest:
        """The manifest bytes (at most `manifest_limit`). Raises UpstreamNotFound, UpstreamError."""
        response = await self._send("GET", f"/v2/{remote}/manifests/{reference}", remote,
                                    {"Accept": ", ".join(accept)}, kind="manifest")
        try:
            content = await self._read_limited(response, "manifest")
        finally:
            await response.aclose()
        self.metrics.fetched(self.upstream.name, len(content))
        return FetchedManifest(content, _media_type(response), _digest_header(response))

    async def _read_limited(self, response: httpx.Response, what: str) -> bytes:
        declared = _length(response)
        if declared is not None and declared > self.manifest_limit:
            raise self._error(f"{what} of {declared} bytes exceeds the limit of {self.manifest_limit}")
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self.manifest_limit:
                    raise self._error(f"{what} exceeds the limit of {self.manifest_limit} bytes")
                parts.append(chunk)
        except httpx.HTTPError as exc:
            raise self._error(f"reading the {what} failed: {type(exc).__name__}") from None
        return b"".join(parts)

    async def list_tags(self, remote: str) -> list[str]:
        """The first page (up to 10000) of the repository's tags upstream."""
        response = await self._send("GET", f"/v2/{remote}/tags/list?n=10000", remote, {}, kind="tags")
        try:
            body = await self._read_limited(response, "tag list")
        finally:
            await response.aclose()
        try:
            tags = jsonlimit.loads(body).get("tags") or []  # bounded: json.loads recursed into a 500
        except (ValueError, AttributeError):
            raise self._error("sent an unreadable tag list") from None
        return sorted(t for t in tags if isinstance(t, str))

    async def head_blob(self, remote: str, digest: Digest) -> int | None:
        response = await self._send("HEAD", f"/v2/{remote}/blobs/{digest}", remote, {}, kind="blob_head")
        await response.aclose()
        return _length(response)

    @asynccontextmanager
    async def open_blob(self, remote: str, digest: Digest) -> AsyncIterator[BlobBody]:
        """The blob's body, ready to be copied (`BlobBody.copy`); a broken download raises UpstreamError.

        The GET goes over a connection of its own on the event loop (`download.get`, the fast path), with the
        credentials known so far; any answer but a 200 with a Content-Length (the first 401 of an upstream whose
        challenge is not known yet, a chunked body) goes through httpx, which learns the challenge and turns
        errors into messages. The first blob of each worker process used to go through httpx to learn whether
        the upstream wants auth at all: its 16-32 KiB pieces cost 1.9-2.3 s of server CPU per 256 MiB, this
        path 0.78 s (README "Speed"); an upstream that wants a token costs one 401 more for it, once."""
        path = f"/v2/{remote}/blobs/{digest}"
        auth = await self._authorization(f"repository:{remote}:pull")  # None until a challenge is known
        started = time.monotonic()
        body: BlobBody | None
        try:
            body = await download.get(self.upstream.url + path, lambda host: self._blob_headers(host, auth),
                                      self._ssl, MAX_REDIRECTS)
        except download.Answered as answer:
            self.metrics.latency(self.upstream.name, "blob", time.monotonic() - started)
            if answer.status == 404:
                raise UpstreamNotFound(path) from None
            raise self._error(f"answered {answer.status} to GET {path}", answer.status) from None
        if body is not None:
            self.metrics.latency(self.upstream.name, "blob", time.monotonic() - started)
        else:
            body = HttpxBody(await self._send("GET", path, remote, {}, kind="blob"))
        try:
            yield _MeteredBody(self, body)
        finally:
            await body.aclose()

    def _blob_headers(self, host: str, auth: str | None) -> dict[str, str]:
        headers = {"User-Agent": "secreg-proxy/0.1"}
        if auth and host == self._host:
            headers["Authorization"] = auth  # never to a storage host a redirect leads to
        return headers

    # --- requests, auth and redirects ------------------------------------------------------------

    def _error(self, reason: str, status: int | None = None) -> UpstreamError:
        self.metrics.upstream_error(self.upstream.name, "status" if status else "other")
        return UpstreamError(self.upstream.name, reason, status)

    async def _send(self, method: str, path: str, remote: str, headers: dict[str, str], kind: str
                    ) -> httpx.Response:
        scope = f"repository:{remote}:pull"
        started = time.monotonic()
        try:
            response = await self._attempt(method, path, scope, headers)
            if response.status_code == 401:
                challenge = parse_challenge(response.headers.get("www-authenticate", ""))
                await response.aclose()
                if challenge is None:
                    raise self._error("answered 401 without a usable challenge", 401)
                self._challenge = challenge
                self._tokens.pop(scope, None)
                response = await self._attempt(method, path, scope, headers)
        finally:
            self.metrics.latency(self.upstream.name, kind, time.monotonic() - started)
        status = response.status_code
        if status < 300:
            return response
        await response.aclose()
        if status == 404:
            raise UpstreamNotFound(path)
        if status in (401, 403):
            raise self._error(f"refused access ({status}) to {remote}; check the upstream's credentials", status)
        raise self._error(f"answered {status} to {method} {path}", status)

    async def _attempt(self, method: str, path: str, scope: str, headers: dict[str, str]) -> httpx.Response:
        auth = await self._authorization(scope)
        url = self.upstream.url + path
        for _ in range(MAX_REDIRECTS + 1):
            own_host = urlsplit(url).netloc.lower() == self._host
            request_headers = dict(headers)
            if auth and own_host:
                request_headers["Authorization"] = auth
            request = self._http.build_request(method, url, headers=request_headers)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._error(f"{method} {_safe_url(url)} failed: {type(exc).__name__}: {exc}") from None
            # httpx's own request log is off (it prints query strings): this one stops at the path.
            log.debug("upstream %s: %s %s -> %d", self.upstream.name, method, _safe_url(url), response.status_code)
            if response.status_code not in _REDIRECTS or "location" not in response.headers:
                return response
            await response.aclose()
            target = urljoin(url, response.headers["location"])
            if urlsplit(target).scheme != "https":
                raise self._error(f"redirected to a non-HTTPS location ({urlsplit(target).scheme}://...); refused")
            url = target
        raise self._error(f"more than {MAX_REDIRECTS} redirects for {method} {path}")

    async def _authorization(self, scope: str) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic()
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        # Concurrent requests of one repository wait for one token instead of each asking the realm.
        lock = self._token_locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(scope)
            if cached is not None and cached[1] > time.monotonic():
                return f"Bearer {cached[0]}"
            token, lifetime = await self._fetch_token(challenge, scope)
            self._tokens[scope] = (token, time.monotonic() + max(lifetime - _TOKEN_MARGIN, 0.0))
            if len(self._token_locks) > 10_000:
                self._token_locks.clear()
        return f"Bearer {token}"

    def _basic(self) -> str | None:
        if not self.upstream.username:
            return None
        pair = f"{self.upstream.username}:{self.upstream.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    async def _fetch_token(self, challenge: Challenge, scope: str) -> tuple[str, float]:
        if urlsplit(challenge.realm).scheme != "https":
            raise self._error("its token realm is not an HTTPS URL; refused to send credentials there")
        params = {"scope": scope}
        if challenge.service:
            params["service"] = challenge.service
        headers = {}
        basic = self._basic()
        if basic:
            headers["Authorization"] = basic
        self.token_fetches += 1
        try:
            response = await self._http.get(challenge.realm, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise self._error(f"token realm {_safe_url(challenge.realm)} failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise self._error(f"token realm answered {response.status_code}; check the upstream's credentials",
                              response.status_code)
        try:
            if len(response.content) > _MAX_TOKEN_BODY:
                raise ValueError("too large")
            document = jsonlimit.loads(response.content)
            token = document.get("token") or document.get("access_token")
            lifetime = float(document.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise self._error("token realm sent an unreadable answer") from None
        if not isinstance(token, str) or not token:
            raise self._error("token realm sent no token")
        return token, lifetime


def _length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _media_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";", 1)[0].strip()


def _digest_header(response: httpx.Response) -> Digest | None:
    value = response.headers.get("docker-content-digest")
    if not value:
        return None
    try:
        return Digest.parse(value.strip())
    except RegistryError:  # a malformed header is as good as none: we compute the digest anyway
        return None


class _MeteredBody(BlobBody):
    """A body whose bytes count in the upstream's metrics and whose breakage is an UpstreamError."""

    def __init__(self, client: UpstreamClient, body: BlobBody) -> None:
        self.client = client
        self.body = body
        self.size = body.size

    async def copy(self, sink: Sink, progress: Progress) -> int:
        counted = 0

        def metered(total: int) -> None:
            nonlocal counted
            self.client.metrics.fetched(self.client.upstream.name, total - counted)
            counted = total
            progress(total)

        try:
            return await self.body.copy(sink, metered)
        except DownloadBroken as exc:
            raise self.client._error(f"blob download broke off: {exc}") from None

    async def aclose(self) -> None:
        await self.body.aclose()
