"""botocore's S3 service model cut to the operations secreg calls, and its endpoint partitions to S3.

botocore parses `s3/.../service-2.json` (116 operations, every shape documented) and `endpoints.json` (every AWS
service in every partition) when it creates a client: ~11 MiB of Python objects per process (measured: the client
costs 14.8 MiB of RSS with the full files, 3.4 MiB with these). The trimmed files in `s3data/` hold the
operations below and every shape they reach, documentation texts emptied, and the partitions with S3 alone; they are
used only by the botocore version that wrote them (`s3data/VERSION`), else the client loads botocore's own files.
Regenerate after a botocore upgrade: `python -m secreg.storage.s3model`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "s3data"
MODEL = DATA / "s3" / "2006-03-01" / "service-2.json"
ENDPOINTS = DATA / "endpoints.json"
VERSION = DATA / "VERSION"

# What secreg (the driver, its append and read helpers, the tests' checks) calls, and what botocore itself may
# call on a client (HeadBucket for region redirects, CreateSession for directory buckets).
OPERATIONS = frozenset({
    "AbortMultipartUpload", "CompleteMultipartUpload", "CopyObject", "CreateBucket", "CreateMultipartUpload",
    "CreateSession", "DeleteBucket", "DeleteObject", "DeleteObjects", "GetBucketLocation", "GetObject",
    "HeadBucket", "HeadObject", "ListBuckets", "ListMultipartUploads", "ListObjects", "ListObjectsV2",
    "ListParts", "PutObject", "UploadPart", "UploadPartCopy",
})


def loader() -> Any:
    """A botocore Loader that finds the trimmed files first, or None when they were written by another botocore
    version (or are missing): the client then uses botocore's own."""
    import botocore
    import botocore.loaders

    try:
        written_by = VERSION.read_text().strip()
    except OSError:
        return None
    if written_by != botocore.__version__ or not MODEL.is_file() or not ENDPOINTS.is_file():
        return None
    return botocore.loaders.Loader(extra_search_paths=[str(DATA)])


def _reachable(model: dict[str, Any]) -> set[str]:
    shapes = model["shapes"]
    seen: set[str] = set()
    pending: list[str] = []
    for operation in model["operations"].values():
        pending += [operation[k]["shape"] for k in ("input", "output") if k in operation]
        pending += [error["shape"] for error in operation.get("errors", [])]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        shape = shapes[name]
        pending += [shape[k]["shape"] for k in ("member", "key", "value") if k in shape]
        pending += [member["shape"] for member in shape.get("members", {}).values()]
    return seen


def _undocumented(node: Any) -> Any:
    """`node` with every documentation text emptied (the keys stay: botocore reads some of them)."""
    if isinstance(node, dict):
        return {k: "" if k in ("documentation", "documentationUrl") else _undocumented(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_undocumented(v) for v in node]
    return node


def trimmed() -> tuple[dict[str, Any], dict[str, Any]]:
    """The trimmed service model and endpoints, from botocore's own files."""
    import botocore.loaders

    source = botocore.loaders.Loader()
    version = source.determine_latest_version("s3", "service-2")
    model = source.load_data_with_path(f"s3/{version}/service-2")[0]
    model = dict(model, operations={k: v for k, v in model["operations"].items() if k in OPERATIONS})
    keep = _reachable(model)
    model["shapes"] = {k: v for k, v in model["shapes"].items() if k in keep}
    endpoints = source.load_data("endpoints")
    endpoints = dict(endpoints, partitions=[
        dict(p, services={k: v for k, v in p["services"].items() if k == "s3"}) for p in endpoints["partitions"]])
    return _undocumented(model), endpoints


def write() -> None:
    import botocore

    model, endpoints = trimmed()
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    MODEL.write_text(json.dumps(model, separators=(",", ":"), sort_keys=True) + "\n")
    ENDPOINTS.write_text(json.dumps(endpoints, separators=(",", ":"), sort_keys=True) + "\n")
    VERSION.write_text(botocore.__version__ + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {MODEL} ({MODEL.stat().st_size} bytes), {ENDPOINTS} ({ENDPOINTS.stat().st_size} bytes)",
          file=sys.stderr)
