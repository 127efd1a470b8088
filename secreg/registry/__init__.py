"""The registry model without HTTP. This package's surface is the interface (`model`) and its errors
(`errors`): what `api/`, the web UI and a second implementation (the pull-through cache) import, from here.

The local implementation (`secreg.registry.local.LocalRegistry`) and what keeps its storage tidy (`gc`,
`maintenance`) are imported by the composition roots (`secreg.app`, the CLI) only; the stores below it
(`blobs`, `uploads`, `manifests`) are its own business."""

from secreg.registry.errors import (
    BlobUnknown,
    DigestMismatch,
    ManifestBlobsUnknown,
    ManifestInvalid,
    ManifestUnknown,
    ModelError,
    NameUnknown,
    RangeMismatch,
    SizeMismatch,
    Unsupported,
    UploadInterrupted,
    UploadUnknown,
)
from secreg.registry.model import (
    BlobInfo,
    BlobReader,
    ChunkRange,
    ForwardingModel,
    Manifest,
    PutResult,
    RegistryModel,
    UploadState,
)

__all__ = [
    "BlobInfo",
    "BlobReader",
    "BlobUnknown",
    "ChunkRange",
    "DigestMismatch",
    "ForwardingModel",
    "Manifest",
    "ManifestBlobsUnknown",
    "ManifestInvalid",
    "ManifestUnknown",
    "ModelError",
    "NameUnknown",
    "PutResult",
    "RangeMismatch",
    "RegistryModel",
    "SizeMismatch",
    "Unsupported",
    "UploadInterrupted",
    "UploadState",
    "UploadUnknown",
]
