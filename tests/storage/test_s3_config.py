"""`storage.s3`, `storage.redirect` and `redis` settings: the reference registry's names, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from secreg.config import ConfigError, load_settings
from secreg.storage.factory import describe


def test_environment_selects_s3_as_compose_does(tmp_path: Path) -> None:
    settings = load_settings(environ={
        "SECREG_STORAGE_S3_BUCKET": "registry", "SECREG_STORAGE_S3_REGIONENDPOINT": "http://objectstore:9000",
        "SECREG_STORAGE_S3_SECURE": "false", "SECREG_STORAGE_S3_ACCESSKEY": "ak",
        "SECREG_STORAGE_S3_SECRETKEY": "very-secret", "SECREG_REDIS_ADDR": "redis:6379",
    }, base_dir=tmp_path)
    s3 = settings.storage_s3
    assert s3 is not None and s3.bucket == "registry" and not s3.secure and s3.chunksize == 10 * 1024 * 1024
    assert not s3.redirect and s3.redirectexpiry == 60
    assert "very-secret" not in repr(settings) and "very-secret" not in describe(settings)
    assert settings.redis is not None and (settings.redis.host, settings.redis.port) == ("redis", 6379)


def test_no_bucket_is_the_filesystem(tmp_path: Path) -> None:
    settings = load_settings(environ={}, base_dir=tmp_path)
    assert settings.storage_s3 is None and settings.redis is None


@pytest.mark.parametrize(("tree", "message"), [
    ({"storage": {"s3": {"bucket": "b", "chunksize": 1024}}}, "storage.s3.chunksize"),
    ({"storage": {"s3": {"bucket": "b", "chunksize": 6 * 1024 ** 3}}}, "5 GiB"),
    ({"storage": {"s3": {"bucket": "b", "multipartcopysize": 1}}}, "unknown key storage.s3.multipartcopysize"),
    ({"redis": {"addr": "redis"}}, "redis.addr"),
])
def test_bad_values_are_refused(tmp_path: Path, tree: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(overrides=tree, environ={}, base_dir=tmp_path)
