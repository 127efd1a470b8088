"""Content digests: the `algorithm:hex` value type and a verifier fed as bytes arrive."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from secreg import hashstate
from secreg.errors import ErrorCode, RegistryError
from secreg.hashstate import ResumableHash

# Algorithms we store and verify, with their hex length. Anything else is "unsupported", not "invalid".
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z")
_HEX = "0123456789abcdef"


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate; raises DIGEST_INVALID for anything a path must never be built from."""
        match = _DIGEST.match(text)
        if not match:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"invalid digest {text[:200]!r}")
        algorithm, encoded = match.groups()
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"unsupported digest algorithm {algorithm!r}")
        if len(encoded) != length or encoded.strip(_HEX):  # strip leaves nothing when every character is hex
            raise RegistryError(
                ErrorCode.DIGEST_INVALID, f"{algorithm} digest must be {length} lowercase hex characters"
            )
        return cls(algorithm, encoded)

    @classmethod
    def from_parts(cls, algorithm: str, encoded: str) -> Digest | None:
        """The digest `algorithm:encoded` if it is a valid one we store (what `parse` accepts), else None:
        for names read from a storage tree, without building the text and raising."""
        if ALGORITHMS.get(algorithm) != len(encoded) or encoded.strip(_HEX):
            return None
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def is_digest(text: str) -> bool:
    return ":" in text


class Hasher:
    """Running hash of an upload in one algorithm (the one the client will name at commit). Its state can be
    exported (`export`, `Hasher.restore`) where OpenSSL's low-level SHA-2 is available (`secreg.hashstate`),
    so another process or replica continues the hash instead of reading the bytes again."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._hash: Any = (
            ResumableHash(algorithm) if hashstate.available() and algorithm in ("sha256", "sha512")
            else hashlib.new(algorithm)
        )
        self.size = 0

    def export(self) -> bytes | None:
        """The running state (opaque bytes), or None when this hash cannot be exported."""
        return self._hash.state() if isinstance(self._hash, ResumableHash) else None

    @classmethod
    def restore(cls, algorithm: str, size: int, state: bytes) -> Hasher:
        """The hasher `export` saw, having hashed `size` bytes; ValueError when `state` does not fit."""
        hasher = cls.__new__(cls)
        hasher.algorithm = algorithm
        hasher._hash = ResumableHash.from_state(algorithm, state)
        hasher.size = size
        return hasher

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())

    def copy(self) -> Hasher:
        other = Hasher.__new__(Hasher)
        other.algorithm = self.algorithm
        other._hash = self._hash.copy()
        other.size = self.size
        return other
