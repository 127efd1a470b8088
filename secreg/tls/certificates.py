"""Certificates and keys for secreg: a private CA, the HTTPS server certificate and the token-signing key.

One directory holds six PEM files (see `CertificateFiles`): the CA that clients are told to trust, a
server certificate issued by it, and a token-signing key whose certificate the same CA issues, so a
registry configured with `ca.crt` as its root bundle accepts our tokens through an `x5c` chain as well as
through a `kid`. Private keys are written 0600 from their first byte; every write is temp file + fsync +
`os.replace`, so a crash never leaves a half-written key or certificate behind.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secreg.files import atomic_write
from secreg.tls.keyids import spki

__all__ = [
    "CertificateExistsError",
    "CertificateFiles",
    "KeyType",
    "SigningKey",
    "dev_sans",
    "ensure_dev_certificates",
    "generate_certificates",
    "load_certificate_chain",
    "load_private_key",
]

KeyType: TypeAlias = Literal["ec", "rsa"]
# The only key kinds we issue or sign with: EC P-256 (ES256) and RSA (RS256).
SigningKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

RSA_KEY_SIZE = 2048
CA_DAYS = 3650
# Clocks on clients and servers drift; a certificate that starts "now" is rejected by a client a minute behind.
BACKDATE = datetime.timedelta(minutes=5)
TOKEN_SIGNER_CN = "secreg token signer"

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


class CertificateExistsError(Exception):
    """Generation would replace existing certificate or key files (pass force / --force to allow it)."""

    def __init__(self, paths: Sequence[Path], reason: str = "already exist") -> None:
        self.paths = list(paths)
        names = ", ".join(str(p) for p in self.paths)
        super().__init__(f"{names} {reason}; refusing to overwrite (use --force to replace them)")


@dataclass(frozen=True)
class CertificateFiles:
    """Where the six PEM files live inside one certificate directory."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    token_key: Path
    token_cert: Path

    @classmethod
    def in_directory(cls, directory: Path) -> CertificateFiles:
        return cls(
            directory=directory,
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            server_cert=directory / "server.crt",
            server_key=directory / "server.key",
            token_key=directory / "token.key",
            token_cert=directory / "token.crt",
        )

    def all(self) -> tuple[Path, ...]:
        return (self.ca_cert, self.ca_key, self.server_cert, self.server_key, self.token_key, self.token_cert)


# --- generation ---------------------------------------------------------------------------------------


def generate_certificates(
    out_dir: Path,
    hosts: Sequence[str],
    ips: Sequence[str],
    *,
    force: bool = False,
    key_type: KeyType = "ec",
    days: int = 825,
) -> CertificateFiles:
    """Create a new CA, a server certificate for `hosts` + `ips` and a token-signing key pair in `out_dir`.

    Raises CertificateExistsError if any of the six files exists and `force` is false, and ValueError for
    an invalid host, IP address, key type or validity.
    """
    dns_names, addresses = _validate_sans(hosts, ips)
    _validate_options(key_type, days)
    files = CertificateFiles.in_directory(Path(out_dir))
    if not force:
        existing = [p for p in files.all() if p.exists()]
        if existing:
            raise CertificateExistsError(existing)
    _make_directory(files.directory)

    ca_key = _new_key(key_type)
    ca_cert = _build_ca(ca_key, max(CA_DAYS, days))
    _write_key(files.ca_key, ca_key)
    _write_cert(files.ca_cert, ca_cert)
    _issue_token_signer(files, ca_cert, ca_key, _new_key(key_type), days)
    # The server certificate goes last: ensure_dev_certificates treats its absence as "not finished".
    _issue_server(files, ca_cert, ca_key, dns_names, addresses, _new_key(key_type), days)
    return files


def ensure_dev_certificates(out_dir: Path) -> CertificateFiles | None:
    """Make sure `out_dir` holds a usable server certificate; return the files if anything was generated.

    Returns None when server.crt and server.key both exist. An existing CA is never replaced, because
    clients may already trust it: only a new server certificate (and a token key/certificate if missing)
    is issued from it.
    """
    files = CertificateFiles.in_directory(Path(out_dir))
    if files.server_cert.exists() and files.server_key.exists():
        return None
    hosts, ips = dev_sans()
    has_ca_cert, has_ca_key = files.ca_cert.exists(), files.ca_key.exists()
    if not has_ca_cert and not has_ca_key:
        # Nothing can chain to a CA that does not exist, so leftovers are replaced with a fresh set.
        return generate_certificates(files.directory, hosts, ips, force=True)
    if has_ca_cert != has_ca_key:
        present = files.ca_cert if has_ca_cert else files.ca_key
        missing = files.ca_key if has_ca_cert else files.ca_cert
        raise CertificateExistsError([present], f"exists but {missing} is missing")

    dns_names, addresses = _validate_sans(hosts, ips)
    ca_cert = load_certificate_chain(files.ca_cert)[0]
    ca_key = load_private_key(files.ca_key)
    if spki(ca_cert.public_key()) != spki(ca_key.public_key()):
        raise ValueError(f"{files.ca_key} is not the private key of {files.ca_cert}")
    if not (files.token_key.exists() and files.token_cert.exists()):
        token_key = load_private_key(files.token_key) if files.token_key.exists() else _new_key("ec")
        _issue_token_signer(files, ca_cert, ca_key, token_key, 825)
    _issue_server(files, ca_cert, ca_key, dns_names, addresses, _new_key("ec"), 825)
    return files


def dev_sans() -> tuple[list[str], list[str]]:
    """The (hosts, ips) of a development certificate: this machine's name, localhost and loopback."""
    hosts: list[str] = []
    for name in (socket.gethostname(), "localhost"):
        # A hostname such as "my_box" is not a DNS name a certificate can carry; skip it rather than fail.
        if is_dns_name(name) and not _is_ip(name) and name.lower() not in (h.lower() for h in hosts):
            hosts.append(name)
    return hosts, ["127.0.0.1", "::1"]


def _validate_sans(hosts: Sequence[str], ips: Sequence[str]) -> tuple[list[str], list[IPAddress]]:
    if isinstance(hosts, str) or isinstance(ips, str):
        raise TypeError("hosts and ips must be sequences of strings, not a single string")
    dns_names: list[str] = []
    for host in hosts:
        if _is_ip(host):
            raise ValueError(f"{host!r} is an IP address; pass it as an IP (--ip), not as a host name")
        if not is_dns_name(host):
            raise ValueError(
                f"invalid host name {host!r}: use letters, digits, hyphens and dots "
                "(a leading '*.' wildcard is allowed; encode international names as punycode)"
            )
        if host.lower() not in (h.lower() for h in dns_names):
            dns_names.append(host)
    addresses: list[IPAddress] = []
    for ip in ips:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"invalid IP address {ip!r}: expected e.g. 192.0.2.10 or 2001:db8::10") from None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ValueError(f"invalid IP address {ip!r}: a certificate cannot carry an IPv6 zone (%...)")
        if address not in addresses:
            addresses.append(address)
    if not dns_names and not addresses:
        raise ValueError("a server certificate needs at least one host name or IP address")
    return dns_names, addresses


def _validate_options(key_type: str, days: int) -> None:
    if key_type not in ("ec", "rsa"):
        raise ValueError(f"invalid key type {key_type!r}: expected 'ec' or 'rsa'")
    if days < 1:
        raise ValueError(f"invalid validity {days} days: must be at least 1")


def is_dns_name(name: str) -> bool:
    return len(name) <= 253 and _DNS_NAME.fullmatch(name) is not None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- building certificates ----------------------------------------------------------------------------


def _new_key(key_type: KeyType) -> SigningKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    return ec.generate_private_key(ec.SECP256R1())


def _validity(
    days: int, not_after_limit: datetime.datetime | None = None
) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=days)
    if not_after_limit is not None:
        # A certificate outliving its issuer would only fail later, and more confusingly.
        not_after = min(not_after, not_after_limit)
    return now - BACKDATE, not_after


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: _PublicKey, days: int, limit: datetime.datetime | None
) -> x509.CertificateBuilder:
    not_before, not_after = _validity(days, limit)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _build_ca(key: SigningKey, days: int) -> x509.Certificate:
    # A random suffix keeps two CAs apart: clients index trusted roots by subject, and a second
    # "secreg development CA" with the same name would shadow or be confused with the first.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "secreg"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"secreg development CA {secrets.token_hex(4)}"),
        ]
    )
    builder = (
        _builder(name, name, key.public_key(), days, None)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def _issue_server(
    files: CertificateFiles,
    ca_cert: x509.Certificate,
    ca_key: SigningKey,
    dns_names: list[str],
    addresses: list[IPAddress],
    key: SigningKey,
    days: int,
) -> None:
    common_name = dns_names[0] if dns_names else str(addresses[0])
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "secreg")]
    if len(common_name) <= 64:  # the X.520 upper bound; clients match on the SAN anyway
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(a) for a in addresses]
    cert = (
        _builder(x509.Name(attributes), ca_cert.subject, key.public_key(), days, ca_cert.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.server_key, key)
    _write_cert(files.server_cert, cert)


def _issue_token_signer(
    files: CertificateFiles, ca_cert: x509.Certificate, ca_key: SigningKey, key: SigningKey, days: int
) -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "secreg"),
            x509.NameAttribute(NameOID.COMMON_NAME, TOKEN_SIGNER_CN),
        ]
    )
    # No ExtendedKeyUsage on purpose: Go's x509.Verify, which the reference registry uses on a token's
    # x5c chain, demands serverAuth when a leaf carries an EKU and accepts any use when it carries none.
    cert = (
        _builder(name, ca_cert.subject, key.public_key(), days, ca_cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.token_key, key)
    _write_cert(files.token_cert, cert)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca_cert: x509.Certificate, ca_key: SigningKey) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # A CA made elsewhere may lack a SubjectKeyIdentifier; derive the identifier from its key instead.
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# --- files --------------------------------------------------------------------------------------------


def _make_directory(directory: Path) -> None:
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)


def _write_key(path: Path, key: SigningKey) -> None:
    # SEC1 / PKCS#1 ("EC PRIVATE KEY", "RSA PRIVATE KEY") rather than PKCS#8: every consumer we care about
    # reads them (Python ssl, Go crypto/tls, libtrust-based token servers), and not all read PKCS#8.
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    atomic_write(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    atomic_write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_private_key(path: Path) -> SigningKey:
    """Read an unencrypted PEM EC or RSA private key; ValueError for anything else."""
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"{path}: unsupported {type(key).__name__}; expected an EC or RSA private key")  # noqa: TRY004
    return key


def load_certificate_chain(path: Path) -> list[x509.Certificate]:
    """Every PEM certificate in `path`, in file order (leaf first, as we write them)."""
    data = Path(path).read_bytes()
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{path}: no valid PEM certificate ({exc})") from None
