"""The semantic cache through the real server (or the Worker under `wrangler dev`), the real
mock upstream and the openai SDK: a paraphrase is a hit (JSON, streamed, Responses), a near
miss is not (one case per guard rule), partitions never answer each other, TTL, purge and
feedback reach it, and a failing embeddings route is a plain miss.

The embeddings come from the mock upstream's bag-of-words model (``bow-embed``): prompts
that share words are close, so a paraphrase here shares most of its words with the prompt
it matches. The mock upstream answers ``echo: <prompt>``: a hit shows the first prompt's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import openai
import pytest

from flaregate.security.signing import sign_request

from .conftest import ADMIN_KEY, GATEWAY_KEY, TARGET, free_port, run_gateway, upstream_env

OTHER_KEY = "fg-test-other-tenant-key-4567890"
SEM = {"threshold": 0.7, "embeddings": "bow-embed", "max_entries": 1000}


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    routes = {
        "gpt-test": ["upstream"], "bow-embed": ["upstream/bow-embed"], "dead-embed": ["dead"],
        "gpt-sem": {"targets": ["upstream"], "semantic_cache": SEM},
        "gpt-sem-user": {"targets": ["upstream"], "semantic_cache": {**SEM, "scope_by_user": True}},
        "gpt-sem-broken": {"targets": ["upstream"], "semantic_cache": {**SEM, "embeddings": "dead-embed"}},
    }
    env = upstream_env(upstream.base_url, FLAREGATE_ROUTES=json.dumps(routes), CACHE_TTL_SECONDS="300",
                       FLAREGATE_API_KEYS=f"{GATEWAY_KEY},{OTHER_KEY}", ANALYTICS_BATCH_DELAY_MS="10")
    with run_gateway(tmp_path_factory.mktemp("semantic"), env) as gateway:
        yield gateway


def sdk(server, key: str = GATEWAY_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=30)


def admin(server, method: str, path: str, body=None) -> httpx.Response:
    raw = json.dumps(body).encode() if body is not None else b""
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json",
               **sign_request(ADMIN_KEY, method, path, raw)}
    return httpx.request(method, server.base_url + path, content=raw, headers=headers, timeout=30)


def semantic_stats(server) -> dict:
    return admin(server, "GET", "/admin/cache/stats").json().get("semantic", {})


def ask(server, prompt: str, *, model: str = "gpt-sem", key: str = GATEWAY_KEY, system: str | None = None,
        headers: dict | None = None):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    raw = sdk(server, key).chat.completions.with_raw_response.create(model=model, messages=messages,
                                                                     extra_headers=headers or {})
    return raw.headers, raw.parse()


def answered(server, prompt: str, **kwargs) -> dict:
    """Ask, then wait until the answer is in the index (indexing runs after the answer)."""
    before = semantic_stats(server).get("indexed", 0)
    headers, _ = ask(server, prompt, **kwargs)
    assert "hit" not in headers["cache-status"]
    for _ in range(100):
        if semantic_stats(server).get("indexed", 0) > before:
            return headers
        time.sleep(0.05)
    raise AssertionError("the answer was never indexed")


def tag() -> str:
    return uuid.uuid4().hex[:6]


def test_a_paraphrase_is_a_semantic_hit(server):
    t = tag()
    answered(server, f"What is the capital city of France in {t} times?")
    headers, completion = ask(server, f"What's the capital city of France in {t} times, please?")
    assert headers["cache-status"].startswith("flaregate; hit") and "detail=semantic" in headers["cache-status"]
    assert float(headers["x-flaregate-semantic-similarity"]) >= SEM["threshold"]
    assert len(headers["x-flaregate-semantic-entry"]) == 64
    assert completion.choices[0].message.content == f"echo: What is the capital city of France in {t} times?"
    # The request log (and the analytics event it comes from) names the entry and the similarity,
    # and the embedding's cost, the gateway's own.
    for _ in range(100):
        record = httpx.get(f"{server.base_url}/v1/logs/{headers['x-request-id']}", timeout=30,
                           headers={"authorization": f"Bearer {ADMIN_KEY}"})
        if record.status_code == 200:
            break
        time.sleep(0.1)
    assert record.status_code == 200, record.text
    logged = record.json()
    assert logged["semantic_entry"] == headers["x-flaregate-semantic-entry"]
    assert logged["semantic_similarity"] == pytest.approx(float(headers["x-flaregate-semantic-similarity"]), abs=1e-4)
    assert logged["semantic_embed_tokens"] > 0 and logged["cache"] == "HIT"


def test_a_paraphrase_is_replayed_as_a_stream(server):
    t = tag()
    answered(server, f"Tell me how a refrigerator works inside {t}")
    raw = sdk(server).chat.completions.with_raw_response.create(
        model="gpt-sem", stream=True, messages=[{"role": "user", "content": f"Please tell me how a refrigerator works inside {t}"}])
    assert "detail=semantic" in raw.headers["cache-status"]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text == f"echo: Tell me how a refrigerator works inside {t}"


def test_responses_paraphrase_is_a_hit(server):
    t = tag()
    client = sdk(server)
    first = client.responses.with_raw_response.create(model="gpt-sem", input=f"Explain how vaccines work {t}")
    assert "hit" not in first.headers["cache-status"]
    for _ in range(100):
        raw = client.responses.with_raw_response.create(model="gpt-sem", input=f"Explain how vaccines work {t} please")
        if "detail=semantic" in raw.headers["cache-status"]:
            break
        time.sleep(0.05)  # until the first answer is indexed (each miss here indexes its own too)
    assert "detail=semantic" in raw.headers["cache-status"]
    assert raw.parse().output_text == first.parse().output_text


@pytest.mark.parametrize(("rule", "first", "second"), [
    ("numbers", "What is 2 + 2 in total for {t}?", "What is 2 + 3 in total for {t}?"),
    ("negations", "Is coffee good for my health {t}?", "Is coffee not good for my health {t}?"),
    ("entities", "What is the capital city of France {t}?", "What is the capital city of Germany {t}?"),
    ("units", "Convert 10 miles to kilometers please {t}", "Convert 10 miles to meters please {t}"),
    ("languages", "Answer in English please: what is DNA {t}?", "Answer in French please: what is DNA {t}?"),
    ("spans", "What does `ls -la` show me {t}?", "What does `ls -lh` show me {t}?"),
])
def test_a_near_miss_is_a_miss(server, rule, first, second):
    t = tag()
    answered(server, first.format(t=t))
    before = semantic_stats(server).get(f"guard_{rule}", 0)
    headers, completion = ask(server, second.format(t=t))
    assert "hit" not in headers["cache-status"]
    assert completion.choices[0].message.content == "echo: " + second.format(t=t)
    assert semantic_stats(server).get(f"guard_{rule}", 0) == before + 1  # the guard, not the threshold


def test_partitions_never_answer_each_other(server):
    t = tag()
    answered(server, f"Summarize the plot of Hamlet for me {t}", system="You are terse.")
    # Another system prompt, another tenant: misses; the same system prompt and tenant: a hit.
    headers, _ = ask(server, f"Summarize the plot of Hamlet for me please {t}", system="You are verbose.")
    assert "hit" not in headers["cache-status"]
    headers, _ = ask(server, f"Please summarize the plot of Hamlet for me {t}", system="You are terse.",
                     key=OTHER_KEY)
    assert "hit" not in headers["cache-status"]
    headers, _ = ask(server, f"Summarize the plot of Hamlet for me now {t}", system="You are terse.")
    assert "detail=semantic" in headers["cache-status"]


def test_scoped_by_user_another_user_never_hits(server):
    t = tag()
    answered(server, f"What is my account balance today {t}?", model="gpt-sem-user",
             headers={"x-flaregate-end-user": "alice"})
    headers, _ = ask(server, f"What is my account balance today please {t}?", model="gpt-sem-user",
                     headers={"x-flaregate-end-user": "bob"})
    assert "hit" not in headers["cache-status"]
    headers, _ = ask(server, f"What is my account balance right today {t}?", model="gpt-sem-user",
                     headers={"x-flaregate-end-user": "alice"})
    assert "detail=semantic" in headers["cache-status"]
    # Scoped by user and no user named: never shared.
    headers, _ = ask(server, f"What is my account balance today now {t}?", model="gpt-sem-user")
    assert "hit" not in headers["cache-status"]


def test_opt_out_header_and_no_store(server):
    t = tag()
    answered(server, f"Recommend a good science fiction book {t}")
    for headers in ({"x-flaregate-semantic-cache": "off"}, {"cache-control": "no-store"}):
        got, _ = ask(server, f"Recommend a good science fiction book please {t}", headers=headers)
        assert "hit" not in got["cache-status"]


def test_ttl_expiry(server):
    t = tag()
    answered(server, f"How do I change a flat tire quickly {t}?", headers={"x-flaregate-cache-ttl": "1"})
    time.sleep(2.2)
    headers, _ = ask(server, f"How do I change a flat tire quickly please {t}?")
    assert "hit" not in headers["cache-status"]


def test_purge_by_key_and_namespace(server):
    t = tag()
    first = answered(server, f"How do I reset my home router {t}?", headers={"x-flaregate-cache-debug": "1"})
    assert admin(server, "POST", "/admin/cache/purge", {"key": first["x-flaregate-cache-key"]}).status_code == 200
    headers, _ = ask(server, f"How do I reset my home router please {t}?")
    assert "hit" not in headers["cache-status"]
    ns = {"x-flaregate-cache-namespace": f"ns-{t}"}
    answered(server, f"What is a black hole in space {t}?", headers=ns)
    assert admin(server, "POST", "/admin/cache/purge", {"namespace": f"ns-{t}"}).status_code == 200
    headers, _ = ask(server, f"What is a black hole in space please {t}?", headers=ns)
    assert "hit" not in headers["cache-status"]


def test_feedback_deletes_the_entry_and_counts_a_false_hit(server):
    t = tag()
    answered(server, f"Give me a recipe for pancakes tonight {t}")
    headers, _ = ask(server, f"Give me a recipe for pancakes tonight please {t}")
    assert "detail=semantic" in headers["cache-status"]
    request_id = headers["x-request-id"]
    # Only the admin reports: a gateway key (the tenant's, or another's) cannot delete entries.
    for key in (GATEWAY_KEY, OTHER_KEY):
        refused = httpx.post(server.base_url + "/admin/cache/feedback", timeout=30,
                             headers={"authorization": f"Bearer {key}"}, json={"request_id": request_id, "wrong": True})
        assert refused.status_code == 401, refused.text
    result = admin(server, "POST", "/admin/cache/feedback", {"request_id": request_id, "wrong": True})
    assert result.status_code == 200, result.text
    assert result.json()["deleted"]["entry"] == headers["x-flaregate-semantic-entry"]
    headers, _ = ask(server, f"Give me a recipe for pancakes tonight now {t}")
    assert "hit" not in headers["cache-status"]
    again = admin(server, "POST", "/admin/cache/feedback", {"request_id": request_id, "wrong": True})
    assert again.status_code == 404
    for bad in ({"request_id": "x y"}, {"request_id": request_id, "wrong": False}, {"nope": 1}, []):
        assert admin(server, "POST", "/admin/cache/feedback", bad).status_code == 400
    for _ in range(100):
        metrics = admin(server, "GET", "/metrics").text
        if 'flaregate_operational_events_total{type="semantic_false_hit"}' in metrics:
            break
        time.sleep(0.1)
    assert 'flaregate_operational_events_total{type="semantic_false_hit"}' in metrics


def test_a_failing_embeddings_route_is_a_plain_miss(server):
    t = tag()
    for prompt in (f"Why is the sky blue today {t}?", f"Why is the sky blue today please {t}?"):
        headers, completion = ask(server, prompt, model="gpt-sem-broken")
        assert "hit" not in headers["cache-status"]
        assert completion.choices[0].message.content == "echo: " + prompt


def test_a_key_whose_policy_turns_it_off_uses_the_exact_cache_only(server):
    created = admin(server, "POST", "/admin/keys", {"name": "exact-only", "semantic_cache": False})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    t = tag()
    before = semantic_stats(server)
    ask(server, f"How do I cook rice on a stove {t}?", key=key)
    headers, _ = ask(server, f"How do I cook rice on a stove please {t}?", key=key)
    assert "hit" not in headers["cache-status"]
    # A header cannot turn it back on: the key's policy decides, not the client.
    headers, _ = ask(server, f"How do I cook rice on a stove now {t}?", key=key,
                     headers={"x-flaregate-semantic-cache": "on"})
    assert "hit" not in headers["cache-status"]
    exact, _ = ask(server, f"How do I cook rice on a stove {t}?", key=key)
    assert "hit" in exact["cache-status"] and "detail=semantic" not in exact["cache-status"]
    time.sleep(0.5)  # what would have been indexed in the background by now
    after = semantic_stats(server)
    # Neither looked up nor indexed: this key's requests never reach the semantic cache.
    assert (after.get("lookups", 0), after.get("indexed", 0)) == (before.get("lookups", 0), before.get("indexed", 0))


@pytest.mark.parametrize(("semantic", "named"), [
    ({"threshold": 1.5}, "semantic_cache.threshold"),
    ({"embeddings": "nowhere"}, "semantic_cache.embeddings names unknown route 'nowhere'"),
    ({"thresold": 0.8}, "semantic_cache.thresold"),
])
def test_bad_config_stops_the_start_naming_the_field(upstream, tmp_path, semantic, named):
    """The standalone server does not start (exit 2, the field in its message); the Worker,
    which has no start-up step, answers every request 500 ``configuration_error`` and logs
    the field (never in the answer)."""
    routes = {"gpt-sem": {"targets": ["upstream"], "semantic_cache": semantic}}
    env = upstream_env(upstream.base_url, FLAREGATE_ROUTES=json.dumps(routes))
    if TARGET == "edge":
        with run_gateway(tmp_path, env) as gateway:
            response = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=30,
                                  headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                                  json={"model": "gpt-sem", "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == 500 and response.json()["error"]["code"] == "configuration_error"
            assert "semantic_cache" not in response.text
            for _ in range(50):
                if named in gateway.log():
                    break
                time.sleep(0.1)
            assert named in gateway.log()
        return
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLAREGATE_", "RATE_LIMIT", "CACHE_"))}
    result = subprocess.run([sys.executable, "-m", "flaregate", "serve", "--port", str(free_port()),
                             "--data-dir", str(tmp_path)], env={**clean, **env}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr


def test_the_embedding_call_is_the_gateways_own_never_the_keys(upstream, tmp_path):
    """A key allowed three requests makes three (a miss, another miss, a semantic hit), each
    with its embedding call, and only the fourth is refused: the embedding calls never count
    against the key's limits (were they counted, the second request would spend the last)."""
    routes = {"bow-embed": ["upstream/bow-embed"], "gpt-sem": {"targets": ["upstream"], "semantic_cache": SEM}}
    env = upstream_env(upstream.base_url, FLAREGATE_ROUTES=json.dumps(routes), CACHE_TTL_SECONDS="300",
                       RATE_LIMIT_CAPACITY="3", RATE_LIMIT_REFILL_PER_SECOND="0.0001", RATE_LIMIT_LEASE="0",
                       ANALYTICS_BATCH_DELAY_MS="10")
    with run_gateway(tmp_path, env) as gateway:
        t = tag()
        answered(gateway, f"How do tides follow the moon {t}?")
        headers, _ = ask(gateway, f"Why is the ocean salty today {t}?")
        assert "hit" not in headers["cache-status"]
        headers, _ = ask(gateway, f"How do tides follow the moon please {t}?")
        assert "detail=semantic" in headers["cache-status"]
        with pytest.raises(openai.RateLimitError):
            ask(gateway, f"What makes a rainbow appear {t}?")
