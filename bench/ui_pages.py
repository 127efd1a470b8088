"""`python -m bench.ui_pages`: how long the web UI's pages take over a large registry.

Writes REPOS repositories x TAGS tags (every tag its own manifest over three shared blobs) straight into the
storage tree (`secreg.storage.layout`, the same files a push writes, without the fsyncs, so building 100,000
manifests takes seconds rather than an hour), starts a real `secreg serve` on it, logs in as admin through
the UI's login form, and times each page over HTTPS: the median and the slowest of ROUNDS requests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from secreg.auth.accounts import Accounts
from secreg.auth.groups import GroupStore
from secreg.auth.users import UserStore
from secreg.digest import Digest
from secreg.storage import layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server import run_secreg  # noqa: E402
from tests.ui.conftest import ui_login  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BENCH_USER, BENCH_PASSWORD = "bench", "bench-password-1"


_MADE: set[str] = set()


def _write(root: Path, path: str, data: bytes) -> None:
    target = f"{root}/{path}"
    parent = target.rsplit("/", 1)[0]
    if parent not in _MADE:
        os.makedirs(parent, exist_ok=True)
        _MADE.add(parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _blob(root: Path, data: bytes) -> Digest:
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    _write(root, layout.blob_data(digest), data)
    return digest


def populate(storage: Path, repos: int, tags: int) -> None:
    root = storage
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2025-01-01T00:00:00Z",
                         "config": {"Labels": {"org.opencontainers.image.title": "bench"}}}).encode()
    layers = [os.urandom(4096) for _ in range(2)]
    shared = [(_blob(root, config), len(config), "application/vnd.oci.image.config.v1+json")]
    shared += [(_blob(root, layer), len(layer), "application/vnd.oci.image.layer.v1.tar+gzip") for layer in layers]
    now = time.time()
    for r in range(repos):
        name = f"team{r // 100:02d}/app{r:04d}"
        for digest, _, _ in shared:
            _write(root, layout.layer_link(name, digest), layout.link_content(digest))
        for t in range(tags):
            document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": shared[0][2], "digest": str(shared[0][0]), "size": shared[0][1]},
                        "layers": [{"mediaType": m, "digest": str(d), "size": s} for d, s, m in shared[1:]],
                        "annotations": {"bench.tag": f"{name}:{t}"}}
            content = json.dumps(document).encode()
            digest = _blob(root, content)
            _write(root, layout.revision_media_type(name, digest), OCI_MANIFEST.encode())
            _write(root, layout.revision_link(name, digest), layout.link_content(digest))
            tag = f"v{t:03d}"
            _write(root, layout.tag_index_link(name, tag, digest), layout.link_content(digest))
            _write(root, layout.tag_current_link(name, tag), layout.link_content(digest))
            # distinct push times
            os.utime(f"{root}/{layout.tag_current_link(name, tag)}", (now - t * 60, now - t * 60))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workdir", help="reuse (or keep) this directory instead of a temporary one")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="secreg-ui-bench-"))
    storage = workdir / "data"
    marker = workdir / f"populated-{args.repos}x{args.tags}"
    if not marker.exists():
        started = time.monotonic()
        populate(storage, args.repos, args.tags)
        marker.touch()
        print(f"wrote {args.repos} repositories x {args.tags} tags in {time.monotonic() - started:.1f} s")
    middle = args.repos // 2
    repo = f"team{middle // 100:02d}/app{middle:04d}"
    pages = {
        "repositories, page 1": "/ui/",
        "repositories, last page": f"/ui/?page={max(1, -(-args.repos // 50))}",
        "repositories, search": f"/ui/?q=app{args.repos - 1:04d}",
        "tags by push time": f"/ui/repo/{repo}",
        "tags by name, page 2": f"/ui/repo/{repo}?sort=name&page=2",
        "manifest": f"/ui/repo/{repo}/-/manifest/v{min(42, args.tags - 1):03d}",
    }
    auth = workdir / "auth"
    auth.mkdir(mode=0o700, exist_ok=True)
    users = UserStore(auth / "htpasswd")
    if BENCH_USER not in users:  # an admin with a known password, also when the directory is reused
        Accounts(users, GroupStore(auth / "groups")).add(BENCH_USER, BENCH_PASSWORD, ["admins"], by="bench")
    with run_secreg(workdir, {"storage": {"delete": {"enabled": True}}}) as server, server.client() as client:
        assert ui_login(client, BENCH_USER, BENCH_PASSWORD).status_code == 303
        print(f"{'page':28} {'first ms':>9} {'median ms':>10} {'max ms':>8}")
        for label, path in pages.items():
            times = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            print(f"{label:28} {times[0]:9.1f} {statistics.median(times):10.1f} {max(times):8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
