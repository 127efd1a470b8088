"""S3 driver: the same paths as the filesystem driver, as object keys under `rootdirectory`.

Keys are the reference registry's (distribution's `s3-aws` driver: `<rootdirectory>/docker/registry/v2/...`),
so a bucket written by `registry:2` is served by secreg. Directories do not exist in a bucket: a directory
is the set of keys below a prefix, listed with a `/` delimiter.

A file being appended (upload data, see `s3append.py`) is a multipart upload plus a small state object in a
sidecar prefix `<path>.append/`, hidden from `list` and `walk_files`; `sync` completes it into the object.

The client is botocore (the engine of aiobotocore and boto3), used synchronously: the driver protocol is
synchronous and the registry calls the slow operations from threads. The README explains the choice.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO, cast

import botocore
import botocore.config
import botocore.session
from botocore.exceptions import ClientError

from secreg.storage.driver import FileInfo, IncompleteWrite, InvalidPath, PathNotFound, StorageError
from secreg.storage.s3errors import error_code, is_missing, storage_errors
from secreg.storage.s3options import S3Options

log = logging.getLogger("secreg.storage.s3")

APPEND_SUFFIX = ".append"  # sidecar of a file being appended: <path>.append/state, tails, locks
MIN_PART = 5 * 1024 * 1024  # S3's smallest part (all but the last)
MTIME_META = "secreg-mtime"  # x-amz-meta-secreg-mtime: see `copy_key`
_DELETE_BATCH = 1000


def _mtime(head: dict[str, Any]) -> float:
    """When the file was written: its LastModified, or for a moved file the time its move carried over."""
    carried = head.get("Metadata", {}).get(MTIME_META)
    try:
        return float(carried) if carried else float(head["LastModified"].timestamp())
    except ValueError:
        return float(head["LastModified"].timestamp())


_untrimmed_warned = False


def _warn_untrimmed(cut_from: str) -> None:
    global _untrimmed_warned
    if not _untrimmed_warned:
        _untrimmed_warned = True
        log.warning("botocore %s is not the %s secreg's trimmed S3 data was cut from: the full data is used "
                    "(~11 MiB more per process); `python -m secreg.storage.s3model` cuts it anew",
                    botocore.__version__, cut_from or "version")


def _add_content_md5(params: dict[str, Any], **_: Any) -> None:
    # Swift's s3api requires Content-MD5 on a batch delete; botocore now sends a CRC32 checksum instead.
    body = params.get("body")
    if isinstance(body, bytes):
        params["headers"]["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


class S3Driver:
    def __init__(self, options: S3Options, *, client: Any = None, attempts: int = 5, read_timeout: float = 120
                 ) -> None:
        """`attempts`: tries per request (botocore's standard retry mode: 5xx, throttling, resets);
        `read_timeout`: seconds an answer may keep the client waiting for its next bytes."""
        if options.chunksize < MIN_PART:
            raise ValueError(f"storage.s3.chunksize must be at least {MIN_PART} (S3's smallest part)")
        self.options = options
        self.bucket = options.bucket
        self._prefix = options.rootdirectory.strip("/")
        self.client = client if client is not None else self._client(options, attempts, read_timeout)
        self._local = threading.local()

    @staticmethod
    def _client(options: S3Options, attempts: int, read_timeout: float, *, trimmed: bool = True) -> Any:
        """`trimmed`: with botocore's data cut to what the driver uses (secreg/storage/s3model.py), ~11 MiB less
        per process, when it was cut from the installed botocore; False only for the test that proves the requests
        are the same."""
        session = botocore.session.get_session()
        if trimmed:
            from secreg.storage import s3model

            if s3model.usable():
                session.register_component("data_loader", s3model.loader())
            else:
                _warn_untrimmed(s3model.cut_from())
        endpoint = options.regionendpoint or None
        if endpoint and "://" not in endpoint:
            endpoint = f"{'https' if options.secure else 'http'}://{endpoint}"
        config = botocore.config.Config(
            signature_version="s3v4" if options.v4auth else "s3",
            s3={"addressing_style": "path" if endpoint else "auto"},
            max_pool_connections=64,
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=10,
            read_timeout=read_timeout,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # Empty keys: botocore's standard chain (AWS_* environment, ~/.aws, instance or container roles).
        client = session.create_client(
            "s3", region_name=options.region, endpoint_url=endpoint, use_ssl=options.secure,
            aws_access_key_id=options.accesskey or None, aws_secret_access_key=options.secretkey or None,
            config=config,
        )
        client.meta.events.register("before-call.s3.DeleteObjects", _add_content_md5)
        return client

    # --- keys -------------------------------------------------------------------------------------

    def key(self, path: str) -> str:
        if path.startswith("/") or "\\" in path or "\x00" in path or ".." in path.split("/") or "//" in path:
            raise InvalidPath(path)
        return f"{self._prefix}/{path}" if self._prefix else path

    def _path_of(self, key: str) -> str:
        return key[len(self._prefix) + 1:] if self._prefix else key

    def _dir_prefix(self, path: str) -> str:
        return self.key(path).rstrip("/") + "/" if path else (f"{self._prefix}/" if self._prefix else "")

    # --- reads ------------------------------------------------------------------------------------

    def head(self, key: str) -> dict[str, Any] | None:
        with storage_errors(f"HEAD {key}"):
            try:
                return dict(self.client.head_object(Bucket=self.bucket, Key=key))
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise

    def _any_below(self, path: str) -> bool:
        with storage_errors(f"listing {path}"):
            answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._dir_prefix(path), MaxKeys=1)
        return bool(answer.get("KeyCount") or answer.get("Contents"))

    def stat(self, path: str) -> FileInfo:
        found = self.head(self.key(path))
        if found is not None:
            return FileInfo(path, int(found["ContentLength"]), _mtime(found), False)
        from secreg.storage.s3append import read_state

        state = read_state(self, path)
        if state is not None:
            return FileInfo(path, state.size, state.modified, False)
        if self._any_below(path):
            return FileInfo(path, 0, 0.0, True)
        raise PathNotFound(path)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except PathNotFound:
            return False
        return True

    def read_bytes(self, path: str) -> bytes:
        with storage_errors(f"GET {path}"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self.key(path))
            except ClientError as exc:
                if is_missing(exc):
                    raise PathNotFound(path) from None
                raise
            with answer["Body"] as body:  # a body cut short fails here (urllib3, OSError)
                return bytes(body.read())

    def open_read(self, path: str) -> BinaryIO:
        from secreg.storage.s3read import S3Reader

        found = self.head(self.key(path))
        if found is None:
            raise PathNotFound(path)
        return cast(BinaryIO, S3Reader(self, self.key(path), int(found["ContentLength"])))

    def list(self, path: str) -> list[str]:
        prefix = self._dir_prefix(path)
        names: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with storage_errors(f"listing {path}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.append(common["Prefix"][len(prefix):].rstrip("/"))
                for item in page.get("Contents", []):
                    names.append(item["Key"][len(prefix):])
        if not names:
            raise PathNotFound(path)
        visible = []
        for name in names:
            if name.endswith(APPEND_SUFFIX):
                # A file being appended shows under its own name, as on a filesystem.
                name = name[: -len(APPEND_SUFFIX)]
            if name and name not in visible:
                visible.append(name)
        return visible

    def walk_files(self, path: str, only: Callable[[str], str | None] | None = None) -> Iterator[FileInfo]:
        for item in self.list_keys(self._dir_prefix(path)):
            relative = self._path_of(item["Key"])
            if f"{APPEND_SUFFIX}/" in relative:
                continue
            yield FileInfo(relative, int(item["Size"]), item["LastModified"].timestamp(), False)

    def walk_paths(self, path: str, prune: Callable[[str], bool] | None = None,
                   only: Callable[[str], str | None] | None = None) -> Iterator[str]:
        return (info.path for info in self.walk_files(path))  # one listing of every key: nothing to prune

    def list_keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object below a raw key prefix (with Key, Size, LastModified), a page (1000) at a time: a failure
        on a later page raises StorageError from the iteration, after the objects already given."""
        pages = iter(self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix))
        while True:
            with storage_errors(f"listing keys below {prefix}"):
                page = next(pages, None)
            if page is None:
                return
            yield from page.get("Contents", [])

    # --- writes -----------------------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes, *, durable: bool = True) -> None:
        # Durable either way: a PUT is answered once stored.
        with storage_errors(f"PUT {path}"):
            self.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=data)

    def write_files(self, stages: Sequence[Sequence[tuple[str, bytes]]]) -> None:
        for stage in stages:  # each PUT is stored for good once answered: one after the other, in order
            for path, data in stage:
                self.write_bytes(path, data)

    def write_transient(self, path: str, data: bytes) -> None:
        self.write_bytes(path, data)  # a PUT is durable once answered: nothing to skip

    def read_transient(self, path: str) -> bytes:
        return self.read_bytes(path)

    def open_append(self, path: str) -> Any:
        from secreg.storage.s3append import S3AppendWriter

        return S3AppendWriter(self, path)

    def open_staged(self, path: str) -> Any:
        from secreg.storage.s3append import S3AppendWriter

        return S3AppendWriter(self, path, staged=True)

    def copy_key(self, source: str, destination: str, size: int, mtime: float) -> None:
        """Server-side copy; above `multipartcopythresholdsize` as a multipart upload of UploadPartCopy parts
        (CopyObject stops at 5 GiB). The copy carries the source's modification time in its metadata: a move
        is a rename, and garbage collection judges a renamed file by when it was written, not moved."""
        metadata = {MTIME_META: repr(mtime)}
        what = f"copying {source} to {destination}"
        if size < self.options.multipartcopythresholdsize:
            with storage_errors(what):
                self.client.copy_object(Bucket=self.bucket, Key=destination, Metadata=metadata,
                                        MetadataDirective="REPLACE",
                                        CopySource={"Bucket": self.bucket, "Key": source})
            return
        with storage_errors(what):
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=destination,
                                                         Metadata=metadata)["UploadId"]
        try:
            with storage_errors(what):
                parts = []
                step = max(self.options.multipartcopychunksize, MIN_PART)
                for number, start in enumerate(range(0, size, step), 1):
                    end = min(start + step, size) - 1
                    answer = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=destination, UploadId=upload, PartNumber=number,
                        CopySource={"Bucket": self.bucket, "Key": source},
                        CopySourceRange=f"bytes={start}-{end}",
                    )
                    parts.append((number, str(answer["CopyPartResult"]["ETag"]), end + 1 - start))
                self.complete_multipart(destination, upload, parts)
        except BaseException:
            self.abort_multipart(destination, upload, quiet=True)  # the copy's own failure is the one to tell
            raise

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str, int]]) -> None:
        """CompleteMultipartUpload of `parts` (number, ETag, size); call inside `storage_errors`.

        An InvalidPart answer is checked with ListParts once: when the store lists every part with the size that
        was sent, the upload is completed with the ETags it lists. The moto server caches a wrong ETag when a
        ListParts computes it while the UploadPart(Copy) answer does (its FakeKey.etag reads the part's file
        without the key's lock) and then refuses the right one; the upload purge's `stale_writes` asks ListParts
        of every upload on moto, which lists each as initiated in 2010. The upload is this writer's alone (a
        copy's, or an append's under its BucketLock), so the parts listed are the ones it sent."""
        body = [{"PartNumber": number, "ETag": etag} for number, etag, _size in parts]
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": body})
            return
        except ClientError as exc:
            if error_code(exc) != "InvalidPart":
                raise
            listed = {int(part["PartNumber"]): (str(part["ETag"]), int(part["Size"]))
                      for page in self.client.get_paginator("list_parts").paginate(
                          Bucket=self.bucket, Key=key, UploadId=upload_id)
                      for part in page.get("Parts", [])}
            if any(listed.get(number, ("", -1))[1] != size for number, _etag, size in parts):
                raise
        changed = [number for number, etag, _size in parts if listed[number][0] != etag]
        log.warning("completing %s: InvalidPart, though ListParts lists every part with its size; completing "
                    "with the listed ETags (parts %s differed)", key, changed[:10])
        etags = [listed[number][0] for number, _etag, _size in parts]
        answer = self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": number, "ETag": etag}
                                       for (number, _etag, _size), etag in zip(parts, etags, strict=True)]})
        self._check_completed(key, str(answer.get("ETag", "")), etags, sum(size for _n, _e, size in parts))

    def _check_completed(self, key: str, etag: str, part_etags: Sequence[str], size: int) -> None:
        """After completing with ETags that are not the ones the part uploads answered: the object the store made
        is `size` bytes long and, when its ETag has the multipart form (MD5 of the parts' MD5s, "-", their count),
        made of exactly the listed parts in order. Otherwise it is deleted (a blob path must never show a wrong
        object) and StorageError raised. The parts' contents are not checked against MD5s of what was sent: on
        moto's race both the UploadPartCopy answers' and ListParts' ETags can be wrong MD5s of right data (three
        256 MiB copies in 32 MiB parts: 13 of 24 listed ETags and 3 of 24 answered ones wrong, every copy
        byte-exact); the parts are this writer's own, their sizes checked before completing."""
        digests = [part.strip('"') for part in part_etags]
        expected_etag = None
        if all(len(digest) == 32 and all(c in "0123456789abcdef" for c in digest) for digest in digests):
            expected_etag = hashlib.md5(b"".join(bytes.fromhex(digest) for digest in digests)).hexdigest()
            expected_etag += f"-{len(digests)}"
        head = self.head(key)
        if head is not None and etag and str(head.get("ETag", "")) != etag:
            raise StorageError(f"completing {key}: the key holds another object than the one completed "
                               f"({head.get('ETag')} instead of {etag}); not checked, left as it is")
        problem = None
        if head is None:
            problem = "it is not there"
        elif int(head["ContentLength"]) != size:
            problem = f"{head['ContentLength']} bytes, not the {size} the parts add up to"
        elif expected_etag is not None and "-" in etag.strip('"') and etag.strip('"') != expected_etag:
            problem = f"ETag {etag}, not {expected_etag} of the listed parts"
        if problem is not None:
            log.error("completing %s with the listed ETags made a wrong object (%s): deleting it", key, problem)
            if head is not None:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            raise StorageError(f"completing {key}: the object made of the listed parts is wrong ({problem})")
        log.info("completing %s: the object made of the listed parts checked (%d bytes, ETag %s)", key, size, etag)


    def move(self, source: str, destination: str) -> None:
        """Copy, then delete the source: not atomic across the two keys, but each key is always whole. A
        directory (garbage collection's quarantine) moves key by key."""
        source_key, destination_key = self.key(source), self.key(destination)
        found = self.head(source_key)
        if found is not None:
            moves = [(source_key, destination_key, int(found["ContentLength"]), _mtime(found))]
        else:
            moves = []
            for item in self.list_keys(f"{source_key}/"):
                head = self.head(item["Key"])  # the listing has no metadata: a moved file's own time is in it
                mtime = _mtime(head) if head is not None else item["LastModified"].timestamp()
                moves.append((item["Key"], destination_key + item["Key"][len(source_key):], int(item["Size"]),
                              mtime))
            if not moves:
                raise PathNotFound(source)
        # Each source is deleted only once its copy is whole: a failure leaves every byte at one key or both.
        for from_key, to_key, size, mtime in moves:
            self.copy_key(from_key, to_key, size, mtime)
            with storage_errors(f"move {source} -> {destination}: deleting {from_key}"):
                self.client.delete_object(Bucket=self.bucket, Key=from_key)

    def delete(self, path: str) -> None:
        """A file, a file being appended (aborting its multipart upload) or a whole prefix."""
        key = self.key(path)
        doomed = [key] if self.head(key) is not None else []
        doomed.extend(item["Key"] for item in self.list_keys(f"{key}{APPEND_SUFFIX}/"))
        doomed.extend(item["Key"] for item in self.list_keys(f"{key}/"))
        uploads = self._multipart_uploads(key)
        if not doomed and not uploads:
            raise PathNotFound(path)
        for upload_key, upload_id in uploads:
            self.abort_multipart(upload_key, upload_id)
        for start in range(0, len(doomed), _DELETE_BATCH):
            batch = doomed[start:start + _DELETE_BATCH]
            with storage_errors(f"delete {path}"):
                if len(batch) == 1:
                    self.client.delete_object(Bucket=self.bucket, Key=batch[0])
                    continue
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            errors = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StorageError(f"delete {path}: {errors[0].get('Code')} on {errors[0].get('Key')}")

    def _multipart_uploads(self, key: str) -> builtins.list[tuple[str, str]]:
        """Multipart uploads in progress at `key` or below it: those of a file being appended."""
        found: builtins.list[tuple[str, str]] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        with storage_errors(f"listing multipart uploads at {key}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
                for upload in page.get("Uploads", []):
                    name = upload["Key"]
                    if name == key or name.startswith(f"{key}/"):
                        found.append((name, upload["UploadId"]))
        return found

    def stale_writes(self, path: str, before: float) -> builtins.list[IncompleteWrite]:
        """Multipart uploads below `path` (ListMultipartUploads) begun before `before` whose last part also
        arrived before it (ListParts, asked only of those begun early enough)."""
        prefix = self._dir_prefix(path)
        found: builtins.list[IncompleteWrite] = []
        with storage_errors(f"listing multipart uploads below {path}"):
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                     Prefix=prefix):
                for upload in page.get("Uploads", []):
                    key, upload_id = upload["Key"], upload["UploadId"]
                    last = float(upload["Initiated"].timestamp())
                    if not key.startswith(prefix) or last >= before:
                        continue
                    size = 0
                    try:
                        for parts in self.client.get_paginator("list_parts").paginate(
                                Bucket=self.bucket, Key=key, UploadId=upload_id):
                            for part in parts.get("Parts", []):
                                last = max(last, float(part["LastModified"].timestamp()))
                                size += int(part["Size"])
                    except ClientError as exc:
                        if is_missing(exc):
                            continue  # completed or aborted meanwhile
                        raise
                    if last < before:
                        found.append(IncompleteWrite(self._path_of(key), upload_id, last, size))
        return found

    def abort_write(self, write: IncompleteWrite) -> None:
        self.abort_multipart(self.key(write.path), write.write_id)

    def abort_multipart(self, key: str, upload_id: str, *, quiet: bool = False) -> None:
        """One already gone is no error. `quiet`: a failure is logged, not raised (cleaning up after another
        failure; the upload purge aborts what is left once it is old, see `stale_writes`)."""
        try:
            with storage_errors(f"aborting the multipart upload at {key}"):
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                except ClientError as exc:
                    if not is_missing(exc):
                        raise
        except StorageError as exc:
            if not quiet:
                raise
            log.warning("%s", exc)

    def local_path(self, path: str) -> str | None:
        return None

    def redirect_url(self, path: str) -> str | None:
        """A short-lived presigned GET URL when `redirect` is on, else None (secreg streams the bytes)."""
        if not self.options.redirect:
            return None
        with storage_errors(f"presigning {path}"):  # no request; fails only without credentials
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.key(path)},
                ExpiresIn=self.options.redirectexpiry,
            )
        return url

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (tests, first start); an existing bucket is left alone."""
        with storage_errors(f"creating bucket {self.bucket}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if not is_missing(exc) and error_code(exc) != "NoSuchBucket":
                    raise
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                except ClientError as race:  # another replica created it this instant
                    if error_code(race) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
