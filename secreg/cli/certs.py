"""`secreg certs generate | show`: create the CA, server certificate and token key; inspect them."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from secreg import tls
from secreg.cli.main import CliError

DEFAULT_DIR = Path("./certs")
# What the trust instructions assume; the certs.d directory name must match the registry's real port.
DEFAULT_PORT = 5000

_DESCRIPTIONS = {
    "ca_key": "CA private key: keep secret, it can issue certificates clients trust",
    "ca_cert": "CA certificate: give this to clients",
    "server_key": "server private key",
    "server_cert": "server certificate (HTTPS)",
    "token_key": "token signing key",
    "token_cert": "token signing certificate (issued by the CA)",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("certs", help="create or inspect the CA, server certificate and token key")
    certs = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    gen = certs.add_parser(
        "generate",
        help="create a new CA, server certificate and token signing key",
        description="Create a private CA, a server certificate issued by it and a token signing key. "
        "Without --host/--ip the certificate covers this machine's name, localhost, 127.0.0.1 and ::1.",
    )
    gen.add_argument("--out", type=Path, default=DEFAULT_DIR, help="directory to write to (default: ./certs)")
    gen.add_argument("--host", action="append", default=[], metavar="NAME", help="DNS name (repeatable)")
    gen.add_argument("--ip", action="append", default=[], metavar="IP", help="IP address (repeatable)")
    gen.add_argument(
        "--force", action="store_true", help="replace existing files (clients must re-trust the CA)"
    )
    gen.add_argument(
        "--key-type", choices=("ec", "rsa"), default="ec", help="key algorithm (default: ec P-256)"
    )
    gen.add_argument(
        "--days", type=int, default=825, help="server certificate validity in days (default: 825)"
    )
    gen.set_defaults(func=_generate)

    show = certs.add_parser(
        "show", help="print the server certificate's names and dates and the token key id"
    )
    show.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="certificate directory (default: ./certs)"
    )
    show.set_defaults(func=_show)


def _generate(args: argparse.Namespace) -> int:
    hosts: list[str] = args.host
    ips: list[str] = args.ip
    if not hosts and not ips:
        hosts, ips = tls.dev_sans()
    try:
        files = tls.generate_certificates(
            args.out, hosts, ips, force=args.force, key_type=args.key_type, days=args.days
        )
    except (tls.CertificateExistsError, ValueError) as exc:
        raise CliError(str(exc)) from None

    print(f"Wrote certificates to {files.directory}:")
    for field, description in _DESCRIPTIONS.items():
        path: Path = getattr(files, field)
        mode = path.stat().st_mode
        print(f"  {stat.filemode(mode)} {stat.S_IMODE(mode):04o}  {path}  ({description})")
    print(f"Certificate names: {', '.join([*hosts, *ips])}")

    host_ports = [_host_port(h) for h in [*hosts, *ips] if not h.startswith("*.")]
    print()
    print(
        f"To let clients pull and push, trust the CA on each of them. The commands below assume port "
        f"{DEFAULT_PORT}; the port must be the one the registry listens on, so change it if yours differs."
    )
    print(tls.docker_trust_instructions(files.ca_cert, host_ports), end="")
    return 0


def _host_port(host: str) -> str:
    try:
        is_v6 = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        is_v6 = False
    return f"[{host}]:{DEFAULT_PORT}" if is_v6 else f"{host}:{DEFAULT_PORT}"


def _show(args: argparse.Namespace) -> int:
    files = tls.CertificateFiles.in_directory(args.dir)
    if not files.server_cert.exists():
        raise CliError(
            f"no server certificate at {files.server_cert}; create one with `secreg certs generate`"
        )
    try:
        server = tls.load_certificate_chain(files.server_cert)[0]
        ca = tls.load_certificate_chain(files.ca_cert)[0] if files.ca_cert.exists() else None
        token_key = tls.load_private_key(files.token_key) if files.token_key.exists() else None
    except ValueError as exc:
        raise CliError(str(exc)) from None

    now = datetime.datetime.now(datetime.UTC)
    not_after = server.not_valid_after_utc
    remaining = (
        f"expired {-(not_after - now).days} days ago"
        if not_after < now
        else f"{(not_after - now).days} days left"
    )
    print(f"Server certificate  {files.server_cert}")
    print(f"  subject:    {server.subject.rfc4514_string()}")
    print(f"  issuer:     {server.issuer.rfc4514_string()}")
    print(f"  names:      {', '.join(_sans(server)) or '(none)'}")
    print(f"  not before: {server.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    print(f"  not after:  {not_after:%Y-%m-%d %H:%M:%S} UTC ({remaining})")
    if ca is not None:
        print(f"  issued by {files.ca_cert}: {'yes' if _issued_by(server, ca) else 'NO'}")

    if token_key is None:
        print(f"Token signing key   none ({files.token_key} is missing)")
        return 0
    public = token_key.public_key()
    print(f"Token signing key   {files.token_key}")
    print(f"  algorithm:  {_jws_algorithm(token_key)}")
    print(f"  kid:        {tls.libtrust_kid(public)}")
    print(f"  thumbprint: {tls.jwk_thumbprint(public)}")
    return 0


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)] + [
        f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)
    ]


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _jws_algorithm(key: tls.SigningKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return {256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size, f"EC {key.curve.name}")
