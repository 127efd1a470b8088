"""SHA-256 / SHA-512 whose running state can be saved and resumed in another process.

`hashlib` objects cannot be serialized, so an upload continued on another replica would have to hash its
bytes again. OpenSSL's low-level `SHA256_Init/Update/Final` (deprecated in OpenSSL 3 but still exported)
work on a plain C struct (`SHA256_CTX`, 112 bytes; `SHA512_CTX`, 216 bytes): copying those bytes out is
the whole state. Same assembly as hashlib's sha256, so the same speed (measured in the README); ctypes
releases the GIL during each call. Without libcrypto, `available()` is False and callers fall back to
hashlib and re-hashing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

_SIZES = {"sha256": (112, 32), "sha512": (216, 64)}


def _load() -> Any:
    name = ctypes.util.find_library("crypto")
    if not name:
        return None
    try:
        library = ctypes.CDLL(name)
        for function in ("SHA256_Init", "SHA256_Update", "SHA256_Final",
                         "SHA512_Init", "SHA512_Update", "SHA512_Final"):
            getattr(library, function).restype = ctypes.c_int
        library.SHA256_Update.argtypes = library.SHA512_Update.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return library


_LIB = _load()


def available() -> bool:
    return _LIB is not None


class ResumableHash:
    """hashlib-like (`update`, `hexdigest`, `copy`) plus `state()` / `from_state()`."""

    def __init__(self, algorithm: str, state: bytes | None = None) -> None:
        if _LIB is None or algorithm not in _SIZES:
            raise ValueError(f"no resumable {algorithm}")
        self.algorithm = algorithm
        size, _digest = _SIZES[algorithm]
        self._ctx = ctypes.create_string_buffer(size)
        prefix = "SHA256" if algorithm == "sha256" else "SHA512"
        self._update_fn = getattr(_LIB, f"{prefix}_Update")
        self._final_fn = getattr(_LIB, f"{prefix}_Final")
        if state is None:
            getattr(_LIB, f"{prefix}_Init")(self._ctx)
        else:
            if len(state) != size:
                raise ValueError(f"a {algorithm} state is {size} bytes, got {len(state)}")
            ctypes.memmove(self._ctx, state, size)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if isinstance(data, bytes):
            self._update_fn(self._ctx, data, len(data))
            return
        view = memoryview(data).cast("B")
        if view.readonly:
            # ctypes takes the address of bytes but not of a read-only view: the whole of a bytes object is
            # passed as itself, a slice of one is copied.
            whole = view.obj if isinstance(view.obj, bytes) and len(view.obj) == len(view) else bytes(view)
            self._update_fn(self._ctx, whole, len(whole))
            return
        if len(view):
            pointer = (ctypes.c_char * len(view)).from_buffer(view)
            self._update_fn(self._ctx, pointer, len(view))

    def state(self) -> bytes:
        return self._ctx.raw

    @classmethod
    def from_state(cls, algorithm: str, state: bytes) -> ResumableHash:
        return cls(algorithm, state)

    def copy(self) -> ResumableHash:
        return ResumableHash(self.algorithm, self.state())

    def hexdigest(self) -> str:
        ctx = ctypes.create_string_buffer(self._ctx.raw, len(self._ctx))  # Final must not consume our state
        out = ctypes.create_string_buffer(_SIZES[self.algorithm][1])
        self._final_fn(out, ctx)
        return out.raw.hex()
