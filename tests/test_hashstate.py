"""The exportable SHA-2 state: a hash continued from saved bytes equals hashlib's over the whole."""

from __future__ import annotations

import hashlib
import os

import pytest

from secreg import hashstate
from secreg.digest import Digest, Hasher
from secreg.hashstate import ResumableHash


def test_available_here() -> None:
    assert hashstate.available(), "libcrypto's SHA256_* not found: uploads moving between replicas re-hash"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_state_moves_between_objects(algorithm: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    first = ResumableHash(algorithm)
    first.update(data[:1000])
    first.update(bytearray(data[1000:5000]))
    first.update(memoryview(data)[5000:70001])  # a read-only slice: copied, still right
    saved = first.state()
    second = ResumableHash.from_state(algorithm, saved)
    second.update(memoryview(bytearray(data[70001:])))
    assert second.hexdigest() == hashlib.new(algorithm, data).hexdigest()
    assert second.hexdigest() == second.hexdigest()  # hexdigest does not consume the state
    assert first.hexdigest() == hashlib.new(algorithm, data[:70001]).hexdigest()


def test_hasher_export_restore_and_bad_state() -> None:
    hasher = Hasher("sha256")
    hasher.update(b"abc")
    state = hasher.export()
    assert state is not None
    restored = Hasher.restore("sha256", 3, state)
    restored.update(b"def")
    assert restored.digest() == Digest.of(b"abcdef") and restored.size == 6
    with pytest.raises(ValueError):
        Hasher.restore("sha256", 3, state[:-1])
