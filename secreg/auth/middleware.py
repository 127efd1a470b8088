"""The registry's one authorization point, as pure ASGI middleware (request bodies stream through untouched).

For every HTTP request `resolve(scope)` (from the registry's route table) says what the route needs:
None for a public route, `[]` for "any valid token" (`GET /v2/`), or the accesses required. A request
without a bearer token, with one that fails verification, or with one that lacks an access is answered
401 UNAUTHORIZED with a challenge naming exactly the scope the route needs, as the reference registry
does (registry/auth/token/accesscontroller.go): `error="invalid_token"` for a bad token,
`error="insufficient_scope"` for a good one that grants too little, so the client fetches a new token.
On success the request's `Identity` is stored in `scope[IDENTITY_KEY]`. Refused tokens are counted
(`secreg_auth_failures_total`) and audited (`access.denied`).

A route for which `accepts_basic(scope)` is true (`/v1/search`: the Docker engine sends a password there)
gets requests without a bearer token passed through: it authenticates them itself.

Every other route also takes HTTP Basic credentials (`curl -u USER:PASS`), when `basic` is given: checked by
`secreg.auth.login` (rate limited, bcrypt behind the verified-credentials cache), then granted what the policy
allows of the route's scope, as a token would be. Bad credentials answer 401 with the usual Bearer challenge
(docker's flow never sends Basic here), good ones lacking a permission 403 DENIED: asking for a token would
not change the answer.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from secreg.auth.login import LoginRefused
from secreg.auth.scope import Access, format_challenge_scope
from secreg.auth.server import TOKEN_PATH
from secreg.auth.tokens import InvalidToken, TokenVerifier
from secreg.errors import ErrorCode, error_body
from secreg.observability import REQUEST_ID_KEY, USER_KEY, audit
from secreg.observability.metrics import auth_failure
from secreg.requestbody import drain_unread

__all__ = ["IDENTITY_KEY", "AuthMiddleware", "Identity", "Resolver"]

IDENTITY_KEY = "secreg.identity"

Resolver = Callable[[Scope], list[Access] | None]
# (Authorization header value, client address) -> the user name, or LoginRefused
BasicLogin = Callable[[str, str], Awaitable[str]]
# (user, accesses asked for) -> the accesses the policy grants
Grant = Callable[[str, list[Access]], list[Access]]

# A Host header goes into the realm URL inside a quoted challenge: accept host names and IP literals only.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class Identity:
    """Who the token was issued to ("" = anonymous) and what it grants."""

    subject: str
    access: tuple[Access, ...]

    def allows(self, type: str, name: str, action: str) -> bool:
        return any(a.type == type and a.name == name and action in a.actions for a in self.access)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        resolve: Resolver,
        realm: str,
        service: str,
        accepts_basic: Callable[[Scope], bool] | None = None,
        hints: Callable[[Scope], list[Access]] | None = None,
        basic: BasicLogin | None = None,
        grant: Grant | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.resolve = resolve
        self.realm = realm
        self.service = service
        self.accepts_basic = accepts_basic
        self.hints = hints
        self.basic = basic
        self.grant = grant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = self.resolve(scope)
        if needed is None:
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        if token is None:
            if self.accepts_basic is not None and self.accepts_basic(scope):
                await self.app(scope, receive, send)
                return
            basic = _basic_credentials(scope)
            if basic is not None and self.basic is not None and self.grant is not None:
                await self._with_password(scope, receive, send, needed, basic)
                return
            await self._challenge(scope, receive, send, needed, None)
            return
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as exc:
            self._denied(scope, needed, "invalid_token", "", str(exc))
            await self._challenge(scope, receive, send, needed, "invalid_token")
            return
        identity = Identity(claims.subject, claims.access)
        for access in needed:
            for action in access.actions:
                if not identity.allows(access.type, access.name, action):
                    self._denied(scope, needed, "insufficient_scope", identity.subject, None)
                    await self._challenge(scope, receive, send, needed, "insufficient_scope")
                    return
        if self._could_have_more(scope, identity):
            self._denied(scope, needed, "insufficient_scope", identity.subject, "token lacks a hinted scope")
            await self._challenge(scope, receive, send, needed, "insufficient_scope")
            return
        scope[IDENTITY_KEY] = identity
        await self.app(scope, receive, send)

    def _could_have_more(self, scope: Scope, identity: Identity) -> bool:
        """A hinted scope (pull on a mount's source) the token lacks but the policy would grant: the client
        should fetch a token with it, as the reference registry makes it, rather than quietly get an ordinary
        upload session. When the policy would refuse it too, the request goes on (the mount falls back)."""
        if self.hints is None or self.grant is None:
            return False
        lacking = [
            Access(h.type, h.name, frozenset(a for a in h.actions if not identity.allows(h.type, h.name, a)))
            for h in self.hints(scope)
        ]
        lacking = [a for a in lacking if a.actions]
        return bool(lacking) and bool(self.grant(identity.subject, lacking))

    async def _with_password(self, scope: Scope, receive: Receive, send: Send, needed: list[Access],
                             header: str) -> None:
        assert self.basic is not None and self.grant is not None
        client = scope.get("client")
        try:
            subject = await self.basic(header, client[0] if client else "unknown")
        except LoginRefused as refused:
            if refused.code is ErrorCode.TOOMANYREQUESTS:
                await self._refuse(scope, receive, send, 429, refused.code, refused.message, refused.headers)
            else:
                await self._challenge(scope, receive, send, needed, None, refused.message)
            return
        asked = needed + [h for h in (self.hints(scope) if self.hints else []) if h not in needed]
        identity = Identity(subject, tuple(self.grant(subject, asked)))
        for access in needed:
            for action in access.actions:
                if not identity.allows(access.type, access.name, action):
                    self._denied(scope, needed, "denied", subject, "HTTP Basic: not granted by the policy")
                    await self._refuse(scope, receive, send, 403, ErrorCode.DENIED,
                                       f"the access policy does not let {subject} {action} {access.name}", {})
                    return
        scope[IDENTITY_KEY] = identity
        scope[USER_KEY] = subject
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, code: ErrorCode,
                      message: str, extra: dict[str, str]) -> None:
        body = error_body(code, message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"docker-distribution-api-version", b"registry/2.0"),
            *((k.lower().encode(), v.encode("latin-1")) for k, v in extra.items()),
        ]
        if not await drain_unread(scope, receive):
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    @staticmethod
    def _denied(scope: Scope, needed: list[Access], error: str, subject: str, reason: str | None) -> None:
        auth_failure(error)
        client = scope.get("client")
        audit.event("access.denied", error=error, user=subject or "-", client=client[0] if client else "-",
                    method=scope["method"], path=scope["path"][:300], needed=format_challenge_scope(needed),
                    reason=reason[:200] if reason else None, request_id=scope.get(REQUEST_ID_KEY))

    def challenge(self, scope: Scope, needed: list[Access], error: str | None) -> str:
        """The `WWW-Authenticate` value for a request needing `needed`."""
        value = (
            f"Bearer realm={_quote(self.realm or _realm_from_request(scope))},service={_quote(self.service)}"
        )
        # Hints are scopes the client should also ask for, though the route works without them.
        asked = needed + [h for h in (self.hints(scope) if self.hints else []) if h not in needed]
        if asked:
            value += f",scope={_quote(format_challenge_scope(asked))}"
        if error:
            value += f",error={_quote(error)}"
        return value

    async def _challenge(
        self, scope: Scope, receive: Receive, send: Send, needed: list[Access], error: str | None,
        message: str | None = None,
    ) -> None:
        # The body lists every (type, name, action) the route needs, shaped as the reference registry's.
        detail = [
            {
                "Type": a.base_type,
                "Class": a.type[len(a.base_type) + 1 : -1],
                "Name": a.name,
                "Action": action,
            }
            for a in needed
            for action in sorted(a.actions)
        ]
        body = error_body(ErrorCode.UNAUTHORIZED, message, detail=detail or None)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"docker-distribution-api-version", b"registry/2.0"),
            (b"www-authenticate", self.challenge(scope, needed, error).encode("latin-1")),
        ]
        if not await drain_unread(scope, receive):  # a refused upload chunk: keep the connection if we can
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _basic_credentials(scope: Scope) -> str | None:
    """The Authorization value when it is HTTP Basic with a user name (not dockerd's empty `Basic Og==`)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, credentials = text.partition(" ")
            if scheme.lower() == "basic" and credentials.strip() not in ("", "Og=="):
                return text
            return None
    return None


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _realm_from_request(scope: Scope) -> str:
    scheme = "http" if scope.get("scheme") == "http" else "https"
    host = ""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
            break
    if not _HOST.match(host):
        server = scope.get("server")
        if not server:
            host = "localhost"
        else:
            addr, port = server[0], server[1]
            addr = f"[{addr}]" if ":" in addr else addr
            default = 80 if scheme == "http" else 443
            host = addr if port in (None, default) else f"{addr}:{port}"
    return f"{scheme}://{host}{TOKEN_PATH}"
