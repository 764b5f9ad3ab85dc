"""``multipart/form-data`` (RFC 7578), read and written: the audio upload of
``/v1/audio/transcriptions``. Pure Python (the Worker has no C extensions, and
``python-multipart`` is not in its vendored set), small, strict and linear.

Reading (:func:`read_form`), every rule a clear 400 ``invalid_multipart`` (never a 5xx):
- the boundary comes from the content-type (``boundary=``, quoted or not, 1-70 RFC 2046
  characters); the body opens with it (a preamble before it is skipped) and ends with the
  closing ``--boundary--`` (an epilogue after it is ignored); lines end in CRLF;
- each part has a ``Content-Disposition: form-data; name=...`` (``filename=`` or
  ``filename*=`` makes it a file part), a header block of at most 8 KiB, and at most 64
  parts in all; a text field is UTF-8, at most 64 KiB, given once (a name ending in ``[]``
  may repeat: its values form a list);
- with ``fields_first`` (the default) the text fields come before the file part and
  nothing follows it: the gateway routes on ``model`` before it forwards the file;
- the whole body is within ``max_bytes`` (413 beyond, as for any body).

The file's bytes are held as they arrived (the hosts read a body whole, under
``MAX_BODY_BYTES``): an :class:`Upload` is a dict of its description (``filename``,
``content_type``, ``size``: what request logs and estimates see) whose bytes are
``Upload.data``, never in its JSON form.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import GatewayError, bad_request

MEDIA_TYPE = "multipart/form-data"
MAX_PARTS = 64
MAX_HEADER_BYTES = 8192  # one part's header block
MAX_FIELD_BYTES = 65536  # one text field

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf';[ \t]*({_TOKEN})[ \t]*=[ \t]*("(?:[^"\\\r\n]|\\.)*"|[^;\s"]*)[ \t]*')
_MEDIA = re.compile(rf"[ \t]*({_TOKEN}/{_TOKEN}|{_TOKEN})[ \t]*")
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_HEADER = re.compile(rf"({_TOKEN})[ \t]*:[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_ESCAPED = re.compile(r"\\(.)")


class Upload(dict[str, str | int]):
    """A file part: a dict of its description (``filename``, ``content_type``, ``size``) and
    its bytes in :attr:`data`, so that ``json.dumps`` of a body holding one (a request log,
    a token estimate) shows what was sent, never the file."""

    __slots__ = ("data",)

    def __init__(self, filename: str, content_type: str, data: bytes) -> None:
        super().__init__(filename=filename, content_type=content_type, size=len(data))
        self.data = data

    @property
    def filename(self) -> str:
        return str(self["filename"])

    @property
    def content_type(self) -> str:
        return str(self["content_type"])

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(slots=True)
class Form:
    """A form as read: the text fields in the order sent, then the files by part name."""

    fields: dict[str, str | list[str]] = field(default_factory=dict)
    files: dict[str, Upload] = field(default_factory=dict)


def invalid(message: str, param: str | None = None) -> GatewayError:
    return bad_request(message, param=param, code="invalid_multipart")


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """(the lower-cased first token, its ``;``-separated parameters, names lower-cased and
    quoted values unescaped) of a header value; a 400 when it does not parse."""
    media = _MEDIA.match(value)
    if media is None:
        raise invalid(f"Malformed header value {value[:80]!r}.")
    params: dict[str, str] = {}
    pos = media.end()
    while pos < len(value):
        found = _PARAM.match(value, pos)
        if found is None:
            raise invalid(f"Malformed parameters in {value[:80]!r}.")
        name, raw = found.group(1).lower(), found.group(2)
        if raw.startswith('"'):
            raw = _ESCAPED.sub(r"\1", raw[1:-1])
        if name in params:
            raise invalid(f"Parameter {name!r} is given twice in {value[:80]!r}.")
        params[name] = raw
        pos = found.end()
    return media.group(1).lower(), params


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` content-type (415 for another type)."""
    if content_type.split(";")[0].strip().lower() != MEDIA_TYPE:
        raise GatewayError(415, f"Content-Type must be {MEDIA_TYPE}.", code="unsupported_media_type")
    _, params = header_params(content_type)
    boundary = params.get("boundary")
    if boundary is None:
        raise invalid("The multipart Content-Type has no boundary parameter.")
    if not _BOUNDARY.fullmatch(boundary):
        raise invalid("The multipart boundary must be 1 to 70 characters of letters, digits and '()+_,-./:=? "
                      "(not ending in a space).")
    return boundary


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"{what} is not UTF-8.") from None


def _part_headers(raw: bytes, index: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # a client's own 8-bit file name
        text = raw.decode("latin-1")
    for line in text.split("\r\n") if text else ():
        found = _HEADER.fullmatch(line)
        if found is None:
            raise invalid(f"Part {index} has a malformed header line {line[:80]!r}.")
        headers[found.group(1).lower()] = found.group(2)
    return headers


def _disposition(headers: Mapping[str, str], index: int) -> tuple[str, str | None]:
    """(the part's name, its filename or None) from its Content-Disposition."""
    value = headers.get("content-disposition")
    if value is None:
        raise invalid(f"Part {index} has no Content-Disposition header.")
    kind, params = header_params(value)
    if kind != "form-data":
        raise invalid(f"Part {index}: Content-Disposition must be form-data, not {kind[:40]!r}.")
    name = params.get("name")
    if not name:
        raise invalid(f"Part {index} has no name (Content-Disposition: form-data; name=\"...\").")
    filename = params.get("filename")
    extended = params.get("filename*")
    if extended is not None:  # RFC 5987: charset'language'percent-encoded
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            filename = unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            raise invalid(f"Part {index} has an undecodable filename*.", param=name) from None
    return name, filename


def read_form(body: bytes, content_type: str, *, max_bytes: int, fields_first: bool = True) -> Form:
    """The form in ``body`` under the rules of this module's docstring."""
    delimiter = b"--" + boundary_of(content_type).encode("ascii")
    if len(body) > max_bytes:
        raise GatewayError(413, f"Request body exceeds {max_bytes} bytes.", code="request_too_large")
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        opening = body.find(b"\r\n" + delimiter)
        if opening < 0:
            raise invalid("The body does not contain its boundary line (--boundary).")
        pos = opening + 2 + len(delimiter)
    separator = b"\r\n" + delimiter
    form = Form()
    file_part: str | None = None
    index = 0
    while True:
        if body.startswith(b"--", pos):  # the closing delimiter: what follows is the epilogue
            break
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise invalid("A boundary line is malformed, or the body ends before its closing --boundary--.")
        pos = line_end + 2
        if index == MAX_PARTS:
            raise invalid(f"The form has more than {MAX_PARTS} parts.")
        if body.startswith(b"\r\n", pos):
            raw_headers, pos = b"", pos + 2
        else:
            end = body.find(b"\r\n\r\n", pos, pos + MAX_HEADER_BYTES + 4)
            if end < 0:
                raise invalid(f"Part {index}'s headers do not end (a blank line) within {MAX_HEADER_BYTES} bytes.")
            raw_headers, pos = body[pos:end], end + 4
        headers = _part_headers(raw_headers, index)
        name, filename = _disposition(headers, index)
        content_end = body.find(separator, pos)
        if content_end < 0:
            raise invalid(f"Part {name[:64]!r} is not closed: the body ends before its next --boundary.",
                          param=name[:64])
        content = body[pos:content_end]
        pos = content_end + len(separator)
        if fields_first and file_part is not None:
            raise invalid(f"Part {name[:64]!r} comes after the file part {file_part[:64]!r}: send the text fields "
                          "(model first) before the file, and the file last. The gateway routes on them before it "
                          "forwards the file.", param=name[:64])
        if filename is not None:
            if name in form.files or name in form.fields:
                raise invalid(f"Part {name[:64]!r} is given twice.", param=name[:64])
            file_type = header_params(headers["content-type"])[0] if "content-type" in headers else ""
            form.files[name] = Upload(filename, file_type if "/" in file_type else "application/octet-stream", content)
            file_part = name
        else:
            _add_field(form, name, content)
        index += 1
    return form


def _add_field(form: Form, name: str, content: bytes) -> None:
    if len(content) > MAX_FIELD_BYTES:
        raise invalid(f"Field {name[:64]!r} is longer than {MAX_FIELD_BYTES} bytes.", param=name[:64])
    value = _text(content, f"Field {name[:64]!r}")
    if name.endswith("[]"):
        previous = form.fields.setdefault(name, [])
        if isinstance(previous, list):
            previous.append(value)
            return
    if name in form.fields or name in form.files:
        raise invalid(f"Field {name[:64]!r} is given twice.", param=name[:64])
    form.fields[name] = value


def _quoted(text: str) -> str:
    """A Content-Disposition parameter value, escaped as browsers do (HTML's form encoding)."""
    return '"' + text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A") + '"'


def encode_form(fields: Iterable[tuple[str, str]], files: Iterable[tuple[str, Upload]]) -> tuple[str, bytes]:
    """(content-type, body) of a form: the text fields in order, then the files."""
    fields, files = list(fields), list(files)
    while True:  # a fresh boundary, checked absent from what it separates
        boundary = "flaregate-" + secrets.token_hex(16)
        marker = boundary.encode()
        if not any(marker in upload.data for _, upload in files) and not any(boundary in v for _, v in fields):
            break
    out = bytearray()
    for name, value in fields:
        out += f"--{boundary}\r\nContent-Disposition: form-data; name={_quoted(name)}\r\n\r\n".encode()
        out += value.encode() + b"\r\n"
    for name, upload in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name={_quoted(name)}; "
                f"filename={_quoted(upload.filename)}\r\nContent-Type: {upload.content_type}\r\n\r\n").encode()
        out += upload.data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"{MEDIA_TYPE}; boundary={boundary}", bytes(out)


# -- streamed reading: an upload too large to hold (``/v1/files``) -----------------------------

@dataclass(slots=True)
class StreamedForm:
    """A form read as it arrives: its text fields, then its one file part, whose bytes
    :meth:`file_chunks` yields as they come (the text fields come first, the file last, as
    SDKs send them). The closing ``--boundary--`` is checked when the file's bytes end."""

    fields: dict[str, str | list[str]]
    file_field: str
    filename: str
    content_type: str
    _reader: _ChunkReader
    _separator: bytes

    async def file_chunks(self) -> AsyncIterator[bytes]:
        reader, separator = self._reader, self._separator
        keep = len(separator) + 2  # a separator split across two chunks stays whole in the buffer
        while True:
            found = reader.buffer.find(separator)
            if found >= 0:
                if found:
                    yield bytes(reader.buffer[:found])
                del reader.buffer[:found + len(separator)]
                break
            if len(reader.buffer) > keep:
                cut = len(reader.buffer) - keep
                yield bytes(reader.buffer[:cut])
                del reader.buffer[:cut]
            if not await reader.fill():
                raise invalid(f"The file part {self.file_field[:64]!r} is not closed: the body ends before its "
                              "closing --boundary--.", param=self.file_field[:64])
        await reader.want(2)
        if not reader.buffer.startswith(b"--"):
            raise invalid(f"A part comes after the file part {self.file_field[:64]!r}: send the file last.",
                          param=self.file_field[:64])
        await reader.drain()  # the epilogue, ignored


class _ChunkReader:
    """A byte buffer refilled from an async iterator of chunks, counting what arrived."""

    __slots__ = ("_chunks", "buffer", "seen", "_ended")

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.buffer = bytearray()
        self.seen = 0
        self._ended = False

    async def fill(self) -> bool:
        """Append the next chunk; False at the end of the body."""
        if self._ended:
            return False
        async for chunk in self._chunks:
            if chunk:
                self.seen += len(chunk)
                self.buffer += chunk
                return True
        self._ended = True
        return False

    async def want(self, count: int) -> None:
        """Fill until the buffer holds ``count`` bytes or the body ends."""
        while len(self.buffer) < count and await self.fill():
            pass

    async def until(self, marker: bytes, limit: int, what: str) -> bytes:
        """The bytes before ``marker`` (consumed with it), within ``limit`` bytes."""
        start = 0
        while True:
            found = self.buffer.find(marker, start)
            if found >= 0:
                if found > limit:
                    break
                taken = bytes(self.buffer[:found])
                del self.buffer[:found + len(marker)]
                return taken
            if len(self.buffer) > limit + len(marker):
                break
            start = max(0, len(self.buffer) - len(marker) + 1)
            if not await self.fill():
                raise invalid(f"The body ends inside {what}.")
        raise invalid(f"{what[:1].upper()}{what[1:]} is longer than {limit} bytes.")

    async def drain(self) -> None:
        self.buffer.clear()
        while await self.fill():
            self.buffer.clear()


async def read_streamed_form(chunks: AsyncIterator[bytes], content_type: str, *,
                             max_fields_bytes: int = MAX_FIELD_BYTES * 4) -> StreamedForm:
    """The text fields of a streamed form up to its one file part (the rules of
    :func:`read_form`, with ``fields_first``); the file's bytes are left to
    :meth:`StreamedForm.file_chunks`. At most ``max_fields_bytes`` arrive before the file."""
    delimiter = b"--" + boundary_of(content_type).encode("ascii")
    reader = _ChunkReader(chunks)
    separator = b"\r\n" + delimiter
    # The preamble (usually none) up to the first boundary line.
    while not reader.buffer.startswith(delimiter):
        found = reader.buffer.find(separator)
        if found >= 0:
            del reader.buffer[:found + 2]
            continue
        if len(reader.buffer) > max_fields_bytes or not await reader.fill():
            raise invalid("The body does not contain its boundary line (--boundary).")
    del reader.buffer[:len(delimiter)]
    fields: dict[str, str | list[str]] = {}
    form = Form(fields)
    for index in range(MAX_PARTS):
        await reader.want(2)
        if reader.buffer.startswith(b"--"):
            raise invalid("The form has no file part.")
        line = await reader.until(b"\r\n", 80, "a boundary line")
        if line.strip(b" \t"):
            raise invalid("A boundary line is malformed.")
        await reader.want(2)
        if reader.buffer.startswith(b"\r\n"):
            raw_headers = b""
            del reader.buffer[:2]
        else:
            raw_headers = await reader.until(b"\r\n\r\n", MAX_HEADER_BYTES, f"part {index}'s headers")
        headers = _part_headers(raw_headers, index)
        name, filename = _disposition(headers, index)
        if filename is not None:
            file_type = header_params(headers["content-type"])[0] if "content-type" in headers else ""
            return StreamedForm(fields, name, filename, file_type if "/" in file_type else "application/octet-stream",
                                reader, separator)
        content = await reader.until(separator, MAX_FIELD_BYTES, f"field {name[:64]!r}")
        _add_field(form, name, content)
        if reader.seen > max_fields_bytes + len(reader.buffer):
            raise invalid(f"The text fields before the file are longer than {max_fields_bytes} bytes.")
    raise invalid(f"The form has more than {MAX_PARTS} parts.")
