"""The streamed readers a batch depends on: the multipart form of an upload read as it
arrives, and the JSONL lines of an input file, whatever the chunk boundaries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from flaregate.batches.jsonl import check_file, lines_of
from flaregate.errors import GatewayError
from flaregate.multipart import Upload, encode_form, read_form, read_streamed_form


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def _read(data: bytes, ctype: str, size: int) -> tuple[dict, str, bytes]:
    form = await read_streamed_form(_chunks(data, size), ctype)
    file = b"".join([chunk async for chunk in form.file_chunks()])
    return form.fields, form.filename, file


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, 1 << 20])
def test_a_streamed_form_reads_the_same_as_a_whole_one_at_any_chunk_size(size):
    payload = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" + b"tail"
    ctype, body = encode_form([("purpose", "batch"), ("expires_after[seconds]", "3600")],
                              [("file", Upload("in.jsonl", "application/jsonl", payload))])
    whole = read_form(body, ctype, max_bytes=1 << 30)
    fields, filename, data = asyncio.run(_read(body, ctype, size))
    assert fields == whole.fields == {"purpose": "batch", "expires_after[seconds]": "3600"}
    assert filename == "in.jsonl" and data == payload == whole.files["file"].data


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.99])
def test_a_form_cut_short_or_with_a_part_after_the_file_is_a_400(cut):
    ctype, body = encode_form([("purpose", "batch")], [("file", Upload("a", "text/plain", b"x" * 500))])
    with pytest.raises(GatewayError) as refused:
        asyncio.run(_read(body[:int(len(body) * cut)], ctype, 50))
    assert refused.value.status == 400 and refused.value.code == "invalid_multipart"
    boundary = ctype.split("boundary=")[1]
    trailing = body.replace(f"--{boundary}--".encode(),
                            f'--{boundary}\r\nContent-Disposition: form-data; name="late"\r\n\r\nx\r\n'
                            f"--{boundary}--".encode())
    with pytest.raises(GatewayError):
        asyncio.run(_read(trailing, ctype, 50))


def test_garbage_is_a_400_never_an_exception_of_another_kind():
    for body in (b"", b"garbage", b"--zz\r\n\r\n", b"--zz\r\nContent-Disposition: nope\r\n\r\nx\r\n--zz--"):
        with pytest.raises(GatewayError) as refused:
            asyncio.run(_read(body, "multipart/form-data; boundary=zz", 3))
        assert refused.value.status == 400


async def _lines(data: bytes, size: int, limit: int) -> list:
    return [item async for item in lines_of(_chunks(data, size), limit)]


@pytest.mark.parametrize("size", [1, 5, 4096])
def test_jsonl_lines_are_split_the_same_at_any_chunk_size_and_long_ones_are_skipped(size):
    data = b'{"a": 1}\n\n{"b": 2}\r\n' + b"x" * 100 + b'\n{"c": 3}'
    assert asyncio.run(_lines(data, size, 50)) == [(1, b'{"a": 1}'), (3, b'{"b": 2}\r'), (4, None), (5, b'{"c": 3}')]


def test_check_file_reports_every_kind_of_bad_line_with_its_number():
    good = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}
    lines = [good, "{oops", good, {**good, "custom_id": "b", "method": "PUT"},
             {**good, "custom_id": "c", "url": "/v1/chat/completions"}, {**good, "custom_id": "d", "body": []},
             {**good, "custom_id": ""}, {**good, "custom_id": "e", "extra": 1}, "7"]
    data = b"\n".join(line.encode() if isinstance(line, str) else json.dumps(line).encode() for line in lines)
    added: list = []

    async def add(rows):
        added.extend(rows)

    checked = asyncio.run(check_file(_chunks(data, 13), "/v1/embeddings", 10_000, 100, add))
    assert [(e["line"], e["code"]) for e in checked.errors] == [
        (2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_method"), (5, "invalid_url"),
        (6, "invalid_request"), (7, "missing_required_parameter"), (8, "invalid_request"), (9, "invalid_json_line")]
    too_many = asyncio.run(check_file(_chunks(b"\n".join([json.dumps(good).encode()] * 3), 13), "/v1/embeddings",
                                      10_000, 2, add))
    assert too_many.errors[-1]["code"] in ("too_many_lines", "duplicate_custom_id")
    empty = asyncio.run(check_file(_chunks(b"\n\n", 1), "/v1/embeddings", 10_000, 2, add))
    assert [e["code"] for e in empty.errors] == ["empty_file"]
