"""The trimmed botocore S3 model (secreg.storage.s3model): complete for what secreg calls, and current."""

from __future__ import annotations

import json
import re
from pathlib import Path

import botocore
from botocore import xform_name

from secreg.config import S3Options
from secreg.storage import s3model
from secreg.storage.s3 import S3Driver

STORAGE = Path(s3model.__file__).resolve().parent


def _written_by_this_botocore() -> bool:
    return s3model.VERSION.read_text().strip() == botocore.__version__


def test_every_operation_secreg_calls_is_in_the_trimmed_model() -> None:
    called = set()
    for source in [*STORAGE.glob("s3*.py"), *Path(__file__).resolve().parents[1].rglob("*.py")]:
        called |= set(re.findall(r"client\.([a-z][a-z0-9_]*)\(", source.read_text()))
        called |= set(re.findall(r'get_paginator\("([a-z0-9_]+)"\)', source.read_text()))
    helpers = {"get_paginator", "generate_presigned_url", "close"}
    names = {xform_name(op): op for op in s3model.OPERATIONS}
    s3_like = {c for c in called - helpers if c in names or re.fullmatch(
        r"(get|put|head|list|create|delete|copy|upload|abort|complete)_[a-z0-9_]*(object|objects|bucket|upload|"
        r"uploads|part|parts|copy|v2)", c)}
    assert s3_like, "found no S3 calls: the pattern is stale"
    assert s3_like <= set(names), sorted(s3_like - set(names))


def test_trimmed_files_are_what_this_botocore_gives_or_unused() -> None:
    if not _written_by_this_botocore():
        assert s3model.loader() is None  # another botocore: its own full model is used
        return
    model, endpoints = s3model.trimmed()
    assert json.loads(s3model.MODEL.read_text()) == json.loads(json.dumps(model))
    assert json.loads(s3model.ENDPOINTS.read_text()) == json.loads(json.dumps(endpoints))
    assert set(model["operations"]) == s3model.OPERATIONS


def test_the_driver_client_uses_the_trimmed_model() -> None:
    driver = S3Driver(S3Options(bucket="b", regionendpoint="127.0.0.1:9", accesskey="a", secretkey="s",
                                secure=False))
    operations = set(driver.client.meta.service_model.operation_names)
    assert operations == (set(s3model.OPERATIONS) if _written_by_this_botocore() else operations)
    assert "GetObject" in operations
    url = driver.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=60)
    assert url.startswith("http://127.0.0.1:9/b/k?") and "X-Amz-Signature=" in url
