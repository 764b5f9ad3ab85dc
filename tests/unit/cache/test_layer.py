"""The cache step through the whole core pipeline, with in-memory ports and a fake clock."""

import asyncio
import json

import pytest

from flaregate.cache.store import key_hash
from flaregate.http import Headers, Request
from flaregate.providers.mock import StaticResponse
from tests.unit.test_gateway import KEY, ScriptedTransport, build, chat, collect

ADMIN = "admin-secret-for-tests"
# These tests exercise the cache admin API's own checks; request signing on /admin/ (on by
# default) has its own tests in test_signing_and_limits.py and test_security.py.
ADMIN_VARS = {"FLAREGATE_ADMIN_KEY": ADMIN, "SIGNED_ROUTES": ""}
HELLO = [{"role": "user", "content": "hello there"}]


def ask(model="mock-1", stream=False, headers=(), messages=HELLO, **extra):
    return chat({"model": model, "messages": messages, **({"stream": True} if stream else {}), **extra},
                headers=list(headers))


def content_of(body: bytes) -> str:
    return json.loads(body)["choices"][0]["message"]["content"]


def streamed_content(text: str) -> str:
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events[:-1] if json.loads(e)["choices"])


def sse_response(*pieces, finish="stop", done=True):
    chunks = [b'data: {"id":"s1","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant"},'
              b'"finish_reason":null}]}\n\n']
    chunks += [b'data: {"id":"s1","choices":[{"index":0,"delta":{"content":' + json.dumps(p).encode()
               + b'},"finish_reason":null}]}\n\n' for p in pieces]
    chunks.append(b'data: {"id":"s1","choices":[{"index":0,"delta":{},"finish_reason":"' + finish.encode()
                  + b'"}]}\n\n')
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return StaticResponse(200, {"content-type": "text/event-stream"}, chunks)


def completion(content, finish="stop"):
    body = {"id": "j1", "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                     "finish_reason": finish}], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                                                          "total_tokens": 5}}
    return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(body).encode()])


def admin(path, body=None, key=ADMIN):
    headers = [("content-type", "application/json")] + ([("authorization", f"Bearer {key}")] if key else [])
    if body is None:
        return Request("GET", path, Headers(headers))
    return Request("POST", path, Headers(headers), json.dumps(body).encode())


async def test_a_streamed_miss_is_replayed_as_a_stream_and_served_as_json():
    gateway, hub, tasks = build()
    miss = await gateway.handle(ask(stream=True))
    assert miss.headers["x-flaregate-cache"] == "MISS" and miss.headers["cache-status"] == "flaregate; fwd=uri-miss"
    original = (await collect(miss.body)).decode()
    hit = await gateway.handle(ask(stream=True))
    assert hit.headers["x-flaregate-cache"] == "HIT" and hit.headers["content-type"] == "text/event-stream"
    assert hit.headers["cache-status"].startswith("flaregate; hit; ttl=300; detail=hot")
    replay = hit.body.decode()
    assert streamed_content(replay) == streamed_content(original) == "Flaregate mock reply to: hello there"
    as_json = await gateway.handle(ask())
    assert as_json.headers["x-flaregate-cache"] == "HIT"
    assert content_of(as_json.body) == streamed_content(original)
    await tasks.drain()
    totals = hub.snapshot()["totals"]
    assert totals["cache_hits"] == 2 and totals["cache_misses"] == 1
    assert totals["cache_bytes_saved"] == len(hit.body) + len(as_json.body)


async def test_a_json_miss_is_served_verbatim_and_replayed_as_a_stream_with_usage():
    gateway, hub, tasks = build()
    miss = await gateway.handle(ask())
    again = await gateway.handle(ask())
    assert again.body == miss.body and again.headers["x-flaregate-provider"] == "mock"
    stream = await gateway.handle(ask(stream=True, stream_options={"include_usage": True}))
    events = [json.loads(line[6:]) for line in stream.body.decode().splitlines()
              if line.startswith("data: {")]
    assert events[-1]["usage"] == json.loads(miss.body)["usage"]
    assert streamed_content(stream.body.decode()) == content_of(miss.body)
    await tasks.drain()
    assert hub.snapshot()["totals"]["cache_tokens_saved"] == 2 * json.loads(miss.body)["usage"]["total_tokens"]


async def test_no_store_bypasses_and_no_cache_refreshes():
    transport = ScriptedTransport(completion("one"), completion("two"), completion("three"), completion("four"))
    gateway, _, _ = build(transport=transport)
    first = await gateway.handle(ask("a"))
    bypass = await gateway.handle(ask("a", headers=[("cache-control", "no-store")]))
    assert bypass.headers["x-flaregate-cache"] == "BYPASS" and content_of(bypass.body) == "two"
    assert bypass.headers["cache-status"] == "flaregate; fwd=bypass"
    assert content_of((await gateway.handle(ask("a"))).body) == "one"  # no-store wrote nothing
    refresh = await gateway.handle(ask("a", headers=[("cache-control", "max-age=0, no-cache")]))
    assert refresh.headers["x-flaregate-cache"] == "REFRESH" and content_of(refresh.body) == "three"
    assert refresh.headers["cache-status"] == "flaregate; fwd=request; stored"
    hit = await gateway.handle(ask("a"))
    assert hit.headers["x-flaregate-cache"] == "HIT" and content_of(hit.body) == "three"
    assert len(transport.calls) == 3 and content_of(first.body) == "one"


async def test_the_ttl_header_and_the_route_default_ttl():
    routes = json.dumps({"mock-1": {"targets": ["mock"], "cache_ttl_seconds": 20}, "a": ["a"],
                         "nocache": {"targets": ["mock"], "cache_ttl_seconds": 0}})
    gateway, _, _ = build({"FLAREGATE_ROUTES": routes})
    clock = gateway.ports.clock
    await gateway.handle(ask())
    clock.advance(19)
    assert (await gateway.handle(ask())).headers["x-flaregate-cache"] == "HIT"
    clock.advance(2)
    assert (await gateway.handle(ask())).headers["x-flaregate-cache"] == "MISS"
    short = [("x-flaregate-cache-ttl", "3")]
    await gateway.handle(ask(messages=[{"role": "user", "content": "short"}], headers=short))
    clock.advance(2.5)
    assert (await gateway.handle(ask(messages=[{"role": "user", "content": "short"}]))).headers[
        "x-flaregate-cache"] == "HIT"
    clock.advance(1)
    assert (await gateway.handle(ask(messages=[{"role": "user", "content": "short"}]))).headers[
        "x-flaregate-cache"] == "MISS"
    assert (await gateway.handle(ask("nocache"))).headers["x-flaregate-cache"] == "BYPASS"
    opted_in = await gateway.handle(ask("nocache", headers=short))  # a TTL header opts a request in
    assert opted_in.headers["x-flaregate-cache"] == "MISS"
    assert (await gateway.handle(ask("nocache", headers=short))).headers["x-flaregate-cache"] == "HIT"


@pytest.mark.parametrize(
    ("stream", "bad"),
    [
        (False, completion("cut", finish="length")),
        (True, sse_response("cut", finish="length")),
        (False, StaticResponse(500, {}, [b'{"error": {"message": "boom"}}'])),
        (False, StaticResponse(400, {}, [b'{"error": {"message": "bad tool"}}'])),
        (False, completion(None, finish=None)),
        (True, sse_response("no", "done", done=False)),
        (True, StaticResponse(200, {}, [b'data: {"choices": []}\n\n', b'data: {"error": {"message": "x"}}\n\n',
                                        b"data: [DONE]\n\n"])),
    ],
)
async def test_errors_unfinished_and_truncated_answers_are_never_stored(stream, bad):
    good = sse_response("fine") if stream else completion("fine")
    transport = ScriptedTransport(bad, good)
    gateway, _, _ = build({"UPSTREAM_MAX_ATTEMPTS": "1"}, transport=transport)  # the bad answer is final
    statuses = []
    for _ in range(3):
        response = await gateway.handle(ask("a", stream=stream))
        statuses.append(response.headers.get("x-flaregate-cache"))
        if response.is_stream:
            await collect(response.body)
    # The bad answer was not stored (the second request missed); the good one was.
    assert statuses == ["MISS", "MISS", "HIT"] and len(transport.calls) == 2


async def test_length_answers_are_stored_when_configured():
    transport = ScriptedTransport(completion("cut", finish="length"))
    gateway, _, _ = build({"CACHE_SKIP_LENGTH_FINISH": "false"}, transport=transport)
    await gateway.handle(ask("a"))
    assert (await gateway.handle(ask("a"))).headers["x-flaregate-cache"] == "HIT"


async def test_a_stream_the_client_abandons_is_not_stored_and_the_upstream_is_closed():
    closed = []

    class Watched(StaticResponse):
        async def aclose(self):
            closed.append(True)

    answer = sse_response("a", "b", "c")
    transport = ScriptedTransport(Watched(200, answer.headers, answer._chunks), sse_response("x"))
    gateway, hub, tasks = build(transport=transport)
    response = await gateway.handle(ask("a", stream=True))
    body = response.body
    await anext(body)
    await body.aclose()  # what the host does when the client goes away
    assert closed and len(gateway.caching.cache.memory) == 0
    await tasks.drain()
    assert hub.snapshot()["totals"]["errors"] == 0  # a client leaving is not an upstream error
    again = await gateway.handle(ask("a", stream=True))
    assert again.headers["x-flaregate-cache"] == "MISS"


class GatedTransport(ScriptedTransport):
    def __init__(self, *script):
        super().__init__(*script)
        self.gate = asyncio.Event()

    async def send(self, method, url, headers, body, timeout):
        await self.gate.wait()
        return await super().send(method, url, headers, body, timeout)


@pytest.mark.parametrize("stream", [False, True])
async def test_twenty_identical_concurrent_requests_make_one_upstream_call(stream):
    answer = sse_response("shared ", "answer") if stream else completion("shared answer")
    transport = GatedTransport(answer)
    gateway, hub, tasks = build(transport=transport)
    pending = [asyncio.ensure_future(gateway.handle(ask("a", stream=stream))) for _ in range(20)]
    for _ in range(20):
        await asyncio.sleep(0)
    transport.gate.set()
    responses = await asyncio.gather(*pending)
    bodies = [(await collect(r.body)).decode() if r.is_stream else r.body.decode() for r in responses]
    assert len(transport.calls) == 1
    assert len(set(bodies)) == 1 and "shared answer" in (streamed_content(bodies[0]) if stream else bodies[0])
    collapsed = [r for r in responses if "collapsed" in r.headers["cache-status"]]
    assert len(collapsed) == 19 and all(r.headers["x-flaregate-cache"] == "MISS" for r in responses)
    await tasks.drain()
    totals = hub.snapshot()["totals"]
    assert totals["cache_bytes_saved"] == 19 * len(bodies[0].encode())
    assert totals["cache_tokens_saved"] == (0 if stream else 19 * 5)  # this stream carries no usage
    assert (await gateway.handle(ask("a", stream=stream))).headers["x-flaregate-cache"] == "HIT"


async def test_single_flight_can_be_turned_off():
    transport = GatedTransport(completion("one"), completion("two"))
    gateway, _, _ = build({"CACHE_SINGLE_FLIGHT": "false"}, transport=transport)
    pending = [asyncio.ensure_future(gateway.handle(ask("a"))) for _ in range(2)]
    for _ in range(5):
        await asyncio.sleep(0)
    transport.gate.set()
    assert sorted(content_of(r.body) for r in await asyncio.gather(*pending)) == ["one", "two"]
    assert (await gateway.handle(ask("a"))).headers["x-flaregate-cache"] == "HIT"


async def test_different_shapes_do_not_share_a_flight_but_share_the_entry():
    transport = GatedTransport(completion("json answer"), sse_response("sse answer"))
    gateway, _, _ = build(transport=transport)
    pending = [asyncio.ensure_future(gateway.handle(ask("a", stream=s))) for s in (False, True)]
    for _ in range(5):
        await asyncio.sleep(0)
    transport.gate.set()
    json_miss, sse_miss = await asyncio.gather(*pending)
    await collect(sse_miss.body)
    assert len(transport.calls) == 2


async def test_namespaces_are_separate_and_purged_as_a_whole():
    transport = ScriptedTransport(*(completion(f"answer {i}") for i in range(6)))
    gateway, _, _ = build(ADMIN_VARS, transport=transport)
    team = [("x-flaregate-cache-namespace", "team-a")]
    assert content_of((await gateway.handle(ask("a", headers=team))).body) == "answer 0"
    assert content_of((await gateway.handle(ask("a"))).body) == "answer 1"  # default namespace: its own entry
    assert content_of((await gateway.handle(ask("a", headers=team))).body) == "answer 0"
    purged = await gateway.handle(admin("/admin/cache/purge", {"namespace": "team-a"}))
    assert purged.status == 200 and json.loads(purged.body)["purged"]["namespace"] == "team-a"
    assert content_of((await gateway.handle(ask("a", headers=team))).body) == "answer 2"
    assert content_of((await gateway.handle(ask("a"))).body) == "answer 1"  # other namespaces untouched


async def test_the_debug_header_shows_the_key_hash_that_purges_exactly_that_entry():
    transport = ScriptedTransport(*(completion(f"answer {i}") for i in range(4)))
    gateway, _, tasks = build(ADMIN_VARS, transport=transport)
    debug = [("x-flaregate-cache-debug", "1")]
    first = await gateway.handle(ask("a", headers=debug))
    other = await gateway.handle(ask("a", messages=[{"role": "user", "content": "other"}]))
    assert "x-flaregate-cache-key" not in other.headers
    hash_ = first.headers["x-flaregate-cache-key"]
    assert len(hash_) == 64 and hash_ == key_hash(next(iter(gateway.caching.cache.memory._slots)))
    await tasks.drain()
    purged = await gateway.handle(admin("/admin/cache/purge", {"key": hash_}))
    assert json.loads(purged.body) == {"purged": {"key": hash_}}
    assert content_of((await gateway.handle(ask("a"))).body) == "answer 2"
    assert (await gateway.handle(ask("a", messages=[{"role": "user", "content": "other"}]))).headers[
        "x-flaregate-cache"] == "HIT"


@pytest.mark.parametrize(
    ("vars", "request_", "status", "code"),
    [
        ({"SIGNED_ROUTES": ""}, admin("/admin/cache/purge", {"namespace": "x"}), 403, "admin_disabled"),
        (ADMIN_VARS, admin("/admin/cache/purge", {"namespace": "x"}, key=None), 401,
         "invalid_admin_key"),
        (ADMIN_VARS, admin("/admin/cache/purge", {"namespace": "x"}, key=KEY), 401,
         "invalid_admin_key"),
        (ADMIN_VARS, admin("/admin/cache/stats", key="wrong"), 401, "invalid_admin_key"),
        (ADMIN_VARS, admin("/admin/cache/purge", {}), 400, "invalid_purge_request"),
        (ADMIN_VARS, admin("/admin/cache/purge", {"key": "a", "namespace": "b"}), 400,
         "invalid_purge_request"),
        (ADMIN_VARS, admin("/admin/cache/purge", {"key": "abc"}), 400, "invalid_value"),
        (ADMIN_VARS, admin("/admin/cache/purge", {"namespace": "a b"}), 400, "invalid_value"),
        (ADMIN_VARS, admin("/admin/cache/purge", [1]), 400, "invalid_purge_request"),
        (ADMIN_VARS, Request("POST", "/admin/cache/purge",
                                                 Headers([("authorization", f"Bearer {ADMIN}")]), b"{"), 400,
         "invalid_json"),
        (ADMIN_VARS, Request("GET", "/admin/cache/purge"), 405, "method_not_allowed"),
    ],
)
async def test_the_admin_api_refuses_what_it_should(vars, request_, status, code):
    gateway, _, _ = build(vars)
    response = await gateway.handle(request_)
    assert response.status == status
    error = json.loads(response.body)["error"]
    assert error["code"] == code and ADMIN not in response.body.decode()


async def test_stats_report_both_tiers_and_the_request_counts():
    gateway, _, _ = build(ADMIN_VARS)
    await gateway.handle(ask())
    await gateway.handle(ask())
    await gateway.handle(ask(headers=[("cache-control", "no-store")]))
    stats = json.loads((await gateway.handle(admin("/admin/cache/stats"))).body)
    assert stats["requests"] == {"HIT": 1, "MISS": 1, "REFRESH": 0, "BYPASS": 1}
    assert stats["hit_rate"] == 0.5 and stats["hot"]["entries"] == 1 and stats["hot"]["hits"] == 1
    assert stats["flights"]["opened"] == 1


@pytest.mark.parametrize(
    ("header", "value"),
    [("x-flaregate-cache-ttl", "soon"), ("x-flaregate-cache-ttl", "0"), ("x-flaregate-cache-ttl", "-5"),
     ("x-flaregate-cache-ttl", "1.5"), ("x-flaregate-cache-ttl", "٣"), ("x-flaregate-cache-namespace", "a b"),
     ("x-flaregate-cache-namespace", ""), ("x-flaregate-cache-namespace", "x" * 65)],
)
async def test_malformed_cache_headers_are_a_400_naming_the_header(header, value):
    gateway, _, _ = build()
    response = await gateway.handle(ask(headers=[(header, value)]))
    assert response.status == 400
    error = json.loads(response.body)["error"]
    assert error["code"] == "invalid_cache_header" and error["param"] == header


async def test_a_huge_ttl_is_clamped_to_the_maximum():
    gateway, _, _ = build({"CACHE_MAX_TTL_SECONDS": "100"})
    await gateway.handle(ask(headers=[("x-flaregate-cache-ttl", "9" * 5000)]))
    hit = await gateway.handle(ask())
    assert "ttl=100" in hit.headers["cache-status"]


async def test_a_store_that_is_down_never_fails_a_request():
    gateway, _, tasks = build(transport=ScriptedTransport(completion("a"), completion("b")))
    gateway.ports.cache.fail = True
    for expected in ("a", "b"):
        response = await gateway.handle(ask("a"))
        assert response.status == 200 and content_of(response.body) == expected
        assert response.headers["x-flaregate-cache"] == "BYPASS"
    await tasks.drain()


async def test_a_corrupt_stored_entry_is_a_miss_is_deleted_and_never_reaches_the_client():
    transport = ScriptedTransport(completion("first"), completion("second"))
    gateway, _, tasks = build({"CACHE_MEMORY_MAX_ENTRIES": "0"}, transport=transport)
    await gateway.handle(ask("a"))
    await tasks.drain()
    kv = gateway.ports.cache.data
    [key] = [k for k in kv if k.startswith("fg:c2:")]
    value, expires = kv[key]
    kv[key] = (value[: len(value) // 2], expires)
    response = await gateway.handle(ask("a"))
    assert response.headers["x-flaregate-cache"] == "MISS" and content_of(response.body) == "second"
    assert gateway.caching.cache.stats()["cold"]["corrupt_deleted"] == 1
    await tasks.drain()
    assert json.loads(kv[key][0])["body"]  # replaced by the fresh answer


async def test_a_body_too_deep_to_key_is_served_uncached():
    gateway, _, _ = build({"MAX_JSON_DEPTH": "900"})  # the input limit (default 64) allows it
    deep = b"[" * 600 + b"]" * 600
    raw = b'{"model": "mock-1", "messages": [{"role": "user", "content": "x"}], "extra": ' + deep + b"}"
    response = await gateway.handle(chat(raw=raw))
    assert response.status == 200 and response.headers["x-flaregate-cache"] == "BYPASS"


async def test_tenants_never_read_each_other():
    transport = ScriptedTransport(completion("for one"), completion("for two"))
    gateway, _, _ = build({"FLAREGATE_API_KEYS": f"{KEY},second-key"}, transport=transport)
    await gateway.handle(ask("a"))
    other = await gateway.handle(chat({"model": "a", "messages": HELLO}, key="second-key"))
    assert other.headers["x-flaregate-cache"] == "MISS" and content_of(other.body) == "for two"
