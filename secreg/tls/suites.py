"""The order of the TLS 1.3 cipher suites the server prefers: AES-128-GCM first, as Go's crypto/tls does on CPUs
with AES instructions.

OpenSSL's default order puts AES-256-GCM first and its server follows the client's order, which curl and Python
clients take from OpenSSL too: every byte of a blob pull was encrypted with AES-256 (14 rounds) where the Go
registry, for the same curl, negotiates AES-128 (10): `openssl speed` here 5.0 against 5.8 GB/s per core, on the
server and on the client alike. Python's `ssl` has no call for the TLS 1.3 list (`set_ciphers` is TLS 1.2's), so
OpenSSL's `SSL_CTX_set_ciphersuites` is called on the context's `SSL_CTX` through ctypes; the pointer is checked
first (its options must read back as the context's) and the result afterwards (the context must then list
AES-128-GCM first), otherwise nothing changes. All three suites stay offered.
"""

from __future__ import annotations

import ctypes
import logging
import ssl

log = logging.getLogger("secreg.serve")

TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


def _ssl_ctx(context: ssl.SSLContext, library: ctypes.CDLL) -> int | None:
    """The `SSL_CTX *` of `context`: CPython's PySSLContext holds it right after the object header."""
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer:
        return None
    get_options = library.SSL_CTX_get_options
    get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
    marker = ssl.OP_NO_RENEGOTIATION  # flipped and read back through OpenSSL: the pointer is this context's
    before = context.options
    try:
        for options in (before ^ marker, before):
            context.options = options
            if get_options(pointer) != int(context.options):
                return None
    finally:
        context.options = before
    return pointer


# OpenSSL's SSL_CTRL_SET_READ_AHEAD (SSL_CTX_set_read_ahead is a macro over SSL_CTX_ctrl).
_SET_READ_AHEAD = 41


def read_ahead(context: ssl.SSLContext) -> bool:
    """Have a server `context`'s connections read the socket ahead, into OpenSSL's ~17 KiB record buffer: a read
    takes a record's header and body, and whatever follows, in one `read()` instead of two for each record. curl's
    HTTP/2 pushes are a 16 KiB record and a 9-byte one per DATA frame, four reads per frame without it (131,134
    reads for two 256 MiB pushes). Reading 256 MiB over loopback TLS as `secreg.tlstransport` reads: curl's h2
    records 330-342 -> 277-284 ms of CPU, full records 265-277 -> 242-256. A larger buffer made it worse
    (OpenSSL moves what is left to the buffer's front for every record). The transports read until OpenSSL
    needs more from the socket, and read again where it may hold records epoll cannot see. False, and the context
    as it was, when OpenSSL or CPython is not what this knows."""
    import _ssl

    try:
        library = ctypes.CDLL(_ssl.__file__)
        pointer = _ssl_ctx(context, library)
        if pointer is None:
            raise OSError("the SSL_CTX pointer did not check out")
        control = library.SSL_CTX_ctrl
        control.restype = ctypes.c_long
        control.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        control(pointer, _SET_READ_AHEAD, 1, None)
    except (OSError, AttributeError) as exc:
        log.warning("TLS reads do not read ahead: %s", exc)
        return False
    return True


def prefer_aes128_gcm(context: ssl.SSLContext) -> bool:
    """Make a server `context` choose TLS 1.3's AES-128-GCM before AES-256-GCM and ChaCha20 (its own order, not
    the client's); False, and the context as it was, when OpenSSL or CPython is not what this knows."""
    import _ssl

    try:
        library = ctypes.CDLL(_ssl.__file__)  # its symbols resolve to the libssl that `ssl` itself uses
        pointer = _ssl_ctx(context, library)
        if pointer is None:
            raise OSError("the SSL_CTX pointer did not check out")
        set_suites = library.SSL_CTX_set_ciphersuites
        set_suites.restype, set_suites.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]
        if set_suites(pointer, TLS13_SUITES.encode()) != 1:
            raise OSError("SSL_CTX_set_ciphersuites refused the list")
    except (OSError, AttributeError) as exc:
        log.warning("TLS 1.3 suites keep OpenSSL's order (AES-256-GCM first): %s", exc)
        return False
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    first = context.get_ciphers()[0]["name"]
    if first != "TLS_AES_128_GCM_SHA256":
        log.warning("TLS 1.3 suites: %s is still first", first)
        return False
    return True
