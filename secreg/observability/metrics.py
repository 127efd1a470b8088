"""Prometheus metrics of one secreg process, and the `/metrics` text they render to.

Families (all prefixed `secreg_`):

    http_requests_total{route,method,status}        requests by route *template* (bounded cardinality)
    http_request_duration_seconds{route,method}     latency histogram, until the last response byte
    http_received_bytes_total{route,method}         request body bytes
    http_sent_bytes_total{route,method}             response body bytes
    uploads_in_progress                             upload requests (POST/PATCH/PUT) now streaming
    auth_failures_total{reason}                     invalid_token, insufficient_scope, bad_credentials,
                                                    throttled, invalid_refresh_token
    gc_runs_total{result}                           ok, dry_run, failed
    gc_freed_bytes_total, gc_removed_blobs_total    what garbage collection removed
    gc_last_run_timestamp_seconds, gc_last_duration_seconds

With several workers (`http.workers > 1`) `secreg serve` sets PROMETHEUS_MULTIPROC_DIR before any worker
starts, so every worker writes its values to files there and any worker's `/metrics` adds them all up
(prometheus_client's multiprocess mode; it must be chosen before prometheus_client is imported).

`record_gc(report)` is what a scheduled garbage collection calls after each run.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import values as prometheus_values
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROC_ENV",
    "Metrics",
    "auth_failure",
    "get_metrics",
    "record_gc",
    "record_gc_failure",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What generate_latest writes; every Prometheus version reads it (newer clients label it version=1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a 1 ms HEAD to a multi-minute layer upload.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def _process_id() -> int:
    return _pid[0]


if os.environ.get(MULTIPROC_ENV):
    # With several workers prometheus_client calls os.getpid() (a system call) on every update of a value, to
    # notice a fork: four per request, half the cost of the request's metrics. This pid answers the same (renewed
    # in a forked child). Set before this process makes any value (no secreg module makes one at import).
    prometheus_values.ValueClass = prometheus_values.MultiProcessValue(  # type: ignore[no-untyped-call]
        process_identifier=_process_id)


@dataclass(frozen=True, slots=True)
class _RouteChildren:
    duration: Any
    received: Any
    sent: Any


class Metrics:
    """The metric families of this process; `observe_request` is the per-request hot path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        if not self.multiprocess:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter("secreg_http_requests", "HTTP requests by route template, method and status.",
                                ["route", "method", "status"], registry=r)
        self.duration = Histogram("secreg_http_request_duration_seconds",
                                  "Time from request start to the last response byte.", ["route", "method"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.received = Counter("secreg_http_received_bytes", "Request body bytes received.",
                                ["route", "method"], registry=r)
        self.sent = Counter("secreg_http_sent_bytes", "Response body bytes sent.", ["route", "method"],
                            registry=r)
        self.uploads = Gauge("secreg_uploads_in_progress", "Blob upload requests now streaming.",
                             registry=r, multiprocess_mode="livesum")
        self.auth_failures = Counter("secreg_auth_failures", "Refused credentials and tokens, by reason.",
                                     ["reason"], registry=r)
        self.gc_runs = Counter("secreg_gc_runs", "Garbage collection runs, by result.", ["result"], registry=r)
        self.gc_freed = Counter("secreg_gc_freed_bytes", "Bytes of blobs garbage collection removed.",
                                registry=r)
        self.gc_blobs = Counter("secreg_gc_removed_blobs", "Blobs garbage collection removed.", registry=r)
        self.gc_last_run = Gauge("secreg_gc_last_run_timestamp_seconds",
                                 "Unix time the last garbage collection finished.", registry=r,
                                 multiprocess_mode="max")
        self.gc_last_duration = Gauge("secreg_gc_last_duration_seconds",
                                      "How long the last garbage collection took.", registry=r,
                                      multiprocess_mode="mostrecent")
        # labels() validates and locks on every call; the hot path reuses children from these dicts.
        self._routes: dict[tuple[str, str], _RouteChildren] = {}
        self._statuses: dict[tuple[str, str, int], Any] = {}
        self._lock = threading.Lock()

    # --- requests ----------------------------------------------------------------------------------

    def _route(self, route: str, method: str) -> _RouteChildren:
        key = (route, method)
        children = self._routes.get(key)
        if children is None:
            with self._lock:
                children = _RouteChildren(self.duration.labels(route, method),
                                          self.received.labels(route, method), self.sent.labels(route, method))
                self._routes[key] = children
        return children

    def observe_request(self, route: str, method: str, status: int, duration: float, received: int,
                        sent: int) -> None:
        method = method if method in _METHODS else "other"
        children = self._route(route, method)
        key = (route, method, status)
        counter = self._statuses.get(key)
        if counter is None:
            counter = self.requests.labels(route, method, str(status))
            self._statuses[key] = counter
        counter.inc()
        children.duration.observe(duration)
        if received:
            children.received.inc(received)
        if sent:
            children.sent.inc(sent)

    # --- auth and gc -------------------------------------------------------------------------------

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def record_gc(self, report: Any) -> None:
        """Count one garbage-collection run from its `GcReport` (dry runs free nothing)."""
        dry_run = bool(getattr(report, "dry_run", False))
        self.gc_runs.labels("dry_run" if dry_run else "ok").inc()
        if not dry_run:
            self.gc_freed.inc(max(0, int(getattr(report, "bytes_freed", 0))))
            self.gc_blobs.inc(len(getattr(report, "blobs_removed", ())))
        self.gc_last_run.set(time.time())
        self.gc_last_duration.set(float(getattr(report, "duration", 0.0)))

    def record_gc_failure(self) -> None:
        self.gc_runs.labels("failed").inc()

    # --- exposition --------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text format: this process's registry, or every worker's files."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            # process_* of the worker that answers (the families are per process by nature).
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def process_exiting(self) -> None:
        """Drop this worker's live gauges from the shared directory (multiprocess mode)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def get_metrics() -> Metrics:
    """This process's metrics, created on first use (metric families are per process by nature)."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


def record_gc(report: Any) -> None:
    """Call after each garbage-collection run with its `secreg.registry.gc.GcReport`."""
    get_metrics().record_gc(report)


def record_gc_failure() -> None:
    """Call when a garbage-collection run raised."""
    get_metrics().record_gc_failure()


def auth_failure(reason: str) -> None:
    get_metrics().auth_failure(reason)
