"""`secreg gc`: remove blobs nothing references; safe to run while the registry serves (see secreg.registry.gc)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

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
    p.add_argument("--upload-age", type=float, metavar="SECONDS",
                   help="remove upload sessions idle (no data received) for longer than this; one being written "
                   "is never removed (default storage.maintenance.uploadpurging.age, 604800)")
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
    upload_age = settings.upload_purge_age if args.upload_age is None else args.upload_age
    if upload_age < 0:
        raise CliError("--upload-age must not be negative")
    progress = Progress(sys.stderr)
    print(f"gc: removing blobs unreferenced for more than {_duration(grace)} and upload sessions idle for more "
          f"than {_duration(upload_age)} (--upload-age){' (dry run)' if args.dry_run else ''}", file=sys.stderr)
    try:
        report = collect_garbage(
            driver,
            grace=grace,
            delete_untagged=args.delete_untagged,
            dry_run=args.dry_run,
            upload_purge_age=upload_age,
            progress=progress,
        )
    except GcBusy as exc:
        raise CliError(str(exc)) from exc
    finally:
        progress.close()
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
        print(f"{verb} upload session {upload.repository} {upload.upload_id} (idle {_duration(upload.idle)}, "
              f"{_size(upload.size)})")
    for write in report.writes_aborted:
        print(f"{'would abort' if report.dry_run else 'aborted'} incomplete multipart upload at {write.path} "
              f"(idle {_duration(write.idle)}, {_size(write.size)})")
    print(
        f"gc{' (dry run)' if report.dry_run else ''}: {verb} {len(report.blobs_removed)} blob(s) "
        f"({_size(report.bytes_freed)}), {len(report.manifests_removed)} manifest(s), "
        f"{len(report.links_removed)} link(s), {len(report.uploads_purged)} upload session(s) "
        f"in {report.duration:.1f} s"
        + (f"; {report.rescued} item(s) found in use again and kept" if report.rescued else "")
        + (f"; {len(report.writes_aborted)} incomplete multipart upload(s) aborted" if report.writes_aborted else "")
    )
    return 0


PHASES = {"scan": "scanned", "quarantine": "quarantined", "settle": "settling", "delete": "deleted",
          "uploads": "upload sessions checked"}


class Progress:
    """On a terminal one line rewritten in place (phase, count, bytes); otherwise one plain line per phase."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.phase = ""
        self.started = time.monotonic()
        self._last = ""

    def __call__(self, phase: str, done: int, total: int, size: int) -> None:
        words = PHASES.get(phase, phase)
        line = (f"gc: {words}" if phase == "settle" else f"gc: {words} {done}/{total}") + (
            f" ({_size(size)})" if size else "")
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last)))
            self.stream.flush()
            self._last = line
            return
        if done == total or phase == "settle":  # a plain line per finished phase
            self.stream.write(f"{line} [{time.monotonic() - self.started:.1f} s]\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"
