"""One pure ASGI middleware that watches every request: bodies stream through, never buffered.

Per request it assigns a request id (a sane incoming `X-Request-Id` is kept, otherwise a new one; sent back
as `X-Request-Id` and left in `scope[REQUEST_ID_KEY]`), counts body bytes in both directions and times the
request until its last response message. Then it feeds the metrics, writes the access-log line and, for a
manifest PUT answered 201 or a DELETE answered 202, the audit event. It sits outside the auth middleware,
so refused requests are seen too, and reads the caller from `scope[IDENTITY_KEY]` afterwards. (An
unhandled exception is logged as 500 here; Starlette's outermost error middleware renders that answer,
without the X-Request-Id header.)
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secreg.observability import audit
from secreg.observability.accesslog import AccessLog, AccessRecord
from secreg.observability.metrics import Metrics
from secreg.scopekeys import IDENTITY_KEY, REQUEST_ID_KEY, USER_KEY

__all__ = ["REQUEST_ID_KEY", "USER_KEY", "ObserveMiddleware"]

UNMATCHED = "unmatched"

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}\Z")
_REPOSITORY = re.compile(r"^[a-z0-9._/-]{1,255}\Z")
_UPLOAD_METHODS = frozenset({"POST", "PATCH", "PUT"})
_MANIFEST_ROUTE_END = "/manifests/{reference}"
_BLOB_ROUTE_END = "/blobs/{digest}"

ActionOf = Callable[[str, str], str]


class _RequestIds:
    """New request ids: 32 hex digits, a random half drawn once per process (again in a forked child) and a
    counter, so ids stay unique across workers and restarts without reading the system's random source per
    request (an id correlates log lines; it is no secret)."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def __call__(self) -> bytes:
        return f"{self._prefix}{next(self._count):016x}".encode()


_new_request_id = _RequestIds()


class _Exchange:
    __slots__ = ("cache", "digest", "done", "received", "sent", "status", "upload")

    def __init__(self, upload: bool) -> None:
        self.status = 0
        self.received = 0
        self.sent = 0
        self.digest = ""
        self.cache = "-"
        self.upload = upload
        self.done = False


class ObserveMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        action_of: ActionOf,
        metrics: Metrics | None,
        access_log: AccessLog | None,
    ) -> None:
        self.app = app
        self.router = router
        self.action_of = action_of
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = b""
        agent = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value
            elif name == b"user-agent":
                agent = value
        request_id = incoming if _REQUEST_ID.match(incoming) else _new_request_id()
        scope[REQUEST_ID_KEY] = request_id.decode()
        method: str = scope["method"]
        upload = self.metrics is not None and method in _UPLOAD_METHODS and "/blobs/uploads/" in scope["path"]
        exchange = _Exchange(upload)
        if upload:
            assert self.metrics is not None
            self.metrics.uploads.inc()

        async def counting_receive() -> Message:
            message = await receive()
            body = message.get("body")
            if body:
                exchange.received += len(body)
            return message

        async def observing_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body")
                if body:
                    exchange.sent += len(body)
                if not message.get("more_body", False):
                    # Recorded before the last bytes go out, so whoever sees the response complete
                    # (a scraper, a test reading the log) also sees it counted.
                    self._finish(scope, exchange, time.perf_counter() - start, agent)
            elif kind == "http.response.start":
                exchange.status = message["status"]
                headers = message.get("headers") or ()
                if method in ("PUT", "DELETE"):
                    for name, value in headers:
                        if name.lower() == b"docker-content-digest":
                            exchange.digest = value.decode("latin-1")
                elif method in ("GET", "HEAD"):
                    for name, value in headers:
                        if name.lower() == b"x-cache":
                            exchange.cache = value.decode("latin-1")[:16]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id)]}
            await send(message)

        try:
            await self.app(scope, counting_receive, observing_send)
        except Exception:
            exchange.status = exchange.status or 500
            raise
        except BaseException:  # cancelled: the client went away
            exchange.status = exchange.status or 499
            raise
        finally:
            self._finish(scope, exchange, time.perf_counter() - start, agent)

    def _finish(self, scope: Scope, exchange: _Exchange, duration: float, agent: bytes) -> None:
        if exchange.done:
            return
        exchange.done = True
        if exchange.upload:
            assert self.metrics is not None
            self.metrics.uploads.dec()
        method: str = scope["method"]
        route, params = self._route(scope)
        if self.metrics is not None:
            self.metrics.observe_request(route, method, exchange.status, duration, exchange.received,
                                         exchange.sent)
        identity = scope.get(IDENTITY_KEY)
        user = (identity.subject if identity is not None else "") or scope.get(USER_KEY) or "-"
        name = params.get("name", "")
        repository = name if name and _REPOSITORY.match(name) else "-"
        client = scope.get("client")
        client_host = client[0] if client else "-"
        action = self.action_of(route, method)
        if self.access_log is not None:
            self.access_log.write(
                AccessRecord(
                    request_id=scope[REQUEST_ID_KEY],
                    client=client_host,
                    user=user,
                    method=method,
                    path=scope["path"],
                    route=route,
                    repository=repository,
                    action=action,
                    status=exchange.status,
                    bytes_in=exchange.received,
                    bytes_out=exchange.sent,
                    duration=duration,
                    user_agent=agent.decode("latin-1"),
                    cache=exchange.cache,
                )
            )
        if repository != "-" and ((method == "PUT" and exchange.status == 201) or
                                  (method == "DELETE" and exchange.status == 202)):
            self._audit_write(scope, route, method, params, repository, user, client_host, exchange)

    def _audit_write(self, scope: Scope, route: str, method: str, params: dict[str, Any], repository: str,
                     user: str, client: str, exchange: _Exchange) -> None:
        if route.endswith(_MANIFEST_ROUTE_END):
            name = "manifest.push" if method == "PUT" else "manifest.delete"
            reference = str(params.get("reference", ""))[:200]
        elif method == "DELETE" and route.endswith(_BLOB_ROUTE_END):
            name, reference = "blob.delete", str(params.get("digest", ""))[:200]
        else:
            return
        audit.event(name, user=user, client=client, repository=repository, reference=reference,
                    digest=exchange.digest or None, request_id=scope[REQUEST_ID_KEY])

    def _route(self, scope: Scope) -> tuple[str, dict[str, Any]]:
        """The matched route's template and path parameters; the auth middleware may have answered
        before the router ran, so match again then (only for those requests)."""
        route = scope.get("route")
        if route is not None:
            return str(getattr(route, "path", UNMATCHED)), scope.get("path_params", {})
        partial: tuple[str, dict[str, Any]] | None = None
        for candidate in self.router.routes:
            match, child = candidate.matches(scope)
            if match is Match.FULL:
                return str(getattr(candidate, "path", UNMATCHED)), child.get("path_params", {})
            if match is Match.PARTIAL and partial is None:
                partial = (str(getattr(candidate, "path", UNMATCHED)), child.get("path_params", {}))
        return partial or (UNMATCHED, {})
