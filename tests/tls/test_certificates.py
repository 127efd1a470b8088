from __future__ import annotations

import base64
import datetime
import hashlib
import importlib.util
import json
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import ECAlgorithm

import secreg.cli.main
from secreg import tls
from secreg.cli.main import main
from secreg.tls import CertificateExistsError, CertificateFiles

HOSTS = ["localhost", "registry.example.test", "*.apps.example.test"]
IPS = ["127.0.0.1", "::1", "192.0.2.10"]

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


def _b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def _spki(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | x509.Certificate) -> bytes:
    public = key.public_key() if isinstance(key, x509.Certificate) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def files(tmp_path: Path) -> CertificateFiles:
    return tls.generate_certificates(tmp_path / "certs", HOSTS, IPS)


# --- generate_certificates ----------------------------------------------------------------------------


def test_generate_writes_six_files_with_safe_modes(tmp_path: Path) -> None:
    # umask 0 would make a naive open() world-writable; the modes must not depend on it.
    old = os.umask(0)
    try:
        files = tls.generate_certificates(tmp_path / "new" / "certs", ["localhost"], [])
    finally:
        os.umask(old)
    assert files == CertificateFiles.in_directory(tmp_path / "new" / "certs")
    assert sorted(p.name for p in files.directory.iterdir()) == sorted(
        ["ca.crt", "ca.key", "server.crt", "server.key", "token.key", "token.crt"]
    )
    for key in (files.ca_key, files.server_key, files.token_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for cert in (files.ca_cert, files.server_cert, files.token_cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o755


def test_private_keys_are_never_readable_by_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, int] = {}
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen[Path(dst).name] = stat.S_IMODE(os.stat(src).st_mode)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    tls.generate_certificates(tmp_path, ["localhost"], [])
    assert {name: mode for name, mode in seen.items() if name.endswith(".key")} == {
        "ca.key": 0o600,
        "server.key": 0o600,
        "token.key": 0o600,
    }


def test_ca_certificate(files: CertificateFiles) -> None:
    ca = _cert(files.ca_cert)
    ca.verify_directly_issued_by(ca)
    basic = _ext(ca, x509.BasicConstraints)
    assert basic.critical and basic.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = _ext(ca, x509.KeyUsage)
    assert usage.critical
    assert isinstance(usage.value, x509.KeyUsage)
    assert usage.value.key_cert_sign and usage.value.crl_sign and not usage.value.digital_signature
    assert isinstance(_ext(ca, x509.SubjectKeyIdentifier).value, x509.SubjectKeyIdentifier)
    (cn,) = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert isinstance(cn.value, str) and cn.value.startswith("secreg development CA ")
    assert isinstance(tls.load_private_key(files.ca_key), ec.EllipticCurvePrivateKey)
    assert _spki(tls.load_private_key(files.ca_key).public_key()) == _spki(ca)


def test_two_cas_never_share_a_name(tmp_path: Path) -> None:
    a = tls.generate_certificates(tmp_path / "a", ["localhost"], [])
    b = tls.generate_certificates(tmp_path / "b", ["localhost"], [])
    assert _cert(a.ca_cert).subject != _cert(b.ca_cert).subject


def test_server_certificate(files: CertificateFiles) -> None:
    ca, server = _cert(files.ca_cert), _cert(files.server_cert)
    server.verify_directly_issued_by(ca)
    san = _ext(server, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == HOSTS
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == IPS
    assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert _ext(server, x509.BasicConstraints).value == x509.BasicConstraints(ca=False, path_length=None)
    usage = _ext(server, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage)
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_cert_sign
    eku = _ext(server, x509.ExtendedKeyUsage).value
    assert isinstance(eku, x509.ExtendedKeyUsage) and list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = _ext(server, x509.AuthorityKeyIdentifier).value
    ski = _ext(ca, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and isinstance(ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.digest
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert datetime.timedelta(days=825) <= lifetime <= datetime.timedelta(days=825, minutes=10)
    now = datetime.datetime.now(datetime.UTC)
    assert server.not_valid_before_utc < now < server.not_valid_after_utc
    assert _spki(tls.load_private_key(files.server_key).public_key()) == _spki(server)


def test_token_certificate_has_no_eku(files: CertificateFiles) -> None:
    ca, token = _cert(files.ca_cert), _cert(files.token_cert)
    token.verify_directly_issued_by(ca)
    with pytest.raises(x509.ExtensionNotFound):
        token.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert token.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "secreg token signer"
    assert _ext(token, x509.BasicConstraints).value == x509.BasicConstraints(ca=False, path_length=None)
    key = tls.load_private_key(files.token_key)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert _spki(key.public_key()) == _spki(token)


@pytest.mark.parametrize(
    "existing", ["ca.crt", "ca.key", "server.crt", "server.key", "token.key", "token.crt"]
)
def test_refuses_to_overwrite_any_file_without_force(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("precious\n")
    with pytest.raises(CertificateExistsError, match="use --force") as info:
        tls.generate_certificates(tmp_path, ["localhost"], [])
    assert existing in str(info.value)
    assert (tmp_path / existing).read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_force_replaces_everything(files: CertificateFiles) -> None:
    old_ca = files.ca_cert.read_bytes()
    with pytest.raises(CertificateExistsError):
        tls.generate_certificates(files.directory, ["localhost"], [])
    assert files.ca_cert.read_bytes() == old_ca
    tls.generate_certificates(files.directory, ["other.example.test"], [], force=True)
    assert files.ca_cert.read_bytes() != old_ca
    _cert(files.server_cert).verify_directly_issued_by(_cert(files.ca_cert))
    assert not [p for p in files.directory.iterdir() if p.name.startswith(".")]  # no temp files left


def test_rsa_variant(tmp_path: Path) -> None:
    files = tls.generate_certificates(tmp_path, ["localhost"], ["127.0.0.1"], key_type="rsa", days=30)
    for key_path in (files.ca_key, files.server_key, files.token_key):
        key = tls.load_private_key(key_path)
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
    server = _cert(files.server_cert)
    server.verify_directly_issued_by(_cert(files.ca_cert))
    _cert(files.token_cert).verify_directly_issued_by(_cert(files.ca_cert))
    usage = _ext(server, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage) and usage.key_encipherment and usage.digital_signature
    assert server.not_valid_after_utc - server.not_valid_before_utc < datetime.timedelta(days=31)


@pytest.mark.parametrize(
    ("hosts", "ips", "message"),
    [
        (["localhost"], ["300.1.1.1"], "invalid IP address '300.1.1.1'"),
        (["localhost"], ["localhost"], "invalid IP address 'localhost'"),
        (["localhost"], ["fe80::1%eth0"], "zone"),
        (["bad_host"], [], "invalid host name 'bad_host'"),
        (["-leading.example"], [], "invalid host name"),
        (["a..b"], [], "invalid host name"),
        (["foo.*.example"], [], "invalid host name"),
        (["bücher.example"], [], "punycode"),
        (["x" * 64 + ".example"], [], "invalid host name"),
        (["10.0.0.1"], [], "pass it as an IP"),
        ([], [], "at least one host name or IP address"),
    ],
)
def test_rejects_bad_names(tmp_path: Path, hosts: list[str], ips: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tls.generate_certificates(tmp_path / "certs", hosts, ips)
    assert not (tmp_path / "certs").exists()


def test_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key type"):
        tls.generate_certificates(tmp_path, ["localhost"], [], key_type="dsa")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        tls.generate_certificates(tmp_path, ["localhost"], [], days=0)


def test_ip_only_certificate_and_duplicates(tmp_path: Path) -> None:
    files = tls.generate_certificates(tmp_path, ["LocalHost", "localhost"], ["::1", "0:0::1", "10.1.2.3"])
    san = _ext(_cert(files.server_cert), x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["LocalHost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["::1", "10.1.2.3"]
    only_ip = tls.generate_certificates(tmp_path / "ip", [], ["192.0.2.1"])
    assert (
        _cert(only_ip.server_cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "192.0.2.1"
    )


# --- ensure_dev_certificates --------------------------------------------------------------------------


def test_dev_sans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "buildhost")
    assert tls.dev_sans() == (["buildhost", "localhost"], ["127.0.0.1", "::1"])
    monkeypatch.setattr(socket, "gethostname", lambda: "localhost")
    assert tls.dev_sans() == (["localhost"], ["127.0.0.1", "::1"])
    monkeypatch.setattr(socket, "gethostname", lambda: "under_score")  # not a DNS name: left out
    assert tls.dev_sans() == (["localhost"], ["127.0.0.1", "::1"])


def test_ensure_dev_certificates_generates_once(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    files = tls.ensure_dev_certificates(out)
    assert files is not None and all(p.exists() for p in files.all())
    san = _ext(_cert(files.server_cert), x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    hosts, ips = tls.dev_sans()
    assert san.get_values_for_type(x509.DNSName) == hosts
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ips
    before = {p.name: p.read_bytes() for p in files.all()}
    assert tls.ensure_dev_certificates(out) is None
    assert {p.name: p.read_bytes() for p in files.all()} == before


def test_ensure_dev_certificates_reuses_existing_ca(files: CertificateFiles) -> None:
    ca_bytes, ca_key_bytes = files.ca_cert.read_bytes(), files.ca_key.read_bytes()
    token_key_bytes = files.token_key.read_bytes()
    old_server = files.server_cert.read_bytes()
    files.server_cert.unlink()
    files.token_cert.unlink()

    assert tls.ensure_dev_certificates(files.directory) == files
    assert files.ca_cert.read_bytes() == ca_bytes and files.ca_key.read_bytes() == ca_key_bytes
    assert files.server_cert.read_bytes() != old_server
    ca = _cert(files.ca_cert)
    _cert(files.server_cert).verify_directly_issued_by(ca)
    _cert(files.token_cert).verify_directly_issued_by(ca)
    # The token key survives, so tokens already handed out keep verifying.
    assert files.token_key.read_bytes() == token_key_bytes
    assert _spki(_cert(files.token_cert)) == _spki(tls.load_private_key(files.token_key).public_key())
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o600


def test_ensure_dev_certificates_refuses_half_a_ca(tmp_path: Path) -> None:
    files = tls.generate_certificates(tmp_path, ["localhost"], [])
    files.ca_key.unlink()
    files.server_cert.unlink()
    ca_bytes = files.ca_cert.read_bytes()
    with pytest.raises(CertificateExistsError, match="ca.key is missing"):
        tls.ensure_dev_certificates(tmp_path)
    assert files.ca_cert.read_bytes() == ca_bytes


def test_ensure_dev_certificates_rejects_mismatched_ca_key(tmp_path: Path) -> None:
    a = tls.generate_certificates(tmp_path / "a", ["localhost"], [])
    b = tls.generate_certificates(tmp_path / "b", ["localhost"], [])
    b.ca_key.write_bytes(a.ca_key.read_bytes())
    b.server_cert.unlink()
    with pytest.raises(ValueError, match="is not the private key"):
        tls.ensure_dev_certificates(b.directory)


# --- loading ------------------------------------------------------------------------------------------


def test_load_private_key_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    with pytest.raises(ValueError, match="garbage.key"):
        tls.load_private_key(garbage)
    ed = tmp_path / "ed.key"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="EC or RSA"):
        tls.load_private_key(ed)


def test_load_certificate_chain(files: CertificateFiles, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(files.token_cert.read_bytes() + files.ca_cert.read_bytes())
    chain = tls.load_certificate_chain(bundle)
    assert chain == [_cert(files.token_cert), _cert(files.ca_cert)]
    bundle.write_text("nothing here\n")
    with pytest.raises(ValueError, match="bundle.pem"):
        tls.load_certificate_chain(bundle)


# --- key identifiers ----------------------------------------------------------------------------------


def test_libtrust_kid_format_and_algorithm(files: CertificateFiles) -> None:
    public = tls.load_private_key(files.token_key).public_key()
    kid = tls.libtrust_kid(public)
    groups = kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    assert set("".join(groups)) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    digest = hashlib.sha256(
        _cert(files.token_cert)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).digest()
    assert base64.b32decode("".join(groups)) == digest[:30]


def test_libtrust_kid_known_answers() -> None:
    rsa_key = rsa.RSAPublicNumbers(65537, _b64url_int(RFC7638_N)).public_key()
    assert tls.libtrust_kid(rsa_key) == RFC7638_KID
    ec_key = ec.derive_private_key(EC_FIXED_SCALAR, ec.SECP256R1()).public_key()
    assert tls.libtrust_kid(ec_key) == EC_FIXED_KID


def test_jwk_thumbprint_rfc7638_example() -> None:
    key = rsa.RSAPublicNumbers(_b64url_int("AQAB"), _b64url_int(RFC7638_N)).public_key()
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


# --- a real TLS handshake -----------------------------------------------------------------------------


@pytest.fixture
def tls_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[CertificateFiles, int]]:
    key_type: tls.KeyType = getattr(request, "param", "ec")
    files = tls.generate_certificates(tmp_path, ["localhost"], ["127.0.0.1", "::1"], key_type=key_type)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # poll, so teardown does not wait on a blocked accept()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    with context.wrap_socket(conn, server_side=True) as tls_conn:
                        tls_conn.sendall(b"hello\n")
                except (ssl.SSLError, OSError):
                    pass  # a client that rejects our certificate aborts the handshake

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield files, listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def _handshake(ca_cert: Path, port: int, server_hostname: str) -> bytes:
    client = ssl.create_default_context(cafile=str(ca_cert))  # trusts only our CA
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname=server_hostname) as conn,
    ):
        return conn.recv(16)


@pytest.mark.parametrize("tls_server", ["ec", "rsa"], indirect=True)
def test_tls_handshake_with_generated_certificates(tls_server: tuple[CertificateFiles, int]) -> None:
    files, port = tls_server
    assert _handshake(files.ca_cert, port, "localhost") == b"hello\n"
    assert _handshake(files.ca_cert, port, "127.0.0.1") == b"hello\n"
    assert _handshake(files.ca_cert, port, "::1") == b"hello\n"
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        _handshake(files.ca_cert, port, "elsewhere.example.test")


def test_tls_handshake_fails_with_another_ca(
    tls_server: tuple[CertificateFiles, int], tmp_path: Path
) -> None:
    _, port = tls_server
    other = tls.generate_certificates(tmp_path / "other", ["localhost"], [])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(other.ca_cert, port, "localhost")


# --- the command line ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _present_subcommands(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() imports every subcommand module; one a colleague has not written yet must not fail these tests,
    # while all that exist are still loaded next to `certs`, so clashes between them still show.
    present = tuple(n for n in secreg.cli.main.SUBCOMMANDS if importlib.util.find_spec(f"secreg.cli.{n}"))
    assert "certs" in present
    monkeypatch.setattr(secreg.cli.main, "SUBCOMMANDS", present)


def test_cli_generate_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    argv = [
        "certs",
        "generate",
        "--out",
        str(out),
        "--host",
        "registry.lan",
        "--ip",
        "10.0.0.5",
        "--ip",
        "::1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"-rw------- 0600  {out / 'ca.key'}" in printed
    assert f"-rw-r--r-- 0644  {out / 'ca.crt'}" in printed
    assert "the port must be the one the registry listens on" in printed
    assert "sudo mkdir -p /etc/docker/certs.d/registry.lan:5000 && sudo cp" in printed
    assert "/etc/docker/certs.d/10.0.0.5:5000" in printed and "[::1]:5000" in printed

    assert main(argv) == 2
    assert "use --force" in capsys.readouterr().err
    assert main([*argv, "--force", "--key-type", "rsa", "--days", "90"]) == 0
    assert isinstance(tls.load_private_key(out / "server.key"), rsa.RSAPrivateKey)
    capsys.readouterr()

    assert main(["certs", "show", "--dir", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "DNS:registry.lan, IP:10.0.0.5, IP:::1" in shown
    assert "secreg development CA" in shown
    assert tls.libtrust_kid(tls.load_private_key(out / "token.key").public_key()) in shown
    assert tls.jwk_thumbprint(tls.load_private_key(out / "token.key").public_key()) in shown
    assert "RS256" in shown and "yes" in shown


def test_cli_generate_defaults_to_dev_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "generate", "--out", str(out)]) == 0
    san = _ext(_cert(out / "server.crt"), x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == tls.dev_sans()[0]
    assert "localhost:5000" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ip", "999.0.0.1"], "invalid IP address"),
        (["--host", "no_underscores"], "invalid host name"),
    ],
)
def test_cli_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["certs", "generate", "--out", str(tmp_path / "c"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("secreg: error: ") and message in err


def test_cli_show_without_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "show", "--dir", str(tmp_path)]) == 2
    assert "secreg certs generate" in capsys.readouterr().err
