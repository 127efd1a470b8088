"""`create_app(settings)`: the registry, the token server, or both, as one Starlette application."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Literal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secreg.api.errors import oci_error
from secreg.api.mirror import MirrorNamespaceMiddleware
from secreg.api.routes import (
    HEALTH_ROUTES,
    METRICS_ROUTES,
    REGISTRY_ROUTES,
    access_table,
    build_routes,
    dispatch_matched,
)
from secreg.auth.access import AccessResolver
from secreg.config import Settings
from secreg.errors import ErrorCode, RegistryError
from secreg.forwarded import ForwardedMiddleware
from secreg.httperrors import error_response
from secreg.observability.accesslog import AccessLog
from secreg.observability.metrics import Metrics, get_metrics
from secreg.observability.middleware import ObserveMiddleware
from secreg.registry.errors import ModelError
from secreg.registry.local import LocalRegistry
from secreg.registry.maintenance import collect_garbage_forever, purge_uploads_forever
from secreg.registry.model import RegistryModel
from secreg.requestbody import BodyTimeout, SettleUnreadBody, settle_before_error
from secreg.storage import InvalidPath, PathNotFound, StorageError

if TYPE_CHECKING:  # imported when a cache is configured: httpx (with click, rich, pygments) is ~11 MiB per worker
    from secreg.proxy.model import ProxyRegistry

_FULL = (errno.ENOSPC, errno.EDQUOT)
Role = Literal["all", "registry", "auth"]
log = logging.getLogger("secreg")


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return error_response(exc, head=request.method == "HEAD")


async def _model_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelError)
    return error_response(oci_error(exc), head=request.method == "HEAD")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = RegistryError(ErrorCode.UNSUPPORTED, f"method {request.method} is not allowed on this endpoint")
    elif exc.status_code == 404:
        error = RegistryError(ErrorCode.UNSUPPORTED, "no such API endpoint", {"path": request.url.path[:300]},
                              status=404)
    else:
        error = RegistryError(ErrorCode.UNKNOWN, str(exc.detail), status=exc.status_code)
    await settle_before_error(request, error)  # the router answers without reading the body
    return error_response(error, head=request.method == "HEAD")


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A client that closes its connection mid-request is routine (timeouts, Ctrl-C, a load balancer): one INFO
    line, no traceback. 499 (nginx's "client closed request") is for the access log; nobody receives it."""
    log.info("client went away during %s %s", request.method, request.url.path[:300])
    return Response(status_code=499)


async def _os_error(request: Request, exc: Exception) -> Response:
    """Registered for OSError so that Starlette's ExceptionMiddleware answers it (the catch-all `Exception`
    handler runs in ServerErrorMiddleware, which re-raises: Hypercorn would log the traceback again)."""
    assert isinstance(exc, OSError)
    if exc.errno in _FULL:
        # The operator needs one line, the client the cause; what was received so far stays in the upload.
        log.error("storage is full (%s) on %s %s: refused with 507", os.strerror(exc.errno or 0),
                  request.method, request.url.path)
        error = RegistryError(ErrorCode.UNAVAILABLE, "storage is full: the registry cannot store more data "
                              "until space is freed; an interrupted upload can be resumed", status=507)
        await settle_before_error(request, error)
        return error_response(error, head=request.method == "HEAD")
    return await _unexpected(request, exc)


async def _storage_error(request: Request, exc: Exception) -> Response:
    """The storage backend failed (an object store answering 5xx or throttling after the driver's own retries, a
    connection refused): 503 UNAVAILABLE with `Retry-After`, one ERROR line, no traceback. Nothing is lost: an
    upload keeps what was stored before the failure and can be resumed. A missing or invalid path that escaped
    the registry code is a bug and stays an internal error."""
    if isinstance(exc, (PathNotFound, InvalidPath)):
        return await _unexpected(request, exc)
    log.error("storage backend failed on %s %s: %s", request.method, request.url.path[:300], str(exc)[:500])
    error = RegistryError(ErrorCode.UNAVAILABLE, "the storage backend is unavailable or failed; retry later",
                          status=503, headers={"Retry-After": "5"})
    await settle_before_error(request, error)
    return error_response(error, head=request.method == "HEAD")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(RegistryError(ErrorCode.UNKNOWN, "internal error; see the server log"))


Handler = Callable[[Request, Exception], Awaitable[Response]]


class _HandledErrors:
    """Starlette's ExceptionMiddleware, in its place (innermost: every layer of ours sees the answer) and with the
    same handlers, for less per request: the handler's `Request` is made only when there is an error, and the
    router's dispatch is called directly. The registry routes that read no body have no exception layer of their
    own (`secreg.api.routes.build_routes`), so their errors are answered here."""

    def __init__(self, app: ASGIApp, handlers: dict[type[Exception], Handler]) -> None:
        self.app = app
        self.handlers = handlers
        # What Starlette's per-route wrapper (the token routes, the bodies' routes) reads: the same handlers.
        self.scope_value: tuple[dict[type[Exception], Handler], dict[int, Handler]] = (handlers, {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["starlette.exception_handlers"] = self.scope_value
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sender)
        except Exception as exc:
            handler = next((self.handlers[kind] for kind in type(exc).__mro__ if kind in self.handlers), None)
            if handler is None:
                raise
            if started:
                raise RuntimeError("Caught handled exception, but response already started.") from exc
            response = await handler(Request(scope, receive, send), exc)
            await response(scope, receive, sender)
            exc.__traceback__ = None  # a reused exception instance would gather tracebacks across requests


class _Registry(Starlette):
    """Starlette with `_HandledErrors` instead of its ExceptionMiddleware (ServerErrorMiddleware stays outermost:
    the catch-all handler, `Exception`, runs there)."""

    def build_middleware_stack(self) -> ASGIApp:
        handlers = dict(self.exception_handlers)
        unexpected = handlers.pop(Exception)
        app: ASGIApp = _HandledErrors(self.router.middleware_stack, handlers)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return ServerErrorMiddleware(app, handler=unexpected, debug=self.debug)


def _lifespan(registry: LocalRegistry | None, metrics: Metrics | None, access_log: AccessLog,
              proxy: ProxyRegistry | None = None) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if proxy is not None:
            await proxy.start()
            if not proxy.local.settings.readonly:
                tasks.append(asyncio.create_task(proxy.evict_forever()))
        if registry is not None and registry.settings.upload_purge_enabled and not registry.settings.readonly:
            tasks.append(asyncio.create_task(purge_uploads_forever(registry)))
        if registry is not None and registry.settings.gc_schedule_enabled and not registry.settings.readonly:
            tasks.append(asyncio.create_task(collect_garbage_forever(registry)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if proxy is not None:
                await proxy.aclose()
            if metrics is not None:
                metrics.process_exiting()
            access_log.flush()  # the last iteration's lines

    return lifespan


def _pull_through_cache(settings: Settings, registry: LocalRegistry | None, metrics: Metrics | None
                        ) -> ProxyRegistry | None:
    if registry is None or not settings.proxy.enabled:
        return None
    from secreg.proxy.metrics import proxy_metrics
    from secreg.proxy.model import ProxyRegistry

    return ProxyRegistry(registry, settings.proxy, proxy_metrics(metrics.registry if metrics else None))


def create_app(settings: Settings, role: Role = "all") -> Starlette:
    routes: list[BaseRoute] = [*build_routes(HEALTH_ROUTES)]
    metrics = get_metrics() if settings.metrics_enabled else None
    if metrics is not None:
        routes.extend(build_routes(METRICS_ROUTES))
    registry: LocalRegistry | None = None
    resolver: AccessResolver | None = None
    if role in ("all", "registry"):
        registry = LocalRegistry.from_settings(settings)
        registry_routes = build_routes(REGISTRY_ROUTES)
        resolver = AccessResolver(access_table(registry_routes, REGISTRY_ROUTES))
        routes.extend(registry_routes)
    proxy = _pull_through_cache(settings, registry, metrics)
    access_log = AccessLog(settings.access_log_format, settings.access_log_enabled)
    app = _Registry(
        routes=routes,
        lifespan=_lifespan(registry, metrics, access_log, proxy),
        exception_handlers={
            RegistryError: _registry_error,
            ModelError: _model_error,
            HTTPException: _http_error,
            OSError: _os_error,
            StorageError: _storage_error,
            ClientDisconnect: _client_gone,
            Exception: _unexpected,
        },
    )
    app.router.middleware_stack = dispatch_matched(app.router)  # type: ignore[assignment]  # typed as the bound method
    app.state.settings = settings
    # What the handlers see: the interface, not the stores (the cache wraps the local registry).
    model: RegistryModel | None = proxy if proxy is not None else registry
    app.state.registry = model
    app.state.resolver = resolver
    app.state.metrics = metrics
    if settings.auth.enabled:
        # Imported only when used: tokens (jwt, cryptography), passwords (passlib, bcrypt) and the rate limiter
        # (sqlite3) are ~10 MiB of every worker's memory.
        from secreg.auth.wiring import wire_auth

        wire_auth(app, settings, role)
    # With auth off, `secreg serve` has said so once (cli.serve.prepare_auth), not once more per worker.
    if settings.ui.enabled and role != "all":
        log.info("web UI not served with --role %s (it needs the registry and the token server)", role)
    if settings.ui.enabled and role == "all" and registry is not None:
        from secreg.registry.browse import Browse
        from secreg.ui.app import UI_PATH, create_ui, root_redirect

        # The cache wraps the local registry: the UI sees cache repositories as such.
        ui = create_ui(settings, proxy if proxy is not None else registry, Browse(registry.driver), app.state)
        app.router.routes.append(Mount(UI_PATH, app=ui))
        app.router.routes.append(Route("/", root_redirect, methods=["GET"]))
    app.add_middleware(SettleUnreadBody)  # inside BodyTimeout: its drain is timed
    app.add_middleware(BodyTimeout, timeout=settings.body_timeout)  # outside auth: its drain is timed too
    if proxy is not None:  # outside auth: containerd's ?ns= requests are authorized as the local name
        app.add_middleware(MirrorNamespaceMiddleware, router=proxy.router)
    # Outermost of ours (added last): sees every answer, the auth middleware's 401s included.
    app.add_middleware(
        ObserveMiddleware,
        router=app.router,
        action_of=(resolver or AccessResolver([])).action_of,
        metrics=metrics,
        access_log=access_log,
    )
    if settings.trusted_proxies:  # outside the observer: its logs, and everything within, see the client
        app.add_middleware(ForwardedMiddleware, trusted=settings.trusted_proxies)
    return app
