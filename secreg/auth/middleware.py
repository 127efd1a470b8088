"""The verifying side of auth, as pure ASGI middleware (request bodies stream through untouched): it enforces
what `secreg.auth.access` derives from the route table.

For every HTTP request `resolve(scope)` (an `AccessResolver`) says what the route needs: None for a public
route, `[]` for "any valid token" (`GET /v2/`), or the accesses required. A request without a bearer token,
with one that fails verification, or with one that lacks an access is answered 401 UNAUTHORIZED with a
challenge naming exactly the scope the route needs (`access.challenge`). On success the request's `Identity`
is stored in `scope[IDENTITY_KEY]`. Refused tokens are counted (`secreg_auth_failures_total`) and audited
(`access.denied`). This module verifies only: it imports nothing of the token server.

A route for which `accepts_basic(scope)` is true (`/v1/search`: the Docker engine sends a password there)
gets requests without a bearer token passed through: it authenticates them itself.

Every other route also takes HTTP Basic credentials (`curl -u USER:PASS`), when `basic` is given: checked by
`secreg.auth.login` (rate limited, bcrypt behind the verified-credentials cache), then granted what the policy
allows of the route's scope, as a token would be. Bad credentials answer 401 with the usual Bearer challenge
(docker's flow never sends Basic here), good ones lacking a permission 403 DENIED: asking for a token would
not change the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from secreg.auth import access as rules
from secreg.auth.login import LoginRefused
from secreg.auth.scope import Access, format_challenge_scope
from secreg.auth.tokens import InvalidToken, TokenVerifier
from secreg.errors import ErrorCode, RegistryError
from secreg.httperrors import error_response
from secreg.observability import audit
from secreg.observability.metrics import auth_failure
from secreg.requestbody import drain_unread
from secreg.scopekeys import IDENTITY_KEY, REQUEST_ID_KEY, USER_KEY

__all__ = ["IDENTITY_KEY", "AuthMiddleware", "Identity", "Resolver"]

Resolver = Callable[[Scope], list[Access] | None]
# (Authorization header value, client address) -> the user name, or LoginRefused
BasicLogin = Callable[[str, str], Awaitable[str]]
# (user, accesses asked for) -> the accesses the policy grants
Grant = Callable[[str, list[Access]], list[Access]]


@dataclass(frozen=True)
class Identity:
    """Who the token was issued to ("" = anonymous) and what it grants."""

    subject: str
    access: tuple[Access, ...]

    def allows(self, type: str, name: str, action: str) -> bool:
        return any(a.type == type and a.name == name and action in a.actions for a in self.access)


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
        hints = self.hints(scope)
        if not hints:  # all but a mount
            return False
        lacking = [
            Access(h.type, h.name, frozenset(a for a in h.actions if not identity.allows(h.type, h.name, a)))
            for h in hints
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
        headers = dict(extra)
        if not await drain_unread(scope, receive):
            headers["Connection"] = "close"
        refusal = RegistryError(code, message, status=status, headers=headers)
        await error_response(refusal, head=scope["method"] == "HEAD")(scope, receive, send)

    @staticmethod
    def _denied(scope: Scope, needed: list[Access], error: str, subject: str, reason: str | None) -> None:
        auth_failure(error)
        client = scope.get("client")
        audit.event("access.denied", error=error, user=subject or "-", client=client[0] if client else "-",
                    method=scope["method"], path=scope["path"][:300], needed=format_challenge_scope(needed),
                    reason=reason[:200] if reason else None, request_id=scope.get(REQUEST_ID_KEY))

    def challenge(self, scope: Scope, needed: list[Access], error: str | None) -> str:
        """The `WWW-Authenticate` value for a request needing `needed`."""
        # Hints are scopes the client should also ask for, though the route works without them.
        asked = needed + [h for h in (self.hints(scope) if self.hints else []) if h not in needed]
        return rules.challenge(self.realm or rules.realm_from_request(scope), self.service, asked, error)

    async def _challenge(
        self, scope: Scope, receive: Receive, send: Send, needed: list[Access], error: str | None,
        message: str | None = None,
    ) -> None:
        headers = {"WWW-Authenticate": self.challenge(scope, needed, error)}
        if not await drain_unread(scope, receive):  # a refused upload chunk: keep the connection if we can
            headers["Connection"] = "close"
        refusal = RegistryError(ErrorCode.UNAUTHORIZED, message, detail=rules.challenge_detail(needed) or None,
                                headers=headers)
        await error_response(refusal, head=scope["method"] == "HEAD")(scope, receive, send)


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
