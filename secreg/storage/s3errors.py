"""The one translation of the S3 client's failures into the driver's errors.

botocore fails in three ways, and every one must reach the registry as `StorageError` (its 503 `UNAVAILABLE`
answer) rather than as itself (a 500 with a traceback):

    ClientError                  the store answered with an error (5xx after the retries, 403, NoSuchBucket...)
    BotoCoreError                no answer: EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                                 ConnectionClosedError (a reset), ResponseStreamingError, NoCredentialsError
    urllib3 HTTPError, OSError   an answer's body cut short while it is read outside botocore (`Body.read()`)

A "not found" answer is no failure: the caller tells it apart (`is_missing`) inside the `storage_errors` block
and raises PathNotFound or returns; whatever else the block lets through becomes StorageError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from secreg.storage.driver import StorageError

CLIENT_FAILURES = (ClientError, BotoCoreError, Urllib3Error, OSError)


def is_missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload") or status == 404


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Run the client calls of one driver operation; any failure of theirs leaves as `StorageError(what: ...)`."""
    try:
        yield
    except CLIENT_FAILURES as exc:
        raise StorageError(f"{what}: {exc}") from exc
