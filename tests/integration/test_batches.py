"""The Files and Batches APIs on either host, with the official openai SDK unchanged but for
``base_url``: uploads per key, a mixed batch, validation errors, cancellation, a rate-limited
key, a budget that runs out, and a restart mid-batch (kill -9 locally, wrangler dev stopped
hard on the edge) that ends with every line's result exactly once."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from flaregate.security.signing import sign_request
from tests.support.mock_upstream import MockUpstreamProcess

from .conftest import ADMIN_KEY, GATEWAY_KEY, TARGET, run_gateway, upstream_env

OTHER_KEY = "fg-test-other-key-5555555555"
BUDGET_KEY = "fg-test-batch-budget-key-777777"
CHAT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")


def sdk(server, key: str = GATEWAY_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=30)


def chat_line(custom_id: str, model: str = "gpt-test", text: str = "hello") -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"{text} {custom_id}"}]}}


def jsonl(lines: list) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def upload(client: openai.OpenAI, data: bytes, name: str = "input.jsonl"):
    return client.files.create(file=(name, io.BytesIO(data)), purpose="batch")


def wait_for(client: openai.OpenAI, batch_id: str, until=lambda b: b.status in FINAL, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)  # a poll also re-arms an edge alarm
        if until(batch):
            return batch
        if time.monotonic() > deadline:
            pytest.fail(f"batch {batch_id} stuck: {batch}")
        time.sleep(0.3)


def logged(server, batch_id: str, want: int, **params: str) -> list[dict]:
    """The request-log records of a batch's lines (tagged with its id), once ``want`` arrived."""
    deadline = time.monotonic() + 20  # events reach the hub in batches
    while True:
        data = httpx.get(server.base_url + "/v1/logs", params={"limit": "500", **params}, timeout=10,
                         headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]
        mine = [r for r in data if (r.get("tags") or {}).get("batch_id") == batch_id]
        if len(mine) >= want or time.monotonic() > deadline:
            return mine
        time.sleep(0.3)


def results(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).content.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    routes = {"gpt-test": ["upstream"], "mock-1": ["mock"],
              "gpt-priced": [{"provider": "upstream", "input_price_per_1m": 1000, "output_price_per_1m": 2000}]}
    env = upstream_env(upstream.base_url, FLAREGATE_API_KEYS=f"{GATEWAY_KEY},{OTHER_KEY},{BUDGET_KEY}",
                       FLAREGATE_ROUTES=json.dumps(routes), CACHE_TTL_SECONDS="0", FILES_MAX_BYTES="300000",
                       FLAREGATE_BUDGETS=json.dumps([{"name": "daily", "period": "day", "limit_usd": 0.2}]))
    with run_gateway(tmp_path_factory.mktemp("batches"), env) as gw:
        yield gw


def test_files_are_per_key_streamed_back_whole_and_capped(server):
    mine, other = sdk(server), sdk(server, OTHER_KEY)
    data = jsonl([chat_line(f"f-{i}", text="x" * 500) for i in range(200)])  # ~130 KB
    created = upload(mine, data)
    assert created.bytes == len(data) and created.purpose == "batch" and created.status == "processed"
    assert created.expires_at is not None and created.expires_at > created.created_at
    assert mine.files.retrieve(created.id).filename == "input.jsonl"
    assert mine.files.content(created.id).content == data
    assert created.id in [f.id for f in mine.files.list()]
    # Another key sees nothing of it: not in its list, and a 404 whatever it asks.
    assert created.id not in [f.id for f in other.files.list()]
    for call in (lambda: other.files.retrieve(created.id), lambda: other.files.content(created.id),
                 lambda: other.files.delete(created.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert mine.files.retrieve(created.id).id == created.id  # still there after the other key's delete
    # expires_after is honoured and checked.
    kept = mine.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="user_data",
                             expires_after={"anchor": "created_at", "seconds": 3600})
    assert kept.expires_at == kept.created_at + 3600
    with pytest.raises(openai.BadRequestError):
        mine.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="batch",
                          expires_after={"anchor": "created_at", "seconds": 5})
    with pytest.raises(openai.BadRequestError):
        mine.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="nonsense")  # type: ignore[arg-type]
    # Over FILES_MAX_BYTES: a clear 413, nothing stored.
    before = {f.id for f in mine.files.list()}
    with pytest.raises(openai.APIStatusError) as refused:
        upload(mine, b"x" * 400_000)
    assert refused.value.status_code == 413 and refused.value.body["code"] == "file_too_large"
    assert {f.id for f in mine.files.list()} == before
    assert mine.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        mine.files.retrieve(created.id)


def test_a_mixed_batch_puts_each_line_once_in_the_output_or_the_error_file(server):
    client = sdk(server)
    lines = [chat_line(f"ok-{i}") for i in range(6)]
    lines += [chat_line("unknown-model", model="no-such-model"),
              {**chat_line("bad-body"), "body": {"model": "gpt-test", "messages": "not a list"}},
              {**chat_line("streamed"), "body": {**chat_line("s")["body"], "stream": True}},
              {"custom_id": "embed-wrong-endpoint", "method": "POST", "url": CHAT,
               "body": {"model": "gpt-test", "input": "no messages"}}]
    source = upload(client, jsonl(lines))
    batch = client.batches.create(input_file_id=source.id, endpoint=CHAT, completion_window="24h",
                                  metadata={"job": "mixed"})
    assert batch.status == "validating" and batch.metadata == {"job": "mixed"}
    done = wait_for(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.total == 10 and done.request_counts.completed == 6 and done.request_counts.failed == 4
    output, errors = results(client, done.output_file_id), results(client, done.error_file_id)
    assert sorted(r["custom_id"] for r in output) == sorted(f"ok-{i}" for i in range(6))
    for row in output:
        assert row["response"]["status_code"] == 200 and row["error"] is None
        assert row["response"]["body"]["object"] == "chat.completion"
        assert row["id"].startswith("batch_req_")
    by_id = {r["custom_id"]: r for r in errors}
    assert set(by_id) == {"unknown-model", "bad-body", "streamed", "embed-wrong-endpoint"}
    assert all(400 <= by_id[c]["response"]["status_code"] < 500 for c in ("unknown-model", "bad-body",
                                                                          "embed-wrong-endpoint"))
    assert by_id["streamed"]["error"]["code"] == "invalid_request"
    # Each line was a request of the key through the pipeline, logged with the batch's id.
    records = logged(server, batch.id, 7)
    assert len([r for r in records if r["status"] == 200]) == 6
    assert {r["model"] for r in records if r["status"] == 200} == {"gpt-test"}
    listed = client.batches.list(limit=5)
    assert batch.id in [b.id for b in listed.data]
    # Another key cannot see the batch nor its files.
    other = sdk(server, OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id)
    assert batch.id not in [b.id for b in other.batches.list().data]


def test_a_malformed_file_fails_validation_with_openai_shaped_errors(server):
    client = sdk(server)
    lines = [chat_line("a"), b"{not json", chat_line("a"), {**chat_line("b"), "method": "GET"},
             {**chat_line("c"), "url": "/v1/embeddings"}, b"[1, 2]", b"x" * 1_100_000]
    batch = client.batches.create(input_file_id=upload(client, jsonl(lines[:-1])).id, endpoint=CHAT,
                                  completion_window="24h")
    done = wait_for(client, batch.id)
    assert done.status == "failed" and done.output_file_id is None
    codes = {(e.line, e.code) for e in done.errors.data}
    assert codes == {(2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_method"),
                     (5, "invalid_url"), (6, "invalid_json_line")}
    # An unknown input file, a wrong endpoint or window: refused at creation, never a 5xx.
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-doesnotexist", endpoint=CHAT, completion_window="24h")
    good = upload(client, jsonl([chat_line("z")]))
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=good.id, endpoint="/v1/images/generations",  # type: ignore[arg-type]
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=good.id, endpoint=CHAT, completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        sdk(server, OTHER_KEY).batches.create(input_file_id=good.id, endpoint=CHAT, completion_window="24h")


def test_a_line_over_the_line_limit_fails_validation(server):
    client = sdk(server)
    big = chat_line("big", text="y" * 1_000_100)
    source = client.files.create(file=("big.jsonl", io.BytesIO(jsonl([chat_line("a"), big]))), purpose="batch") \
        if len(jsonl([big])) < 300_000 else None
    if source is None:  # the file itself is over FILES_MAX_BYTES here: the upload is the 413
        with pytest.raises(openai.APIStatusError) as refused:
            upload(client, jsonl([chat_line("a"), big]))
        assert refused.value.status_code == 413


def test_a_budget_that_runs_out_fails_the_remaining_lines_with_a_clear_error(server):
    client = sdk(server, BUDGET_KEY)
    lines = [chat_line(f"spend-{i}", model="gpt-priced") for i in range(40)]  # a few cents each, 0.20 USD budget
    batch = client.batches.create(input_file_id=upload(client, jsonl(lines)).id, endpoint=CHAT,
                                  completion_window="24h")
    done = wait_for(client, batch.id)
    assert done.status == "completed"
    counts = done.request_counts
    assert counts.total == 40 and 0 < counts.completed < 40 and counts.completed + counts.failed == 40
    errors = results(client, done.error_file_id)
    assert len(errors) == counts.failed
    assert all(row["response"]["body"]["error"]["code"] == "budget_exceeded" for row in errors)
    seen = [r["custom_id"] for r in results(client, done.output_file_id)] + [r["custom_id"] for r in errors]
    assert sorted(seen) == sorted(line["custom_id"] for line in lines)


@pytest.fixture(scope="module")
def slow_upstream():
    with MockUpstreamProcess() as mock:
        yield mock


def _slow_env(upstream, **extra: str) -> dict[str, str]:
    return upstream_env(upstream.base_url, **{"FLAREGATE_API_KEYS": f"{GATEWAY_KEY},{OTHER_KEY}",
                                              "CACHE_TTL_SECONDS": "0", "BATCH_CONCURRENCY": "2",
                                              "BATCH_LEASE_SECONDS": "2", **extra})


def test_cancelling_mid_way_stops_the_batch_with_what_it_finished(slow_upstream, tmp_path):
    slow_upstream.reset()
    slow_upstream.add_faults({"kind": "delay", "seconds": 0.4, "path": CHAT, "times": -1})
    try:
        with run_gateway(tmp_path, _slow_env(slow_upstream)) as gw:
            client = sdk(gw)
            lines = [chat_line(f"c-{i}") for i in range(30)]
            batch = client.batches.create(input_file_id=upload(client, jsonl(lines)).id, endpoint=CHAT,
                                          completion_window="24h")
            wait_for(client, batch.id, lambda b: b.request_counts.completed >= 2)
            cancelling = client.batches.cancel(batch.id)
            assert cancelling.status in ("cancelling", "cancelled")
            done = wait_for(client, batch.id)
            assert done.status == "cancelled" and done.cancelled_at is not None
            assert 2 <= done.request_counts.completed < 30
            output = results(client, done.output_file_id)
            assert len(output) == done.request_counts.completed == len({r["custom_id"] for r in output})
            with pytest.raises(openai.APIStatusError) as again:
                client.batches.cancel(batch.id)
            assert again.value.status_code == 409
    finally:
        slow_upstream.reset()


def test_a_rate_limited_key_waits_its_turn_and_its_batch_completes(slow_upstream, tmp_path):
    slow_upstream.reset()
    env = _slow_env(slow_upstream, RATE_LIMIT_CAPACITY="3", RATE_LIMIT_REFILL_PER_SECOND="3", BATCH_CONCURRENCY="4")
    with run_gateway(tmp_path, env) as gw:
        client = sdk(gw)
        lines = [chat_line(f"r-{i}") for i in range(15)]
        batch = client.batches.create(input_file_id=upload(client, jsonl(lines)).id, endpoint=CHAT,
                                      completion_window="24h")
        done = wait_for(client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 15, done
        assert done.error_file_id is None
        assert sorted(r["custom_id"] for r in results(client, done.output_file_id)) == sorted(
            line["custom_id"] for line in lines)
        # It was refused on the way (the limit is 3 a second) and waited instead of failing.
        assert logged(gw, batch.id, 1, status="429"), "the batch never met its key's rate limit"


def _kill_hard(process) -> None:
    """kill -9: the server process (locally), or wrangler and its workerd (the process group)."""
    if TARGET == "edge":
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_restart_mid_batch_resumes_and_writes_every_result_exactly_once(slow_upstream, tmp_path):
    slow_upstream.reset()
    slow_upstream.add_faults({"kind": "delay", "seconds": 0.3, "path": CHAT, "times": -1})
    lines = [chat_line(f"k-{i}") for i in range(24)]
    try:
        with run_gateway(tmp_path, _slow_env(slow_upstream)) as gw:
            client = sdk(gw)
            batch = client.batches.create(input_file_id=upload(client, jsonl(lines)).id, endpoint=CHAT,
                                          completion_window="24h")
            midway = wait_for(client, batch.id, lambda b: b.request_counts.completed >= 4)
            assert midway.status == "in_progress"
            _kill_hard(gw.process)
        with run_gateway(tmp_path, _slow_env(slow_upstream)) as gw:  # the same data dir
            client = sdk(gw)
            done = wait_for(client, batch.id)
            assert done.status == "completed" and done.request_counts.completed == 24, done
            output = results(client, done.output_file_id)
            assert sorted(r["custom_id"] for r in output) == sorted(line["custom_id"] for line in lines)
            assert len({r["id"] for r in output}) == 24
    finally:
        slow_upstream.reset()


def test_batch_bad_requests_are_4xx(server):
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    for body in (b"{", b"[]", b'{"input_file_id": 1}', json.dumps({"input_file_id": "x", "endpoint": CHAT,
                                                                   "completion_window": "24h", "extra": 1}).encode()):
        answer = httpx.post(server.base_url + "/v1/batches", content=body,
                            headers={**headers, "content-type": "application/json"}, timeout=10)
        assert 400 <= answer.status_code < 500, answer.text
        assert "error" in answer.json()
    answer = httpx.post(server.base_url + "/v1/files", content=b"garbage", timeout=10,
                        headers={**headers, "content-type": "multipart/form-data; boundary=zz"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_multipart"
    assert httpx.get(server.base_url + "/v1/batches/batch_nope", headers=headers, timeout=10).status_code == 404
    assert httpx.get(server.base_url + "/v1/files", timeout=10).status_code == 401


def test_a_large_upload_streams_through_and_the_quota_is_per_key(upstream, tmp_path):
    """12 MiB: more than one 5 MiB part, so on the edge an R2 multipart upload; the quota
    (20 MiB) refuses the second one with a 413 and keeps the other key's room whole."""
    env = upstream_env(upstream.base_url, FLAREGATE_API_KEYS=f"{GATEWAY_KEY},{OTHER_KEY}",
                       FILES_QUOTA_BYTES=str(20 << 20))
    big = os.urandom(6 << 20) * 2
    with run_gateway(tmp_path, env) as gw:
        mine = sdk(gw)
        created = mine.files.create(file=("big.bin", io.BytesIO(big)), purpose="user_data")
        assert created.bytes == len(big)
        assert mine.files.content(created.id).content == big
        with pytest.raises(openai.APIStatusError) as refused:
            mine.files.create(file=("again.bin", io.BytesIO(big)), purpose="user_data")
        assert refused.value.status_code == 413 and refused.value.body["code"] == "storage_quota_exceeded"
        assert [f.id for f in mine.files.list()] == [created.id]  # the refused upload left nothing
        assert sdk(gw, OTHER_KEY).files.create(file=("theirs.bin", io.BytesIO(big)), purpose="user_data").bytes \
            == len(big)
        mine.files.delete(created.id)
        assert mine.files.create(file=("after.bin", io.BytesIO(big)), purpose="user_data").bytes == len(big)


def test_uploads_of_one_key_at_once_are_held_to_its_quota_together(upstream, tmp_path):
    """Two 12 MiB uploads at once against a 20 MiB quota: each begins with the whole room
    left, so only the check as each is stored can refuse one. Exactly one is kept."""
    env = upstream_env(upstream.base_url, FILES_QUOTA_BYTES=str(20 << 20))
    big = os.urandom(6 << 20) * 2
    with run_gateway(tmp_path, env) as gw:
        client = sdk(gw)

        def send(name: str) -> object:
            try:
                return client.files.create(file=(name, io.BytesIO(big)), purpose="user_data")
            except openai.APIStatusError as exc:
                return exc

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(send, ["one.bin", "two.bin"]))
        stored = [o for o in outcomes if not isinstance(o, openai.APIStatusError)]
        refused = [o for o in outcomes if isinstance(o, openai.APIStatusError)]
        assert len(stored) == 1 and len(refused) == 1, outcomes
        assert refused[0].status_code == 413 and refused[0].body["code"] == "storage_quota_exceeded"
        assert [f.id for f in client.files.list()] == [stored[0].id]
        assert client.files.content(stored[0].id).content == big


def test_a_batch_leaves_the_keys_interactive_traffic_its_share(slow_upstream, tmp_path):
    """A bucket of 20 requests refilled at 4 a second; the batch may use half of it
    (BATCH_MAX_SHARE=0.5): interactive requests at 2 a second all get through while it runs."""
    slow_upstream.reset()
    env = _slow_env(slow_upstream, RATE_LIMIT_CAPACITY="20", RATE_LIMIT_REFILL_PER_SECOND="4",
                    BATCH_CONCURRENCY="2", BATCH_MAX_SHARE="0.5")
    with run_gateway(tmp_path, env) as gw:
        client = sdk(gw)
        lines = [chat_line(f"s-{i}") for i in range(40)]
        batch = client.batches.create(input_file_id=upload(client, jsonl(lines)).id, endpoint=CHAT,
                                      completion_window="24h")
        statuses = []
        while True:
            answer = httpx.post(gw.base_url + CHAT, json=chat_line(f"live-{len(statuses)}")["body"], timeout=30,
                                headers={"authorization": f"Bearer {GATEWAY_KEY}"})
            statuses.append(answer.status_code)
            current = client.batches.retrieve(batch.id)
            if current.status in FINAL:
                break
            time.sleep(0.5)
        assert current.status == "completed" and current.request_counts.completed == 40, current
        assert len(statuses) >= 3 and set(statuses) == {200}, statuses


@pytest.mark.skipif(TARGET == "edge", reason="replicas sharing a files directory are the standalone server's "
                    "(on the edge one Durable Object per key runs its batches)")
def test_two_replicas_sharing_the_files_directory_run_each_line_once(slow_upstream, tmp_path):
    slow_upstream.reset()
    slow_upstream.add_faults({"kind": "delay", "seconds": 0.1, "path": CHAT, "times": -1})
    env = _slow_env(slow_upstream, FLAREGATE_FILES_DIR=str(tmp_path / "shared"))
    lines = [chat_line(f"p-{i}") for i in range(20)]
    try:
        with run_gateway(tmp_path / "a", env) as first, run_gateway(tmp_path / "b", env) as second:
            source = upload(sdk(first), jsonl(lines))
            assert sdk(second).files.retrieve(source.id).bytes == source.bytes  # one catalogue
            batch = sdk(second).batches.create(input_file_id=source.id, endpoint=CHAT, completion_window="24h")
            done = wait_for(sdk(first), batch.id)  # either replica may run it; both poll it
            assert done.status == "completed" and done.request_counts.completed == 20
            output = results(sdk(second), done.output_file_id)
            assert sorted(r["custom_id"] for r in output) == sorted(line["custom_id"] for line in lines)
            assert slow_upstream.stats()["calls"].get(CHAT) == 20  # the lease: one runner, each line sent once
    finally:
        slow_upstream.reset()


def test_an_embeddings_batch_runs_on_its_endpoint(server):
    client = sdk(server)
    lines = [{"custom_id": f"e-{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "gpt-test", "input": f"text {i}"}} for i in range(3)]
    batch = client.batches.create(input_file_id=upload(client, jsonl(lines)).id, endpoint="/v1/embeddings",
                                  completion_window="24h")
    done = wait_for(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3, done
    output = results(client, done.output_file_id)
    assert {r["custom_id"] for r in output} == {"e-0", "e-1", "e-2"}
    assert all(r["response"]["body"]["data"][0]["embedding"] for r in output)


def test_a_responses_batch_runs_on_its_endpoint(server):
    client = sdk(server)
    lines = [{"custom_id": f"r-{i}", "method": "POST", "url": "/v1/responses",
              "body": {"model": "mock-1", "input": f"say {i}"}} for i in range(2)]
    batch = client.batches.create(input_file_id=upload(client, jsonl(lines)).id, endpoint="/v1/responses",
                                  completion_window="24h")
    done = wait_for(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 2, (done, results(client, done.error_file_id))
    assert {r["response"]["body"]["object"] for r in results(client, done.output_file_id)} == {"response"}


def _admin(server, method: str, path: str, body=None) -> httpx.Response:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json",
               **sign_request(ADMIN_KEY, method, path, raw)}
    return httpx.request(method, server.base_url + path, content=raw, headers=headers, timeout=10)


def test_a_key_revoked_mid_batch_stops_its_batch(slow_upstream, tmp_path):
    slow_upstream.reset()
    slow_upstream.add_faults({"kind": "delay", "seconds": 0.2, "path": CHAT, "times": -1})
    try:
        with run_gateway(tmp_path, _slow_env(slow_upstream)) as gw:
            created = _admin(gw, "POST", "/admin/keys", {"name": "batcher"})
            assert created.status_code == 201, created.text
            stored = created.json()
            client = sdk(gw, stored["key"])
            lines = [chat_line(f"v-{i}") for i in range(150)]
            batch = client.batches.create(input_file_id=upload(client, jsonl(lines)).id, endpoint=CHAT,
                                          completion_window="24h")
            wait_for(client, batch.id, lambda b: b.request_counts.completed >= 2)
            assert _admin(gw, "DELETE", f"/admin/keys/{stored['id']}").status_code == 200
            # The runner looks the key up again for every page of lines (and each edge lane per
            # line): the batch stops sending soon, far short of its 150 lines.
            sent, deadline = -1, time.monotonic() + 60
            while (now := slow_upstream.stats()["calls"].get(CHAT, 0)) != sent:
                sent = now
                assert time.monotonic() < deadline, "the batch of a revoked key kept sending"
                time.sleep(2)
            assert sent < 120, sent
    finally:
        slow_upstream.reset()
