"""The token server: `GET /auth/token` (token.md, HTTP Basic or anonymous) and `POST /auth/token`
(oauth.md: grant_type=password | refresh_token).

`docker login` sends `GET ?service=&account=USER&client_id=docker&offline_token=true` with Basic
credentials and no scope, keeps the `refresh_token`, and later POSTs `grant_type=refresh_token` with the
scope each operation needs. Requested scopes are cut down to what the policy allows (never an error);
bad credentials answer 401, repeated failures 429 with `Retry-After`.

`POST /auth/revoke` (RFC 7009: form `token=<refresh token>`) revokes one refresh token on every token server
that shares the revocation list (`secreg.auth.revocation`); as the RFC says, an invalid or unknown token also
answers 200, so the endpoint tells a caller nothing about tokens it does not hold. Access tokens cannot be
revoked (they are checked offline by every replica) and live `auth.token.expiration` seconds (5 minutes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from secreg.auth.access import TOKEN_PATH
from secreg.auth.groups import GroupStore, groups_file
from secreg.auth.login import LoginRefused, PasswordLogin, parse_basic
from secreg.auth.policy import PolicyStore
from secreg.auth.ratelimit import LoginLimiter, limiter_from_settings
from secreg.auth.reuse import TokenReuse
from secreg.auth.revocation import Revocations, RevocationUnavailable, revocations_from_settings
from secreg.auth.scope import Access, ScopeError, parse_scopes
from secreg.auth.tokens import InvalidToken, IssuedToken, TokenIssuer
from secreg.auth.users import UserStore
from secreg.config import Settings
from secreg.errors import ErrorCode, RegistryError
from secreg.httperrors import error_response
from secreg.names import NAME_PATTERN
from secreg.numbers import parse_count
from secreg.observability import audit
from secreg.observability.metrics import auth_failure
from secreg.requestbody import keeps_connection
from secreg.scopekeys import USER_KEY

__all__ = ["REVOKE_PATH", "TOKEN_PATH", "TokenService", "token_routes"]

log = logging.getLogger("secreg.auth")
REVOKE_PATH = "/auth/revoke"

MAX_FORM_BYTES = 64 * 1024
MAX_SCOPES = 64
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _Refused(Exception):
    """Ends a token request with an error answer (caught in `handle`)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        oauth_error: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or code.status
        self.oauth_error = oauth_error
        self.headers = dict(headers or {})

    def response(self, oauth: bool) -> Response:
        # RFC 6749 section 5.2 fields for OAuth clients, next to the registry's errors list for docker.
        extra = {"error": self.oauth_error, "error_description": self.message} if oauth and self.oauth_error else None
        error = RegistryError(self.code, self.message, status=self.status, headers=self.headers)
        return error_response(error, api_version=False, extra=extra, headers=_NO_STORE)


def _bad_request(message: str, oauth_error: str = "invalid_request") -> _Refused:
    # The OCI table has no "bad request" code of its own; UNSUPPORTED with status 400 says it best.
    return _Refused(ErrorCode.UNSUPPORTED, message, status=400, oauth_error=oauth_error)


@dataclass(frozen=True)
class _Login:
    subject: str  # "" = anonymous
    password: bool  # authenticated with a password (may receive a refresh token)


class TokenService:
    """Everything the token endpoint needs; build it with `from_settings`, mount it with `token_routes`."""

    def __init__(
        self,
        *,
        issuer: TokenIssuer,
        users: UserStore,
        groups: GroupStore,
        policy: PolicyStore,
        limiter: LoginLimiter,
        revocations: Revocations,
        realm_name: str = "secreg",
        max_body: int = MAX_FORM_BYTES,
        reuse: float = 0,
    ) -> None:
        self.issuer = issuer
        self.max_body = max_body
        self.users = users
        self.groups = groups
        self.policy = policy
        self.limiter = limiter
        self.revocations = revocations
        self.service = issuer.service
        self.reuse = TokenReuse(reuse, issuer.expiration, clock=issuer.clock)
        self._basic_challenge = {"WWW-Authenticate": f'Basic realm="{realm_name}"'}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, groups: GroupStore | None = None, policy: PolicyStore | None = None
    ) -> TokenService:
        """`groups` and `policy`: stores the registry's token verifier already reads, to share them."""
        auth = settings.auth
        return cls(
            issuer=TokenIssuer.from_settings(auth.token),
            users=UserStore(auth.htpasswd),
            groups=groups or GroupStore(groups_file(auth)),
            policy=policy or PolicyStore(auth.policy),
            limiter=limiter_from_settings(auth.ratelimit, settings.redis),
            revocations=revocations_from_settings(auth, settings.redis),
            realm_name=auth.token.service,
            max_body=auth.token.max_body,
            reuse=auth.token.reuse,
        )

    @property
    def logins(self) -> PasswordLogin:
        return PasswordLogin(self.users, self.limiter)

    async def handle(self, request: Request) -> Response:
        oauth = request.method == "POST"
        try:
            if oauth:
                return await self._post(request)
            return await self._get(request)
        except _Refused as refused:
            if oauth:
                await _settle_body(request, refused, self.max_body)
            return refused.response(oauth)

    # --- GET (token.md) -------------------------------------------------------------------------------

    async def _get(self, request: Request) -> Response:
        params = request.query_params
        self._check_service(params.get("service"))
        requested = self._scopes(params.getlist("scope"))
        client = _client(request)
        header = request.headers.get("authorization")
        if header:
            user, password = self._basic(header)
            account = params.get("account")
            if account and account != user:
                audit.event("login.failed", user=user, client=client, via="basic",
                            reason=f"account {account[:64]!r} differs from the user")
                auth_failure("bad_credentials")
                raise self._unauthorized("account does not match the credentials")
            login = await self._password_login(user, password, client, "basic")
            request.scope[USER_KEY] = login.subject
        else:
            login = _Login("", False)
        granted = self._grant(login.subject, requested, client)
        issued, answer = self._access_token(login.subject, granted)
        if login.password and params.get("offline_token", "").lower() in ("true", "1"):
            refresh = self._refresh_token(login.subject, params.get("client_id", ""))
            if refresh:
                return _json({**_get_body(issued), "refresh_token": refresh})
        return Response(answer, headers=_NO_STORE, media_type="application/json")

    def _access_token(self, subject: str, granted: list[Access]) -> tuple[IssuedToken, bytes]:
        """The access token for a GET, and its JSON answer: the one issued moments ago for the same grant when
        `secreg.auth.reuse` allows, else a fresh one."""
        generation = self.revocations.generation() if self.reuse.seconds > 0 else None
        key = self.reuse.key(subject, self.users.fingerprint(subject) if subject else None, granted)
        reused = self.reuse.get(key, generation)
        if reused is not None:
            return reused
        issued = self.issuer.issue(subject, granted)
        answer = json.dumps(_get_body(issued)).encode()
        self.reuse.put(key, generation, issued, answer)
        return issued, answer

    # --- POST (oauth.md) ------------------------------------------------------------------------------

    async def _post(self, request: Request) -> Response:
        form = await _read_form(request, self.max_body)
        self._check_service(form.get("service"))
        if not form.get("client_id"):
            raise _bad_request("client_id is required")
        requested = self._scopes([form["scope"]] if form.get("scope") else [])
        client = _client(request)
        grant_type = form.get("grant_type", "")
        refresh_token: str | None = None
        if grant_type == "password":
            user, password = form.get("username"), form.get("password")
            if not user or password is None:
                raise _bad_request("username and password are required for grant_type=password")
            login = await self._password_login(user, password, client, "password grant")
            request.scope[USER_KEY] = login.subject
            if form.get("access_type") == "offline":
                refresh_token = self._refresh_token(login.subject, form["client_id"])
        elif grant_type == "refresh_token":
            refresh_token = form.get("refresh_token")
            if not refresh_token:
                raise _bad_request("refresh_token is required for grant_type=refresh_token")
            login = await self._refresh_login(refresh_token, client)
            request.scope[USER_KEY] = login.subject
        else:
            raise _bad_request(f"unsupported grant_type {grant_type!r}", "unsupported_grant_type")
        granted = self._grant(login.subject, requested, client)
        issued = self.issuer.issue(login.subject, granted)
        body: dict[str, Any] = {
            "access_token": issued.token,
            "scope": " ".join(a.format() for a in granted),
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at_text,
        }
        if refresh_token:
            body["refresh_token"] = refresh_token
        return _json(body)

    # --- steps ----------------------------------------------------------------------------------------

    def _check_service(self, service: str | None) -> None:
        if service is not None and service != self.service:
            raise _bad_request(f"unknown service {service!r}; this token server serves {self.service!r}")

    def _scopes(self, values: list[str]) -> list[Access]:
        try:
            requested = parse_scopes(values)
        except ScopeError as exc:
            raise _bad_request(str(exc), "invalid_scope") from None
        if len(requested) > MAX_SCOPES:
            raise _bad_request(f"too many scopes (at most {MAX_SCOPES})", "invalid_scope")
        for access in requested:
            if access.base_type == "repository" and not NAME_PATTERN.match(access.name):
                raise _bad_request(f"invalid repository name in scope: {access.name[:200]!r}", "invalid_scope")
        return requested

    def _unauthorized(self, message: str) -> _Refused:
        return _Refused(
            ErrorCode.UNAUTHORIZED, message, oauth_error="invalid_grant", headers=self._basic_challenge
        )

    def _refusal(self, refused: LoginRefused) -> _Refused:
        if refused.code is ErrorCode.TOOMANYREQUESTS:
            return _Refused(refused.code, refused.message, oauth_error="slow_down", headers=refused.headers)
        return self._unauthorized(refused.message)

    def _basic(self, header: str) -> tuple[str, str]:
        try:
            return parse_basic(header)
        except LoginRefused as refused:
            raise self._refusal(refused) from None

    async def _password_login(self, user: str, password: str, client: str, via: str) -> _Login:
        try:
            return _Login(await self.logins.login(user, password, client, via), True)
        except LoginRefused as refused:
            raise self._refusal(refused) from None

    async def password_login(self, user: str, password: str, client: str, via: str) -> str:
        """Check a user name and password as the token endpoint does (same rate limiter, same audit events),
        for the web UI's login form; the user name, or RegistryError (401, or 429 with Retry-After)."""
        try:
            return (await self._password_login(user, password, client, via)).subject
        except _Refused as refused:
            raise RegistryError(refused.code, refused.message, status=refused.status,
                                headers=refused.headers) from None

    async def basic_login(self, header: str, client: str, via: str) -> str:
        """Check an `Authorization: Basic` value as the token endpoint does (same rate limiter, same audit
        events) for another endpoint that accepts passwords; the user name, or RegistryError (401 with a
        Basic challenge, 429 with Retry-After)."""
        try:
            user, password = self._basic(header)
            return (await self._password_login(user, password, client, via)).subject
        except _Refused as refused:
            raise RegistryError(refused.code, refused.message, status=refused.status,
                                headers=refused.headers) from None

    async def _refresh_login(self, token: str, client: str) -> _Login:
        # Not rate limited: a refresh token cannot be guessed, and a client still holding one revoked by
        # `secreg user passwd` would otherwise lock its own address out of logging in again.
        try:
            grant = self.issuer.check_refresh(token)
        except InvalidToken as exc:
            audit.event("refresh.refused", client=client, reason=str(exc)[:200])
            auth_failure("invalid_refresh_token")
            raise self._unauthorized("invalid refresh token") from None
        if self.users.fingerprint(grant.subject) != grant.fingerprint:
            audit.event("refresh.refused", user=grant.subject, client=client, reason="revoked")
            auth_failure("invalid_refresh_token")
            raise self._unauthorized("refresh token revoked; log in again")
        try:
            revoked = await anyio.to_thread.run_sync(
                self.revocations.revoked, grant.subject, grant.token_id, grant.issued_at)
        except RevocationUnavailable as exc:
            # Fail closed: never grant on a token that may have been revoked (module docstring of revocation).
            audit.event("refresh.refused", user=grant.subject, client=client, reason=f"unavailable: {exc}"[:200])
            raise _Refused(ErrorCode.UNAVAILABLE, "cannot check refresh-token revocation right now; try again",
                           oauth_error="temporarily_unavailable", headers={"Retry-After": "5"}) from None
        if revoked:
            audit.event("refresh.refused", user=grant.subject, client=client, reason="revoked")
            auth_failure("invalid_refresh_token")
            raise self._unauthorized("refresh token revoked; log in again")
        return _Login(grant.subject, False)

    async def revoke(self, request: Request) -> Response:
        """`POST /auth/revoke` (RFC 7009)."""
        try:
            form = await _read_form(request, self.max_body)
            token = form.get("token")
            if not token:
                raise _bad_request("token is required")
            try:
                grant = self.issuer.check_refresh(token)
            except InvalidToken:
                return Response(status_code=200, headers=_NO_STORE)  # RFC 7009 2.2: invalid tokens are no error
            try:
                await anyio.to_thread.run_sync(self.revocations.revoke_token, grant.token_id, grant.expires_at)
            except RevocationUnavailable as exc:
                log.warning("refresh-token revocation failed: %s", exc)
                raise _Refused(ErrorCode.UNAVAILABLE, "cannot record the revocation right now; try again",
                               oauth_error="temporarily_unavailable", headers={"Retry-After": "5"}) from None
            audit.event("refresh.revoked", user=grant.subject, client=_client(request), by="token holder")
            return Response(status_code=200, headers=_NO_STORE)
        except _Refused as refused:
            await _settle_body(request, refused, self.max_body)
            return refused.response(True)

    def _refresh_token(self, subject: str, client_id: str) -> str | None:
        fingerprint = self.users.fingerprint(subject)
        return None if fingerprint is None else self.issuer.issue_refresh(subject, fingerprint, client_id)

    def _grant(self, subject: str, requested: list[Access], client: str) -> list[Access]:
        groups = self.groups.groups_of(subject) if subject else frozenset()
        granted = self.policy.current.granted(subject, groups, requested)
        got = {(a.type, a.name): a.actions for a in granted}
        denied = [
            Access(a.type, a.name, a.actions - got.get((a.type, a.name), frozenset()))
            for a in requested
            if a.actions - got.get((a.type, a.name), frozenset())
        ]
        if denied:
            audit.event("scope.denied", user=subject or "-", client=client,
                        denied=" ".join(a.format() for a in denied))
        return granted


def _get_body(issued: IssuedToken) -> dict[str, Any]:
    # token.md: `expires_in` counts from `issued_at` (the token's own), also for a reused token.
    return {"token": issued.token, "access_token": issued.token, "expires_in": issued.expires_in,
            "issued_at": issued.issued_at_text}


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _json(body: Mapping[str, Any]) -> Response:
    return Response(json.dumps(body), headers=_NO_STORE, media_type="application/json")


async def _settle_body(request: Request, refused: _Refused, limit: int) -> None:
    """Read the little that is left of a refused body so the HTTP/1.1 connection stays usable (see
    `secreg.requestbody`); past `limit` (auth.token.maxbody), or declared past it, answer at once with
    Connection: close."""
    if not keeps_connection(request.scope):
        return
    declared = parse_count(request.headers.get("content-length") or "0")
    if declared is None or declared > limit:
        refused.headers["Connection"] = "close"
        return
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                refused.headers["Connection"] = "close"
                return
    except (RuntimeError, ClientDisconnect):  # RuntimeError: already read to the end
        pass


async def _read_form(request: Request, limit: int) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _bad_request("expected an application/x-www-form-urlencoded body")
    too_large = _Refused(ErrorCode.SIZE_INVALID, f"request body larger than {limit} bytes", status=413)
    declared = parse_count(request.headers.get("content-length") or "0")
    if declared is None or declared > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise _bad_request("malformed form body") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def token_routes(service: TokenService, path: str = TOKEN_PATH) -> list[Route]:
    """The token endpoint as Starlette routes (GET, HEAD and POST on `path`) and the revocation endpoint."""
    return [Route(path, service.handle, methods=["GET", "POST"], name="auth_token"),
            Route(REVOKE_PATH, service.revoke, methods=["POST"], name="auth_revoke")]
