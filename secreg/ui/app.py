"""The web UI as one ASGI application mounted at /ui: its whole route table, the access each page needs
(checked in one place, `_guarded`), and the HTML error pages.

Needs: "anyone"; "pull" / "delete" on the repository named in the path (a repository the viewer may not
pull answers 404, as if it did not exist); "admin" (group admins). Every POST has its form read and its
CSRF token checked before the page runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from secreg.auth.accounts import Accounts
from secreg.auth.viewer import ViewerFactory
from secreg.config import Settings
from secreg.names import NAME_PATTERN
from secreg.registry.browse import Browse
from secreg.registry.model import RegistryModel
from secreg.ui import admin, views
from secreg.ui.session import LOGOUT_FILE, SECRET_FILE, Logouts, SessionSigner, load_secret
from secreg.ui.source import NotFound, Refused, RegistrySource
from secreg.ui.web import ERROR_PAGE_HEADERS, HERE, Context, UIMiddleware, read_form, render, templates

__all__ = ["UI_PATH", "create_ui", "root_redirect"]

UI_PATH = "/ui"
log = logging.getLogger("secreg.ui")
Page = Callable[[Context], Awaitable[Response]]


@dataclass(frozen=True)
class PageRoute:
    path: str
    page: Page
    methods: tuple[str, ...]
    needs: str  # "anyone" | "pull" | "delete" | "admin"


REPO = "/repo/{name:path}"
PAGES: tuple[PageRoute, ...] = (
    PageRoute("/", views.repositories, ("GET",), "anyone"),
    PageRoute("/login", views.login_form, ("GET",), "anyone"),
    PageRoute("/login", views.login, ("POST",), "anyone"),
    PageRoute("/logout", views.logout, ("POST",), "anyone"),
    PageRoute(f"{REPO}/-/manifest/{{reference}}/delete", views.confirm_delete_manifest, ("GET",), "delete"),
    PageRoute(f"{REPO}/-/manifest/{{reference}}/delete", views.delete_manifest, ("POST",), "delete"),
    PageRoute(f"{REPO}/-/manifest/{{reference}}", views.manifest, ("GET",), "pull"),
    PageRoute(f"{REPO}/-/tag/{{tag}}/delete", views.delete_tag, ("POST",), "delete"),
    PageRoute(REPO, views.tags, ("GET",), "pull"),
    PageRoute("/admin/users", admin.users, ("GET",), "admin"),
    PageRoute("/admin/users", admin.add_user, ("POST",), "admin"),
    PageRoute("/admin/users/{user}/password", admin.change_password, ("POST",), "admin"),
    PageRoute("/admin/users/{user}/delete", admin.delete_user, ("POST",), "admin"),
    PageRoute("/admin/users/{user}/revoke", admin.revoke_logins, ("POST",), "admin"),
    PageRoute("/admin/users/{user}/groups", admin.set_groups, ("POST",), "admin"),
    PageRoute("/admin/policy", admin.policy, ("GET",), "admin"),
    PageRoute("/admin/storage", admin.storage, ("GET",), "admin"),
    PageRoute("/admin/gc", admin.run_gc, ("POST",), "admin"),
)


def _guarded(spec: PageRoute) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        ctx = Context.of(request)
        if "POST" in spec.methods:
            ctx.form = await read_form(request, request.app.state.signer)
        if spec.needs == "admin" and not ctx.viewer.is_admin:
            raise HTTPException(403, "this page is for administrators (group admins)")
        if spec.needs in ("pull", "delete"):
            name = request.path_params["name"]
            if not NAME_PATTERN.match(name) or not ctx.viewer.may_pull(name):
                raise NotFound(name)
            if spec.needs == "delete" and not ctx.viewer.may_delete(name):
                raise HTTPException(403, f"the access policy does not let you delete in {name}")
        return await spec.page(ctx)

    return endpoint


async def _error_page(request: Request, status: int, message: str) -> Response:
    ctx = Context.of(request)
    return render(ctx, "error.html", {"status": status, "message": message}, status=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else "no such page"
    return await _error_page(request, exc.status_code, str(message))


async def _not_found(request: Request, exc: Exception) -> Response:
    ctx = Context.of(request)
    hint = "" if ctx.viewer.subject or not ctx.auth_enabled else " (log in to see repositories you have access to)"
    return render(ctx, "error.html", {"status": 404, "message": "not found" + hint}, status=404)


async def _refused(request: Request, exc: Exception) -> Response:
    return await _error_page(request, 409, str(exc))


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A browser gone while sending a form (a closed tab, a dropped network): one INFO line, as for the API
    (`secreg.app`). Left to `_unexpected`, it was three tracebacks (this app's, the registry app's, Hypercorn's)."""
    log.info("ui: client went away during %s %s", request.method, request.url.path[:300])
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("ui: unhandled error on %s %s", request.method, request.url.path)
    # Starlette answers this from its outermost middleware, outside UIMiddleware: the page brings its own headers.
    ctx = Context.of(request)
    return render(ctx, "error.html", {"status": 500, "message": "internal error; see the server log"}, status=500,
                  headers=ERROR_PAGE_HEADERS)


def create_ui(settings: Settings, model: RegistryModel, browse: Browse, state: object) -> Starlette:
    """The UI application over the registry `model` and its `browse` queries. `state` is the registry app's
    state: the token service, policy and group store the token endpoint uses (absent when auth is off)."""
    service = getattr(state, "token_service", None)
    policy = getattr(state, "policy", None)
    groups = getattr(state, "groups", None)
    auth_on = settings.auth.enabled
    routes: list[BaseRoute] = [Route(p.path, _guarded(p), methods=list(p.methods)) for p in PAGES]
    routes.append(Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"))
    ui = Starlette(routes=routes, exception_handlers={
        HTTPException: _http_error, NotFound: _not_found, Refused: _refused, ClientDisconnect: _client_gone,
        Exception: _unexpected,
    })
    signer = SessionSigner(load_secret(settings.auth.directory / SECRET_FILE), settings.ui.session_lifetime)
    ui.state.signer = signer
    logouts = Logouts(settings.auth.directory / LOGOUT_FILE, settings.ui.session_lifetime)
    ui.state.logouts = logouts
    ui.state.templates = templates()
    ui.state.source = RegistrySource(model, browse, settings)
    ui.state.viewers = ViewerFactory(policy if auth_on else None, groups if auth_on else None)
    ui.state.token_service = service
    ui.state.policy = policy
    ui.state.groups = groups
    ui.state.accounts = (Accounts(service.users, groups, service.revocations)
                         if service is not None and groups is not None else None)
    ui.state.public_url = settings.public_url
    ui.state.auth_enabled = auth_on
    ui.add_middleware(UIMiddleware, signer=signer, users=service.users if service is not None else None,
                      logouts=logouts,
                      secure=not settings.insecure or settings.public_url.startswith("https://"))
    return ui


async def root_redirect(request: Request) -> Response:
    """`/` in a browser: the UI."""
    return RedirectResponse(f"{UI_PATH}/", status_code=302)
