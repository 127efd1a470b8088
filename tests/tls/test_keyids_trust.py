"""Key identifiers of the token key and the client-trust helpers."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm

from secreg import tls
from secreg.tls import CertificateFiles
from tests.tls.certs import b64url_int, read_cert

# RFC 7638 section 3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZ"
    "CiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZ"
    "gnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniI"
    "qbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
# libtrust key IDs derived outside Python: `openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary
# | head -c 30 | base32`, grouped by four. The EC key is derive_private_key(0x1234567890ABCDEF, P-256).
RFC7638_KID = "VUZD:EDHW:YWLN:RBFQ:KOA3:UVZ2:XKG5:2V2J:WTPI:6SRD:U6PZ:VCO5"
EC_FIXED_SCALAR = 0x1234567890ABCDEF
EC_FIXED_KID = "FIRK:SH6X:JLE3:T5FS:YH5Z:F4IQ:S2NQ:BDMK:GBHB:GRBM:VT5B:LGOS"


# --- key identifiers ----------------------------------------------------------------------------------


def test_libtrust_kid_format_and_algorithm(files: CertificateFiles) -> None:
    public = tls.load_private_key(files.token_key).public_key()
    kid = tls.libtrust_kid(public)
    groups = kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    assert set("".join(groups)) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    digest = hashlib.sha256(
        read_cert(files.token_cert)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).digest()
    assert base64.b32decode("".join(groups)) == digest[:30]


def test_libtrust_kid_known_answers() -> None:
    rsa_key = rsa.RSAPublicNumbers(65537, b64url_int(RFC7638_N)).public_key()
    assert tls.libtrust_kid(rsa_key) == RFC7638_KID
    ec_key = ec.derive_private_key(EC_FIXED_SCALAR, ec.SECP256R1()).public_key()
    assert tls.libtrust_kid(ec_key) == EC_FIXED_KID


def test_jwk_thumbprint_rfc7638_example() -> None:
    key = rsa.RSAPublicNumbers(b64url_int("AQAB"), b64url_int(RFC7638_N)).public_key()
    assert tls.jwk_thumbprint(key) == RFC7638_THUMBPRINT


def test_jwk_thumbprint_ec_matches_pyjwt_jwk() -> None:
    public = ec.derive_private_key(EC_FIXED_SCALAR, ec.SECP256R1()).public_key()
    jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    required = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    assert tls.jwk_thumbprint(public) == expected
    with pytest.raises(ValueError, match="unsupported"):
        tls.jwk_thumbprint(ed25519.Ed25519PrivateKey.generate().public_key())


# --- client trust -------------------------------------------------------------------------------------


def test_docker_trust_instructions(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    text = tls.docker_trust_instructions(ca, ["registry.lan:5000", "[::1]:5000"])
    lines = text.splitlines()
    assert (
        f"sudo mkdir -p /etc/docker/certs.d/registry.lan:5000 && sudo cp {ca} "
        "/etc/docker/certs.d/registry.lan:5000/ca.crt"
    ) in lines
    assert any(
        line.startswith(f"sudo mkdir -p /etc/containers/certs.d/registry.lan:5000 && sudo cp {ca} ")
        for line in lines
    )
    assert f"curl --cacert {ca} https://registry.lan:5000/v2/" in lines
    assert "'/etc/docker/certs.d/[::1]:5000/ca.crt'" in text  # quoted: [ ] is a shell glob
    with pytest.raises(ValueError, match="invalid registry address"):
        tls.docker_trust_instructions(ca, ["../../etc:5000"])


def test_install_docker_ca(files: CertificateFiles, tmp_path: Path) -> None:
    root = tmp_path / "certs.d"
    target = tls.install_docker_ca(files.ca_cert, "registry.lan:5000", root=root)
    assert target == root / "registry.lan:5000" / "ca.crt"
    assert target.read_bytes() == files.ca_cert.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    for bad in ("../escape:5000", "a/b:5000", "host:99999", ""):
        with pytest.raises(ValueError, match="invalid registry address"):
            tls.install_docker_ca(files.ca_cert, bad, root=root)
    with pytest.raises(ValueError):
        tls.install_docker_ca(files.ca_key, "registry.lan:5000", root=root)
    assert sorted(p.name for p in root.iterdir()) == ["registry.lan:5000"]
