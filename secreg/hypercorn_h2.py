"""HTTP/2 per-request costs in Hypercorn + h2 that HTTP/1.1 does not pay (the rest of the tuning is in
`secreg.hypercorn_h11` and `secreg.hypercorn_h2_frames`; `secreg.hypercorn_tuning.apply` applies them all).

Under py-spy, 32 manifest GETs multiplexed on one connection cost ~1.35x the server CPU of the same over
HTTP/1.1 connections; what h2 adds: the response head (h2's generator chain of outbound normalization and
validation, then HPACK, where the `x-request-id` of every answer went into the dynamic table and pushed the
repeated headers out of it), the priority tree (rebuilt per finished stream), hpack's debug log calls, and
the cyclic garbage collector, which ran ~700 times in 10 s of h2 requests against once for HTTP/1.1 (32 streams
in flight keep more objects alive at once than 8 connections), each full pass walking every object the
process created at startup.
"""

from __future__ import annotations

import gc
import logging
import struct
from typing import Any

import h2.exceptions
import h2.utilities
import hpack
from h2.connection import ConnectionInputs
from h2.stream import StreamInputs
from hpack.hpack import INDEX_NEVER, INDEX_NONE
from hpack.table import HeaderTable
from priority import priority

from secreg.hypercorn_h2_frames import mark_tail, on_new_connection

log = logging.getLogger("secreg.serve")


def apply() -> bool:
    """Called by `hypercorn_tuning.apply`; False when h2, hpack or Hypercorn lack what a tuning changes."""
    results = [lean_h2_response_headers(), direct_h2_response_heads(), lean_h2_request_headers(),
               round_robin_h2_streams(), quiet_hpack_debug()]
    return all(results)


# --- the response head -------------------------------------------------------------------------------------

# Values that differ in (nearly) every answer: sent as literals without indexing, so they do not take the HPACK
# dynamic table (4 KiB) from the headers every answer repeats, and without Huffman coding (hex and base64).
UNINDEXED = frozenset({b"x-request-id", b"docker-upload-uuid", b"location"})
# h2's own lists (h2.utilities): connection-specific headers are dropped from what is sent (RFC 9113 8.2.2).
_CONNECTION = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
_SECURE = frozenset({b"authorization", b"proxy-authorization"})


class _Table(HeaderTable):
    """hpack's header table, counting its changes (`version`): an entry added (and any evicted by it), a new
    maximum size."""

    version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return HeaderTable.maxsize.fget(self)  # type: ignore[attr-defined,no-any-return]

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


MEMO_ENTRIES = 64  # encoded headers remembered while the dynamic table stays as it is (a few KiB)


class Encoder(hpack.Encoder):
    """hpack's encoder, but `UNINDEXED` names are sent as literals without indexing and without Huffman coding,
    and what a header encoded to is remembered while the dynamic table does not change: a repeated header is
    then one dict lookup instead of hpack's search of the static and dynamic tables (linear in the latter) and
    its integer encoding. The result is the same bytes hpack would produce: an encoding that changed the table
    (a new entry, evictions) is not remembered, and any change of the table forgets everything."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _Table()
        self._memo: dict[tuple[bytes, bytes, bool, bool], bytes] = {}
        self._memo_version = 0

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        name, value = to_add
        if name in UNINDEXED:
            indexbit = INDEX_NEVER if sensitive else INDEX_NONE
            known = HeaderTable.STATIC_TABLE_MAPPING.get(name)  # `location` is in the static table (by name)
            if known is not None:
                return self._encode_indexed_literal(known[0], value, indexbit, False)
            return self._encode_literal(name, value, indexbit, False)
        table = self.header_table
        version = table.version  # type: ignore[attr-defined]
        memo = self._memo
        if version != self._memo_version:
            memo.clear()
            self._memo_version = version
        key = (name, value, sensitive, huffman)
        encoded = memo.get(key)
        if encoded is None:
            encoded = super().add(to_add, sensitive, huffman)
            if table.version == version:  # type: ignore[attr-defined]
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[key] = encoded
        return encoded

    def encode_head(self, head: list[Any]) -> bytes:
        """`encode(head)` for what `response_head` returns (byte pairs, never-indexed ones as hpack's tuples),
        without hpack's per-header type checks and conversions."""
        table = self.header_table
        parts = []
        if table.resized:
            parts.append(self._encode_table_size_change())
            table.resized = False
        add = self.add
        for header in head:
            parts.append(add((header[0], header[1]), type(header) is hpack.NeverIndexedHeaderTuple, True))
        return b"".join(parts)


def response_head(headers: Any) -> list[Any]:
    """h2's outbound normalization and validation of a response head, in one pass (same results: the same
    headers dropped, the same ones refused with ProtocolError)."""
    out: list[Any] = []
    regular = False
    for header in headers:
        name, value = header[0].lower().strip(), header[1].strip()
        if name[:1] == b":":
            if regular or name != b":status" or out:
                raise h2.exceptions.ProtocolError(f"Pseudo-header field not allowed here: {name!r}")
        else:
            regular = True
            if name in _CONNECTION:
                continue
            if name == b"te" and value.lower() != b"trailers":
                raise h2.exceptions.ProtocolError(f"Invalid value for TE header: {value!r}")
        if (name in _SECURE or (name == b"cookie" and len(value) < 20)
                or (isinstance(header, hpack.HeaderTuple) and not header.indexable)):
            out.append(hpack.NeverIndexedHeaderTuple(name, value))
        else:
            out.append((name, value))
    if not out or out[0][0] != b":status":
        raise h2.exceptions.ProtocolError("Header block missing mandatory b':status' header")
    return out


def lean_h2_response_headers() -> bool:
    """h2 normalizes and validates every header block it sends through a chain of eight generators (lowercase,
    strip, drop connection headers, mark secrets never-indexed; refuse `te`, connection headers, misplaced or
    unknown pseudo-headers) and then HPACK-encodes it: a fifth of a small h2 answer's CPU time. For the response
    heads a server sends, the same is done in one pass, and the encoder keeps answer-unique values (`UNINDEXED`)
    out of its dynamic table. Request heads, trailers and push promises (client connections of the pull-through
    cache included) keep h2's own path."""
    import h2.stream
    import h2.utilities
    import hyperframe.frame

    stream_class = h2.stream.H2Stream
    original = getattr(stream_class, "_build_headers_frames", None)
    flags_known = all(n in getattr(h2.utilities.HeaderValidationFlags, "_fields", ()) for n in (
        "is_client", "is_trailer", "is_response_header", "is_push_promise"))
    if original is None or not flags_known or not all(
            hasattr(hpack.Encoder, n) for n in ("add", "_encode_indexed_literal", "_encode_literal")):
        log.warning("h2/hpack internals differ from the known ones: HTTP/2 response heads take h2's own path")
        return False
    if getattr(original, "_secreg_tuned", False):
        return True

    def _build_headers_frames(self: Any, headers: Any, encoder: Any, first_frame: Any, flags: Any) -> Any:
        if (flags.is_client or flags.is_trailer or flags.is_push_promise or not flags.is_response_header
                or not isinstance(encoder, Encoder)):
            return original(self, headers, encoder, first_frame, flags)
        config = self.config
        if not config.normalize_outbound_headers or not config.validate_outbound_headers \
                or config.split_outbound_cookies:
            return original(self, headers, encoder, first_frame, flags)
        block = encoder.encode(response_head(headers))
        size = self.max_outbound_frame_size or len(block) or 1
        if len(block) <= size:
            first_frame.data = block
            first_frame.flags.add("END_HEADERS")
            return [first_frame]
        frames = [first_frame]
        first_frame.data = block[:size]
        for offset in range(size, len(block), size):
            more = hyperframe.frame.ContinuationFrame(self.stream_id)
            more.data = block[offset:offset + size]
            frames.append(more)
        frames[-1].flags.add("END_HEADERS")
        return frames

    def setup(protocol: Any) -> None:
        protocol.connection.encoder = Encoder()

    _build_headers_frames._secreg_tuned = True  # type: ignore[attr-defined]
    stream_class._build_headers_frames = _build_headers_frames  # type: ignore[method-assign,assignment]
    on_new_connection("encoder", setup)
    return True


_FRAME_HEAD = struct.Struct(">HBBBL")  # 24-bit length (16 + 8), type, flags, stream id
_HEADERS, _CONTINUATION, _END_HEADERS = 0x1, 0x9, 0x4


def send_response_head(connection: Any, slow: Any, stream_id: int, headers: Any, end_stream: bool = False,
                       priority_weight: Any = None, priority_depends_on: Any = None,
                       priority_exclusive: Any = None) -> None:
    """`connection.send_headers` as `direct_h2_response_heads` installs it (`slow`: h2's own)."""
    stream = connection.streams.get(stream_id)
    config = connection.config
    if (end_stream or priority_weight is not None or priority_depends_on is not None
            or priority_exclusive is not None or stream is None or stream.state_machine.headers_sent
            or stream.state_machine.client is not False or config.client_side
            or not isinstance(connection.encoder, Encoder) or not config.normalize_outbound_headers
            or not config.validate_outbound_headers or config.split_outbound_cookies
            or not isinstance(headers, list) or not headers or headers[0][0] != b":status"
            or headers[0][1][:1] == b"1"):
        slow(stream_id, headers, end_stream, priority_weight, priority_depends_on, priority_exclusive)
        return
    head = response_head(headers)  # raises ProtocolError as h2's validation would
    connection.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    stream.state_machine.process_input(StreamInputs.SEND_HEADERS)  # raises as h2's does (closed stream, ...)
    block = connection.encoder.encode_head(head)
    size = connection.max_outbound_frame_size
    out = connection._data_to_send
    sid = stream_id & 0x7FFF_FFFF
    kind, offset, total = _HEADERS, 0, len(block)
    flags_at = len(out) + 4  # the HEADERS frame's flags byte
    while True:
        piece = block[offset:offset + size]
        last = offset + size >= total
        length = len(piece)
        out += _FRAME_HEAD.pack(length >> 8, length & 0xFF, kind, _END_HEADERS if last else 0, sid)
        out += piece
        if last:
            break
        kind, offset = _CONTINUATION, offset + size
    mark_tail(connection, out, flags_at, stream_id)
    stream.request_method = None  # as h2: the method of the head it sent (a response has none)


def install_response_heads(connection: Any) -> None:
    """Give one server connection `send_response_head` as its `send_headers`."""
    slow = connection.send_headers
    connection.send_headers = (
        lambda stream_id, headers, end_stream=False, priority_weight=None, priority_depends_on=None,
        priority_exclusive=None: send_response_head(connection, slow, stream_id, headers, end_stream,
                                                    priority_weight, priority_depends_on, priority_exclusive))


def direct_h2_response_heads() -> bool:
    """h2's `send_headers` takes a response head through its stream-opening checks, a HeadersFrame object, the
    validation flags, `_build_headers_frames` and the frame's serialization: ~10% of the CPU time of 32 manifest
    GETs on one connection. A server connection's final response head (not informational, not trailers, no
    END_STREAM, no priority) on a stream the client opened is instead taken through the same two state
    machines and written as HEADERS (+ CONTINUATION) frames straight into h2's outbound buffer, encoded by
    `Encoder.encode_head` after the same one-pass validation (`response_head`): the same bytes h2 sends.
    Everything else, and any connection whose encoder or configuration is not ours, keeps h2's `send_headers`."""
    import h2.config
    import h2.connection
    import h2.stream

    probe = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    if not isinstance(getattr(probe, "_data_to_send", None), bytearray) or not hasattr(probe, "streams") or not all(
            hasattr(h2.stream.H2StreamStateMachine(1), n) for n in ("headers_sent", "client")):
        log.warning("h2 internals differ from the known ones: HTTP/2 response heads take h2's send_headers")
        return False
    on_new_connection("response heads", lambda protocol: install_response_heads(protocol.connection))
    return True


# --- the request head --------------------------------------------------------------------------------------

_NAME_BYTES = bytes(c for c in range(0x21, 0x7F) if not 0x41 <= c <= 0x5A)  # no uppercase, controls, space, DEL
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":status", b":protocol"})
_BLANK = (0x20, 0x09)


def request_head(headers: Any) -> list[Any] | None:
    """What h2's inbound normalization and validation make of a request head a server received, in one pass;
    None when this pass does not vouch for it (anything h2 would refuse, CONNECT requests, cookies: then h2's
    own chain decides, and refuses or accepts as it always has). Accepted heads come out as h2 returns them:
    the same header objects in the same order."""
    out = []
    pseudo: set[bytes] = set()
    regular = False
    method = authority = host = None
    for header in headers:
        name, value = header[0], header[1]
        if not name or name.translate(None, _NAME_BYTES) or name.find(b":", 1) != -1:
            return None
        if value and (b"\0" in value or b"\n" in value or b"\r" in value or value[0] in _BLANK
                      or value[-1] in _BLANK):
            return None
        if name[0] == 0x3A:
            if regular or name in pseudo or name not in _PSEUDO:
                return None
            pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":authority":
                authority = value
            elif name == b":path" and not value:
                return None
        else:
            regular = True
            if name in _CONNECTION or name == b"cookie" or (name == b"te" and value.lower() != b"trailers"):
                return None
            if name == b"host":
                if host is not None:
                    return None
                host = value
        out.append(header)
    if (method is None or method == b"CONNECT" or b":scheme" not in pseudo or b":path" not in pseudo
            or b":status" in pseudo or b":protocol" in pseudo):
        return None
    if (authority is None and host is None) or (authority is not None and host is not None and authority != host):
        return None
    return out


class Decoded(list):  # type: ignore[type-arg]
    """A decoded header block the decoder remembers (`Decoder`). `verdict` is shared by every decoding of that
    block: `[None]` until the head is checked, then whether `request_head` vouched for it, so a repeated request
    head is checked once."""

    __slots__ = ("verdict",)
    verdict: list[bool | None]


class Decoder(hpack.Decoder):
    """hpack's decoder, remembering what a header block decoded to while its dynamic table (and its limits) stay
    as they are: a client repeating a request (Go's and nghttp2's encoders index every header, so the same
    request is the same bytes) is then one dict lookup instead of hpack's decoding field by field. A block whose
    decoding changed the table (new entries, a size update) or failed is not kept; any change of the table
    forgets everything. A remembered block comes back as `Decoded`, carrying the verdict of its check."""

    def __init__(self, max_header_list_size: int = hpack.hpack.DEFAULT_MAX_HEADER_LIST_SIZE) -> None:
        super().__init__(max_header_list_size)
        self.header_table = _Table()
        self.max_allowed_table_size = self.header_table.maxsize
        self._memo: dict[bytes, tuple[tuple[Any, ...], list[bool | None]]] = {}
        self._memo_state: tuple[int, int, int] = (0, 0, 0)

    def decode(self, data: bytes, raw: bool = False) -> Any:
        if not raw or len(data) > DECODED_BLOCK_BYTES:
            return super().decode(data, raw)
        table = self.header_table
        state = (table.version, self.max_allowed_table_size, self.max_header_list_size)  # type: ignore[attr-defined]
        memo = self._memo
        if state != self._memo_state:
            memo.clear()
            self._memo_state = state
        key = bytes(data)
        known = memo.get(key)
        if known is None:
            headers = super().decode(data, raw)
            if table.version != state[0]:  # type: ignore[attr-defined]
                return headers
            if len(memo) >= DECODED_BLOCKS:
                memo.clear()
            known = memo[key] = (tuple(headers), [None])
        decoded = Decoded(known[0])
        decoded.verdict = known[1]
        return decoded


# What a connection's decoder remembers is bounded (a client sending distinct blocks that leave the table alone
# makes it forget, never grow): at most `DECODED_BLOCKS` blocks of at most `DECODED_BLOCK_BYTES`, a few tens of
# KiB per connection at worst. A request a client repeats is a few bytes of indexed fields.
DECODED_BLOCKS = 32
DECODED_BLOCK_BYTES = 512


def lean_h2_request_headers() -> bool:
    """h2 normalizes and validates every header block it receives through a chain of nine generators, checking
    each name byte by byte in Python: ~4% of the CPU time of 32 manifest GETs on one connection. A request head
    a server receives is checked in one pass instead (`request_head`, with bytes methods); whatever that pass
    does not vouch for, and every other kind of block (responses, trailers, push promises, a client's), takes
    h2's own path. Server connections also get `Decoder` (hpack's decoding was another ~5%)."""
    import h2.stream

    stream_class = h2.stream.H2Stream
    original = getattr(stream_class, "_process_received_headers", None)
    flags_known = all(n in getattr(h2.utilities.HeaderValidationFlags, "_fields", ()) for n in (
        "is_client", "is_trailer", "is_response_header", "is_push_promise"))
    if original is None or not flags_known:
        log.warning("h2 internals differ from the known ones: HTTP/2 request heads take h2's own checks")
        return False
    if getattr(original, "_secreg_tuned", False):
        return True

    def _process_received_headers(self: Any, headers: Any, flags: Any, header_encoding: Any) -> Any:
        config = self.config
        if (not flags.is_client and not flags.is_trailer and not flags.is_response_header
                and not flags.is_push_promise and config.normalize_inbound_headers
                and config.validate_inbound_headers and not isinstance(header_encoding, str)):
            verdict = headers.verdict if type(headers) is Decoded else None
            if verdict is not None and verdict[0] is not None:
                if verdict[0]:
                    return list(headers)  # vouched for before: the same headers, the same objects
                return original(self, headers, flags, header_encoding)
            if not isinstance(headers, list):
                headers = list(headers)
            head = request_head(headers)
            if verdict is not None:
                verdict[0] = head is not None
            if head is not None:
                return head
        return original(self, headers, flags, header_encoding)

    def setup(protocol: Any) -> None:
        old, new = protocol.connection.decoder, Decoder(protocol.connection.decoder.max_header_list_size)
        new.max_allowed_table_size = old.max_allowed_table_size
        new.header_table_size = old.header_table_size
        protocol.connection.decoder = new

    _process_received_headers._secreg_tuned = True  # type: ignore[attr-defined]
    stream_class._process_received_headers = _process_received_headers  # type: ignore[method-assign,assignment]
    on_new_connection("decoder", setup)
    return True


# --- the send scheduler ------------------------------------------------------------------------------------


class RoundRobin:
    """What Hypercorn asks of `priority.PriorityTree` (insert, remove, block, unblock, reprioritize, next),
    served in turn instead of by RFC 7540 weights and dependencies (deprecated by RFC 9113; curl, Go and
    browsers now send none or ignore them). The tree rebuilt a heap of every open stream each time one ended:
    4% of the CPU time of 32 streams on one connection. Every operation here is O(1)."""

    def __init__(self, maximum_streams: int = 1000) -> None:
        self._streams: dict[int, bool] = {}  # stream id -> unblocked
        self._active: dict[int, None] = {}  # the unblocked ones, in turn order
        self._maximum = maximum_streams

    def insert_stream(self, stream_id: int, depends_on: int | None = None, weight: int = 16,
                      exclusive: bool = False) -> None:
        if stream_id in self._streams:
            raise priority.DuplicateStreamError(f"Stream {stream_id} already in tree")
        if len(self._streams) + 1 > self._maximum:
            raise priority.TooManyStreamsError(f"Refusing to insert {self._maximum + 1} streams into priority tree")
        self._streams[stream_id] = True
        self._active[stream_id] = None

    def _known(self, stream_id: int) -> None:
        if stream_id == 0:
            raise priority.PseudoStreamError("Cannot change stream 0")
        if stream_id not in self._streams:
            raise priority.MissingStreamError(f"Stream {stream_id} not in tree")

    def reprioritize(self, stream_id: int, depends_on: int | None = None, weight: int = 16,
                     exclusive: bool = False) -> None:
        """Nothing, also for a stream not (yet) open: Hypercorn inserted those as blocked entries that no stream
        ever removed, so PRIORITY frames naming 1,000 idle streams filled the scheduler and killed the
        connection with TooManyStreamsError."""

    def remove_stream(self, stream_id: int) -> None:
        self._known(stream_id)
        del self._streams[stream_id]
        self._active.pop(stream_id, None)

    def block(self, stream_id: int) -> None:
        self._known(stream_id)
        self._streams[stream_id] = False
        self._active.pop(stream_id, None)

    def unblock(self, stream_id: int) -> None:
        self._known(stream_id)
        if not self._streams[stream_id]:
            self._streams[stream_id] = True
            self._active[stream_id] = None

    def __iter__(self) -> RoundRobin:
        return self

    def __next__(self) -> int:
        for stream_id in self._active:
            del self._active[stream_id]
            self._active[stream_id] = None  # to the back of the line
            return stream_id
        raise priority.DeadlockError("No unblocked streams to schedule.")

    next = __next__


def round_robin_h2_streams() -> bool:
    from hypercorn.protocol import h2 as h2_protocol

    if not hasattr(h2_protocol, "priority") or not all(hasattr(priority, n) for n in (
            "DeadlockError", "MissingStreamError", "DuplicateStreamError", "TooManyStreamsError", "PseudoStreamError")):
        log.warning("Hypercorn's HTTP/2 scheduler is not the one known: streams keep the priority tree")
        return False

    def setup(protocol: Any) -> None:
        protocol.priority = RoundRobin()

    on_new_connection("scheduler", setup)
    return True


# --- logging and the garbage collector ---------------------------------------------------------------------


class _Silent:
    @staticmethod
    def debug(*args: Any, **kwargs: Any) -> None:
        pass


def quiet_hpack_debug() -> bool:
    """hpack calls `log.debug` for every header it encodes or decodes (with its arguments built): ~30 calls per
    h2 request and answer. When its logger would drop DEBUG anyway (secreg never enables it), those calls go to a
    no-op."""
    import hpack.hpack

    logger = getattr(hpack.hpack, "log", None)
    if not isinstance(logger, (logging.Logger, _Silent)):
        return False
    if isinstance(logger, logging.Logger) and not logger.isEnabledFor(logging.DEBUG):
        hpack.hpack.log = _Silent()  # type: ignore[assignment]
    return True


def freeze_startup_objects() -> bool:
    """Everything the worker built before serving (modules, the app, settings: ~70,000 objects) is moved out of
    the collector's reach (`gc.freeze`, after one collection so no startup garbage is kept): a full collection
    then walks only what serving created. With 32 h2 streams in flight the collector ran full passes every few
    seconds, ~90 ms each on this machine."""
    gc.collect()
    gc.freeze()
    return True
