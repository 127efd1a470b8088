"""`secreg gc`: remove blobs nothing references; safe to run while the registry serves (see secreg.registry.gc)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from secreg.config import ConfigError, load_settings


def register(sub: Any) -> None:
    p = sub.add_parser("gc", help="garbage-collect unreferenced blobs (safe while the registry is serving)",
                       description="Remove blobs no repository links and no manifest references, links to "
                       "missing blobs and stale upload sessions. Safe while the registry serves pushes.")
    p.add_argument("--config", metavar="FILE", help="YAML config file (the one `secreg serve` uses)")
    p.add_argument("--storage", metavar="DIR",
                   help="storage directory (storage.filesystem.rootdirectory, default ./data)")
    p.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    p.add_argument("--delete-untagged", action="store_true",
                   help="also remove manifests no tag reaches (directly or through an index), except "
                   "referrers of kept manifests")
    p.add_argument("--grace", type=float, metavar="SECONDS",
                   help="never remove anything changed more recently than this (default gc.grace, 3600)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from secreg.cli.main import CliError
    from secreg.registry.gc import GcBusy, collect_garbage
    from secreg.storage.factory import driver_from_settings

    overrides: dict[str, Any] = {}
    if args.storage:
        overrides = {"storage": {"filesystem": {"rootdirectory": str(Path(args.storage).resolve())}}}
    config_file = str(Path(args.config).resolve()) if args.config else None
    try:
        settings = load_settings(config_file, overrides, base_dir=Path.cwd())
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    grace = settings.gc_grace if args.grace is None else args.grace
    if grace < 0:
        raise CliError("--grace must not be negative")
    if settings.storage_s3 is None and not settings.storage_root.is_dir():
        raise CliError(f"storage directory {settings.storage_root} does not exist")
    driver = driver_from_settings(settings)
    try:
        report = collect_garbage(
            driver,
            grace=grace,
            delete_untagged=args.delete_untagged,
            dry_run=args.dry_run,
            upload_purge_age=settings.upload_purge_age,
        )
    except GcBusy as exc:
        raise CliError(str(exc)) from exc
    if not report.dry_run:
        from secreg.registry.browse import Browse

        Browse(driver).record_gc(report, "cli")
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    verb = "would remove" if report.dry_run else "removed"
    for manifest in report.manifests_removed:
        print(f"{verb} manifest {manifest.repository}@{manifest.digest}")
    for blob in report.blobs_removed:
        print(f"{verb} blob {blob.digest} ({_size(blob.size)})")
    for link in report.links_removed:
        print(f"{verb} link {link.repository} -> {link.digest} (blob missing)")
    for upload in report.uploads_purged:
        print(f"{verb} upload session {upload.repository} {upload.upload_id}")
    print(
        f"gc{' (dry run)' if report.dry_run else ''}: {verb} {len(report.blobs_removed)} blob(s) "
        f"({_size(report.bytes_freed)}), {len(report.manifests_removed)} manifest(s), "
        f"{len(report.links_removed)} link(s), {len(report.uploads_purged)} upload session(s) "
        f"in {report.duration:.1f} s"
        + (f"; {report.rescued} item(s) found in use again and kept" if report.rescued else "")
    )
    return 0


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"
