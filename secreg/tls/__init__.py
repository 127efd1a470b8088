"""Certificates and keys for secreg (`certificates`), the key identifiers of a token-signing key (`keyids`)
and making clients trust the CA (`trust`). Import from here."""

from secreg.tls.certificates import (
    CertificateExistsError,
    CertificateFiles,
    KeyType,
    SigningKey,
    dev_sans,
    ensure_dev_certificates,
    generate_certificates,
    load_certificate_chain,
    load_private_key,
)
from secreg.tls.keyids import jwk_thumbprint, libtrust_kid
from secreg.tls.trust import docker_trust_instructions, install_docker_ca

__all__ = [
    "CertificateExistsError",
    "CertificateFiles",
    "KeyType",
    "SigningKey",
    "dev_sans",
    "docker_trust_instructions",
    "ensure_dev_certificates",
    "generate_certificates",
    "install_docker_ca",
    "jwk_thumbprint",
    "libtrust_kid",
    "load_certificate_chain",
    "load_private_key",
]
