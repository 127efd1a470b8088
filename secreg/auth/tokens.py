"""Signing and verifying the registry's bearer tokens (JWT, Docker token-auth `jwt.md`).

Access tokens carry `iss, sub, aud (= service), exp, nbf, iat, jti` and `access: [{type, name,
actions}]`, signed ES256 (EC P-256 token key) or RS256 (RSA). The header names the key twice over, so
the Go reference registry accepts them with `rootcertbundle` set to our CA or to token.crt: `x5c` (the
token certificate chain, tried first) and `kid` (the libtrust key ID, for bundles holding token.crt).

Refresh tokens are JWTs too, but with their own `typ` and audience (`<service>#refresh`) and no
`access` claim, so neither we nor the reference registry accept one as an access token. They carry a
fingerprint of the user's password hash: changing the password or deleting the user revokes them. Their
`iat` has millisecond precision (a NumericDate may be fractional) so that a revocation cutoff
(`secreg.auth.revocation`) separates the tokens issued before it from a login a moment after.
"""

from __future__ import annotations

import base64
import datetime
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secreg.auth.scope import Access
from secreg.config import TokenSettings
from secreg.tls import SigningKey, libtrust_kid, load_certificate_chain, load_private_key

__all__ = [
    "LEEWAY",
    "Claims",
    "InvalidToken",
    "IssuedToken",
    "RefreshGrant",
    "TokenIssuer",
    "TokenVerifier",
    "algorithm_for",
]

LEEWAY = 60  # seconds of clock skew allowed on exp and nbf, as in the reference registry
MIN_LIFETIME = 60  # token.md: "a token should never be returned with less than 60 seconds to live"
MAX_TOKEN_BYTES = 16 * 1024
ACCESS_TYP = "JWT"
REFRESH_TYP = "secreg-refresh+jwt"

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class InvalidToken(Exception):
    """A token failed verification (bad signature, wrong issuer or audience, expired, malformed...)."""


def algorithm_for(key: SigningKey | PublicKey) -> str:
    """The one JWS algorithm a key signs with: ES256/384/512 by curve, RS256 for RSA."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name not in by_curve:
            raise ValueError(f"unsupported elliptic curve for token signing: {key.curve.name}")
        return by_curve[key.curve.name]
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    raise ValueError(f"unsupported token key type: {type(key).__name__}")


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: datetime.datetime

    @property
    def issued_at_text(self) -> str:
        """RFC 3339 UTC, as token.md's `issued_at`."""
        return self.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RefreshGrant:
    subject: str
    fingerprint: str
    client_id: str
    token_id: str = ""  # jti
    issued_at: float = 0.0
    expires_at: float = 0.0


@dataclass(frozen=True)
class Claims:
    subject: str
    access: tuple[Access, ...]
    expires_at: float
    jti: str = ""


class TokenIssuer:
    """Signs access and refresh tokens with the token key; the certificate chain goes into `x5c`."""

    def __init__(
        self,
        key: SigningKey,
        chain: Sequence[x509.Certificate],
        *,
        issuer: str,
        service: str,
        expiration: int = 300,
        refresh_expiration: int = 30 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not chain:
            raise ValueError("the token certificate chain is empty")
        public = key.public_key()
        leaf_key = chain[0].public_key()
        if not isinstance(leaf_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)) or _spki(
            leaf_key
        ) != _spki(public):
            raise ValueError("the token certificate does not belong to the token signing key")
        self.key = key
        self.public_key: PublicKey = public
        self.algorithm = algorithm_for(key)
        self.issuer = issuer
        self.service = service
        self.expiration = max(expiration, MIN_LIFETIME)
        self.refresh_expiration = refresh_expiration
        self.clock = clock
        self.kid = libtrust_kid(public)
        self._x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]

    @classmethod
    def from_settings(cls, settings: TokenSettings) -> TokenIssuer:
        return cls(
            load_private_key(settings.key),
            load_certificate_chain(settings.certificate),
            issuer=settings.issuer,
            service=settings.service,
            expiration=settings.expiration,
            refresh_expiration=settings.refresh_expiration,
        )

    def _sign(self, claims: Mapping[str, Any], typ: str) -> str:
        headers = {"typ": typ, "kid": self.kid, "x5c": self._x5c}
        return jwt.encode(dict(claims), self.key, algorithm=self.algorithm, headers=headers)

    def issue(self, subject: str, access: Sequence[Access]) -> IssuedToken:
        """An access token for `subject` ("" = anonymous) granting exactly `access`."""
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expiration,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [a.claim() for a in access],
        }
        issued_at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        return IssuedToken(self._sign(claims, ACCESS_TYP), self.expiration, issued_at)

    def issue_refresh(self, subject: str, fingerprint: str, client_id: str = "") -> str:
        """A refresh token bound to the user's current password hash (see `UserStore.fingerprint`)."""
        issued = round(self.clock(), 3)
        now = int(issued)
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.refresh_audience,
            "exp": now + self.refresh_expiration,
            "nbf": now,
            "iat": issued,
            "jti": secrets.token_urlsafe(16),
            "fpr": fingerprint,
            "client_id": client_id,
        }
        return self._sign(claims, REFRESH_TYP)

    @property
    def refresh_audience(self) -> str:
        return f"{self.service}#refresh"

    def check_refresh(self, token: str) -> RefreshGrant:
        """Verify a refresh token's signature, issuer, audience and lifetime (not yet the fingerprint)."""
        header, claims = _decode(
            token, self.public_key, self.algorithm, issuer=self.issuer, audience=self.refresh_audience
        )
        if header.get("typ") != REFRESH_TYP:
            raise InvalidToken("not a refresh token")
        subject, fingerprint = claims.get("sub"), claims.get("fpr")
        if not isinstance(subject, str) or not subject or not isinstance(fingerprint, str):
            raise InvalidToken("malformed refresh token")
        client_id, token_id, issued, expires = (claims.get(k) for k in ("client_id", "jti", "iat", "exp"))
        if not isinstance(token_id, str) or not token_id:
            raise InvalidToken("malformed refresh token")
        return RefreshGrant(subject, fingerprint, client_id if isinstance(client_id, str) else "", token_id,
                            float(issued) if isinstance(issued, (int, float)) else 0.0,
                            float(expires) if isinstance(expires, (int, float)) else 0.0)


def _decode(
    token: str, key: PublicKey, algorithm: str, *, issuer: str, audience: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("token too large")
    try:
        decoded = jwt.api_jwt.decode_complete(
            token,
            key,
            algorithms=[algorithm],  # pinned to the key: never "none", never HS* keyed with the public key
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidToken(str(exc)) from None
    return decoded["header"], decoded["payload"]


def _access_claim(value: Any) -> tuple[Access, ...]:
    if not isinstance(value, list):
        raise InvalidToken("the access claim must be a list")
    accesses = []
    for entry in value:
        if not isinstance(entry, dict):
            raise InvalidToken("malformed access claim entry")
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(actions, list):
            raise InvalidToken("malformed access claim entry")
        if not all(isinstance(a, str) for a in actions):
            raise InvalidToken("malformed access claim actions")
        accesses.append(Access(kind, name, frozenset(actions)))
    return tuple(accesses)


class TokenVerifier:
    """Checks access tokens for the registry: signature with the token public key (algorithm pinned),
    issuer, audience, exp/nbf with 60 s leeway, and the shape of `access`.

    Successful verifications are cached until the token expires (bounded), because every registry
    request carries a token and an ECDSA verification costs far more than a dict lookup.
    """

    def __init__(
        self,
        public_key: PublicKey,
        *,
        issuer: str,
        service: str,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.public_key = public_key
        self.algorithm = algorithm_for(public_key)
        self.issuer = issuer
        self.service = service
        self._cache_size = cache_size
        self._cache: dict[str, Claims] = {}
        self._lock = threading.Lock()
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: TokenSettings) -> TokenVerifier:
        key = load_certificate_chain(settings.certificate)[0].public_key()
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise ValueError(f"{settings.certificate}: the token key must be EC or RSA")  # noqa: TRY004
        return cls(key, issuer=settings.issuer, service=settings.service)

    def verify(self, token: str) -> Claims:
        """The token's claims, or InvalidToken."""
        cached = self._cache.get(token)
        if cached is not None:
            if self._clock() <= cached.expires_at + LEEWAY:
                return cached
            with self._lock:
                self._cache.pop(token, None)
            raise InvalidToken("token expired")
        header, payload = _decode(
            token, self.public_key, self.algorithm, issuer=self.issuer, audience=self.service
        )
        typ = header.get("typ", ACCESS_TYP)
        if not isinstance(typ, str) or typ.upper() != ACCESS_TYP:
            raise InvalidToken(f"not an access token (typ {typ!r})")
        if "access" not in payload:
            raise InvalidToken("the token has no access claim")
        subject = payload["sub"]
        claims = Claims(
            subject, _access_claim(payload["access"]), float(payload["exp"]), str(payload.get("jti", ""))
        )
        self._remember(token, claims)
        return claims

    def _remember(self, token: str, claims: Claims) -> None:
        with self._lock:
            if len(self._cache) >= self._cache_size:
                now = self._clock()
                for key in [k for k, c in self._cache.items() if c.expires_at + LEEWAY < now]:
                    del self._cache[key]
                if len(self._cache) >= self._cache_size:
                    for key in list(self._cache)[: self._cache_size // 2]:  # oldest first
                        del self._cache[key]
            self._cache[token] = claims
