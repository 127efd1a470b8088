"""The client behind a reverse proxy: `http.trustedproxies`.

Every per-client decision (the login rate limit, the loopback check of /metrics) and every record (access log,
audit log) reads the client from the ASGI scope's `client`. Behind haproxy that is the proxy's address for
everyone, so one attacker's failed logins throttled every user. `ForwardedMiddleware`, the outermost layer and
installed only when trusted proxies are configured, rewrites the scope once per request: when the TCP peer is in
a trusted network, the client is the rightmost `X-Forwarded-For` address that is not itself a trusted proxy
(RFC 7239 semantics for a chain: each proxy appends the address it received the request from, so everything left
of the first untrusted hop may be the client's own invention). From any other peer the headers are ignored: a
client must not pick its own address to escape the rate limit. An element that is not an IP address ends the
walk: the request is the last verified hop's (the proxy that passed it on). `X-Forwarded-Proto` from a trusted
peer, when it is a single `http` or `https`, becomes the scope's scheme (the token realm built from the request).

Hypercorn's `ProxyFixMiddleware` was not used: it trusts a fixed number of hops from whoever connects (a client
reaching the server directly names its own address), takes the header value unparsed (any text in the logs and
the rate limiter's keys), and deep-copies every scope.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

CACHED = 4096  # peers and X-Forwarded-For values remembered
CACHED_CHAIN = 200  # bytes of X-Forwarded-For at most for a remembered value
MAX_HOPS = 32  # X-Forwarded-For elements walked at most: a longer chain is someone's padding


def parse_address(text: str) -> Address | None:
    """An X-Forwarded-For element: a bare address, `[v6]`, `[v6]:port` or `v4:port` (some proxies add the port)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)
        # Parsing and matching addresses is ~10 us a request; behind a proxy the same peers and chains repeat.
        self.peer = functools.lru_cache(maxsize=CACHED)(self._peer)
        self._cached_client = functools.lru_cache(maxsize=CACHED)(self._client)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def _peer(self, peer: str) -> Address | None:
        """The TCP peer's address when it is a trusted proxy."""
        address = parse_address(peer)
        return address if address is not None and self.trusts(address) else None

    def client(self, peer: Address, forwarded_for: bytes) -> str:
        # Only short chains are remembered: 4,096 of a client's 16 KiB headers would hold 64 MiB.
        if len(forwarded_for) <= CACHED_CHAIN:
            return self._cached_client(peer, forwarded_for)
        return self._client(peer, forwarded_for)

    def _client(self, peer: Address, forwarded_for: bytes) -> str:
        """The client of a request from the trusted `peer` carrying this X-Forwarded-For (its headers joined by
        commas, in order): the rightmost hop not trusted, the leftmost when all are, the last readable one when a
        hop is not an address."""
        found = peer
        for element in reversed(forwarded_for.decode("latin-1").split(",")[-MAX_HOPS:]):
            hop = parse_address(element)
            if hop is None:
                break
            found = hop
            if not self.trusts(hop):
                break
        return str(found)


class ForwardedMiddleware:
    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] == "http" and peer:
            scope = self.rewrite(scope, peer[0])
        await self.app(scope, receive, send)

    def rewrite(self, scope: Scope, peer: str) -> Scope:
        address = self.trusted.peer(peer)
        if address is None:
            return scope
        forwarded_for: list[bytes] = []
        proto: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                proto.append(value)
        scheme = proto[0].strip().lower() if len(proto) == 1 else b""
        if scheme not in (b"http", b"https"):
            scheme = b""
        if not forwarded_for and not scheme:
            return scope
        scope = dict(scope)
        if forwarded_for:
            scope["client"] = (self.trusted.client(address, b",".join(forwarded_for)), 0)
        if scheme:
            scope["scheme"] = scheme.decode()
        return scope
