"""The boundaries between the layers (README "Architecture"), and the public surface of the packages that
other packages (and the next ones: proxy, UI, object storage) import."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A change here is a change of a public surface: say so in the commit message.
PUBLIC = {
    "secreg.registry": [
        "BlobInfo", "BlobReader", "BlobUnknown", "ChunkRange", "DigestMismatch", "ForwardingModel", "Manifest",
        "ManifestBlobsUnknown", "ManifestInvalid", "ManifestUnknown", "ModelError", "NameUnknown", "PutResult",
        "RangeMismatch", "RegistryModel", "SizeMismatch", "Unsupported", "UploadInterrupted", "UploadState",
        "UploadUnknown",
    ],
    "secreg.registry.local": ["LocalBlobReader", "LocalRegistry"],
    "secreg.storage": [
        "AppendWriter", "FileInfo", "InvalidPath", "PathNotFound", "StorageDriver", "StorageError",
    ],
    "secreg.auth.access": [
        "SEARCH", "TOKEN_PATH", "AccessResolver", "Need", "action_of", "actions_for", "allows", "challenge",
        "challenge_detail", "mount_hints", "realm_from_request",
    ],
    "secreg.auth.middleware": ["IDENTITY_KEY", "AuthMiddleware", "Identity", "Resolver"],
    "secreg.auth.server": ["REVOKE_PATH", "TOKEN_PATH", "TokenService", "token_routes"],
    "secreg.scopekeys": ["IDENTITY_KEY", "REQUEST_ID_KEY", "ROUTE_MATCH_KEY", "USER_KEY"],
    "secreg.httperrors": ["API_VERSION", "error_response"],
    "secreg.api.errors": ["MODEL_ERRORS", "oci_error"],
    "secreg.api.routes": ["HEALTH_ROUTES", "METRICS_ROUTES", "REGISTRY_ROUTES", "RouteSpec", "access_table",
                          "build_routes", "dispatch_matched"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_surface_is_pinned(module: str) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == sorted(PUBLIC[module])
    missing = [name for name in imported.__all__ if not hasattr(imported, name)]
    assert not missing


def test_import_contracts_hold() -> None:
    # In a child process: import-linter configures logging (dictConfig), which would disable this process's
    # loggers for the tests that follow.
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
               "sys.exit(lint_imports(no_logo=True, no_cache=True))"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and " 0 broken" in result.stdout
