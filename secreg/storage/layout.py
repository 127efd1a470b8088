"""Every path secreg stores, in one place. The tree is the reference registry's (distribution 2.x), so a
`registry:2` data directory can be served by secreg and the other way round:

    <root>/docker/registry/v2/
      blobs/<alg>/<hex[:2]>/<hex>/data                       the bytes, shared by all repositories
      _gc/lock                                               secreg: held while a garbage collection runs
      _gc/<run>/...                                          secreg: what a running collection quarantined
      repositories/<name>/
        _layers/<alg>/<hex>/link                             "<alg>:<hex>": this repository may read the blob
        _manifests/revisions/<alg>/<hex>/link                a manifest of this repository
        _manifests/revisions/<alg>/<hex>/mediatype           secreg: the Content-Type it was pushed with
        _manifests/tags/<tag>/current/link                   what the tag points at now
        _manifests/tags/<tag>/index/<alg>/<hex>/link         every manifest the tag pointed at
        _uploads/<uuid>/data                                 bytes received so far
        _uploads/<uuid>/startedat                            RFC 3339 start time (upload purging)
        _referrers/<alg>/<subject hex>/<alg>/<hex>           secreg: descriptor (JSON) of a referrer of a subject

Repository names are validated (`secreg.names`) and never contain a component starting with `_`, so a
repository can never collide with these directories; upload ids are validated UUIDs.
"""

from __future__ import annotations

from secreg.digest import Digest

V2 = "docker/registry/v2"
BLOBS = f"{V2}/blobs"
REPOSITORIES = f"{V2}/repositories"
GC_DIR = f"{V2}/_gc"
GC_LOCK = f"{GC_DIR}/lock"


def blob_dir(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def blob_data(digest: Digest) -> str:
    return f"{blob_dir(digest)}/data"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_layers/{digest.algorithm}/{digest.hex}/link"


def layers_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_layers"


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


def tag_index_link(name: str, tag: str, digest: Digest) -> str:
    return f"{tag_dir(name, tag)}/index/{digest.algorithm}/{digest.hex}/link"


def uploads_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads"


def upload_dir(name: str, upload_id: str) -> str:
    return f"{uploads_dir(name)}/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/data"


def upload_started_at(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/startedat"


def referrers_dir(name: str, subject: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_referrers/{subject.algorithm}/{subject.hex}"


def referrer_entry(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrers_dir(name, subject)}/{referrer.algorithm}/{referrer.hex}"


def link_target(data: bytes) -> Digest:
    return Digest.parse(data.decode("ascii", "replace").strip())


def link_content(digest: Digest) -> bytes:
    return str(digest).encode()
