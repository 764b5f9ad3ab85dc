"""The multipart reader and writer (flaregate/multipart.py): its rules, each a clear 400
``invalid_multipart`` (413 past the size limit, 415 for another type); fuzzed input never
raises anything but a GatewayError below 500."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from flaregate.errors import GatewayError
from flaregate.multipart import MAX_FIELD_BYTES, MAX_PARTS, Upload, encode_form, read_form

CT = "multipart/form-data; boundary=XyZ"
LIMIT = 1 << 20


def part(name: str, value: bytes | str, filename: str | None = None, ctype: str | None = None,
         boundary: str = "XyZ") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
    return head.encode() + b"\r\n" + (value.encode() if isinstance(value, str) else value) + b"\r\n"


def form(*parts: bytes, boundary: str = "XyZ") -> bytes:
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def refused(body: bytes, content_type: str = CT, **kwargs) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        read_form(body, content_type, max_bytes=kwargs.pop("max_bytes", LIMIT), **kwargs)
    return caught.value


def test_fields_then_the_file():
    audio = bytes(range(256)) * 8 + b"\r\n--XYZ\r\n x--XyZ\r\n"  # CRLF and near-boundaries inside
    got = read_form(form(part("model", "whisper-1"), part("language", "en"),
                         part("timestamp_granularities[]", "word"), part("timestamp_granularities[]", "segment"),
                         part("file", audio, "a b.wav", "audio/wav; codecs=1")), CT, max_bytes=LIMIT)
    assert got.fields == {"model": "whisper-1", "language": "en", "timestamp_granularities[]": ["word", "segment"]}
    upload = got.files["file"]
    assert upload.data == audio and upload == {"filename": "a b.wav", "content_type": "audio/wav", "size": len(audio)}
    assert json.loads(json.dumps({"file": upload})) == {"file": dict(upload)}  # its JSON form: never the bytes


def test_what_the_openai_sdk_and_httpx_send_reads_back():
    request = httpx.Request("POST", "http://x", data={"model": "m", "prompt": "é ünïcode"},
                            files={"file": ("ß.mp3", b"\x00\xff" * 100, "audio/mpeg")})
    got = read_form(request.read(), request.headers["content-type"], max_bytes=LIMIT)
    assert got.fields == {"model": "m", "prompt": "é ünïcode"}
    assert got.files["file"].filename == "ß.mp3" and got.files["file"].data == b"\x00\xff" * 100


def test_quoted_boundary_preamble_epilogue_and_transport_padding():
    body = b"a preamble\r\n" + form(part("model", "m", boundary="a b'c"), boundary="a b'c").replace(
        b"--a b'c\r\n", b"--a b'c  \r\n", 1) + b"an epilogue"
    assert read_form(body, "multipart/form-data; boundary=\"a b'c\"", max_bytes=LIMIT).fields == {"model": "m"}


def test_encode_form_round_trips():
    upload = Upload("x\"y\r\n.wav", "audio/wav", b"--flaregate-\r\n\r\n" * 50)
    content_type, body = encode_form([("model", "m"), ("prompt", "p")], [("file", upload)])
    got = read_form(body, content_type, max_bytes=LIMIT)
    assert got.fields == {"model": "m", "prompt": "p"}
    assert got.files["file"].data == upload.data and got.files["file"].filename == "x%22y%0D%0A.wav"


@pytest.mark.parametrize(("content_type", "status"), [
    ("application/json", 415), ("", 415), ("multipart/mixed; boundary=XyZ", 415), ("text/plain", 415),
    ("multipart/form-data", 400), ("multipart/form-data; boundary=", 400), ("multipart/form-data; boundary=" + "b" * 71, 400),
    ("multipart/form-data; boundary=\"ends in space \"", 400), ("multipart/form-data; boundary=a; boundary=b", 400),
    ("multipart/form-data; boundary=\"unterminated", 400), ("multipart/form-data; boundary=a\x00b", 400),
])
def test_a_bad_content_type(content_type, status):
    exc = refused(form(part("model", "m")), content_type)
    assert exc.status == status, exc.message
    assert exc.code == ("unsupported_media_type" if status == 415 else "invalid_multipart")


@pytest.mark.parametrize(("body", "says"), [
    (b"", "does not contain its boundary"),
    (b"--XyZ", "closing --boundary--"),
    (b"--XyZ\r\n", "headers do not end"),
    (b"--Other\r\n" + part("model", "m")[7:] + b"--Other--\r\n", "does not contain its boundary"),
    (part("model", "m"), "ends before its next --boundary"),
    (part("model", "m")[:-2], "ends before its next --boundary"),
    (part("model", "m") + b"--XyZ", "closing --boundary--"),
    (part("model", "m") + b"--XyZjunk\r\n" + b"--XyZ--", "boundary line is malformed"),
    (form(b"--XyZ\r\nContent-Type: text/plain\r\n\r\nm\r\n"), "no Content-Disposition"),
    (form(b"--XyZ\r\n\r\nm\r\n"), "no Content-Disposition"),
    (form(b"--XyZ\r\nContent-Disposition: attachment; name=\"model\"\r\n\r\nm\r\n"), "must be form-data"),
    (form(b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nm\r\n"), "has no name"),
    (form(b"--XyZ\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nm\r\n"), "has no name"),
    (form(b"--XyZ\r\nContent-Disposition: form-data; name=\"a\r\n\r\nm\r\n"), "Malformed parameters"),
    (form(b"--XyZ\r\nno colon here\r\n\r\nm\r\n"), "malformed header line"),
    (form(b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\rX: y\r\n\r\nm\r\n"), "malformed header line"),
    (form(b"--XyZ\r\nX: " + b"y" * 9000 + b"\r\n\r\nm\r\n"), "within 8192 bytes"),
    (form(part("model", "a"), part("model", "b")), "'model' is given twice"),
    (form(part("model", b"\xff\xfe")), "not UTF-8"),
    (form(part("prompt", "x" * (MAX_FIELD_BYTES + 1))), f"longer than {MAX_FIELD_BYTES}"),
    (form(*(part(f"f{i}", "x") for i in range(MAX_PARTS + 1))), f"more than {MAX_PARTS} parts"),
    (form(part("file", b"a", "a.wav"), part("file", b"b", "b.wav")), "comes after the file part"),
    (form(b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename*=bogus''%ff\r\n\r\na\r\n"),
     "undecodable filename"),
])
def test_malformed_forms_are_a_clear_400(body, says):
    exc = refused(body)
    assert (exc.status, exc.code) == (400, "invalid_multipart")
    assert says in exc.message, exc.message


def test_the_text_fields_come_before_the_file():
    exc = refused(form(part("file", b"RIFF", "a.wav"), part("model", "whisper-1")))
    assert (exc.status, exc.code, exc.param) == (400, "invalid_multipart", "model")
    assert "comes after the file part 'file'" in exc.message and "routes on them" in exc.message
    # The order is the gateway's rule: a reader without it takes the fields anywhere.
    got = read_form(form(part("file", b"RIFF", "a.wav"), part("model", "m")), CT, max_bytes=LIMIT, fields_first=False)
    assert got.fields == {"model": "m"} and got.files["file"].data == b"RIFF"


def test_the_size_limit_is_a_413():
    body = form(part("model", "m"), part("file", b"x" * 5000, "a.wav"))
    exc = refused(body, max_bytes=len(body) - 1)
    assert (exc.status, exc.code) == (413, "request_too_large")
    assert read_form(body, CT, max_bytes=len(body)).files["file"].size == 5000


def test_filename_star_and_an_empty_filename():
    got = read_form(form(b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''%C3%A9.wav\r\n"
                         b"\r\nabc\r\n"), CT, max_bytes=LIMIT)
    assert got.files["file"].filename == "é.wav" and got.files["file"].content_type == "application/octet-stream"
    assert read_form(form(part("file", b"", "")), CT, max_bytes=LIMIT).files["file"].size == 0


def test_fuzzed_forms_never_fail_otherwise():
    """Random cuts, flips and splices of good forms: a form, or a GatewayError below 500."""
    rng = random.Random(7)
    good = form(part("model", "whisper-1"), part("prompt", "p"), part("file", bytes(range(256)), "a.wav", "audio/wav"))
    tokens = [b"--XyZ", b"--XyZ--", b"\r\n", b"\r\n\r\n", b"\"", b";", b"=", b"name=", b"filename=", b":", b"\n",
              b"\x00", b"\xff", b"Content-Disposition: form-data"]
    outcomes = set()
    for _ in range(3000):
        body = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(body) + 1)
            choice = rng.random()
            if choice < 0.3:
                del body[at:at + rng.randint(1, 20)]
            elif choice < 0.6:
                body[at:at] = rng.choice(tokens)
            elif body:
                body[min(at, len(body) - 1)] = rng.randrange(256)
        try:
            read_form(bytes(body), CT, max_bytes=LIMIT)
            outcomes.add("ok")
        except GatewayError as exc:
            assert 400 <= exc.status < 500 and exc.message, exc
            outcomes.add(exc.code)
    assert "ok" in outcomes and "invalid_multipart" in outcomes
