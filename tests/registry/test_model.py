"""The registry model through its interface only, on real files: no HTTP, no paths.

Every test runs against the local registry and against a `ForwardingModel` wrapping it (the shape the
pull-through cache takes), so the wrapper forwards every call as the interface says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from secreg.config import load_settings
from secreg.digest import Digest
from secreg.registry import errors
from secreg.registry.local import LocalRegistry
from secreg.registry.model import ChunkRange, ForwardingModel, RegistryModel

T = TypeVar("T")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def local(root: Path, **changes: Any) -> LocalRegistry:
    """A local registry on `root`; deletes on unless `changes` say otherwise (Settings fields)."""
    settings = load_settings(None, environ={}, overrides={"storage": {"filesystem": {"rootdirectory": str(root)}}})
    return LocalRegistry.from_settings(dataclasses.replace(settings, **{"delete_enabled": True, **changes}))


@pytest.fixture(params=["local", "forwarding"])
def make_model(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., RegistryModel]:
    def make(**overrides: Any) -> RegistryModel:
        model = local(tmp_path / "store", **overrides)
        return model if request.param == "local" else ForwardingModel(model)

    return make


@pytest.fixture
def model(make_model: Callable[..., RegistryModel]) -> RegistryModel:
    return make_model()


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(Digest.of(data)), "size": len(data)}


async def push_image(model: RegistryModel, name: str, tag: str, seed: bytes) -> tuple[Digest, bytes]:
    config, layer = b'{"seed": "%s"}' % seed, seed * 100
    for data in (config, layer):
        await model.put_blob(name, Digest.of(data), body(data), len(data))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": descriptor(OCI_CONFIG, config),
                           "layers": [descriptor(LAYER, layer)]}).encode()
    result = await model.put_manifest(name, tag, manifest, OCI_MANIFEST)
    return result.digest, manifest


def test_model_implementations_satisfy_the_protocol(tmp_path: Path) -> None:
    registry = local(tmp_path)
    assert isinstance(registry, RegistryModel)
    assert isinstance(ForwardingModel(registry), RegistryModel)


def test_chunked_upload_then_read_ranges(model: RegistryModel) -> None:
    async def scenario() -> None:
        state = await model.start_upload("team/app")
        assert state.size == 0 and state.name == "team/app"
        state = await model.append_upload("team/app", state.upload_id, body(b"hello "), ChunkRange(0, 5), 6)
        assert state.size == 6
        assert (await model.upload_status("team/app", state.upload_id)).size == 6
        digest = Digest.of(b"hello world")
        info = await model.complete_upload("team/app", state.upload_id, digest, body(b"world"), ChunkRange(6, 10))
        assert (info.digest, info.size) == (digest, 11)
        assert await model.stat_blob("team/app", digest) == info
        blob = await model.open_blob("team/app", digest)
        assert blob.size == 11
        assert b"".join([c async for c in blob.chunks()]) == b"hello world"
        assert b"".join([c async for c in blob.chunks(3, 5, chunk_size=2)]) == b"lo wo"
        with pytest.raises(errors.UploadUnknown):
            await model.upload_status("team/app", state.upload_id)  # committed: the session is gone

    run(scenario())


def test_upload_errors_say_where_the_session_stands(model: RegistryModel) -> None:
    async def scenario() -> None:
        state = await model.start_upload("team/app")
        await model.append_upload("team/app", state.upload_id, body(b"abc"))
        with pytest.raises(errors.RangeMismatch) as mismatch:
            await model.append_upload("team/app", state.upload_id, body(b"x"), ChunkRange(0, 0))
        assert mismatch.value.current_size == 3
        with pytest.raises(errors.SizeMismatch):
            await model.append_upload("team/app", state.upload_id, body(b"de"), None, 5)
        assert (await model.upload_status("team/app", state.upload_id)).size == 3  # the short chunk was dropped
        with pytest.raises(errors.DigestMismatch) as wrong:
            await model.complete_upload("team/app", state.upload_id, Digest.of(b"something else"))
        assert wrong.value.actual == Digest.of(b"abc")
        with pytest.raises(errors.UploadUnknown):  # a mismatch discards the session
            await model.upload_status("team/app", state.upload_id)
        with pytest.raises(errors.BlobUnknown):
            await model.stat_blob("team/app", Digest.of(b"abc"))
        with pytest.raises(errors.UploadUnknown):
            await model.cancel_upload("team/app", "not-a-session")

    run(scenario())


def test_cancel_discards_the_session(model: RegistryModel) -> None:
    async def scenario() -> None:
        state = await model.start_upload("team/app")
        await model.cancel_upload("team/app", state.upload_id)
        with pytest.raises(errors.UploadUnknown):
            await model.append_upload("team/app", state.upload_id, body(b"late"))

    run(scenario())


def test_blobs_are_reached_only_through_their_repository(model: RegistryModel) -> None:
    async def scenario() -> None:
        digest = (await model.put_blob("team/a", Digest.of(b"shared"), body(b"shared"))).digest
        with pytest.raises(errors.BlobUnknown):
            await model.stat_blob("team/b", digest)
        assert await model.repositories_with_blob(digest) == ["team/a"]
        assert not await model.mount_blob("team/b", digest, "team/c")
        assert await model.mount_blob("team/b", digest, "team/a")
        assert (await model.stat_blob("team/b", digest)).size == 6
        await model.unlink_blob("team/a", digest)
        with pytest.raises(errors.BlobUnknown):
            await model.open_blob("team/a", digest)
        with pytest.raises(errors.BlobUnknown):
            await model.unlink_blob("team/a", digest)
        assert (await model.stat_blob("team/b", digest)).size == 6  # the bytes stay for the other link

    run(scenario())


def test_a_mount_writes_its_link_off_the_event_loop(tmp_path: Path) -> None:
    """A mount's link is a chain of fsyncs (the link, the linker mark, their directories): in the storage
    thread pool, as an upload's link is, never on the event loop that serves every other request."""
    registry = local(tmp_path / "store")
    threads: list[threading.Thread] = []
    link = registry.blobs.link

    def recording_link(name: str, digest: Digest) -> None:
        threads.append(threading.current_thread())
        link(name, digest)

    registry.blobs.link = recording_link  # type: ignore[method-assign]

    async def scenario() -> None:
        digest = (await registry.put_blob("team/a", Digest.of(b"shared"), body(b"shared"))).digest
        threads.clear()
        assert await registry.mount_blob("team/b", digest, "team/a")
        assert (await registry.stat_blob("team/b", digest)).size == 6

    run(scenario())
    assert threads and all(thread is not threading.main_thread() for thread in threads)


def test_manifests_tags_catalog_and_referrers(model: RegistryModel) -> None:
    async def scenario() -> None:
        digest, content = await push_image(model, "team/app", "v1", b"one")
        await model.put_manifest("team/app", digest, content, OCI_MANIFEST, ["latest", "stable"])
        assert await model.list_tags("team/app") == ["latest", "stable", "v1"]
        by_tag = await model.get_manifest("team/app", "v1")
        assert (by_tag.digest, by_tag.media_type, by_tag.content) == (digest, OCI_MANIFEST, content)
        assert await model.catalog() == ["team/app"]

        signature = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "x/sig",
                                "config": descriptor(OCI_CONFIG, b'{"seed": "one"}'),
                                "layers": [], "subject": descriptor(OCI_MANIFEST, content)}).encode()
        referrer = await model.put_manifest("team/app", Digest.of(signature), signature, OCI_MANIFEST)
        assert referrer.subject == digest
        found = await model.referrers("team/app", digest)
        assert [entry["digest"] for entry in found] == [str(referrer.digest)]
        assert await model.referrers("team/app", digest, "other/type") == []

        await model.delete_manifest("team/app", "stable")
        assert await model.list_tags("team/app") == ["latest", "v1"]
        await model.delete_manifest("team/app", digest)
        assert await model.list_tags("team/app") == []
        with pytest.raises(errors.ManifestUnknown):
            await model.get_manifest("team/app", digest)
        with pytest.raises(errors.ManifestUnknown):
            await model.delete_manifest("team/app", "v1")
        with pytest.raises(errors.NameUnknown):
            await model.list_tags("team/nothing")

    run(scenario())


def test_manifest_errors(model: RegistryModel) -> None:
    async def scenario() -> None:
        with pytest.raises(errors.ManifestInvalid):
            await model.put_manifest("team/app", "v1", b"not json", OCI_MANIFEST)
        missing = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                              "config": descriptor(OCI_CONFIG, b"{}"), "layers": []}).encode()
        with pytest.raises(errors.ManifestBlobsUnknown) as unknown:
            await model.put_manifest("team/app", "v1", missing, OCI_MANIFEST)
        assert unknown.value.digests == (str(Digest.of(b"{}")),)
        with pytest.raises(errors.DigestMismatch):
            await model.put_manifest("team/app", Digest.of(b"other"), missing, OCI_MANIFEST)

    run(scenario())


def test_settings_refuse_writes_and_deletes(make_model: Callable[..., RegistryModel]) -> None:
    async def scenario() -> None:
        writable = make_model()
        digest, _ = await push_image(writable, "team/app", "v1", b"one")
        no_deletes = make_model(delete_enabled=False)
        with pytest.raises(errors.Unsupported, match="deletes are disabled"):
            await no_deletes.delete_manifest("team/app", digest)
        readonly = make_model(readonly=True)
        assert (await readonly.get_manifest("team/app", "v1")).digest == digest
        for write in (readonly.start_upload("team/app"),
                      readonly.put_blob("team/app", Digest.of(b"x"), body(b"x")),
                      readonly.put_manifest("team/app", "v2", b"{}", OCI_MANIFEST),
                      readonly.delete_manifest("team/app", "v1")):
            with pytest.raises(errors.Unsupported):
                await write
        await readonly.check_ready()

    run(scenario())


def test_description_of_the_newest_tag(model: RegistryModel) -> None:
    async def scenario() -> None:
        assert await model.description("team/none") == ""
        config = json.dumps({"config": {"Labels": {"org.opencontainers.image.description": "a tool"}}}).encode()
        await model.put_blob("team/app", Digest.of(config), body(config))
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": descriptor(OCI_CONFIG, config), "layers": []}).encode()
        await model.put_manifest("team/app", "v1", manifest, OCI_MANIFEST)
        assert await model.description("team/app") == "a tool"

    run(scenario())
