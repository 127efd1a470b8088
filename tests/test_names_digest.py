from __future__ import annotations

import pytest

from secreg.digest import Digest, Hasher
from secreg.errors import RegistryError
from secreg.names import HOST_PATTERN, parse_reference, validate_name, validate_tag
from secreg.storage import layout


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a.b/c_d/e__f/g-h/i--j", "0", "a" * 255])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "a/", "/a", "a//b", "a/../b", "..", "a/_layers", "_x", "a.-b", "a" * 256,
                                  "a/b\x00", "a b", "a:b", "a\n", "library/ubuntu\n", "a\n/b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as info:
        validate_name(name)
    assert info.value.code.name == "NAME_INVALID"


def test_tags_and_references() -> None:
    assert validate_tag("v1.0_rc-1") == "v1.0_rc-1"
    for bad in ("", ".x", "-x", "a" * 129, "a/b", "v1\n", "v1\r\n"):
        with pytest.raises(RegistryError):
            validate_tag(bad)
    digest = "sha256:" + "a" * 64
    assert parse_reference(digest) == Digest("sha256", "a" * 64)
    assert parse_reference("latest") == "latest"


def test_digest_parse_and_hasher() -> None:
    d = Digest.of(b"abc")
    assert Digest.parse(str(d)) == d
    assert Digest.of(b"abc", "sha512").hex.startswith("ddaf35a1")
    h = Hasher()
    h.update(b"a")
    h.update(memoryview(b"bc"))
    assert h.digest() == d and h.size == 3
    for bad in ("sha256:" + "a" * 63, "sha384:" + "a" * 96, "SHA256:" + "a" * 64, "sha256:" + "A" * 64, "x"):
        with pytest.raises(RegistryError):
            Digest.parse(bad)
    for bad in ("sha256:" + "a" * 62 + "g" + "a", "sha256:" + "a" * 32 + "-" + "a" * 31, "sha256:" + "a" * 63 + ":",
                "sha256:" + "a" * 64 + "\n", "sha256:" + "a" * 63 + "\n"):
        with pytest.raises(RegistryError):
            Digest.parse(bad)
    assert Digest.from_parts("sha256", d.hex) == d
    for algorithm, encoded in [("sha256", "a" * 63), ("sha384", "a" * 96), ("SHA256", "a" * 64), ("sha256", "A" * 64),
                               ("sha256", "a" * 63 + "g"), ("sha256", ""), ("sha256", d.hex + ".tmp")]:
        assert Digest.from_parts(algorithm, encoded) is None


def test_layout_is_reference_registry_tree() -> None:
    d = Digest("sha256", "ab" + "0" * 62)
    assert layout.blob_data(d) == f"docker/registry/v2/blobs/sha256/ab/{d.hex}/data"
    assert layout.layer_link("lib/x", d) == f"docker/registry/v2/repositories/lib/x/_layers/sha256/{d.hex}/link"
    assert layout.tag_current_link("lib/x", "v1") == \
        "docker/registry/v2/repositories/lib/x/_manifests/tags/v1/current/link"


@pytest.mark.parametrize("host", ["localhost", "registry.example.com:5000", "10.0.0.1:443", "[::1]:5000", "[fe80::1]"])
def test_host_headers_that_may_go_into_a_url(host: str) -> None:
    assert HOST_PATTERN.match(host)


# The token realm and the web UI's pull commands share the pattern; the UI's copy took any script's digits (\d) in
# the port, so a Host of "a:\u0661\u0662" went into the commands it shows.
@pytest.mark.parametrize("host", ["", "a:\u0661\u0662", "a:\uff11", "a b", "a/b", "a\n", "a:123456", "[::1]x", "user@a",
                                  '"a"', "a:80\n"])
def test_host_headers_refused(host: str) -> None:
    assert not HOST_PATTERN.match(host)
