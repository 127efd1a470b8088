"""The one entry point of secreg's Hypercorn, h11 and h2 tunings: `apply()`.

They live by protocol: `secreg.hypercorn_h11` (socket reads, TLS close, the Date header, HTTP/1.1 responses and
headers), `secreg.hypercorn_h11_requests` (HTTP/1.1 request heads without a body), `secreg.bodyreads` (HTTP/1.1
request bodies), `secreg.hypercorn_h2_frames` (HTTP/2 windows, DATA frames, writes and flushes),
`secreg.hypercorn_h2_receive` (HTTP/2 DATA and request HEADERS frames parsed in bulk) and `secreg.hypercorn_h2`
(HTTP/2 response heads, the stream scheduler, hpack).
"""

from __future__ import annotations

from secreg import bodyreads, hypercorn_h2, hypercorn_h2_frames, hypercorn_h2_receive, hypercorn_h11
from secreg.hypercorn_h11_requests import direct_h11_request_heads


def apply() -> bool:
    """Called in every worker process before it serves (from `secreg.asgi`). False when this Hypercorn lacks
    what a tuning changes (the test suite checks that ours has it all); serving works either way, only slower.
    The order is the one the patches were written for: what several add to each new `H2Protocol` runs in this
    order, from one wrapper of its `__init__` (`hypercorn_h2_frames.on_new_connection`)."""
    h11, h2, receive = hypercorn_h11, hypercorn_h2_frames, hypercorn_h2_receive
    h11.quiet_tls_close()
    results = [h11.widen_reads(), h11.coalesce_h11_responses(), h11.iterate_h11_headers(),
               bodyreads.pass_body_through(), h2.widen_h2_windows(),
               h2.batch_h2_sends(), h2.merge_h2_data_events(),
               h2.cheap_h2_frame_repr(), h11.cache_date_header(), h2.coalesce_h2_flushes(),
               h2.direct_small_h2_bodies(), h2.watch_h2_windows(), receive.fast_h2_data_frames(),
               h2.limit_h2_control_frames(), h11.pass_response_views_through(), h11.direct_h11_response_heads(),
               direct_h11_request_heads(),
               hypercorn_h2.apply()]
    return all(results)
