"""`python -m bench.s3_copy [MiB]`: what the server-side copy after a chunked upload costs on Swift (s3api).

A docker push names the digest only in its last request (PUT ?digest=), so the upload is a multipart upload at
`_uploads/ID/data` that is copied to `blobs/...` at commit (S3 has no rename). This times, twice: the upload of
MiB MiB through the driver (10 MiB parts), then the copy as `S3Driver.copy_key` does it (UploadPartCopy of 32 MiB
parts, one after another) and with four parts copied at once.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from secreg.storage.s3 import S3Driver
from secreg.storage.s3options import S3Options
from tests.objectstores import swift_server

MiB = 1024 * 1024
PART = 32 * MiB


def _copy(driver: S3Driver, source: str, destination: str, size: int, concurrency: int) -> float:
    client, bucket = driver.client, driver.bucket
    started = time.perf_counter()
    upload = client.create_multipart_upload(Bucket=bucket, Key=destination)["UploadId"]

    def part(item: tuple[int, int]) -> dict[str, Any]:
        number, start = item
        answer = client.upload_part_copy(Bucket=bucket, Key=destination, UploadId=upload, PartNumber=number,
                                         CopySource={"Bucket": bucket, "Key": source},
                                         CopySourceRange=f"bytes={start}-{min(start + PART, size) - 1}")
        return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

    with ThreadPoolExecutor(concurrency) as pool:
        parts = list(pool.map(part, enumerate(range(0, size, PART), 1)))
    client.complete_multipart_upload(Bucket=bucket, Key=destination, UploadId=upload,
                                     MultipartUpload={"Parts": parts})
    return time.perf_counter() - started


def main(argv: list[str]) -> int:
    size = (int(argv[0]) if argv else 128) * MiB
    block = bytes(range(256)) * (MiB // 256)
    with tempfile.TemporaryDirectory(prefix="secreg-bench-copy-") as scratch, swift_server(Path(scratch)) as store:
        options = S3Options(bucket="copycost", region=store.region, regionendpoint=store.endpoint,
                            accesskey=store.accesskey, secretkey=store.secretkey, secure=False)
        driver = S3Driver(options)
        driver.ensure_bucket()
        for rep in range(2):
            writer = driver.open_append(f"up{rep}/data")
            started = time.perf_counter()
            for _ in range(size // MiB):
                writer.write(block)
            writer.sync()
            writer.close()
            upload = time.perf_counter() - started
            source = driver.key(f"up{rep}/data")
            line = [f"upload {size // MiB} MiB {upload:.1f} s"]
            for concurrency in (1, 4):
                seconds = _copy(driver, source, driver.key(f"copy{rep}-{concurrency}/data"), size, concurrency)
                line.append(f"copy x{concurrency} {seconds:.1f} s")
            print("; ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
