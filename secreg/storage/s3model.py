"""botocore's data for the S3 driver, trimmed to what it uses: less memory in every process on S3.

A botocore client parses its service's whole model and the whole `endpoints.json` of every AWS service: for S3
~11 MiB of Python dicts per process, kept for the client's life (measured with tracemalloc: 2.7 MiB of it the
S3 model of 116 operations, 6.7 MiB `endpoints.json`). The driver calls 17 operations. `botocore_data/` holds

    s3/<version>/service-2.json   the operations in OPERATIONS and every shape they reach, without documentation
    endpoints.json                every partition, with only the services in ENDPOINT_SERVICES (S3 and those
                                  botocore's credential chain creates clients of: STS, SSO, sign-in)

    VERSION                       the botocore version they were cut from

both cut from the installed botocore's own files, keys in botocore's order. They are used only with that same
botocore (`usable()`): botocore changes its models and its code together, so another version gets its own full
data (as before: ~11 MiB more per process) and one warning naming the command that cuts them anew; a botocore
upgrade never breaks the driver nor the tests. `loader()` finds them before
botocore's built-in data and after the user's own (`AWS_DATA_PATH`, `~/.aws/models`): a model the user installed
still wins, as it would in botocore. Everything else (paginators, the endpoint rule set, the sdk extras) comes
from botocore itself. tests/storage/test_s3_model.py proves each request the driver sends is the same byte for
byte with either data, and that the files are what `python -m secreg.storage.s3model` makes of the installed
botocore (run it after upgrading botocore).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

import botocore
import botocore.loaders

DATA = Path(__file__).resolve().parent / "botocore_data"
OPERATIONS = (
    "AbortMultipartUpload", "CompleteMultipartUpload", "CopyObject", "CreateBucket", "CreateMultipartUpload",
    "CreateSession",  # botocore's own call for S3 Express (directory) buckets
    "DeleteObject", "DeleteObjects", "GetObject", "HeadBucket", "HeadObject", "ListMultipartUploads",
    "ListObjectsV2", "ListParts", "PutObject", "UploadPart", "UploadPartCopy",
)
ENDPOINT_SERVICES = ("s3", "sts", "sso", "sso-oidc", "signin")
VERSION_FILE = "VERSION"
_DOCUMENTATION = ("documentation", "documentationUrl")


class TrimmedLoader(botocore.loaders.Loader):  # type: ignore[misc]  # botocore is untyped
    """botocore's Loader with `botocore_data/` searched just before the built-in data, and counted as built-in
    (botocore resolves endpoints differently for an `endpoints.json` of the user's own; this one is botocore's,
    cut down)."""

    def is_builtin_path(self, path: str) -> bool:
        return path.startswith(str(DATA)) or bool(super().is_builtin_path(path))


def cut_from() -> str:
    """The botocore version `botocore_data/` was cut from ("" when the file is missing)."""
    try:
        return (DATA / VERSION_FILE).read_text().strip()
    except OSError:
        return ""


def usable() -> bool:
    """True when the installed botocore is the one the trimmed data was cut from."""
    return cut_from() == str(botocore.__version__)


def loader() -> TrimmedLoader:
    """A data loader for a botocore session: `session.register_component("data_loader", loader())`."""
    user = [os.path.expanduser(p) for p in os.environ.get("AWS_DATA_PATH", "").split(os.pathsep) if p]
    base = botocore.loaders.Loader
    return TrimmedLoader(extra_search_paths=[*user, base.CUSTOMER_DATA_PATH, str(DATA), base.BUILTIN_DATA_PATH],
                         include_default_search_paths=False)


def _shapes_named(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("shape"), str):
            found.add(node["shape"])
        for key, value in node.items():
            if key not in _DOCUMENTATION:
                _shapes_named(value, found)
    elif isinstance(node, list):
        for value in node:
            _shapes_named(value, found)


def _undocumented(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _undocumented(value) for key, value in node.items() if key not in _DOCUMENTATION}
    if isinstance(node, list):
        return [_undocumented(value) for value in node]
    return node


def trim_service(full: dict[str, Any], operations: tuple[str, ...] = OPERATIONS) -> dict[str, Any]:
    """The model with only `operations` and the shapes they reach (inputs, outputs, errors, members...)."""
    missing = set(operations) - set(full["operations"])
    if missing:
        raise ValueError(f"botocore's S3 model has no {sorted(missing)}")
    kept_operations = {name: op for name, op in full["operations"].items() if name in operations}
    needed: set[str] = set()
    _shapes_named(kept_operations, needed)
    pending = list(needed)
    while pending:
        reached: set[str] = set()
        _shapes_named(full["shapes"][pending.pop()], reached)
        pending.extend(reached - needed)
        needed |= reached
    # Documentation goes from operations and shapes only: botocore reads that of clientContextParams.
    trimmed = {key: value for key, value in full.items() if key not in ("operations", "shapes")}
    trimmed["operations"] = _undocumented(kept_operations)
    trimmed["shapes"] = _undocumented({name: shape for name, shape in full["shapes"].items() if name in needed})
    return trimmed


def trim_endpoints(full: dict[str, Any], services: tuple[str, ...] = ENDPOINT_SERVICES) -> dict[str, Any]:
    partitions = [{**partition, "services": {name: entry for name, entry in partition["services"].items()
                                             if name in services}}
                  for partition in full["partitions"]]
    return {**full, "partitions": partitions}


def _builtin_loader() -> botocore.loaders.Loader:
    """A loader of botocore's own data only (not the user's, not ours)."""
    return botocore.loaders.Loader(include_default_search_paths=False,
                                   extra_search_paths=[botocore.loaders.Loader.BUILTIN_DATA_PATH])


def generate() -> dict[str, bytes]:
    """The files of `botocore_data/` (relative path -> bytes) made from the installed botocore."""
    builtin = _builtin_loader()
    version = str(builtin.determine_latest_version("s3", "service-2"))
    service = trim_service(builtin.load_data(f"s3/{version}/service-2"))
    endpoints = trim_endpoints(builtin.load_data("endpoints"))

    def dump(tree: dict[str, Any]) -> bytes:
        return json.dumps(tree, separators=(",", ":")).encode() + b"\n"

    # Compressed with a fixed mtime: the same botocore always gives the same bytes.
    return {f"s3/{version}/service-2.json.gz": gzip.compress(dump(service), mtime=0),
            "endpoints.json.gz": gzip.compress(dump(endpoints), mtime=0),
            VERSION_FILE: f"{botocore.__version__}\n".encode()}


def main() -> int:
    for stale in DATA.glob("s3/*/service-2.json.gz"):  # a model version botocore no longer has
        stale.unlink()
    for relative, data in generate().items():
        path = DATA / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{path}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
