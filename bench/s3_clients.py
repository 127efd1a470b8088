"""Which S3 client for the S3 driver: botocore (sync, in threads), aiobotocore (async) and obstore (Rust
object_store), each streaming the same object up (multipart, 10 MiB parts) and down (1 MiB reads) through the
same loopback object server. Reports wall MiB/s and this process's CPU seconds per GiB (the server's CPU is not
counted). Run: `python -m bench.s3_clients [MiB]` (needs `pip install obstore aiobotocore`)."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PART = 10 * 1024 * 1024
READ = 1024 * 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(label: str, size: int, run: Callable[[], None]) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), _cpu()
    run()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    gib = size / 1024 ** 3
    return {"client": label, "MiB/s": round(size / 1024 ** 2 / wall, 1), "cpu s/GiB": round(cpu / gib, 2)}


def botocore_client(endpoint: str, key: str, secret: str) -> Any:
    import botocore.config
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
        config=botocore.config.Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def main() -> None:
    from tests.objectstores import moto_server

    size = int(sys.argv[1]) * 1024 * 1024 if len(sys.argv) > 1 else 256 * 1024 * 1024
    data = os.urandom(size)
    results = []
    with tempfile.TemporaryDirectory() as scratch, moto_server(Path(scratch)) as store:
        client = botocore_client(store.endpoint, store.accesskey, store.secretkey)
        client.create_bucket(Bucket="bench")

        def boto_put() -> None:
            upload = client.create_multipart_upload(Bucket="bench", Key="boto")["UploadId"]
            parts = []
            for number, start in enumerate(range(0, size, PART), 1):
                answer = client.upload_part(Bucket="bench", Key="boto", UploadId=upload, PartNumber=number,
                                            Body=data[start:start + PART])
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            client.complete_multipart_upload(Bucket="bench", Key="boto", UploadId=upload,
                                             MultipartUpload={"Parts": parts})

        def boto_get() -> None:
            body = client.get_object(Bucket="bench", Key="boto")["Body"]
            while body.read(READ):
                pass

        results.append(measure("botocore put", size, boto_put))
        results.append(measure("botocore get", size, boto_get))

        try:
            from aiobotocore.session import get_session
        except ImportError:
            get_session = None
        if get_session is not None:
            async def aio(put: bool) -> None:
                async with get_session().create_client(
                        "s3", region_name="us-east-1", endpoint_url=store.endpoint,
                        aws_access_key_id=store.accesskey, aws_secret_access_key=store.secretkey) as aclient:
                    if put:
                        upload = (await aclient.create_multipart_upload(Bucket="bench", Key="aio"))["UploadId"]
                        parts = []
                        for number, start in enumerate(range(0, size, PART), 1):
                            answer = await aclient.upload_part(Bucket="bench", Key="aio", UploadId=upload,
                                                               PartNumber=number, Body=data[start:start + PART])
                            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                        await aclient.complete_multipart_upload(Bucket="bench", Key="aio", UploadId=upload,
                                                                MultipartUpload={"Parts": parts})
                    else:
                        answer = await aclient.get_object(Bucket="bench", Key="aio")
                        async with answer["Body"] as body:
                            while await body.read(READ):
                                pass

            results.append(measure("aiobotocore put", size, lambda: asyncio.run(aio(True))))
            results.append(measure("aiobotocore get", size, lambda: asyncio.run(aio(False))))

        try:
            import obstore
            from obstore.store import S3Store
        except ImportError:
            obstore = None  # type: ignore[assignment]
        if obstore is not None:
            ostore = S3Store("bench", endpoint=store.endpoint, access_key_id=store.accesskey,
                             secret_access_key=store.secretkey, region="us-east-1",
                             client_options={"allow_http": True})

            def obs_put() -> None:
                obstore.put(ostore, "obs", (data[s:s + PART] for s in range(0, size, PART)), chunk_size=PART)

            def obs_get() -> None:
                for _chunk in obstore.get(ostore, "obs").stream(min_chunk_size=READ):
                    pass

            results.append(measure("obstore put", size, obs_put))
            results.append(measure("obstore get", size, obs_get))
    for row in results:
        print(f"{row['client']:<18} {row['MiB/s']:>8} MiB/s {row['cpu s/GiB']:>7} CPU s/GiB (client only)")


if __name__ == "__main__":
    main()
