from __future__ import annotations

import datetime
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

from secreg import tls
from secreg.tls import CertificateExistsError, CertificateFiles
from tests.tls.certs import HOSTS, IPS, ext, read_cert, spki

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
    ca = read_cert(files.ca_cert)
    ca.verify_directly_issued_by(ca)
    basic = ext(ca, x509.BasicConstraints)
    assert basic.critical and basic.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = ext(ca, x509.KeyUsage)
    assert usage.critical
    assert isinstance(usage.value, x509.KeyUsage)
    assert usage.value.key_cert_sign and usage.value.crl_sign and not usage.value.digital_signature
    assert isinstance(ext(ca, x509.SubjectKeyIdentifier).value, x509.SubjectKeyIdentifier)
    (cn,) = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert isinstance(cn.value, str) and cn.value.startswith("secreg development CA ")
    assert isinstance(tls.load_private_key(files.ca_key), ec.EllipticCurvePrivateKey)
    assert spki(tls.load_private_key(files.ca_key).public_key()) == spki(ca)


def test_two_cas_never_share_a_name(tmp_path: Path) -> None:
    a = tls.generate_certificates(tmp_path / "a", ["localhost"], [])
    b = tls.generate_certificates(tmp_path / "b", ["localhost"], [])
    assert read_cert(a.ca_cert).subject != read_cert(b.ca_cert).subject


def test_server_certificate(files: CertificateFiles) -> None:
    ca, server = read_cert(files.ca_cert), read_cert(files.server_cert)
    server.verify_directly_issued_by(ca)
    san = ext(server, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == HOSTS
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == IPS
    assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert ext(server, x509.BasicConstraints).value == x509.BasicConstraints(ca=False, path_length=None)
    usage = ext(server, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage)
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_cert_sign
    eku = ext(server, x509.ExtendedKeyUsage).value
    assert isinstance(eku, x509.ExtendedKeyUsage) and list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = ext(server, x509.AuthorityKeyIdentifier).value
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and isinstance(ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.digest
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert datetime.timedelta(days=825) <= lifetime <= datetime.timedelta(days=825, minutes=10)
    now = datetime.datetime.now(datetime.UTC)
    assert server.not_valid_before_utc < now < server.not_valid_after_utc
    assert spki(tls.load_private_key(files.server_key).public_key()) == spki(server)


def test_token_certificate_has_no_eku(files: CertificateFiles) -> None:
    ca, token = read_cert(files.ca_cert), read_cert(files.token_cert)
    token.verify_directly_issued_by(ca)
    with pytest.raises(x509.ExtensionNotFound):
        token.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert token.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "secreg token signer"
    assert ext(token, x509.BasicConstraints).value == x509.BasicConstraints(ca=False, path_length=None)
    key = tls.load_private_key(files.token_key)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert spki(key.public_key()) == spki(token)


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
    read_cert(files.server_cert).verify_directly_issued_by(read_cert(files.ca_cert))
    assert not [p for p in files.directory.iterdir() if p.name.startswith(".")]  # no temp files left


def test_rsa_variant(tmp_path: Path) -> None:
    files = tls.generate_certificates(tmp_path, ["localhost"], ["127.0.0.1"], key_type="rsa", days=30)
    for key_path in (files.ca_key, files.server_key, files.token_key):
        key = tls.load_private_key(key_path)
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
    server = read_cert(files.server_cert)
    server.verify_directly_issued_by(read_cert(files.ca_cert))
    read_cert(files.token_cert).verify_directly_issued_by(read_cert(files.ca_cert))
    usage = ext(server, x509.KeyUsage).value
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
    san = ext(read_cert(files.server_cert), x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["LocalHost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["::1", "10.1.2.3"]
    only_ip = tls.generate_certificates(tmp_path / "ip", [], ["192.0.2.1"])
    assert (
        read_cert(only_ip.server_cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "192.0.2.1"
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
    san = ext(read_cert(files.server_cert), x509.SubjectAlternativeName).value
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
    ca = read_cert(files.ca_cert)
    read_cert(files.server_cert).verify_directly_issued_by(ca)
    read_cert(files.token_cert).verify_directly_issued_by(ca)
    # The token key survives, so tokens already handed out keep verifying.
    assert files.token_key.read_bytes() == token_key_bytes
    assert spki(read_cert(files.token_cert)) == spki(tls.load_private_key(files.token_key).public_key())
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
    assert chain == [read_cert(files.token_cert), read_cert(files.ca_cert)]
    bundle.write_text("nothing here\n")
    with pytest.raises(ValueError, match="bundle.pem"):
        tls.load_certificate_chain(bundle)


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
