"""The Realtime API through the real gateway (both hosts), with the official openai SDK's
``client.realtime.connect`` (unchanged but for base_url and the key) against the mock
upstream's Realtime endpoint: usage settled into the key's limits, a budget exhausted
mid-session, the per-key session limit, idle timeout, either side leaving, refused upgrades,
an oversized message, ephemeral client secrets, guardrails and the session's log record."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import openai
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from flaregate.security.signing import sign_request

from .conftest import ADMIN_KEY, GATEWAY_KEY, free_port, run_gateway, upstream_env

BUDGET_KEY = "fg-test-realtime-budget-key-0001"
SLOTS_KEY = "fg-test-realtime-slots-key-00002"
IDLE_SECONDS = 3
MAX_MESSAGE = 4096
GUARDRAILS = {"policies": {"redact": {"pii": ["email"]}}, "routes": {"gpt-guarded": "redact"}}


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    providers = [
        {"name": "upstream", "kind": "openai", "base_url": upstream.base_url + "/v1", "api_key_env": "UPSTREAM_API_KEY"},
        {"name": "claude", "kind": "anthropic", "base_url": upstream.base_url + "/v1", "api_key": "sk-ant-x"},
        {"name": "mock", "kind": "mock"},
        {"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout_seconds": 3},
    ]
    routes = {
        "gpt-failover": ["dead", "upstream"],
        "gpt-dead": ["dead"],
        "gpt-test": ["upstream"],
        "gpt-guarded": ["upstream"],
        "gpt-metered": ["upstream"],
        "gpt-priced": [{"provider": "upstream", "input_price_per_1m": 2000, "output_price_per_1m": 2000}],
        "claude-x": ["claude"],
        "mock-1": ["mock"],
    }
    env = upstream_env(
        upstream.base_url,
        FLAREGATE_API_KEYS=f"{GATEWAY_KEY},{BUDGET_KEY},{SLOTS_KEY}",
        FLAREGATE_PROVIDERS=json.dumps(providers),
        FLAREGATE_ROUTES=json.dumps(routes),
        FLAREGATE_RATE_LIMITS=json.dumps([{"name": "tpm", "algorithm": "fixed_window", "unit": "tokens",
                                           "limit": 1_000_000, "window_seconds": 366 * 86400}]),
        FLAREGATE_BUDGETS=json.dumps([{"name": "daily", "period": "day", "limit_usd": 0.3}]),
        FLAREGATE_GUARDRAILS=json.dumps(GUARDRAILS),
        REALTIME_MAX_SESSIONS_PER_KEY="2",
        REALTIME_IDLE_TIMEOUT_SECONDS=str(IDLE_SECONDS),
        REALTIME_MAX_MESSAGE_BYTES=str(MAX_MESSAGE),
        CACHE_TTL_SECONDS="0",
    )
    with run_gateway(tmp_path_factory.mktemp("realtime"), env) as gateway:
        yield gateway


def sdk(server, key: str = GATEWAY_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=20)


def admin_get(server, path: str) -> Any:
    headers = {"authorization": f"Bearer {ADMIN_KEY}", **sign_request(ADMIN_KEY, "GET", path)}
    response = httpx.get(server.base_url + path, headers=headers, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()


def key_id(key: str) -> str:
    import hashlib

    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def tokens_used(server, key: str) -> float:
    rows = admin_get(server, f"/admin/ratelimits/{key_id(key)}")["limits"]
    return next((r["used"] for r in rows if r["policy"] == "tpm"), 0)  # no row before the first use


def log_record(server, request_id: str, want: Any = None) -> dict:
    deadline = time.monotonic() + 30  # events reach the hub in batches
    while True:
        response = httpx.get(f"{server.base_url}/v1/logs/{request_id}", timeout=20,
                             headers={"authorization": f"Bearer {ADMIN_KEY}"})
        if response.status_code == 200 and (want is None or want(response.json())):
            return response.json()
        if time.monotonic() > deadline:
            pytest.fail(f"no log record {request_id}: {response.status_code} {response.text[:300]}")
        time.sleep(0.2)


def provider_error_kinds(server) -> set[str]:
    """The kinds of the recent errors in the health of the provider ``upstream``."""
    report = httpx.get(server.base_url + "/v1/providers", headers={"authorization": f"Bearer {GATEWAY_KEY}"}).json()
    kinds: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for error in node.get("recent_errors") or []:
                kinds.add(error.get("kind"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(report)
    return kinds


async def until(conn: Any, *types: str) -> tuple[list[Any], int | None]:
    """Events up to (and with) the first of ``types``, or until the socket closes: (events,
    the close code when it closed)."""
    seen: list[Any] = []
    try:
        while True:
            event = await asyncio.wait_for(conn.recv(), 30)
            seen.append(event)
            if event.type in types:
                return seen, None
    except ConnectionClosed as closed:
        return seen, closed.rcvd.code if closed.rcvd else None


async def ask(conn: Any, text: str, **response: Any) -> None:
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})
    await conn.response.create(**({"response": response} if response else {}))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_text_response_streams_through_and_its_usage_settles_into_the_key_limits_and_the_session_log(server):
    rid = f"req_rt_{uuid.uuid4().hex[:12]}"
    before = tokens_used(server, GATEWAY_KEY)

    async def session() -> Any:
        async with sdk(server).realtime.connect(model="gpt-test", extra_headers={"x-request-id": rid}) as conn:
            created, _ = await until(conn, "session.created")
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await ask(conn, "hello realtime")
            seen, _ = await until(conn, "response.done")
            return created[-1], seen

    created, seen = run(session())
    assert created.session.model == "gpt-test"
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert text == "echo: hello realtime"
    usage = seen[-1].response.usage
    assert usage.input_tokens > 0 and usage.output_tokens == 3
    deadline = time.monotonic() + 20
    while tokens_used(server, GATEWAY_KEY) != before + usage.total_tokens and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tokens_used(server, GATEWAY_KEY) == before + usage.total_tokens  # the real usage, settled
    record = log_record(server, rid, lambda r: r.get("realtime", {}).get("kind") == "session")
    summary = record["realtime"]
    assert record["status"] == 101 and record["model"] == "gpt-test" and record["provider"] == "upstream"
    assert summary["ended"] == "client_closed" and summary["responses"] == 1
    assert summary["messages_in"] == 3 and summary["messages_out"] >= len(seen)
    assert summary["tokens_in"] == usage.input_tokens and summary["tokens_out"] == usage.output_tokens
    assert summary["duration_s"] > 0
    response_record = log_record(server, rid + ".r1")  # each response is a record of its own, live
    assert response_record["tokens_in"] == usage.input_tokens and response_record["realtime"]["kind"] == "response"
    assert 0 < response_record["latency_ms"] <= record["latency_ms"]  # response.create to response.done


def test_each_response_reaches_metrics_as_it_ends_not_at_the_sessions_end(server):
    def tokens_in_metrics() -> float:
        text = httpx.get(server.base_url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("flaregate_tokens_total{") and 'model="gpt-metered"' in line)

    async def session() -> list[float]:
        seen = []
        async with sdk(server).realtime.connect(model="gpt-metered") as conn:
            await until(conn, "session.created")
            total = 0
            for text in ("first question", "second question"):
                await ask(conn, text)
                events, _ = await until(conn, "response.done")
                total += events[-1].response.usage.total_tokens
                for _ in range(200):  # the hub takes events in batches
                    if tokens_in_metrics() == total:
                        break
                    await asyncio.sleep(0.1)
                seen.append((tokens_in_metrics(), total))  # the session still open
        return seen

    for in_metrics, answered in run(session()):
        assert in_metrics == answered


def test_the_provider_gets_the_gateways_credential_never_the_clients_key(server, upstream):
    async def session() -> None:
        async with sdk(server).realtime.connect(model="gpt-test") as conn:
            await until(conn, "session.created")

    run(session())
    seen = [r for r in upstream.stats()["requests"] if r["path"] == "/v1/realtime"][-1]
    assert seen["headers"]["authorization"] == "Bearer sk-upstream-secret-abcdef"
    assert GATEWAY_KEY not in json.dumps(seen)
    assert "model=gpt-test" in seen["query"]


def test_a_budget_exhausted_mid_session_ends_it_with_an_error_event_and_a_close_code(server):
    async def session() -> tuple[int, list[Any], int | None]:
        async with sdk(server, BUDGET_KEY).realtime.connect(model="gpt-priced") as conn:
            await until(conn, "session.created")
            for answered in range(60):
                await ask(conn, f"spend a little more {answered}")
                seen, code = await until(conn, "response.done", "error")
                if code is not None or seen[-1].type == "error":
                    if code is None:
                        _, code = await until(conn)  # the close that follows the error
                    return answered, seen, code
        pytest.fail("the budget never ran out")

    answered, seen, code = run(session())
    assert answered >= 1  # some responses went through before the budget was spent
    error = seen[-1]
    assert error.type == "error" and error.error.code == "budget_exceeded"
    assert code == 1008


def test_a_key_holds_at_most_its_sessions_and_a_closed_one_gives_its_slot_back(server):
    async def sessions() -> tuple[int, str | None, str]:
        client = sdk(server, SLOTS_KEY)
        first = await client.realtime.connect(model="gpt-test").enter()
        second = await client.realtime.connect(model="gpt-test").enter()
        try:
            with pytest.raises(InvalidStatus) as refused:
                await client.realtime.connect(model="gpt-test").enter()
        finally:
            await first.close()
        status = refused.value.response.status_code
        retry = refused.value.response.headers.get("retry-after")
        body = json.loads(refused.value.response.body or b"{}")
        for _ in range(50):  # the slot is given back as the session's record is written
            try:
                third = await client.realtime.connect(model="gpt-test").enter()
                break
            except InvalidStatus:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the closed session's slot never came back")
        await third.close()
        await second.close()
        return status, retry, body["error"]["code"]

    status, retry, code = run(sessions())
    assert status == 429 and retry is not None and int(retry) >= 1 and code == "too_many_sessions"


def test_an_idle_session_is_closed_with_an_error_event(server):
    async def session() -> tuple[list[Any], int | None]:
        async with sdk(server).realtime.connect(model="gpt-test") as conn:
            return await until(conn, "never-sent")

    seen, code = run(session())
    assert seen[0].type == "session.created"
    assert seen[-1].type == "error" and seen[-1].error.code == "idle_timeout"
    assert code == 4000


def test_a_client_that_leaves_mid_response_closes_the_providers_socket(server, upstream):
    upstream.add_faults({"kind": "realtime_slow", "interval": 0.5})

    async def session() -> None:
        async with sdk(server).realtime.connect(model="gpt-test") as conn:
            await until(conn, "session.created")
            await ask(conn, "one two three four five six seven eight nine ten")
            await until(conn, "response.output_text.delta")
        # leaving the block closes the client's socket mid-response

    before = len(upstream.stats()["realtime"])
    run(session())
    deadline = time.monotonic() + 10
    while len(upstream.stats()["realtime"]) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    ended = upstream.stats()["realtime"][before:]
    assert ended and ended[0]["how"].startswith("client closed")


def test_a_provider_that_drops_mid_response_gives_the_client_an_error_and_a_close(server, upstream):
    upstream.add_faults({"kind": "realtime_drop", "after_chunks": 1})

    async def session() -> tuple[list[Any], int | None]:
        async with sdk(server).realtime.connect(model="gpt-test") as conn:
            await until(conn, "session.created")
            await ask(conn, "please answer at length")
            seen, code = await until(conn, "response.done", "error")
            if code is None:
                _, code = await until(conn)
            return seen, code

    seen, code = run(session())
    assert any(e.type == "response.output_text.delta" for e in seen)
    assert seen[-1].type == "error" and seen[-1].error.code == "upstream_disconnected"
    assert code == 1011
    assert "disconnect" in provider_error_kinds(server)  # counted against the provider's health


@pytest.mark.parametrize(("model", "key", "status", "code"), [
    ("gpt-test", "fg-not-a-key-000000000000000", 401, "invalid_api_key"),
    ("no-such-model", GATEWAY_KEY, 404, "model_not_found"),
    ("claude-x", GATEWAY_KEY, 400, "realtime_not_supported"),
    ("mock-1", GATEWAY_KEY, 400, "realtime_not_supported"),
])
def test_refused_upgrades_are_http_answers_never_a_101(server, model, key, status, code):
    async def connect() -> Any:
        with pytest.raises(InvalidStatus) as refused:
            await sdk(server, key).realtime.connect(model=model).enter()
        return refused.value.response

    response = run(connect())
    assert response.status_code == status
    assert json.loads(response.body)["error"]["code"] == code


def test_a_provider_that_refuses_the_upgrade_gives_the_client_an_error_event_and_a_close(server, upstream):
    upstream.add_faults({"kind": "realtime_refuse", "status": 403})
    rid = f"req_rt_{uuid.uuid4().hex[:12]}"

    async def session() -> tuple[list[Any], int | None]:
        async with sdk(server).realtime.connect(model="gpt-test", extra_headers={"x-request-id": rid}) as conn:
            return await until(conn, "never-sent")

    seen, code = run(session())
    assert [e.type for e in seen] == ["error"]  # no session.created: the provider never opened one
    assert seen[0].error.code == "upstream_refused" and seen[0].error.type == "server_error"
    assert "403" in seen[0].error.message
    assert code == 1011
    assert "connect" in provider_error_kinds(server)  # counted against the provider's health
    record = log_record(server, rid, lambda r: r.get("realtime", {}).get("kind") == "session")
    assert record["status"] == 502 and record["realtime"]["ended"] == "upstream_refused"
    assert record["upstream_attempts"] == [["upstream", False]]


def test_an_unreachable_provider_gives_the_client_an_error_event_and_a_close(server):
    async def session() -> tuple[list[Any], int | None]:
        async with sdk(server).realtime.connect(model="gpt-dead") as conn:
            return await until(conn, "never-sent")

    seen, code = run(session())
    assert [e.type for e in seen] == ["error"] and seen[0].error.code == "upstream_unreachable"
    assert code == 1011


def test_an_oversized_client_message_ends_the_session_with_1009(server):
    async def session() -> tuple[list[Any], int | None]:
        async with sdk(server).realtime.connect(model="gpt-test") as conn:
            await until(conn, "session.created")
            await ask(conn, "x" * (MAX_MESSAGE + 100))
            return await until(conn, "never-sent")

    seen, code = run(session())
    assert seen[-1].type == "error" and seen[-1].error.code == "message_too_large"
    assert code == 1009


def test_an_ephemeral_client_secret_opens_one_session_and_is_refused_the_second_time(server):
    async def flow() -> tuple[Any, Any, Any]:
        minted = await sdk(server).realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": 60},
            session={"type": "realtime", "model": "gpt-test", "instructions": "be brief"})
        browser = sdk(server, minted.value)  # the secret stands in for the key
        async with browser.realtime.connect(model="gpt-test") as conn:
            created, _ = await until(conn, "session.created", "session.updated")
        with pytest.raises(InvalidStatus) as again:
            await browser.realtime.connect(model="gpt-test").enter()
        return minted, created[-1], again.value.response

    minted, created, again = run(flow())
    assert minted.value.startswith("ek_") and minted.expires_at > time.time()
    assert created.type == "session.created"
    assert again.status_code == 401
    assert json.loads(again.body)["error"]["code"] == "invalid_client_secret"


def test_a_browser_authenticates_with_the_key_subprotocol_and_gets_the_realtime_one_back(server):
    url = server.base_url.replace("http://", "ws://") + "/v1/realtime?model=gpt-test"

    async def connect() -> tuple[str | None, dict]:
        async with websockets.connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{GATEWAY_KEY}"]) as ws:
            return ws.subprotocol, json.loads(await ws.recv())

    chosen, first = run(connect())
    assert chosen == "realtime" and first["type"] == "session.created"


def test_pii_in_a_conversation_item_and_in_instructions_is_redacted_before_the_provider_sees_it(server, upstream):
    async def session() -> tuple[str, str]:
        async with sdk(server).realtime.connect(model="gpt-guarded") as conn:
            await until(conn, "session.created")
            await conn.session.update(session={"type": "realtime", "instructions": "cc alice@example.org always"})
            updated, _ = await until(conn, "session.updated")
            await ask(conn, "mail bob@example.com now")
            seen, _ = await until(conn, "response.done")
            return updated[-1].session.instructions, "".join(
                e.delta for e in seen if e.type == "response.output_text.delta")

    instructions, text = run(session())
    assert "alice@example.org" not in instructions and instructions.startswith("cc ")  # as the provider got it
    assert "bob@example.com" not in text and text.startswith("echo: mail ")


def test_audio_and_cached_tokens_are_counted_in_the_session_record(server):
    rid = f"req_rt_{uuid.uuid4().hex[:12]}"

    async def session() -> list[Any]:
        usages = []
        async with sdk(server).realtime.connect(model="gpt-test", extra_headers={"x-request-id": rid}) as conn:
            await until(conn, "session.created")
            for text in ("speak to me", "and once more"):
                await ask(conn, text, output_modalities=["audio"])
                seen, _ = await until(conn, "response.done")
                assert any(e.type == "response.output_audio.delta" for e in seen)
                usages.append(seen[-1].response.usage)
        return usages

    usages = run(session())
    summary = log_record(server, rid, lambda r: r.get("realtime", {}).get("kind") == "session")["realtime"]
    assert summary["audio_tokens_out"] == sum(u.output_token_details.audio_tokens for u in usages) > 0
    assert summary["cached_tokens"] == sum(u.input_token_details.cached_tokens for u in usages) > 0
    assert summary["responses"] == 2


def test_a_key_out_of_requests_gets_429_with_retry_after_before_any_upgrade(upstream, tmp_path):
    """The upgrade takes one request unit: with a burst of 2 the third session is refused."""
    env = upstream_env(upstream.base_url, RATE_LIMIT_CAPACITY="2", RATE_LIMIT_REFILL_PER_SECOND="0.001")
    with run_gateway(tmp_path, env) as gateway:
        async def sessions() -> Any:
            for _ in range(2):
                async with sdk(gateway).realtime.connect(model="gpt-test") as conn:
                    await until(conn, "session.created")
            with pytest.raises(InvalidStatus) as refused:
                await sdk(gateway).realtime.connect(model="gpt-test").enter()
            return refused.value.response

        response = run(sessions())
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert json.loads(response.body)["error"]["code"] == "rate_limit_exceeded"


def test_a_session_fails_over_to_the_next_realtime_target_when_the_first_is_unreachable(server, upstream):
    rid = f"req_rt_{uuid.uuid4().hex[:12]}"

    async def session() -> Any:
        async with sdk(server).realtime.connect(model="gpt-failover", extra_headers={"x-request-id": rid}) as conn:
            created, _ = await until(conn, "session.created")
            return created[-1]

    assert run(session()).type == "session.created"  # "dead" first, unreachable; then "upstream"
    record = log_record(server, rid, lambda r: r.get("realtime", {}).get("kind") == "session")
    assert record["provider"] == "upstream" and record["failovers"] == 1
    assert record["upstream_attempts"] == [["dead", False], ["upstream", True]]


@pytest.fixture(scope="module")
def limited(upstream, tmp_path_factory):
    """A gateway whose sessions last at most 2 s and take at most 5 client events a second."""
    env = upstream_env(upstream.base_url, REALTIME_MAX_SESSION_SECONDS="2", REALTIME_MAX_MESSAGES_PER_SECOND="5")
    with run_gateway(tmp_path_factory.mktemp("realtime-limited"), env) as gateway:
        yield gateway


def test_a_session_past_its_duration_limit_ends_with_an_error_event_and_4001(limited):
    rid = f"req_rt_{uuid.uuid4().hex[:12]}"

    async def session() -> tuple[list[Any], int | None, int]:
        async with sdk(limited).realtime.connect(model="gpt-test", extra_headers={"x-request-id": rid}) as conn:
            await until(conn, "session.created")
            updates = 0
            while True:  # busy all along (never idle), slow enough for the message limit
                try:
                    await conn.session.update(session={"type": "realtime", "instructions": f"turn {updates}"})
                except ConnectionClosed:  # it ended while this side slept: what came before the close
                    seen, code = await until(conn)
                    return seen, code, updates
                updates += 1
                seen, code = await until(conn, "session.updated", "error")
                if code is not None or seen[-1].type == "error":
                    if code is None:
                        _, code = await until(conn)
                    return seen, code, updates
                await asyncio.sleep(0.3)

    seen, code, updates = run(session())
    assert seen[-1].type == "error" and seen[-1].error.code == "session_expired"
    assert code == 4001 and updates > 1
    summary = log_record(limited, rid, lambda r: r.get("realtime", {}).get("kind") == "session")["realtime"]
    assert summary["ended"] == "max_duration" and summary["close_code"] == 4001
    assert summary["duration_s"] >= 2  # never before its limit


def test_a_client_flooding_events_is_ended_with_an_error_event_and_1008_past_the_limit(limited, upstream):
    rid = f"req_rt_{uuid.uuid4().hex[:12]}"

    async def session() -> tuple[list[Any], int | None]:
        async with sdk(limited).realtime.connect(model="gpt-test", extra_headers={"x-request-id": rid}) as conn:
            await until(conn, "session.created")
            for n in range(12):  # at once: well past 5 in a second
                await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                          "content": [{"type": "input_text", "text": f"m{n}"}]})
            return await until(conn, "never-sent")

    upstream.reset()  # its records hold this session's only (at most 50 are kept)
    seen, code = run(session())
    errors = [e for e in seen if e.type == "error"]
    assert len(errors) == 1 and errors[0].error.code == "rate_limit_exceeded"
    assert errors[0].error.type == "rate_limit_error" and seen[-1] is errors[0]
    assert code == 1008
    summary = log_record(limited, rid, lambda r: r.get("realtime", {}).get("kind") == "session")["realtime"]
    assert summary["ended"] == "rate_limited" and summary["messages_in"] == 6  # the sixth ended it
    deadline = time.monotonic() + 10  # the mock records a session when its socket closes
    while not upstream.stats()["realtime"] and time.monotonic() < deadline:
        time.sleep(0.05)
    provider_side = upstream.stats()["realtime"]
    assert len(provider_side) == 1
    # Nothing past the limit relayed (the mock may not get to read the last ones before the close).
    assert 1 <= provider_side[0]["events"].count("conversation.item.create") <= 5
