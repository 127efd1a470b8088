"""What every UI page shares: the security headers and the session cookie (one pure ASGI middleware), the
bounded form reader that checks the CSRF token, template rendering, and the per-request `Context`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secreg.auth.users import UserStore
from secreg.auth.viewer import Viewer, ViewerFactory
from secreg.names import HOST_PATTERN
from secreg.observability import USER_KEY
from secreg.requestbody import drain_unread
from secreg.ui import logic
from secreg.ui.session import COOKIE, SECURE_COOKIE, Logouts, Session, SessionSigner

if TYPE_CHECKING:
    from jinja2 import Environment, Template

__all__ = ["ERROR_PAGE_HEADERS", "SESSION_KEY", "Context", "UIMiddleware", "read_form", "render", "templates"]

SESSION_KEY = "secreg.ui.session"
CHANGED_KEY = "secreg.ui.session_changed"
MAX_FORM_BYTES = 64 * 1024
HERE = Path(__file__).resolve().parent

# Everything from this origin, nothing inline, nothing framed, forms post only here.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# What UIMiddleware adds, for a page answered outside it (the 500 page).
ERROR_PAGE_HEADERS = {**{n.decode(): v.decode() for n, v in SECURITY_HEADERS}, "Cache-Control": "no-store"}


class Templates:
    """The pages' Jinja2 environment, made at the first page a worker renders: jinja2 and markupsafe are
    ~4.5 MiB of a worker's memory, which one that serves the registry alone never needs."""

    def __init__(self) -> None:
        self._env: Environment | None = None

    def get_template(self, name: str) -> Template:
        if self._env is None:
            self._env = _environment()
        return self._env.get_template(name)


def templates() -> Templates:
    return Templates()


def _environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      auto_reload=False)
    env.filters["size"] = logic.human_size
    env.filters["time"] = logic.format_time
    env.filters["short"] = lambda digest: str(digest).split(":", 1)[-1][:12]
    return env


_REFUSED_FORM_LIMIT = 256 * 1024  # what Go's server reads of a body it does not want


class UIMiddleware:
    """Adds the security headers to every UI answer, reads the session cookie into `scope[SESSION_KEY]`
    (a new anonymous session when there is none, or when its user's password changed or the user is gone),
    and sets the cookie when the session is new or renewed. Refuses a state-changing request whose Origin
    is another site's before any handler runs (the handler checks the CSRF token)."""

    def __init__(self, app: ASGIApp, *, signer: SessionSigner, users: UserStore | None, logouts: Logouts,
                 secure: bool) -> None:
        self.app = app
        self.signer = signer
        self.users = users
        self.logouts = logouts
        self.secure = secure
        self.cookie = SECURE_COOKIE if secure else COOKIE

    def _session(self, scope: Scope) -> tuple[Session, bool]:
        session = self.signer.decode(_cookie(scope, self.cookie))
        if session is not None and session.subject:
            if (self.users is None or self.users.fingerprint(session.subject) != session.fingerprint
                    or self.logouts.voids(session)):
                session = None
        if session is None:
            return self.signer.new(), True
        renewed = self.signer.renewed(session)
        return (renewed, True) if renewed is not None else (session, False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session, changed = self._session(scope)
        scope[SESSION_KEY] = session
        scope[CHANGED_KEY] = changed

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                if scope.get(CHANGED_KEY):  # new, renewed, or replaced by a login or logout
                    cookie = _cookie_header(self.signer, scope[SESSION_KEY], self.cookie, self.secure)
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        if scope["method"] not in ("GET", "HEAD") and not _same_origin(scope):
            # The unread form is dropped first (or the answer says Connection: close): Hypercorn silently closes
            # an HTTP/1.1 connection with an unread body, and a client reusing it would find it gone.
            drained = await drain_unread(scope, receive, limit=_REFUSED_FORM_LIMIT)
            response = HTMLResponse("<!doctype html><title>Forbidden</title><p>Cross-site request refused.",
                                    status_code=403, headers=None if drained else {"Connection": "close"})
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _cookie_header(signer: SessionSigner, session: Session, name: str, secure: bool) -> str:
    parts = [f"{name}={signer.encode(session)}", "Path=/", f"Max-Age={signer.lifetime}", "HttpOnly",
             "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            text: str = value.decode("latin-1")
            for part in text.split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _same_origin(scope: Scope) -> bool:
    """No Origin header (old browsers, curl) passes: the CSRF token decides. A present one must name this host."""
    origin = _header(scope, b"origin")
    if origin is None:
        fetch_site = _header(scope, b"sec-fetch-site")
        return fetch_site in (None, "same-origin", "none")
    host = _header(scope, b"host")
    return bool(host) and urlsplit(origin).netloc.lower() == (host or "").lower()


async def read_form(request: Request, signer: SessionSigner) -> dict[str, str]:
    """An urlencoded form of at most 64 KiB whose `csrf` field matches the session; 403 otherwise."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(400, "expected a form (application/x-www-form-urlencoded)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed form") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    if not signer.csrf_ok(request.scope.get(SESSION_KEY), form.get("csrf")):
        raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")
    return form


@dataclass
class Context:
    """Who is asking and what the page needs to know about the registry around it."""

    request: Request
    viewer: Viewer
    session: Session
    csrf: str
    host: str  # for pull commands: HOST[:PORT]
    auth_enabled: bool
    form: dict[str, str] = field(default_factory=dict)  # a POST's fields, CSRF token checked

    @classmethod
    def of(cls, request: Request) -> Context:
        state = request.app.state
        session: Session = request.scope[SESSION_KEY]
        factory: ViewerFactory = state.viewers
        if session.subject:
            request.scope[USER_KEY] = session.subject  # for the access log
        return cls(request, factory(session.subject), session, state.signer.csrf_token(session),
                   registry_host(request, state.public_url), state.auth_enabled)

    def login(self, subject: str, fingerprint: str) -> None:
        signer: SessionSigner = self.request.app.state.signer
        self.session = signer.new(subject, fingerprint)
        self.request.scope[SESSION_KEY] = self.session
        self.request.scope[CHANGED_KEY] = True

    def logout(self) -> None:
        signer: SessionSigner = self.request.app.state.signer
        if self.session.subject:
            self.request.app.state.logouts.record(self.session.subject)
        self.session = signer.new()
        self.request.scope[SESSION_KEY] = self.session
        self.request.scope[CHANGED_KEY] = True


def registry_host(request: Request, public_url: str) -> str:
    if public_url:
        return urlsplit(public_url).netloc
    host = request.headers.get("host", "")
    if HOST_PATTERN.match(host):
        return host
    server = request.scope.get("server")
    return f"{server[0]}:{server[1]}" if server else "localhost"


def render(ctx: Context, template: str, values: Mapping[str, Any] | None = None, status: int = 200,
           headers: Mapping[str, str] | None = None) -> Response:
    env: Templates = ctx.request.app.state.templates
    # The CSRF token of the session this answer carries (a login or logout has just replaced it).
    csrf = ctx.request.app.state.signer.csrf_token(ctx.session)
    html = env.get_template(template).render(viewer=ctx.viewer, csrf=csrf, host=ctx.host,
                                             auth_enabled=ctx.auth_enabled, page_path=ctx.request.url.path,
                                             **(values or {}))
    return HTMLResponse(html, status_code=status, headers=dict(headers or {}))
