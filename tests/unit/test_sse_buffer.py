"""The SSE primitives every stream parser builds on: whole events out, linear, capped."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.ports import UpstreamEventTooLarge, UpstreamStreamTooLarge
from flaregate.sse_buffer import EventBounds, EventBuffer, parse_event, split_events

KIB, MIB = 1024, 1 << 20


def line_chunks(total: int, size: int = KIB):
    """An endless-line attack: ``data: xxx...`` with no newline, in ``size``-byte chunks."""
    yield b"data: "
    for _ in range(total // size):
        yield b"x" * size


def test_a_4mb_line_in_1kb_chunks_is_refused_once_over_the_cap():
    events, fed = EventBuffer(MIB), 0
    with pytest.raises(UpstreamEventTooLarge) as info:
        for chunk in line_chunks(4 * MIB):
            fed += len(chunk)
            events.feed(chunk)
    assert MIB < fed <= MIB + KIB  # refused at the cap, not at the line's end
    assert info.value.code == "upstream_event_too_large"
    assert str(info.value).startswith("upstream_event_too_large:") and "UPSTREAM_MAX_EVENT_BYTES" in str(info.value)
    assert len(events) == 0  # what it held is let go


def test_searching_is_linear_in_the_bytes_fed():
    """A 4 MB line under a larger cap: each byte is searched about once (the old parsers
    searched the whole buffer again per chunk: ~4 096 x 2 MB)."""
    events, fed, chunks = EventBuffer(8 * MIB), 0, 0
    for chunk in line_chunks(4 * MIB):
        fed += len(chunk)
        chunks += 1
        assert events.feed(chunk) == b""
    assert events.scanned <= fed + 2 * chunks
    assert len(events) == fed
    assert events.feed(b"\n\n") == b"data: " + b"x" * (4 * MIB) + b"\n\n"
    assert events.scanned <= fed + 2 * (chunks + 1) + 2


def test_many_small_events_are_linear_too():
    events, fed, chunks, out = EventBuffer(MIB), 0, 0, []
    event = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    stream = event * 20_000
    for i in range(0, len(stream), 7):  # cut anywhere, mid-event
        chunk = stream[i:i + 7]
        fed += len(chunk)
        chunks += 1
        out.append(events.feed(chunk))
    assert b"".join(out) == stream
    assert events.scanned <= fed + 2 * chunks


def test_whole_events_pass_through_unchanged_without_a_copy():
    events = EventBuffer(MIB)
    chunk = b"data: 1\n\ndata: 2\n\n"
    assert events.feed(chunk) is chunk
    assert events.feed(b"data: 3\n\ndata: 4") == b"data: 3\n\n"
    assert events.rest() == b"data: 4" and events.rest() == b""


def test_a_crlf_boundary_split_across_chunks_is_found():
    events = EventBuffer(MIB)
    assert events.feed(b"event: a\r\ndata: 1\r") == b""
    assert events.feed(b"\n\r") == b""
    assert events.feed(b"\ndata: 2") == b"event: a\r\ndata: 1\r\n\r\n"
    assert split_events(b"event: a\r\ndata: 1\r\n\r\n") == [b"event: a\ndata: 1"]
    assert parse_event(b"event: a\ndata: 1\ndata:  2") == ("a", "1\n2")


def test_a_whole_event_over_the_cap_in_one_chunk_is_refused():
    with pytest.raises(UpstreamEventTooLarge):
        EventBuffer(KIB).feed(b"data: " + b"x" * (2 * KIB) + b"\n\n")
    assert EventBuffer(KIB).feed(b"data: 1\n\n" * 500)  # many small ones are fine


def test_bounds_hold_nothing_and_refuse_a_long_line_and_a_long_stream():
    bounds = EventBounds(MIB, 1 << 40)
    with pytest.raises(UpstreamEventTooLarge):
        for chunk in line_chunks(4 * MIB):
            bounds.check(chunk)
    assert MIB < bounds.total <= MIB + KIB
    endless = EventBounds(MIB, 4 * MIB)
    with pytest.raises(UpstreamStreamTooLarge) as info:
        while True:
            endless.check(b"event: ping\ndata: {}\n\n" * 100)
    assert 4 * MIB < endless.total <= 4 * MIB + 2200 and "UPSTREAM_MAX_STREAM_BYTES" in str(info.value)


def test_bounds_follow_boundaries_across_chunks():
    bounds = EventBounds(13, 1 << 20)  # an open event counts the line ends it has so far
    for chunk in (b"data: 1234", b"\n", b"\n", b"data: 1234", b"\r\n\r", b"\n", b"data: 12"):
        bounds.check(chunk)  # each event within 13 bytes, however cut
    with pytest.raises(UpstreamEventTooLarge):
        bounds.check(b"3456789")


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"data: x", b"event: e", b"y", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n"]),
                max_size=30),
       st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_any_chunking_gives_the_events_of_the_whole(pieces, cuts):
    data = b"".join(pieces)
    events, out = EventBuffer(MIB), []
    for chunk in _chunked(data, cuts):
        out.append(events.feed(chunk))
    whole = b"".join(out)
    assert whole + events.rest() == data  # nothing lost, nothing added, order kept
    normal = data.replace(b"\r\n", b"\n")
    expected = [e.strip(b"\n") for e in normal.split(b"\n\n")[:-1] if e.strip(b"\n")]
    assert [e for e in split_events(whole) if e] == expected[:len([e for e in split_events(whole) if e])]
