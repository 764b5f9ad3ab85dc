"""BodyLog: what a record keeps of the bodies, and when it keeps nothing."""

from __future__ import annotations

import asyncio

from flaregate.http import Response
from flaregate.observability.request_bodies import BodyLog


async def _relay(body):
    return [chunk async for chunk in body]


def test_a_stream_is_collected_as_it_passes_and_the_client_gets_every_byte():
    bodies = BodyLog("response", max_bytes=1000)
    event = {"path": "/v1/chat/completions"}
    kept = bodies.keep_request({"model": "m"}, event, private_key=False)
    assert "request_body" not in event  # "response" only

    async def stream():
        for chunk in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"):
            yield chunk

    response = Response(200, {}, stream())
    bodies.keep_response(kept, response)
    assert asyncio.run(_relay(response.body)) == [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
    bodies.finish(event, kept)
    assert event["response_body"] == "data: 1\n\ndata: 2\n\ndata: [DONE]\n\n" and "_log_response_body" not in event


def test_bodies_are_capped_and_private_routes_keep_nothing():
    bodies = BodyLog("both", max_bytes=300, private_routes=("secret-*", "/v1/embeddings"))
    event = {"path": "/v1/chat/completions"}
    kept = bodies.keep_request({"model": "m", "input": "é" * 400}, event, private_key=False)
    bodies.keep_response(kept, Response(200, {}, b"y" * 1000))
    bodies.finish(event, kept)
    assert event["request_body_truncated"] and len(event["request_body"].encode()) <= 300
    assert event["response_body"] == "y" * 300 and event["response_body_truncated"]
    for path, model, private_key in (("/v1/chat/completions", "secret-1", False), ("/v1/embeddings", "m", False),
                                     ("/v1/chat/completions", "m", True)):
        event = {"path": path}
        kept = bodies.keep_request({"model": model}, event, private_key=private_key)
        bodies.keep_response(kept, Response(200, {}, b"answer"))
        bodies.finish(event, kept)
        assert "request_body" not in event and "response_body" not in event
