from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from secreg.config import AUTO_WORKERS_MAX, ConfigError, env_overrides, load_settings, parse_addr


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(environ={}, base_dir=tmp_path)
    assert (s.host, s.port) == ("0.0.0.0", 5000)
    assert s.storage_root == tmp_path / "data" and s.storage_direct_io
    assert not load_settings(environ={"SECREG_STORAGE_FILESYSTEM_DIRECTIO": "false"}).storage_direct_io
    assert s.tls.certificate == tmp_path / "certs" / "server.crt"
    assert s.auth.enabled and not s.delete_enabled and s.http2 and not s.insecure
    assert s.manifest_max_size == 4 * 1024 * 1024
    assert s.auth.token.expiration == 300


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("http:\n  addr: 127.0.0.1:6000\nstorage:\n  delete:\n    enabled: true\n"
                      "  filesystem:\n    rootdirectory: /var/lib/secreg\n")
    s = load_settings(config, environ={}, base_dir=tmp_path)
    assert s.port == 6000 and s.delete_enabled and s.storage_root == Path("/var/lib/secreg")
    s = load_settings(config, environ={"SECREG_STORAGE_DELETE_ENABLED": "false", "SECREG_HTTP_WORKERS": "3"},
                      base_dir=tmp_path)
    assert not s.delete_enabled and s.workers == 3
    s = load_settings(config, {"http": {"addr": "[::1]:7000"}}, environ={"SECREG_HTTP_ADDR": ":1"},
                      base_dir=tmp_path)
    assert (s.host, s.port) == ("::1", 7000) and s.bind == "[::1]:7000"


def test_env_tree() -> None:
    assert env_overrides({"SECREG_A_B": "1", "OTHER": "x", "SECREG_A_C": "yes"}) == {"a": {"b": 1, "c": True}}


@pytest.mark.parametrize(("tree", "message"), [
    ({"http": {"addr": "nope"}}, "http.addr"),
    ({"http": {"addr": "1.2.3.4:99999"}}, "port out of range"),
    ({"http": {"workers": 0}}, "http.workers"),
    ({"storage": {"delete": {"enabled": "maybe"}}}, "storage.delete.enabled"),
    ({"validation": {"manifests": {"maxsize": "big"}}}, "maxsize"),
    ({"http": {"host": "registry.example.com"}}, "http.host"),
    ({"log": {"level": "loud"}}, "log.level"),
])
def test_invalid_values_are_named(tree: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, tree, environ={}, base_dir=tmp_path)


def test_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yml", environ={})
    bad = tmp_path / "bad.yml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(bad, environ={})


def test_parse_addr() -> None:
    assert parse_addr(":5000") == ("0.0.0.0", 5000)
    assert parse_addr("[::]:5000") == ("::", 5000)
    assert parse_addr("::1:5000") == ("::1", 5000)
    assert parse_addr("registry-1.example.com:443") == ("registry-1.example.com", 443)
    for addr in ("unix:/run/secreg.sock", "fd://3", "unix:/run/x:5000", "fd://3:5000", "a/b:5000", "[fd://3]:5000"):
        with pytest.raises(ConfigError, match="http.addr"):
            parse_addr(addr)


@pytest.mark.parametrize(("tree", "message"), [
    ({"http": {"adr": "127.0.0.1:6000"}}, r"unknown key http\.adr \(did you mean http\.addr\?\)"),
    ({"notifications": {"endpoints": []}}, r"unknown key notifications \(known here: version, log"),
    ({"storage": {"filesystem": {"rootdir": "/x"}}}, r"did you mean storage\.filesystem\.rootdirectory\?"),
    ({"auth": {"token": {"expiry": 5}}}, r"did you mean auth\.token\.expiration\?"),
    ({"http": "0.0.0.0:5000"}, r"http must be a mapping of addr, host"),
    ({"http": {"addr": {"host": "x"}}}, r"http\.addr is a single value"),
])
def test_unknown_keys_are_refused_with_the_nearest_known_key(tree: dict[str, object], message: str,
                                                             tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=rf"config file {config}: .*{message}"):
        load_settings(config, environ={}, base_dir=tmp_path)


def test_unknown_environment_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment.*unknown key http\.adr \(did you mean http\.addr\?\)"):
        load_settings(environ={"SECREG_HTTP_ADR": ":6000"}, base_dir=tmp_path)
    # compose.yaml's own variables share the prefix and are not settings
    assert load_settings(environ={"SECREG_PUBLIC_HOST": "r.example.com", "SECREG_AUTH_PORT": "5001"},
                         base_dir=tmp_path).port == 5000


def test_event_loop_setting(tmp_path: Path) -> None:
    assert load_settings(None, None, base_dir=tmp_path).event_loop == "asyncio"
    installed = importlib.util.find_spec("uvloop") is not None
    assert load_settings(None, {"http": {"eventloop": "auto"}}, base_dir=tmp_path).event_loop == (
        "uvloop" if installed else "asyncio")
    if installed:
        assert load_settings(None, {"http": {"eventloop": "uvloop"}}, base_dir=tmp_path).event_loop == "uvloop"
    with pytest.raises(ConfigError, match="http.eventloop"):
        load_settings(None, {"http": {"eventloop": "trio"}}, base_dir=tmp_path)


def test_tls_transport_setting(tmp_path: Path) -> None:
    assert load_settings(None, None, base_dir=tmp_path).tls_transport == "socket"
    assert load_settings(None, {"http": {"tlstransport": "asyncio"}}, base_dir=tmp_path).tls_transport == "asyncio"
    assert load_settings(environ={"SECREG_HTTP_TLSTRANSPORT": "Asyncio"}, base_dir=tmp_path).tls_transport == "asyncio"
    with pytest.raises(ConfigError, match="http.tlstransport"):
        load_settings(None, {"http": {"tlstransport": "ktls"}}, base_dir=tmp_path)


def test_auto_workers_follow_the_affinity_mask_up_to_a_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auto = {"http": {"workers": "auto"}}
    for cpus, expected in ((1, 1), (2, 2), (8, 8), (64, AUTO_WORKERS_MAX)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert load_settings(None, auto, base_dir=tmp_path).workers == expected
    assert AUTO_WORKERS_MAX == 8
    # a count is taken as given, even past the cap
    assert load_settings(None, {"http": {"workers": 12}}, base_dir=tmp_path).workers == 12
