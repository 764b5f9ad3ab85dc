"""The response cache through the real server, the real mock upstream and the openai SDK."""

import asyncio
import json
import time
import uuid

import httpx
import openai
import pytest

from flaregate.security.signing import sign_request

from .conftest import GATEWAY_KEY, TARGET, run_gateway, upstream_env

ADMIN_KEY = "fg-admin-test-key-0123456789"
CHAT = "/v1/chat/completions"


def unique(text: str = "cache") -> list[dict]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex[:8]}"}]


def upstream_calls(upstream) -> int:
    return upstream.stats()["calls"].get(CHAT, 0)


@pytest.fixture(scope="module")
def cached(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY)
    with run_gateway(tmp_path_factory.mktemp("cached"), env) as server:
        yield server


@pytest.fixture
def sdk(cached):
    return openai.OpenAI(base_url=cached.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)


def create(sdk, messages, stream=False, headers=None, **extra):
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-test", messages=messages, stream=stream,
                                                        extra_headers=headers or {}, **extra)
    return raw.headers, raw.parse()


def stream_text(stream) -> tuple[str, str | None]:
    content, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(content), finish


def admin_call(server, method: str, path: str, body=None, bearer: str = ADMIN_KEY) -> httpx.Response:
    """The admin API wants the admin key and a signed request (signed with the admin key)."""
    raw = json.dumps(body).encode() if body is not None else b""
    headers = {"authorization": f"Bearer {bearer}", "content-type": "application/json",
               **sign_request(ADMIN_KEY, method, path, raw)}
    return httpx.request(method, server.base_url + path, content=raw, headers=headers)


def admin_stats(server) -> dict:
    response = admin_call(server, "GET", "/admin/cache/stats")
    response.raise_for_status()
    return response.json()


def test_ttl_expiry_with_a_short_ttl(sdk):
    messages = unique("short-lived")
    ttl = {"x-flaregate-cache-ttl": "1"}
    assert create(sdk, messages, headers=ttl)[0]["x-flaregate-cache"] == "MISS"
    headers, _ = create(sdk, messages)
    assert headers["x-flaregate-cache"] == "HIT" and headers["cache-status"].startswith("flaregate; hit; ttl=")
    time.sleep(1.3)  # past the entry's own expiry in every tier (the stores keep rows until swept)
    assert create(sdk, messages)[0]["x-flaregate-cache"] == "MISS"


def test_a_streamed_miss_then_a_replayed_hit_identical_in_content(sdk, cached, upstream):
    messages = unique("stream these words for the cache, please")
    before = upstream_calls(upstream)
    miss_headers, miss = create(sdk, messages, stream=True)
    original, original_finish = stream_text(miss)
    hit_headers, hit = create(sdk, messages, stream=True)
    replayed, replayed_finish = stream_text(hit)
    assert (miss_headers["x-flaregate-cache"], hit_headers["x-flaregate-cache"]) == ("MISS", "HIT")
    assert replayed.encode() == original.encode() == f"echo: {messages[0]['content']}".encode()
    assert replayed_finish == original_finish == "stop"
    # The raw replay is well-formed SSE ending in [DONE]; a non-streaming request is served too.
    body = {"model": "gpt-test", "stream": True, "messages": messages}
    with httpx.stream("POST", cached.base_url + CHAT, json=body,
                      headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as response:
        text = "".join(response.iter_text())
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    json_headers, completion = create(sdk, messages)
    assert json_headers["x-flaregate-cache"] == "HIT" and completion.choices[0].message.content == original
    assert upstream_calls(upstream) == before + 1


def test_a_non_streamed_miss_serves_a_streamed_request(sdk, upstream):
    messages = unique("json first")
    _, completion = create(sdk, messages)
    headers, stream = create(sdk, messages, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert headers["x-flaregate-cache"] == "HIT"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == completion.choices[0].message.content
    assert chunks[-1].usage.total_tokens == completion.usage.total_tokens


@pytest.mark.parametrize("stream", [False, True])
async def test_twenty_concurrent_identical_requests_make_one_upstream_call(cached, upstream, stream):
    body = {"model": "gpt-test", "messages": unique("stampede"), "stream": stream}
    before = upstream_calls(upstream)
    # Hold the one upstream answer long enough for all twenty to arrive while it is in flight.
    upstream.add_faults({"kind": "delay", "seconds": 2.5, "path": CHAT})
    async with httpx.AsyncClient(base_url=cached.base_url, timeout=30,
                                 headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as client:
        responses = await asyncio.gather(*(client.post(CHAT, json=body) for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert upstream_calls(upstream) == before + 1
    assert len({r.text for r in responses}) == 1
    collapsed = [r for r in responses if "; collapsed" in r.headers["cache-status"]]
    assert len(collapsed) == 19 and all(r.headers["x-flaregate-cache"] == "MISS" for r in responses)
    if stream:
        assert responses[0].text.endswith("data: [DONE]\n\n")


def test_no_store_bypasses_the_cache_both_ways(sdk, upstream):
    messages = unique("private")
    before = upstream_calls(upstream)
    for _ in range(2):
        headers, _ = create(sdk, messages, headers={"cache-control": "no-store"})
        assert headers["x-flaregate-cache"] == "BYPASS" and headers["cache-status"] == "flaregate; fwd=bypass"
    assert create(sdk, messages)[0]["x-flaregate-cache"] == "MISS"  # nothing was stored
    assert upstream_calls(upstream) == before + 3


def test_no_cache_refreshes_the_entry(sdk, upstream):
    messages = unique("refresh me")
    _, first = create(sdk, messages)
    headers, refreshed = create(sdk, messages, headers={"cache-control": "no-cache"})
    assert headers["x-flaregate-cache"] == "REFRESH" and refreshed.id != first.id
    assert headers["cache-status"] == "flaregate; fwd=request; stored"
    hit_headers, hit = create(sdk, messages)
    assert hit_headers["x-flaregate-cache"] == "HIT" and hit.id == refreshed.id


def test_a_cut_stream_is_never_stored(sdk, upstream):
    messages = unique("one two three four five six")
    upstream.add_faults({"kind": "stream_cut", "after_chunks": 2, "path": CHAT})
    _, stream = create(sdk, messages, stream=True)
    with pytest.raises(openai.APIError):
        stream_text(stream)
    headers, stream = create(sdk, messages, stream=True)
    assert headers["x-flaregate-cache"] == "MISS" and stream_text(stream)[1] == "stop"


def test_purge_by_namespace_and_by_key_hash(sdk, cached):
    messages = unique("purge")
    team = {"x-flaregate-cache-namespace": "team-a", "x-flaregate-cache-debug": "1"}
    miss_headers, _ = create(sdk, messages, headers=team)
    key = miss_headers["x-flaregate-cache-key"]
    assert create(sdk, messages, headers=team)[0]["x-flaregate-cache"] == "HIT"
    assert create(sdk, messages)[0]["x-flaregate-cache"] == "MISS"  # the default namespace is separate
    purge = "/admin/cache/purge"
    assert admin_call(cached, "POST", purge, {"key": key}).json() == {"purged": {"key": key}}
    assert create(sdk, messages, headers=team)[0]["x-flaregate-cache"] == "MISS"
    assert create(sdk, messages, headers=team)[0]["x-flaregate-cache"] == "HIT"
    assert admin_call(cached, "POST", purge, {"namespace": "team-a"}).status_code == 200
    assert create(sdk, messages, headers=team)[0]["x-flaregate-cache"] == "MISS"
    assert create(sdk, messages)[0]["x-flaregate-cache"] == "HIT"  # other namespaces untouched
    refused = admin_call(cached, "POST", purge, {"namespace": "team-a"}, bearer=GATEWAY_KEY)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_admin_key"


def test_the_admin_api_is_absent_without_an_admin_key(upstream, tmp_path):
    env = upstream_env(upstream.base_url)
    del env["FLAREGATE_ADMIN_KEY"]
    # --no-admin-key: the local server would otherwise create one (admin-key.txt).
    with run_gateway(tmp_path / "no-admin", env, ("--no-admin-key",)) as gateway:
        response = httpx.post(gateway.base_url + "/admin/cache/purge", json={"namespace": "x"},
                              headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    # Closed either way: without an admin key there is no signing secret for /admin/ either.
    assert response.status_code == 403
    assert response.json()["error"]["code"] in ("admin_disabled", "signing_not_configured")


def test_hits_feed_the_hub(cached, sdk):
    messages = unique("hub")
    create(sdk, messages)
    _, hit = create(sdk, messages)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # analytics are published in the background
        stats = admin_stats(cached)
        if stats["requests"]["HIT"]:
            break
        time.sleep(0.05)
    assert stats["requests"]["HIT"] >= 1 and stats["hit_rate"] > 0


@pytest.fixture(scope="module")
def small_memory(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY, CACHE_MEMORY_MAX_BYTES="4000")
    with run_gateway(tmp_path_factory.mktemp("small-memory"), env) as server:
        yield server


def test_lru_eviction_by_size_falls_back_to_the_warm_tier(small_memory):
    sdk = openai.OpenAI(base_url=small_memory.base_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)
    # Each entry is about 1.5 KB: two fit in 4000 bytes of memory, three do not.
    a, b, c = (unique(name + " " + "x" * 1000) for name in "abc")
    create(sdk, a)
    assert create(sdk, a)[0]["cache-status"].endswith("detail=hot")
    create(sdk, b)
    create(sdk, c)  # evicts a, the least recently used
    memory = admin_stats(small_memory)["hot"]
    assert memory["evictions"] == 1 and memory["entries"] == 2 and memory["bytes"] <= 4000
    headers, _ = create(sdk, a)
    assert headers["x-flaregate-cache"] == "HIT" and headers["cache-status"].endswith("detail=warm")
    huge = unique("y" * 5000)  # larger than the whole memory tier: served from the warm tier only
    create(sdk, huge)
    assert create(sdk, huge)[0]["cache-status"].endswith("detail=warm")
    assert admin_stats(small_memory)["hot"]["rejected"] >= 1


def test_entries_survive_a_restart_in_the_sqlite_store(upstream, tmp_path):
    env = upstream_env(upstream.base_url)
    auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
    # Two hours outlives the warm tier, so the entry is in the cold one (SQLite / KV) on both
    # hosts. A default-TTL entry lives in hot + warm only: locally warm is SQLite too, so it
    # survives as well; on the edge warm is the Cache API, keyed under the Worker's own host,
    # and `wrangler dev` restarts on a new port (a deployed Worker keeps its host).
    ttls = ["7200", None] if TARGET == "local" else ["7200"]
    bodies = [{"model": "gpt-test", "messages": unique("persistent")} for _ in ttls]
    headers = [{**auth, **({"x-flaregate-cache-ttl": ttl} if ttl else {})} for ttl in ttls]
    with run_gateway(tmp_path, env) as server:
        firsts = [httpx.post(server.base_url + CHAT, json=b, headers=h) for b, h in zip(bodies, headers, strict=True)]
    with run_gateway(tmp_path, env) as server:
        agains = [httpx.post(server.base_url + CHAT, json=b, headers=h) for b, h in zip(bodies, headers, strict=True)]
    for first, again in zip(firsts, agains, strict=True):
        assert again.headers["cache-status"].startswith("flaregate; hit") and again.json() == first.json()
    assert json.loads(again.content) == json.loads(first.content)
