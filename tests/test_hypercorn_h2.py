"""The HTTP/2 per-request tunings (secreg/hypercorn_h2.py): response heads in one pass with answer-unique values
kept out of the HPACK table, the round-robin send scheduler, hpack's silenced debug calls, the frozen startup
objects; through a real server over TLS where a client can see the difference."""

from __future__ import annotations

import gc
import logging
import os
import weakref
from pathlib import Path

import h2.exceptions
import hpack
import pytest
from priority import priority

from secreg import hypercorn_h2
from tests.oci import sha256
from tests.server import run_secreg
from tests.test_hypercorn_tuning import OPEN, _RawH2


def test_response_head_is_what_h2_would_send() -> None:
    """The one-pass head against h2's own outbound normalization and validation, header by header."""
    from h2.utilities import HeaderValidationFlags, normalize_outbound_headers, validate_outbound_headers

    flags = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=True, is_push_promise=False)
    heads = [
        [(b":status", b"200"), (b"Content-Type", b" text/plain "), (b"x-request-id", b"abc")],
        [(b":status", b"401"), (b"connection", b"close"), (b"www-authenticate", b'Bearer realm="x"'),
         (b"Keep-Alive", b"5"), (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c")],
        [(b":status", b"200"), (b"authorization", b"secret"), (b"cookie", b"short=1"), (b"te", b"trailers"),
         (b"set-cookie", b"a=b; HttpOnly"), hpack.NeverIndexedHeaderTuple(b"x-private", b"v")],
    ]
    for head in heads:
        ours = hypercorn_h2.response_head(head)
        theirs = list(validate_outbound_headers(normalize_outbound_headers(head, flags), flags))
        assert ours == theirs
        assert [type(h) for h in ours] == [type(h) for h in theirs]  # never-indexed where h2 would


@pytest.mark.parametrize("head", [
    [(b":status", b"200"), (b":status", b"200")],
    [(b"content-type", b"x"), (b":status", b"200")],
    [(b":status", b"200"), (b":path", b"/")],
    [(b":status", b"200"), (b"te", b"gzip")],
    [(b"content-type", b"x")],
])
def test_response_head_refuses_what_h2_refuses(head: list[tuple[bytes, bytes]]) -> None:
    from h2.utilities import HeaderValidationFlags, normalize_outbound_headers, validate_outbound_headers

    flags = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=True, is_push_promise=False)
    with pytest.raises(h2.exceptions.ProtocolError):
        list(validate_outbound_headers(normalize_outbound_headers(head, flags), flags))
    with pytest.raises(h2.exceptions.ProtocolError):
        hypercorn_h2.response_head(head)


def test_the_encoder_keeps_unique_values_out_of_its_table() -> None:
    encoder, decoder = hypercorn_h2.Encoder(), hpack.Decoder()
    for n in range(50):
        head = [(b":status", b"200"), (b"docker-distribution-api-version", b"registry/2.0"),
                (b"x-request-id", os.urandom(16).hex().encode()), (b"location", f"/v2/a/blobs/uploads/{n}".encode())]
        assert decoder.decode(encoder.encode(head), raw=True) == head
    names = {name for name, _ in encoder.header_table.dynamic_entries}
    assert names == {b"docker-distribution-api-version"}
    assert {name for name, _ in decoder.header_table.dynamic_entries} == names


def test_the_encoders_remembered_headers_are_the_bytes_hpack_would_send() -> None:
    """The remembered encodings against a fresh computation on an identical encoder, answer by answer, through
    new entries, evictions (a small table) and a table resize; a decoder that saw every block agrees."""
    ours, decoder = hypercorn_h2.Encoder(), hpack.Decoder()
    reference = hypercorn_h2.Encoder()
    reference.add = lambda to_add, sensitive, huffman=False: hpack.Encoder.add(  # type: ignore[method-assign]
        reference, to_add, sensitive, huffman) if to_add[0] not in hypercorn_h2.UNINDEXED else \
        hypercorn_h2.Encoder.add(reference, to_add, sensitive, huffman)
    for encoder in (ours, reference):
        encoder.header_table_size = 300  # a few entries: the repeated headers evict each other
    decoder.header_table_size = 300
    for n in range(200):
        if n == 120:
            for encoder in (ours, reference):
                encoder.header_table_size = 4096
            decoder.header_table_size = 4096
        head = hypercorn_h2.response_head([
            (b":status", b"200" if n % 3 else b"404"), (b"content-type", b"application/json"),
            (b"docker-distribution-api-version", b"registry/2.0"), (b"etag", f'"{n % 7}"'.encode()),
            (b"content-length", str(n % 5).encode()), (b"x-request-id", os.urandom(8).hex().encode()),
            (b"authorization", b"secret")])
        block = ours.encode_head(head)
        assert block == reference.encode(head)
        assert decoder.decode(block, raw=True) == [tuple(h) for h in head]
    assert ours._memo  # the last answers' headers were remembered


def _served_stream(send_direct: bool) -> tuple[object, list[int]]:
    """An h2 server connection as Hypercorn's protocol sets it up (our encoder, and our `send_headers` when
    `send_direct`), with client streams 1, 3, 5, 7 open."""
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.encoder = hypercorn_h2.Encoder()
    if send_direct:
        hypercorn_h2.install_response_heads(server)
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    streams = [1, 3, 5, 7]
    for stream in streams:
        client.send_headers(stream, [(":method", "GET"), (":path", "/v2/"), (":scheme", "https"),
                                     (":authority", "x")], end_stream=True)
    server.receive_data(client.data_to_send())
    server.data_to_send()
    return server, streams


def test_direct_response_heads_are_the_frames_h2_would_send() -> None:
    """Our `send_headers` against h2's on two identical connections: the same bytes for final heads (one that
    needs CONTINUATION frames too), informational heads and trailers (h2's own path), and the same refusals."""
    import h2.exceptions

    direct, streams = _served_stream(True)
    plain, _ = _served_stream(False)
    big = [(b"x-filler-%d" % n, b"v" * 200) for n in range(120)]  # ~26 KiB: past one 16 KiB frame
    steps: list[tuple[int, list[tuple[bytes, bytes]], bool]] = [
        (1, [(b":status", b"103"), (b"link", b"</a>")], False),
        (1, [(b":status", b"200"), (b"content-type", b"text/plain"), (b"x-request-id", b"r1")], False),
        (3, [(b":status", b"404"), (b"Content-Type", b"application/json "), (b"connection", b"close")], False),
        (5, [(b":status", b"200"), *big], False),
        (1, [(b"x-trailer", b"t")], True),
    ]
    for stream, head, end in steps:
        direct.send_headers(stream, head, end_stream=end)  # type: ignore[attr-defined]
        plain.send_headers(stream, head, end_stream=end)  # type: ignore[attr-defined]
        assert direct.data_to_send() == plain.data_to_send()  # type: ignore[attr-defined]
    for connection in (direct, plain):
        with pytest.raises(h2.exceptions.ProtocolError):  # a second final head on a stream
            connection.send_headers(3, [(b":status", b"200")])  # type: ignore[attr-defined]
        with pytest.raises(h2.exceptions.ProtocolError):
            connection.send_headers(5, [(b"content-type", b"x")])  # type: ignore[attr-defined]
        with pytest.raises(h2.exceptions.ProtocolError):  # misplaced pseudo-header: refused on the direct path
            connection.send_headers(7, [(b":status", b"200"), (b"a", b"b"), (b":path", b"/")])  # type: ignore[attr-defined]


def test_http2_answers_keep_request_ids_out_of_the_clients_hpack_table(tmp_path: Path) -> None:
    """Over a real connection: every answer carries its own x-request-id and all its headers, the repeated
    ones come from the client's dynamic table, the unique ones never enter it."""
    import h2.events

    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            heads: dict[int, dict[bytes, bytes]] = {}
            for _ in range(3):
                streams = {client.request("GET", "/v2/") for _ in range(20)}
                done: set[int] = set()
                while done < streams:
                    data = client.sock.recv(65536)
                    assert data
                    for event in client.connection.receive_data(data):
                        if isinstance(event, h2.events.ResponseReceived):
                            heads[event.stream_id] = dict(event.headers)
                        elif isinstance(event, h2.events.StreamEnded):
                            done.add(event.stream_id)
                    client.flush()
            table = {name for name, _ in client.connection.decoder.header_table.dynamic_entries}
        finally:
            client.close()
    assert len(heads) == 60 and {h[b":status"] for h in heads.values()} == {b"200"}
    assert len({h[b"x-request-id"] for h in heads.values()}) == 60
    assert all(h[b"docker-distribution-api-version"] == b"registry/2.0" for h in heads.values())
    assert b"docker-distribution-api-version" in table and b"x-request-id" not in table


def test_round_robin_takes_streams_in_turn() -> None:
    tree = hypercorn_h2.RoundRobin()
    for stream in (1, 3, 5):
        tree.insert_stream(stream)
    assert [next(tree) for _ in range(6)] == [1, 3, 5, 1, 3, 5]
    tree.block(3)
    assert [next(tree) for _ in range(4)] == [1, 5, 1, 5]
    tree.unblock(3)
    tree.unblock(3)  # twice: still once in the line
    assert sorted(next(tree) for _ in range(3)) == [1, 3, 5]
    tree.remove_stream(1)
    tree.block(5)
    tree.reprioritize(3, weight=200)
    assert [next(tree) for _ in range(2)] == [3, 3]
    tree.block(3)
    with pytest.raises(priority.DeadlockError):
        next(tree)
    with pytest.raises(priority.DuplicateStreamError):
        tree.insert_stream(3)
    for action in (tree.block, tree.unblock, tree.remove_stream):
        with pytest.raises(priority.MissingStreamError):
            action(7)
    tree.reprioritize(7)  # a PRIORITY frame naming a stream not open: nothing kept (Hypercorn inserted it)
    with pytest.raises(priority.MissingStreamError):
        tree.block(7)
    with pytest.raises(priority.PseudoStreamError):
        tree.block(0)
    small = hypercorn_h2.RoundRobin(maximum_streams=2)
    small.insert_stream(1)
    small.insert_stream(3)
    with pytest.raises(priority.TooManyStreamsError):
        small.insert_stream(5)


def test_blobs_on_one_connection_share_it_in_turn(tmp_path: Path) -> None:
    """Three large answers at once on one connection through the round-robin scheduler (their pieces wait for
    the client's windows, so the send task takes turns between them): each arrives whole."""
    import asyncio

    import httpx

    blobs = [os.urandom(2 * 1024 * 1024 + n) for n in range(3)]
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server, server.client() as c:
        for blob in blobs:
            assert c.post("/v2/t/turn/blobs/uploads/", params={"digest": sha256(blob)}, content=blob).status_code == 201

        async def pull() -> list[bytes]:
            async with httpx.AsyncClient(base_url=f"https://{server.host_port}", verify=server.ssl_context(),
                                         http2=True, timeout=120, limits=httpx.Limits(max_connections=1)) as client:
                answers = await asyncio.gather(*(client.get(f"/v2/t/turn/blobs/{sha256(b)}") for b in blobs))
                assert {a.http_version for a in answers} == {"HTTP/2"}
                return [a.content for a in answers]

        assert asyncio.run(pull()) == blobs


def test_hpack_debug_calls_are_silenced_only_when_nobody_listens() -> None:
    import hpack.hpack

    original = hpack.hpack.log
    logger = logging.getLogger("hpack.hpack")
    try:
        hpack.hpack.log = logger
        logger.setLevel(logging.DEBUG)
        assert hypercorn_h2.quiet_hpack_debug()
        assert hpack.hpack.log is logger  # someone asked for hpack's debug lines: kept
        logger.setLevel(logging.NOTSET)
        assert hypercorn_h2.quiet_hpack_debug()
        assert hpack.hpack.log is not logger
        head = [(b":status", b"200"), (b"content-type", b"text/plain")]
        assert hpack.Decoder().decode(hpack.Encoder().encode(head), raw=True) == head
    finally:
        hpack.hpack.log = original
        logger.setLevel(logging.NOTSET)


def test_startup_objects_are_frozen_after_a_collection() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    garbage = weakref.ref(Cycle())  # startup garbage: collected first, not kept frozen
    kept = Cycle()
    try:
        assert hypercorn_h2.freeze_startup_objects()
        assert garbage() is None
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # out of the collector's walks
    finally:
        gc.unfreeze()


_REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"r.example"), (b":path", b"/v2/")]


@pytest.mark.parametrize("head", [
    _REQUEST,
    [*_REQUEST, (b"accept", b"application/json"), (b"user-agent", b"docker/24 go/1.21"), (b"te", b"Trailers")],
    [(b":method", b"PUT"), (b":scheme", b"https"), (b":path", b"/v2/a/blobs/uploads/x?digest=sha256:00"),
     (b"host", b"r.example"), (b"content-length", b"3"), (b"authorization", b"Bearer abc")],
    [*_REQUEST, (b"host", b"r.example"), (b"x-empty", b"")],
    [*_REQUEST, (b"cookie", b"a=1"), (b"cookie", b"b=2")],  # h2's path: cookies are joined and moved last
    [(b":method", b"CONNECT"), (b":authority", b"r.example:443")],  # h2's path
    [*_REQUEST, (b"Accept", b"x")], [*_REQUEST, (b"acc ept", b"x")], [*_REQUEST, (b"acc:ept", b"x")],
    [*_REQUEST, (b"", b"x")], [*_REQUEST, (b"x", b"a\nb")], [*_REQUEST, (b"x", b"a\0b")], [*_REQUEST, (b"x", b" a")],
    [*_REQUEST, (b"x", b"a\t")], [*_REQUEST, (b"te", b"gzip")], [*_REQUEST, (b"connection", b"close")],
    [*_REQUEST, (b"x", b"1"), (b":path", b"/")], [*_REQUEST, (b":path", b"/")], [*_REQUEST, (b":custom", b"1")],
    [*_REQUEST, (b":status", b"200")], [*_REQUEST, (b":protocol", b"websocket")],
    [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")],  # neither :authority nor host
    [*_REQUEST, (b"host", b"other")], [*_REQUEST, (b"host", b"r.example"), (b"host", b"r.example")],
    [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"")],
    [(b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")], [(b":method", b"GET"), (b":authority", b"a")],
])
def test_request_head_is_what_h2_accepts_or_left_to_h2(head: list[tuple[bytes, bytes]]) -> None:
    """The one-pass request check against h2's inbound chain: what it vouches for h2 accepts unchanged, and
    everything h2 refuses it leaves to h2."""
    from h2.utilities import HeaderValidationFlags, normalize_inbound_headers, validate_headers

    flags = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
    tuples = [hpack.HeaderTuple(*h) for h in head]
    try:
        theirs = list(validate_headers(normalize_inbound_headers(tuples, flags), flags))
    except h2.exceptions.ProtocolError:
        theirs = None
    ours = hypercorn_h2.request_head(tuples)
    if ours is not None:
        assert theirs is not None and ours == theirs and all(a is b for a, b in zip(ours, theirs, strict=True))
    elif theirs is not None:
        assert any(name in (b"cookie", b":method") and (name != b":method" or value == b"CONNECT")
                   for name, value in head)  # the only valid heads left to h2


def test_the_decoders_remembered_blocks_are_what_hpack_decodes() -> None:
    """Blocks from a client's encoder (repeated requests, new headers, evictions in a small table, a size update)
    decoded by ours and by hpack's side by side: the same headers every time, remembered ones included."""
    client, ours, theirs = hpack.Encoder(), hypercorn_h2.Decoder(), hpack.Decoder()
    for decoder in (ours, theirs):
        decoder.max_allowed_table_size = 4096
    client.header_table_size = 256
    hits = 0
    for n in range(300):
        if n == 200:
            client.header_table_size = 4096
        head = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"r.example"),
                (b":path", b"/v2/a/manifests/%d" % (n % 4 if n % 10 else n)), (b"accept", b"application/json")]
        block = client.encode(head)
        hits += block in ours._memo
        decoded = ours.decode(block, raw=True)
        assert decoded == theirs.decode(block, raw=True) == head
        assert [type(h) for h in decoded] == [hpack.HeaderTuple] * 5
    assert hits > 20
    ours.max_header_list_size = 10  # a changed limit is applied to a remembered block too
    with pytest.raises(hpack.OversizedHeaderListError):
        ours.decode(block, raw=True)


def test_the_per_connection_tunings_share_one_init_hook() -> None:
    """The windows, the flushes, the DATA frame path, the control-frame budget, the encoder, the response heads, the
    decoder and the scheduler are set up by one wrapper of
    `H2Protocol.__init__`, in the order they were applied; applying again wraps nothing more."""
    from hypercorn.protocol import h2 as h2_protocol

    from secreg import hypercorn_tuning

    hypercorn_tuning.apply()
    hooked = h2_protocol.H2Protocol.__init__
    assert getattr(hooked, "_secreg_connection_setup", False)
    from secreg import hypercorn_h2_frames

    assert list(hypercorn_h2_frames._CONNECTION_SETUP) == [
        "windows", "flushes", "data frames", "control frames", "encoder", "response heads", "decoder", "scheduler"]
    hypercorn_tuning.apply()
    assert h2_protocol.H2Protocol.__init__ is hooked
