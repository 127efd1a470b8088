from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

import secreg.auth.tokens as tokens_module
from secreg.auth.scope import Access
from secreg.auth.tokens import InvalidToken, TokenIssuer, TokenVerifier
from secreg.config import load_settings
from secreg.tls import (
    CertificateFiles,
    generate_certificates,
    libtrust_kid,
    load_certificate_chain,
    load_private_key,
)

PULL_PUSH = [Access.repository("alice/app", "pull", "push")]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")

    def decode(part: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return decoded

    return decode(header), decode(payload), signature


def valid_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "secreg",
        "sub": "alice",
        "aud": "secreg",
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "x",
        "access": [{"type": "repository", "name": "alice/app", "actions": ["pull"]}],
    }
    claims.update(changes)
    return claims


def test_issued_token_shape(issuer: TokenIssuer, certs: CertificateFiles) -> None:
    before = int(time.time())
    issued = issuer.issue("alice", PULL_PUSH)
    header, claims, _ = segments(issued.token)
    token_cert = load_certificate_chain(certs.token_cert)[0]
    assert header["alg"] == "ES256"
    assert header["typ"] == "JWT"
    assert header["kid"] == libtrust_kid(token_cert.public_key())
    assert base64.b64decode(header["x5c"][0]) == token_cert.public_bytes(serialization.Encoding.DER)
    assert claims["iss"] == "secreg" and claims["aud"] == "secreg" and claims["sub"] == "alice"
    assert claims["access"] == [{"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}]
    assert before <= claims["iat"] == claims["nbf"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 300 == issued.expires_in
    assert issued.issued_at_text.endswith("Z")
    assert issuer.issue("alice", PULL_PUSH).token != issued.token  # unique jti
    assert segments(issuer.issue("alice", PULL_PUSH).token)[1]["jti"] != claims["jti"]


def test_verify_round_trip(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    claims = verifier.verify(issuer.issue("alice", PULL_PUSH).token)
    assert claims.subject == "alice"
    assert claims.access == (Access.repository("alice/app", "pull", "push"),)
    anonymous = verifier.verify(issuer.issue("", []).token)
    assert anonymous.subject == "" and anonymous.access == ()


def test_rsa_keys_sign_rs256(
    tmp_path: Path, new_issuer: Callable[..., TokenIssuer], new_verifier: Any
) -> None:
    rsa_certs = generate_certificates(tmp_path, ["localhost"], [], key_type="rsa")
    issuer = new_issuer(rsa_certs)
    token = issuer.issue("alice", PULL_PUSH).token
    assert segments(token)[0]["alg"] == "RS256"
    assert new_verifier(rsa_certs).verify(token).subject == "alice"


def test_lifetime_from_settings_never_below_60(
    certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer]
) -> None:
    assert new_issuer(certs, expiration=900).issue("a", []).expires_in == 900
    assert new_issuer(certs, expiration=5).issue("a", []).expires_in == 60


def test_from_settings(certs: CertificateFiles) -> None:
    settings = load_settings(None, {"http": {"tls": {"directory": str(certs.directory)}}}, environ={})
    issuer = TokenIssuer.from_settings(settings.auth.token)
    verifier = TokenVerifier.from_settings(settings.auth.token)
    assert verifier.verify(issuer.issue("bob", []).token).subject == "bob"


def test_key_and_certificate_must_match(certs: CertificateFiles, other_certs: CertificateFiles) -> None:
    with pytest.raises(ValueError, match="does not belong"):
        TokenIssuer(
            load_private_key(certs.token_key),
            load_certificate_chain(other_certs.token_cert),
            issuer="secreg",
            service="secreg",
        )


# --- what the verifier must refuse ------------------------------------------------------------------


def test_expired_token(
    certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer], verifier: TokenVerifier
) -> None:
    old = new_issuer(certs, clock=lambda: time.time() - 3600)
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(old.issue("alice", PULL_PUSH).token)


def test_leeway_of_60_seconds(
    certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer], verifier: TokenVerifier
) -> None:
    just_expired = new_issuer(certs, expiration=60, clock=lambda: time.time() - 90)  # expired 30 s ago
    assert verifier.verify(just_expired.issue("alice", []).token).subject == "alice"
    early = new_issuer(certs, clock=lambda: time.time() + 30)  # nbf 30 s ahead (clock skew)
    assert verifier.verify(early.issue("alice", []).token).subject == "alice"


def test_not_yet_valid(
    certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer], verifier: TokenVerifier
) -> None:
    future = new_issuer(certs, clock=lambda: time.time() + 600)
    with pytest.raises(InvalidToken):
        verifier.verify(future.issue("alice", []).token)


def test_wrong_audience(certs: CertificateFiles, verifier: TokenVerifier) -> None:
    other = TokenIssuer(
        load_private_key(certs.token_key),
        load_certificate_chain(certs.token_cert),
        issuer="secreg",
        service="other",
    )
    with pytest.raises(InvalidToken, match="Audience"):
        verifier.verify(other.issue("alice", PULL_PUSH).token)


def test_wrong_issuer(certs: CertificateFiles, verifier: TokenVerifier) -> None:
    other = TokenIssuer(
        load_private_key(certs.token_key),
        load_certificate_chain(certs.token_cert),
        issuer="evil",
        service="secreg",
    )
    with pytest.raises(InvalidToken, match="issuer"):
        verifier.verify(other.issue("alice", PULL_PUSH).token)


def test_tampered_signature_and_payload(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue("alice", PULL_PUSH).token
    head, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    with pytest.raises(InvalidToken):
        verifier.verify(f"{head}.{payload}.{flipped}")
    claims = segments(token)[1]
    claims["access"][0]["name"] = "bob/app"
    forged = b64(json.dumps(claims).encode())
    with pytest.raises(InvalidToken):
        verifier.verify(f"{head}.{forged}.{signature}")


def test_alg_none(verifier: TokenVerifier) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(valid_claims()).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}.e30"):
        with pytest.raises(InvalidToken):
            verifier.verify(token)
    with pytest.raises(InvalidToken):
        verifier.verify(jwt.encode(valid_claims(), "", algorithm="none"))


def test_hs256_keyed_with_the_public_key(certs: CertificateFiles, verifier: TokenVerifier) -> None:
    # The classic algorithm-confusion attack: sign HMAC with the (public) verification key as the secret.
    public_pem = (
        load_certificate_chain(certs.token_cert)[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    cert_pem = certs.token_cert.read_bytes()
    for secret in (public_pem, cert_pem):
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = b64(json.dumps(valid_claims()).encode())
        signature = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        with pytest.raises(InvalidToken, match="alg"):
            verifier.verify(f"{header}.{payload}.{signature}")


def test_token_signed_by_another_key(
    other_certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer], verifier: TokenVerifier
) -> None:
    with pytest.raises(InvalidToken, match="Signature"):
        verifier.verify(new_issuer(other_certs).issue("alice", PULL_PUSH).token)


def test_rs256_token_refused_by_an_es256_verifier(
    tmp_path: Path, new_issuer: Callable[..., TokenIssuer], verifier: TokenVerifier
) -> None:
    rsa_certs = generate_certificates(tmp_path, ["localhost"], [], key_type="rsa")
    with pytest.raises(InvalidToken):
        verifier.verify(new_issuer(rsa_certs).issue("alice", PULL_PUSH).token)


def test_refresh_token_is_not_an_access_token(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    refresh = issuer.issue_refresh("alice", "0123456789abcdef", "docker")
    header, claims, _ = segments(refresh)
    assert header["typ"] != "JWT" and claims["aud"] != "secreg" and "access" not in claims
    with pytest.raises(InvalidToken):
        verifier.verify(refresh)
    grant = issuer.check_refresh(refresh)
    assert (grant.subject, grant.fingerprint, grant.client_id) == ("alice", "0123456789abcdef", "docker")


def test_access_token_is_not_a_refresh_token(issuer: TokenIssuer) -> None:
    with pytest.raises(InvalidToken):
        issuer.check_refresh(issuer.issue("alice", PULL_PUSH).token)


def test_expired_refresh_token(
    certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer], issuer: TokenIssuer
) -> None:
    old = new_issuer(certs, refresh_expiration=100, clock=lambda: time.time() - 3600)
    with pytest.raises(InvalidToken):
        issuer.check_refresh(old.issue_refresh("alice", "f", "docker"))


@pytest.mark.parametrize(
    "change",
    [
        {"access": None},
        {"access": "repository:alice/app:pull"},
        {"access": [{"type": "repository", "name": "alice/app", "actions": "pull"}]},
        {"access": [{"type": "repository", "name": 3, "actions": ["pull"]}]},
        {"access": [{"type": "repository", "name": "a", "actions": [1]}]},
        {"access": ["repository:a:pull"]},
        {"sub": None},
        {"exp": None},
        {"iss": None},
        {"aud": None},
        {"iss": "secre"},  # a prefix of ours (PyJWT 2.10.0 matched issuers by substring: CVE-2024-53861)
        {"iss": "secreg2"},
        {"iss": ["secreg"]},
        {"aud": "secre"},
        {"aud": ["other", "secre"]},
        {"exp": int(time.time()) - 3600},
        {"nbf": int(time.time()) + 3600},
    ],
)
def test_malformed_claims_even_when_signed(
    certs: CertificateFiles, verifier: TokenVerifier, change: dict[str, Any]
) -> None:
    claims = {k: v for k, v in valid_claims(**change).items() if v is not None}
    # Signed as raw JSON: PyJWT's encoder would refuse some of these claims before the verifier sees them.
    token = jwt.api_jws.encode(json.dumps(claims).encode(), load_private_key(certs.token_key), algorithm="ES256")
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_foreign_typ_is_refused(certs: CertificateFiles, verifier: TokenVerifier) -> None:
    token = jwt.encode(
        valid_claims(), load_private_key(certs.token_key), algorithm="ES256", headers={"typ": "at+jwt"}
    )
    with pytest.raises(InvalidToken, match="typ"):
        verifier.verify(token)
    plain = jwt.encode(valid_claims(), load_private_key(certs.token_key), algorithm="ES256")
    assert verifier.verify(plain).subject == "alice"


def test_key_material_in_the_header_is_never_trusted(
    certs: CertificateFiles, other_certs: CertificateFiles, verifier: TokenVerifier
) -> None:
    """A forger signs with a key of their own and names it in the header every way JWS allows (an embedded JWK,
    a URL, a certificate chain, our key's ID): the verifier checks against the configured key alone."""
    forger = load_private_key(other_certs.token_key)
    public = load_certificate_chain(other_certs.token_cert)[0].public_key()
    our_kid = libtrust_kid(load_certificate_chain(certs.token_cert)[0].public_key())  # type: ignore[arg-type]
    chain = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
             for c in load_certificate_chain(other_certs.token_cert)]
    headers: list[dict[str, Any]] = [
        {"jwk": json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))},  # type: ignore[arg-type]
        {"jku": "https://forger.example/keys.json"},
        {"x5u": "https://forger.example/chain.pem"},
        {"x5c": chain},
        {"kid": our_kid},
        {"kid": our_kid, "x5c": chain, "jwk": json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))},  # type: ignore[arg-type]
    ]
    for header in headers:
        with pytest.raises(InvalidToken, match="Signature"):
            verifier.verify(jwt.encode(valid_claims(), forger, algorithm="ES256", headers=header))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "a.b", "....", "x" * 20000, "\u00e9.\u00e9.\u00e9"])
def test_garbage(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(garbage)


# --- cache ----------------------------------------------------------------------------------------------


def test_successful_verifications_are_cached_until_expiry(
    certs: CertificateFiles, issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [time.time()]
    verifier = TokenVerifier(
        load_certificate_chain(certs.token_cert)[0].public_key(),  # type: ignore[arg-type]
        issuer="secreg",
        service="secreg",
        clock=lambda: now[0],
    )
    calls: list[str] = []
    real_decode = tokens_module._decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(tokens_module, "_decode", counting_decode)
    token = issuer.issue("alice", PULL_PUSH).token
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    assert len(calls) == 1
    now[0] += 300 + 61  # past exp + leeway: the cached entry no longer counts
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)
    with pytest.raises(InvalidToken):
        verifier.verify("not.a.token")
    assert len(calls) == 2  # failures are never cached


def test_cache_is_bounded(certs: CertificateFiles, issuer: TokenIssuer) -> None:
    verifier = TokenVerifier(
        load_certificate_chain(certs.token_cert)[0].public_key(),  # type: ignore[arg-type]
        issuer="secreg",
        service="secreg",
        cache_size=4,
    )
    for i in range(20):
        verifier.verify(issuer.issue(f"user{i}", []).token)
        assert len(verifier._cache) <= 4
