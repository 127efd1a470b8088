"""Connects the auth package to the app: token routes, the authorization middleware, the catalog filter,
the search gate and the token-key readiness check. One policy, group and user store serve them all."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request

from secreg.auth.access import TOKEN_PATH
from secreg.auth.groups import GroupStore, groups_file
from secreg.auth.login import PasswordLogin
from secreg.auth.middleware import AuthMiddleware, Identity
from secreg.auth.policy import PolicyStore
from secreg.auth.ratelimit import limiter_from_settings
from secreg.auth.server import TokenService, token_routes
from secreg.auth.tokens import TokenVerifier
from secreg.auth.users import UserStore
from secreg.config import Settings
from secreg.errors import ErrorCode, RegistryError
from secreg.observability import audit

log = logging.getLogger("secreg")


def wire_auth(app: Starlette, settings: Settings, role: str) -> None:
    if not settings.auth.enabled:
        return  # create_app does not import this module then (and says so in the log)
    auth = settings.auth
    policy = PolicyStore(auth.policy)
    groups = GroupStore(groups_file(auth))
    service: TokenService | None = None
    if role in ("all", "auth"):
        service = TokenService.from_settings(settings, groups=groups, policy=policy)
        app.router.routes[0:0] = token_routes(service)
    app.state.token_service = service
    app.state.policy = policy
    app.state.groups = groups
    verifier: TokenVerifier | None = None
    if role in ("all", "registry"):
        token = auth.token
        realm = token.realm or (f"{settings.public_url}{TOKEN_PATH}" if settings.public_url else "")
        if role == "registry" and not realm:
            log.warning("--role registry without auth.token.realm: clients are sent to %s on this host",
                        TOKEN_PATH)
        app.state.catalog_filter = catalog_filter(policy, groups)
        app.state.search_gate = SearchGate(policy, groups, service, auth.token.service)
        verifier = TokenVerifier.from_settings(token)
        logins = service.logins if service is not None else _registry_logins(settings)
        app.add_middleware(
            AuthMiddleware,
            verifier=verifier,
            resolve=app.state.resolver,
            realm=realm,
            service=token.service,
            accepts_basic=app.state.resolver.accepts_basic,
            hints=app.state.resolver.challenge_hints,
            basic=None if logins is None else (lambda header, client: logins.basic(header, client, "api")),
            grant=lambda subject, asked: policy.current.granted(
                subject, groups.groups_of(subject) if subject else frozenset(), asked),
        )
    app.state.token_check = token_check(service, verifier)


def _registry_logins(settings: Settings) -> PasswordLogin | None:
    """`--role registry`: HTTP Basic on the API needs the users file (compose mounts auth/ read-only)."""
    if not settings.auth.htpasswd.exists():
        log.info("no %s: the registry API accepts bearer tokens only, no HTTP Basic", settings.auth.htpasswd)
        return None
    limiter = limiter_from_settings(settings.auth.ratelimit, settings.redis)
    return PasswordLogin(UserStore(settings.auth.htpasswd), limiter)


def catalog_filter(policy: PolicyStore, groups: GroupStore) -> Any:
    """The catalog (and search) shows a caller only the repositories the policy lets them pull."""

    def visible(identity: Identity | None, names: list[str]) -> list[str]:
        if identity is None:
            return names
        member_of = groups.groups_of(identity.subject) if identity.subject else frozenset()
        current = policy.current
        return [n for n in names if current.decide(identity.subject, member_of, "repository", n, "pull").allowed]

    return visible


class SearchGate:
    """Who is searching when the request has no bearer token: HTTP Basic credentials, checked like the
    token endpoint checks them (same rate limiter, same audit events), or an anonymous caller (no
    Authorization, or the empty `Basic Og==` dockerd sends when nobody is logged in). Either way the
    policy must grant registry:catalog:search (`catalog: true`)."""

    def __init__(self, policy: PolicyStore, groups: GroupStore, service: TokenService | None,
                 realm: str) -> None:
        self.policy = policy
        self.groups = groups
        self.service = service
        self.challenge = {"WWW-Authenticate": f'Basic realm="{realm}"'}

    async def authenticate(self, request: Request) -> Identity:
        header = request.headers.get("authorization")
        client = request.client.host if request.client else "unknown"
        subject = ""
        if header and not _empty_basic(header):
            if header.partition(" ")[0].lower() != "basic" or self.service is None:
                raise RegistryError(ErrorCode.UNAUTHORIZED, "log in with docker login (HTTP Basic or a token)",
                                    headers=self.challenge)
            subject = await self.service.basic_login(header, client, "search")
        member_of = self.groups.groups_of(subject) if subject else frozenset()
        if not self.policy.current.decide(subject, member_of, "registry", "catalog", "search").allowed:
            if not subject:
                raise RegistryError(ErrorCode.UNAUTHORIZED, "log in (docker login) to search this registry",
                                    headers=self.challenge)
            audit.event("scope.denied", user=subject, client=client, denied="registry:catalog:search")
            raise RegistryError(ErrorCode.DENIED, "the access policy does not let this account search "
                                "(a rule with catalog: true grants it)")
        return Identity(subject, ())


def _empty_basic(header: str) -> bool:
    """`Basic Og==` (":"): what dockerd sends for a search when nobody is logged in."""
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "basic" and value.strip() == "Og=="


def token_check(service: TokenService | None, verifier: TokenVerifier | None) -> Any:
    """For /readyz: the signing key can sign, and the verifying key is loaded."""

    def check() -> str | None:
        if service is not None:
            try:
                service.issuer.issue("", [])
            except Exception as exc:  # noqa: BLE001 - any failure to sign means not ready
                log.warning("readyz: cannot sign a token: %s", exc)
                return f"failed: cannot sign ({type(exc).__name__})"
        if service is None and verifier is None:
            return "failed: no token key loaded"
        return None

    return check
