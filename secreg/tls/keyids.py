"""Key identifiers a token's verifier matches: the libtrust key ID of the Go registry and the RFC 7638 JWK
thumbprint."""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = ["jwk_thumbprint", "libtrust_kid", "spki"]


def spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def libtrust_kid(public_key: PublicKeyTypes) -> str:
    """The libtrust key ID the Go reference registry matches a token's `kid` against.

    SHA-256 of the DER SubjectPublicKeyInfo, truncated to 240 bits, base32 without padding, in 12 groups of
    four joined by ':' (docker/libtrust keyIDFromCryptoKey).
    """
    encoded = base64.b32encode(hashlib.sha256(spki(public_key)).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def jwk_thumbprint(public_key: PublicKeyTypes) -> str:
    """RFC 7638 JWK SHA-256 thumbprint, base64url without padding (EC and RSA keys)."""
    members: dict[str, str]
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        if public_key.curve.name not in curves:
            raise ValueError(f"no JWK name for elliptic curve {public_key.curve.name}")
        size = (public_key.curve.key_size + 7) // 8
        numbers = public_key.public_numbers()
        members = {
            "crv": curves[public_key.curve.name],
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(size, "big")),
            "y": _b64url(numbers.y.to_bytes(size, "big")),
        }
    elif isinstance(public_key, rsa.RSAPublicKey):
        rsa_numbers = public_key.public_numbers()
        members = {
            "e": _b64url(_uint_bytes(rsa_numbers.e)),
            "kty": "RSA",
            "n": _b64url(_uint_bytes(rsa_numbers.n)),
        }
    else:
        raise ValueError(f"unsupported key type for a JWK thumbprint: {type(public_key).__name__}")  # noqa: TRY004
    # RFC 7638 section 3: required members only, lexicographic order, no whitespace.
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode("ascii")
    return _b64url(hashlib.sha256(canonical).digest())


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
