"""`secreg certs`: generate and show."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

import secreg.cli.main
from secreg import tls
from secreg.cli.main import main
from tests.tls.certs import ext, read_cert

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
    san = ext(read_cert(out / "server.crt"), x509.SubjectAlternativeName).value
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
