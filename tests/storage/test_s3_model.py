"""The trimmed botocore data (secreg/storage/s3model.py) changes no request: every operation the driver calls,
with the arguments it passes, gives the same method, URL, headers and body as with botocore's full data, for a
loopback endpoint (path style, SigV4 and the legacy signature) and for AWS itself (virtual-hosted buckets, a
region other than us-east-1). The requests are taken at botocore's `before-send` event and never sent."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from secreg.storage import s3model
from secreg.storage.s3 import S3Driver, S3Options

# The signature and the date change from one request to the next (so do botocore's per-call ids); with the
# clock held they are compared too.
VOLATILE = {"amz-sdk-invocation-id", "amz-sdk-request"}
NOW = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.UTC)


class Captured(Exception):
    def __init__(self, request: tuple[str, str, tuple[tuple[str, str], ...], bytes]) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    body = request.body
    if hasattr(body, "read"):
        position = body.tell()
        body, _ = body.read(), body.seek(position)
    headers = tuple(sorted((k.lower(), v.decode() if isinstance(v, bytes) else str(v))
                           for k, v in request.headers.items() if k.lower() not in VOLATILE))
    raise Captured((request.method, request.url, headers, bytes(body or b"")))


MODES = {
    "loopback": {"regionendpoint": "http://127.0.0.1:9000", "region": "us-east-1"},
    "loopback, legacy signature": {"regionendpoint": "127.0.0.1:9000", "region": "us-east-1", "v4auth": False},
    "AWS us-east-1": {"region": "us-east-1", "secure": True},
    "AWS eu-west-1": {"region": "eu-west-1", "secure": True},
}

BUCKET, KEY, SOURCE = "bucket", "root/docker/registry/v2/blobs/sha256/ab/abcd/data", "root/_uploads/x/data"
COPY = {"Bucket": BUCKET, "Key": SOURCE}
PARTS = {"Parts": [{"PartNumber": 1, "ETag": '"e1"'}, {"PartNumber": 2, "ETag": '"e2"'}]}
CALLS: dict[str, Callable[[Any], object]] = {
    "HeadObject": lambda c: c.head_object(Bucket=BUCKET, Key=KEY),
    "GetObject": lambda c: c.get_object(Bucket=BUCKET, Key=KEY),
    "GetObject ranged": lambda c: c.get_object(Bucket=BUCKET, Key=KEY, Range="bytes=1048576-"),
    "PutObject": lambda c: c.put_object(Bucket=BUCKET, Key=KEY, Body=b"link bytes"),
    "PutObject empty": lambda c: c.put_object(Bucket=BUCKET, Key=KEY, Body=b""),
    "ListObjectsV2": lambda c: c.list_objects_v2(Bucket=BUCKET, Prefix="root/a/", MaxKeys=1),
    "ListObjectsV2 delimited": lambda c: c.list_objects_v2(Bucket=BUCKET, Prefix="root/a b/", Delimiter="/",
                                                           ContinuationToken="tok/en=="),
    "ListObjectsV2 paginated": lambda c: list(c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                                          Prefix="root/")),
    "CopyObject": lambda c: c.copy_object(Bucket=BUCKET, Key=KEY, Metadata={"secreg-mtime": "1764763200.5"},
                                          MetadataDirective="REPLACE", CopySource=COPY),
    "CreateMultipartUpload": lambda c: c.create_multipart_upload(Bucket=BUCKET, Key=KEY),
    "CreateMultipartUpload with metadata": lambda c: c.create_multipart_upload(
        Bucket=BUCKET, Key=KEY, Metadata={"secreg-mtime": "1764763200.5"}),
    "UploadPart": lambda c: c.upload_part(Bucket=BUCKET, Key=KEY, UploadId="up/id+", PartNumber=3,
                                          Body=bytearray(b"p" * 1000)),
    "UploadPartCopy": lambda c: c.upload_part_copy(Bucket=BUCKET, Key=KEY, UploadId="up", PartNumber=2,
                                                   CopySource=COPY, CopySourceRange="bytes=5242880-10485759"),
    "CompleteMultipartUpload": lambda c: c.complete_multipart_upload(Bucket=BUCKET, Key=KEY, UploadId="up",
                                                                     MultipartUpload=PARTS),
    "AbortMultipartUpload": lambda c: c.abort_multipart_upload(Bucket=BUCKET, Key=KEY, UploadId="up"),
    "ListMultipartUploads": lambda c: list(c.get_paginator("list_multipart_uploads").paginate(
        Bucket=BUCKET, Prefix="root/")),
    "ListParts": lambda c: list(c.get_paginator("list_parts").paginate(Bucket=BUCKET, Key=KEY, UploadId="up")),
    "ListParts direct": lambda c: c.list_parts(Bucket=BUCKET, Key=KEY, UploadId="up", PartNumberMarker=7),
    "DeleteObject": lambda c: c.delete_object(Bucket=BUCKET, Key=KEY),
    "DeleteObjects": lambda c: c.delete_objects(Bucket=BUCKET, Delete={
        "Objects": [{"Key": KEY}, {"Key": f"{KEY}.append/state"}], "Quiet": True}),
    "HeadBucket": lambda c: c.head_bucket(Bucket=BUCKET),
    "CreateBucket": lambda c: c.create_bucket(Bucket=BUCKET),
    "CreateBucket elsewhere": lambda c: c.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}),
    "presigned GetObject": lambda c: c.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": KEY},
                                                              ExpiresIn=20),
}


PACKAGED = s3model.DATA  # botocore_data/ as it ships


@pytest.fixture(autouse=True, scope="module")
def trimmed_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The trimmed data cut from the installed botocore: the packaged files when it is the botocore they were
    cut from, else the generator's output for this one (so these tests prove the trimming, whatever botocore
    CI installs, while the driver itself falls back to the full data there)."""
    if s3model.usable():
        yield
        return
    directory = tmp_path_factory.mktemp("botocore_data")
    for relative, data in s3model.generate().items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_bytes(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(s3model, "DATA", directory)
        assert s3model.usable()
        yield


def _client(mode: str, trimmed: bool) -> Any:
    options = S3Options(bucket=BUCKET, accesskey="AKIDEXAMPLE", secretkey="secret", **MODES[mode])  # type: ignore[arg-type]
    client = S3Driver._client(options, attempts=1, read_timeout=5, trimmed=trimmed)
    client.meta.events.register_first("before-send", _capture)
    return client


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """botocore signs with the time of `botocore.auth`'s datetime, formatdate and time: held, the signatures
    and the presigned URLs are comparable too."""
    import botocore.auth

    class Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls) -> datetime.datetime:  # type: ignore[override]
            return NOW.replace(tzinfo=None)

        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> datetime.datetime:  # type: ignore[override]
            return NOW if tz is not None else NOW.replace(tzinfo=None)

    monkeypatch.setattr(botocore.auth.datetime, "datetime", Frozen)
    # The legacy signature's Date header and its presigned URLs' expiry.
    monkeypatch.setattr(botocore.auth, "formatdate", lambda usegmt=False: "Thu, 03 Dec 2026 12:00:00 GMT")
    monkeypatch.setattr(botocore.auth.time, "time", NOW.timestamp)
    yield


def _request(mode: str, trimmed: bool, call: str) -> object:
    client = _client(mode, trimmed)
    try:
        answer = CALLS[call](client)
    except Captured as captured:
        return captured.request
    assert isinstance(answer, str), f"{call} sent nothing"  # the presigned URL: made, never sent
    return answer


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call", CALLS)
def test_every_request_is_the_same_with_the_trimmed_model(mode: str, call: str) -> None:
    full = _request(mode, False, call)
    assert _request(mode, True, call) == full
    assert _request(mode, False, call) == full  # the comparison holds still: nothing in it changes per call


def test_the_trimmed_data_is_used_and_is_what_the_installed_botocore_gives() -> None:
    client = _client("loopback", trimmed=True)
    assert sorted(client.meta.service_model.operation_names) == sorted(s3model.OPERATIONS)
    for relative, data in s3model.generate().items():
        assert (s3model.DATA / relative).read_bytes() == data, (
            f"{relative} is stale: run `python -m secreg.storage.s3model` after upgrading botocore")


def test_the_packaged_data_is_the_installed_botocore_s_or_not_used(caplog: pytest.LogCaptureFixture) -> None:
    """What ships in the package: with the botocore it was cut from it is exactly what the generator makes;
    with any other botocore the driver takes botocore's full data and says so once (a botocore upgrade must
    never make the driver send requests from a model the new botocore code was not written for)."""
    import botocore

    from secreg.storage import s3 as s3_driver

    recorded = (PACKAGED / s3model.VERSION_FILE).read_text().strip()
    if recorded == botocore.__version__:
        for relative, data in s3model.generate().items():
            assert (PACKAGED / relative).read_bytes() == data, (
                f"{relative} is stale: run `python -m secreg.storage.s3model` after upgrading botocore")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(s3model, "DATA", PACKAGED)
        patch.setattr(botocore, "__version__", recorded + ".other")
        patch.setattr(s3_driver, "_untrimmed_warned", False)
        assert not s3model.usable()
        with caplog.at_level("WARNING", logger="secreg.storage.s3"):
            clients = [_client("loopback", trimmed=True) for _ in range(2)]
    assert all(len(c.meta.service_model.operation_names) > 100 for c in clients)  # the full S3 model
    warnings = [r.getMessage() for r in caplog.records if "trimmed S3 data" in r.getMessage()]
    assert len(warnings) == 1 and "python -m secreg.storage.s3model" in warnings[0], warnings


def test_the_credential_chain_s_clients_resolve_as_with_the_full_data() -> None:
    """STS (assumed roles, web identity), SSO and sign-in clients come from the same session; their endpoints
    are in the trimmed endpoints.json."""
    import botocore.session

    def endpoint(service: str, region: str, trimmed: bool) -> tuple[str, str]:
        session = botocore.session.get_session()
        if trimmed:
            session.register_component("data_loader", s3model.loader())
        client = session.create_client(service, region_name=region, aws_access_key_id="a",
                                       aws_secret_access_key="b")
        return client.meta.endpoint_url, client.meta.region_name

    for service in ("sts", "sso", "signin"):
        for region in ("us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"):
            assert endpoint(service, region, True) == endpoint(service, region, False), (service, region)
