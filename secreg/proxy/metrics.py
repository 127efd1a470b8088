"""Metrics of the pull-through cache, on the process's Prometheus registry (`secreg.observability.metrics`):

    proxy_requests_total{upstream,kind,result}      kind manifest|blob; result hit|miss|revalidated|stale
    proxy_fetched_bytes_total{upstream}             bytes received from the upstream (manifests and blobs)
    proxy_upstream_errors_total{upstream,reason}    failed upstream requests (status, other)
    proxy_upstream_seconds{upstream,kind}           upstream request latency until the response headers
    proxy_evicted_total{upstream}                   cached images removed by the maxsize / maxage bounds

Labels are the configured upstream names: bounded, and never a credential or a URL.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._on = registry is not None
        if registry is None:
            return
        self.requests = Counter("secreg_proxy_requests", "Pull-through cache lookups by result.",
                                ["upstream", "kind", "result"], registry=registry)
        self.bytes = Counter("secreg_proxy_fetched_bytes", "Bytes fetched from each upstream.", ["upstream"],
                             registry=registry)
        self.errors = Counter("secreg_proxy_upstream_errors", "Failed upstream requests.", ["upstream", "reason"],
                              registry=registry)
        self.seconds = Histogram("secreg_proxy_upstream_seconds", "Upstream request latency (until headers).",
                                 ["upstream", "kind"], buckets=_BUCKETS, registry=registry)
        self.evicted = Counter("secreg_proxy_evicted", "Cached images evicted by maxsize/maxage.", ["upstream"],
                               registry=registry)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, family: Any, *labels: str) -> Any:
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def lookup(self, upstream: str, kind: str, result: str) -> None:
        if self._on:
            self._child(self.requests, upstream, kind, result).inc()

    def fetched(self, upstream: str, size: int) -> None:
        if self._on and size:
            self._child(self.bytes, upstream).inc(size)

    def upstream_error(self, upstream: str, reason: str) -> None:
        if self._on:
            self._child(self.errors, upstream, reason).inc()

    def latency(self, upstream: str, kind: str, seconds: float) -> None:
        if self._on:
            self._child(self.seconds, upstream, kind).observe(seconds)

    def evicted_image(self, upstream: str) -> None:
        if self._on:
            self._child(self.evicted, upstream).inc()


_by_registry: dict[int, ProxyMetrics] = {}


def proxy_metrics(registry: CollectorRegistry | None) -> ProxyMetrics:
    """The cache's metrics on `registry`, registered once however many apps a process builds on it."""
    if registry is None:
        return ProxyMetrics(None)
    found = _by_registry.get(id(registry))
    if found is None:
        found = _by_registry[id(registry)] = ProxyMetrics(registry)
    return found
