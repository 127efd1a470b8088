"""Every path secreg stores, in one place. The tree is the reference registry's (distribution 2.x), so a
`registry:2` data directory can be served by secreg and the other way round:

    <root>/docker/registry/v2/
      blobs/<alg>/<hex[:2]>/<hex>/data                       the bytes, shared by all repositories
      _gc/lock                                               secreg: held while a garbage collection runs
      _gc/<run>/...                                          secreg: what a running collection quarantined
                                                             (the tree below v2/, e.g. _gc/<run>/blobs/...)
      _readyz/<pid>-<random>                                 secreg: the readiness probe's short-lived file
      _gcstatus/last.json                                    secreg: summary of the last collection (web UI)
      _proxy/<uuid>/data                                     secreg: a blob being fetched from an upstream
      _proxy/<key>.claim                                     secreg: lock file of the worker fetching it (flock),
                                                             or asking for a manifest or tag list
      _eviction/lock                                         secreg: held by the process running a pass of the
                                                             pull-through cache's eviction (storage lock)
      _eviction/last                                         secreg: unix time the last eviction pass began
      _catalog/generation                                    secreg: a token replaced when a repository appears
      _catalog/tags/<name>/generation                        secreg: ... when a tag of <name> appears or goes
      _catalog/blobs/<alg>/<hex>/<name with + for />         secreg: <name> linked this blob (mount hints)
      repositories/<name>/
        _layers/<alg>/<hex>/link                             "<alg>:<hex>": this repository may read the blob
        _manifests/revisions/<alg>/<hex>/link                a manifest of this repository
        _manifests/revisions/<alg>/<hex>/mediatype           secreg: the Content-Type it was pushed with
        _manifests/tags/<tag>/current/link                   what the tag points at now
        _manifests/tags/<tag>/index/<alg>/<hex>/link         every manifest the tag pointed at
        _uploads/<uuid>/data                                 bytes received so far
        _uploads/<uuid>/startedat                            RFC 3339 start time (upload purging)
        _uploads/<uuid>/committed                            secreg: how many bytes of data the requests that
                                                             ended stored (what the upload's status reports:
                                                             data may hold more while a request writes)
        _uploads/<uuid>/hashstates/<alg>/state               secreg: running hash state and the offset it is at,
                                                             so any replica continues the digest (distribution
                                                             keeps one file per offset: hashstates/<alg>/<offset>)
        _referrers/<alg>/<subject hex>/<alg>/<hex>           secreg: descriptor (JSON) of a referrer of a subject
        _cache/upstream                                      secreg: name of the upstream this repository caches
        _cache/pulled/<alg>/<hex>                            secreg: unix time the manifest was last pulled
        _cache/tags/<tag>                                    secreg: unix time the tag was last checked upstream

Repository names are validated (`secreg.names`) and never contain a component starting with `_`, so a
repository can never collide with these directories; upload ids are validated UUIDs.

Paths are built here and parsed here (`parse_blob_path`, `parse_repository_path`), so the code above storage
walks the tree without knowing its shape, and a driver for another backend needs no change above `storage/`.
"""

from __future__ import annotations

from dataclasses import dataclass

from secreg.digest import Digest

V2 = "docker/registry/v2"
BLOBS = f"{V2}/blobs"
REPOSITORIES = f"{V2}/repositories"
GC_DIR = f"{V2}/_gc"
GC_LOCK_NAME = "lock"
GC_LOCK = f"{GC_DIR}/{GC_LOCK_NAME}"
GC_LAST_RUN = f"{V2}/_gcstatus/last.json"
PROBE_DIR = f"{V2}/_readyz"
# A directory below repositories/ holding one of these is a repository (`_uploads`: one with sessions only).
REPOSITORY_MARKERS = frozenset({"_manifests", "_layers"})
UPLOADS_MARKER = "_uploads"
PROXY_DIR = f"{V2}/_proxy"
EVICTION_LOCK = f"{V2}/_eviction/lock"
EVICTION_LAST = f"{V2}/_eviction/last"
CATALOG_GENERATION = f"{V2}/_catalog/generation"


def tags_generation(name: str) -> str:
    return f"{V2}/_catalog/tags/{name}/generation"


def linkers_dir(digest: Digest) -> str:
    """Where the repositories that linked `digest` leave a mark (one empty file each)."""
    return f"{V2}/_catalog/blobs/{digest.algorithm}/{digest.hex}"


def linker_mark(digest: Digest, name: str) -> str:
    return f"{linkers_dir(digest)}/{name.replace('/', '+')}"  # `+` never occurs in a repository name


def linker_name(mark: str) -> str:
    return mark.replace("+", "/")


def blob_dir(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def blob_data(digest: Digest) -> str:
    return f"{blob_dir(digest)}/data"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{layer_link_dir(name, digest)}/link"


def layer_link_dir(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_layers/{digest.algorithm}/{digest.hex}"


def layers_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_layers"


def manifests_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests"


def revisions_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions"


def revision_dir(name: str, digest: Digest) -> str:
    return f"{revisions_dir(name)}/{digest.algorithm}/{digest.hex}"


def revision_link(name: str, digest: Digest) -> str:
    return f"{revision_dir(name, digest)}/link"


def revision_media_type(name: str, digest: Digest) -> str:
    return f"{revision_dir(name, digest)}/mediatype"


def tags_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags"


def tag_dir(name: str, tag: str) -> str:
    return f"{tags_dir(name)}/{tag}"


def tag_current_link(name: str, tag: str) -> str:
    return f"{tag_dir(name, tag)}/current/link"


def tag_index_dir(name: str, tag: str, digest: Digest) -> str:
    return f"{tag_dir(name, tag)}/index/{digest.algorithm}/{digest.hex}"


def tag_index_link(name: str, tag: str, digest: Digest) -> str:
    return f"{tag_index_dir(name, tag, digest)}/link"


def uploads_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads"


def upload_dir(name: str, upload_id: str) -> str:
    return f"{uploads_dir(name)}/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/data"


def upload_started_at(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/startedat"


def upload_committed(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/committed"


def upload_hash_state(name: str, upload_id: str, algorithm: str) -> str:
    """One file, rewritten by each request (it names the offset it is the state at): a file per offset, as
    registry:2 keeps them, cost a new inode per PATCH."""
    return f"{upload_dir(name, upload_id)}/hashstates/{algorithm}/state"


def referrers_dir(name: str, subject: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_referrers/{subject.algorithm}/{subject.hex}"


def referrer_algorithm_dir(name: str, subject: Digest, algorithm: str) -> str:
    return f"{referrers_dir(name, subject)}/{algorithm}"


def referrer_entry(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrer_algorithm_dir(name, subject, referrer.algorithm)}/{referrer.hex}"


def probe_file(token: str) -> str:
    return f"{PROBE_DIR}/{token}"


def gc_run_dir(run_id: str) -> str:
    return f"{GC_DIR}/{run_id}"


def quarantined(run_dir: str, path: str) -> str:
    """Where a collection run keeps `path` (a path below v2/) while deciding about it."""
    return f"{run_dir}/{path[len(V2) + 1:]}"


def unquarantined(run_dir: str, path: str) -> str:
    """The inverse of `quarantined`: where a file found in `run_dir` belongs."""
    return f"{V2}/{path[len(run_dir) + 1:]}"


def child(directory: str, name: str) -> str:
    """An entry of a directory listed with the driver's `list`."""
    return f"{directory}/{name}"


def link_target(data: bytes) -> Digest:
    return Digest.parse(data.decode("ascii", "replace").strip())


def link_content(digest: Digest) -> bytes:
    return str(digest).encode()


def digest_of(algorithm: str, hex_: str) -> Digest | None:
    """The digest two path components spell; None for a temporary or half-deleted entry."""
    return Digest.from_parts(algorithm, hex_)


def parse_blob_path(path: str) -> Digest | None:
    """The digest of `blobs/<alg>/<xx>/<hex>/data`; None for any other path."""
    parts = path[len(BLOBS) + 1:].split("/") if path.startswith(f"{BLOBS}/") else []
    if len(parts) == 4 and parts[3] == "data":
        return digest_of(parts[0], parts[2])
    return None


_BLOB_DIR_DEPTH = BLOBS.count("/") + 3


def blob_file_of(directory: str) -> str | None:
    """"data" for a blob's directory `blobs/<alg>/<xx>/<hex>` (the one file `parse_blob_path` takes there),
    None for any other directory below blobs/: a walk's `only` hint."""
    return "data" if directory.count("/") == _BLOB_DIR_DEPTH else None


def link_file_of(directory: str) -> str | None:
    """"link" for a directory that holds one link (`<name>/_layers/<alg>/<hex>`,
    `<name>/_manifests/revisions/<alg>/<hex>`, `<name>/_manifests/tags/<tag>/current`,
    `<name>/_manifests/tags/<tag>/index/<alg>/<hex>`: the one file `parse_repository_path` takes there), None
    for any other directory below repositories/: a walk's `only` hint. Anchored on `_` components, which no
    repository name has; a tag may be named like one (`_layers`), so `_layers` counts only where it does not
    stand in a tag's place (`_manifests/tags/<tag>`)."""
    parts = directory.rsplit("/", 6)
    if len(parts) < 7:
        return None
    if parts[4] == "_layers":
        return "link" if parts[2] != "_manifests" else None
    if parts[3] == "_manifests" and (parts[4] == "revisions" or (parts[4] == "tags" and parts[6] == "current")):
        return "link"
    if parts[1] == "_manifests" and parts[2] == "tags" and parts[4] == "index":
        return "link"
    return None


@dataclass(frozen=True)
class RepositoryPath:
    """What a link file below repositories/ is: `kind` "layer", "revision", "tag" (a tag's current link,
    whose target is in the file) or "tag_index" (a digest the tag pointed at); or "upload" for any file of an
    upload session (`upload_id`, not validated)."""

    repository: str
    kind: str
    digest: Digest | None = None
    tag: str | None = None
    upload_id: str | None = None


def parse_repository_path(path: str) -> RepositoryPath | None:
    """Parse a `link` file's path, or an upload session's file's, below repositories/; None for anything else."""
    if not path.startswith(f"{REPOSITORIES}/"):
        return None
    parts = path[len(REPOSITORIES) + 1:].split("/")
    at = next((i for i, part in enumerate(parts) if part.startswith("_")), 0)
    if at == 0:
        return None
    name, kind, rest = "/".join(parts[:at]), parts[at], parts[at + 1:]
    if kind == UPLOADS_MARKER:
        return RepositoryPath(name, "upload", upload_id=rest[0]) if len(rest) >= 2 else None
    if parts[-1] != "link":
        return None
    if kind == "_layers" and len(rest) == 3:
        digest = digest_of(rest[0], rest[1])
        return RepositoryPath(name, "layer", digest) if digest is not None else None
    if kind != "_manifests" or len(rest) < 4:
        return None
    if len(rest) == 4 and rest[0] == "revisions":
        digest = digest_of(rest[1], rest[2])
        return RepositoryPath(name, "revision", digest) if digest is not None else None
    if len(rest) == 4 and rest[0] == "tags" and rest[2] == "current":
        return RepositoryPath(name, "tag", tag=rest[1])
    if len(rest) == 6 and rest[0] == "tags" and rest[2] == "index":
        digest = digest_of(rest[3], rest[4])
        return RepositoryPath(name, "tag_index", digest, rest[1]) if digest is not None else None
    return None


def is_revision_link(path: str) -> bool:
    """A manifest revision's link (put back last when a collection run is undone: it makes the rest visible)."""
    parsed = parse_repository_path(path)
    return parsed is not None and parsed.kind == "revision"


def proxy_fetch_data(fetch_id: str) -> str:
    return f"{PROXY_DIR}/{fetch_id}/data"


def proxy_fetch_dir(fetch_id: str) -> str:
    return f"{PROXY_DIR}/{fetch_id}"


def cache_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_cache"


def cache_upstream(name: str) -> str:
    return f"{cache_dir(name)}/upstream"


def cache_pulled_dir(name: str) -> str:
    return f"{cache_dir(name)}/pulled"


def cache_pulled(name: str, digest: Digest) -> str:
    return f"{cache_pulled_dir(name)}/{digest.algorithm}/{digest.hex}"


def cache_tag_checked(name: str, tag: str) -> str:
    return f"{cache_dir(name)}/tags/{tag}"
