"""SSE streams cut into whole events, incrementally, in linear time, within a byte cap.

Every parser of an upstream stream builds on these two, so none keeps ``buffer += chunk``
and searches it again from the start (quadratic: a 4 MB line in 1 KB chunks was some
8 GB of copying and searching), and none holds an event without bound:

- :class:`EventBuffer` keeps the partial event at the end (a ``bytearray``: appending is
  amortised O(chunk), dropping the consumed front is O(1)) and searches only the bytes a
  chunk added (plus the two before them, for a boundary split across chunks). ``feed``
  returns the whole events completed so far as one ``bytes`` region, unchanged.
- :class:`EventBounds` keeps nothing: it follows where the last event ended, for a stream
  passed on chunk by chunk (a translator's input), and counts the stream's bytes.

An event ends at a blank line: LF LF, or CR LF CR LF (and the mixes), so LF and CRLF
streams alike. A partial event (an unterminated line included) longer than the cap raises
UpstreamEventTooLarge; a complete one too, when one chunk brings it whole.
"""

from __future__ import annotations

from .ports import MAX_EVENT_BYTES_CEILING, UpstreamEventTooLarge, UpstreamStreamTooLarge

_LF, _CRLF = b"\n\n", b"\n\r\n"  # the blank line after a line's LF (CR LF CR LF holds the second)


def _last_end(data: bytes | bytearray, start: int) -> int:
    """Index just past the last blank line that begins at or after ``start``; 0 if none."""
    lf, crlf = data.rfind(_LF, start), data.rfind(_CRLF, start)
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


def split_events(region: bytes) -> list[bytes]:
    """The events of a region of whole events, each without its blank line, LF-normalised
    (CR LF read as LF), without the stray blank lines around them."""
    if b"\r" in region:
        region = region.replace(b"\r\n", b"\n")
    events = region.split(b"\n\n")
    return [event.strip(b"\n") for event in events if event and event != b"\n"]


def parse_event(raw: bytes) -> tuple[str | None, str]:
    """(the ``event:`` name or None, the ``data:`` lines joined by LF) of one event."""
    name, data = None, []
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line.startswith("event:"):
            name = line[6:].strip()
    return name, "\n".join(data)


def _check_region(region: bytes, limit: int) -> None:
    """A region longer than the cap may hold one event longer than it (one chunk brought it)."""
    if len(region) > limit and any(len(event) > limit for event in split_events(region)):
        raise UpstreamEventTooLarge("an SSE event", limit)


class EventBuffer:
    __slots__ = ("limit", "scanned", "_pending")

    def __init__(self, limit: int = MAX_EVENT_BYTES_CEILING) -> None:
        self.limit = limit
        self.scanned = 0  # bytes searched for a boundary in all (linear: about the bytes fed)
        self._pending = bytearray()

    def __len__(self) -> int:
        """Bytes of the partial event held."""
        return len(self._pending)

    def feed(self, chunk: bytes) -> bytes:
        """The whole events ``chunk`` completes (with what was held before them), as they
        came; b"" while the event goes on. Raises UpstreamEventTooLarge past the cap."""
        pending = self._pending
        if not pending:  # the common case: a chunk of whole events, passed on without a copy
            end = _last_end(chunk, 0)
            self.scanned += len(chunk)
            if end == len(chunk):
                _check_region(chunk, self.limit)
                return chunk
            if end:
                region, rest = chunk[:end], chunk[end:]
                _check_region(region, self.limit)
            else:
                region, rest = b"", chunk
            if len(rest) > self.limit:
                raise UpstreamEventTooLarge("an SSE line or event", self.limit)
            pending += rest
            return region
        start = max(0, len(pending) - 2)  # a boundary may begin in the two bytes held before
        pending += chunk
        self.scanned += len(pending) - start
        end = _last_end(pending, start)
        region = b""
        if end:
            region = bytes(pending[:end])
            del pending[:end]
            _check_region(region, self.limit)
        if len(pending) > self.limit:
            self._pending = bytearray()  # nothing more is parsed: let the memory go at once
            raise UpstreamEventTooLarge("an SSE line or event", self.limit)
        return region

    def held(self) -> bytes:
        """The partial event held, left as it is."""
        return bytes(self._pending)

    def rest(self) -> bytes:
        """The partial event held (the stream ended without its blank line); emptied."""
        rest, self._pending = bytes(self._pending), bytearray()
        return rest


class EventBounds:
    """Checks a stream passed on chunk by chunk, holding none of it: every event stays
    within ``max_event`` bytes, the stream within ``max_stream``."""

    __slots__ = ("max_event", "max_stream", "total", "_since", "_tail")

    def __init__(self, max_event: int, max_stream: int) -> None:
        self.max_event = max_event
        self.max_stream = max_stream
        self.total = 0
        self._since = 0  # bytes of the event under way (since the last event's end)
        self._tail = b""  # the stream's last two bytes: a boundary may begin there

    def check(self, chunk: bytes) -> None:
        size = len(chunk)
        self.total += size
        if self.total > self.max_stream:
            raise UpstreamStreamTooLarge("a stream", self.max_stream)
        if self._since + size <= self.max_event:  # no event in it can be over the cap
            end = _last_end(chunk, 0)
            if not end and self._tail:  # a boundary that begins in the bytes before
                end = max(0, _last_end(self._tail + chunk[:3], 0) - len(self._tail))
            self._since = size - end if end else self._since + size
        else:
            self._measure(chunk)
        self._tail = (self._tail + chunk)[-2:] if size < 2 else chunk[-2:]

    def _measure(self, chunk: bytes) -> None:
        """Each event that ends in ``chunk`` measured, and the one it leaves open."""
        window = self._tail + chunk
        offset = len(self._tail)  # window[offset] is the chunk's first byte
        since = self._since  # bytes of the open event before the chunk
        start = offset - since  # where the open event began, in window positions (may be < 0)
        for blank, end in _boundaries(window):
            if end <= offset:
                continue  # wholly in the bytes before: counted then
            if blank - start > self.max_event:
                raise UpstreamEventTooLarge("an SSE event", self.max_event)
            start = end
        self._since = len(window) - start
        if self._since > self.max_event:
            raise UpstreamEventTooLarge("an SSE line or event", self.max_event)


def _boundaries(data: bytes) -> list[tuple[int, int]]:
    """(where the blank line begins, just past it) for each, in order; linear (each
    pattern's next match is looked for again only once passed). A blank line's last LF
    may begin the next one (LF CR LF CR LF: two)."""
    found = []
    lf, crlf = data.find(_LF), data.find(_CRLF)
    while lf >= 0 or crlf >= 0:
        if crlf < 0 or 0 <= lf < crlf:
            blank, end = lf, lf + 2
        else:
            blank, end = crlf, crlf + 3
        found.append((blank, end))
        if 0 <= lf < end - 1:
            lf = data.find(_LF, end - 1)
        if 0 <= crlf < end - 1:
            crlf = data.find(_CRLF, end - 1)
    return found
