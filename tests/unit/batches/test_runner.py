"""The batch runner over a real job store (SQLite) and a real blob directory, with the
pipeline replaced by a scripted line runner: what it does with 429s, budgets, the key's
share, the completion window and a line that raises."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from flaregate.batches.runner import BatchRunner
from flaregate.batches.settings import BatchSettings
from flaregate.batches.store import JobStore
from flaregate.hosts.local.batch_worker import LocalJobClient
from flaregate.hosts.local.blob_dir import DirectoryBlobStore
from flaregate.http import Response
from flaregate.security.access import Principal
from tests.support.fakes import FakeClock, MemorySql

CHAT = "/v1/chat/completions"


class Script:
    """Answers lines by custom id: a list of (status, code, headers) to give in turn, then 200."""

    def __init__(self, clock: FakeClock, plan: dict[str, list[tuple[int, str, dict[str, str]]]],
                 out: dict[str, str] | None = None) -> None:
        self.clock = clock
        self.plan = plan
        self.out = out or {}
        self.calls: list[str] = []

    async def __call__(self, endpoint: str, body: bytes, principal: Principal,
                       batch_id: str) -> tuple[Response, dict[str, str]]:
        custom = json.loads(body)["messages"][0]["content"]
        self.calls.append(custom)
        if custom == "raise":
            raise RuntimeError("boom")
        steps = self.plan.get(custom) or []
        if steps:
            status, code, headers = steps.pop(0)
            error = {"error": {"message": code, "type": "x", "code": code, "param": None}}
            return Response(status, headers, json.dumps(error).encode()), dict(self.out)
        return Response(200, {}, json.dumps({"object": "chat.completion", "echo": custom}).encode()), dict(self.out)


async def _sleep_with(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    await asyncio.sleep(0)


def _rig(tmp_path, script_plan, out=None, **settings: Any):
    clock = FakeClock()
    jobs = LocalJobClient(JobStore(MemorySql()))
    blobs = DirectoryBlobStore(tmp_path)
    script = Script(clock, script_plan, out)

    async def principal_of(owner: str, endpoint: str) -> Principal | None:
        return Principal(owner, "config")

    runner = BatchRunner(BatchSettings(**{"concurrency": 2, **settings}), jobs, blobs, clock, script, principal_of,
                         sleep=lambda s: _sleep_with(clock, s))
    return clock, jobs, blobs, script, runner


async def _start(clock, jobs, blobs, names: list[str], window: int = 86400) -> str:
    data = b"".join(json.dumps({"custom_id": n, "method": "POST", "url": CHAT,
                                "body": {"model": "m", "messages": [{"role": "user", "content": n}]}}).encode() + b"\n"
                    for n in names)

    async def chunks():
        yield data

    await blobs.put("file-in", chunks())
    now = int(clock.now())
    await jobs.call("k", "batches.create", {"owner": "k", "batch": {
        "id": "batch_x", "endpoint": CHAT, "input_file_id": "file-in", "status": "validating", "created_at": now,
        "expires_at": now + window}})
    return "batch_x"


async def _lines(blobs, file_id) -> list[dict]:
    if file_id is None:
        return []
    chunks = await blobs.open(file_id)
    return [json.loads(line) for line in b"".join([c async for c in chunks]).splitlines()]


def test_rate_limited_lines_wait_their_retry_after_and_then_succeed(tmp_path):
    plan = {"a": [(429, "rate_limit_exceeded", {"retry-after": "2"})] * 3, "b": [(429, "upstream_rate_limited", {})]}
    clock, jobs, blobs, script, runner = _rig(tmp_path, plan)

    async def go():
        batch_id = await _start(clock, jobs, blobs, ["a", "b", "c"])
        started = clock.monotonic()
        assert await runner.run("k", batch_id, "me")
        done = await jobs.call("k", "batches.get", {"id": batch_id})
        return done, clock.monotonic() - started, await _lines(blobs, done["output_file_id"])

    done, waited, output = asyncio.run(go())
    assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert sorted(r["custom_id"] for r in output) == ["a", "b", "c"]
    assert script.calls.count("a") == 4 and script.calls.count("b") == 2
    assert waited >= 6  # a's three Retry-After: 2 (the fake clock: no real time passes)


def test_a_budget_exhausted_fails_the_line_and_every_pending_one(tmp_path):
    plan = {"n2": [(429, "budget_exceeded", {"retry-after": "100"})]}
    clock, jobs, blobs, script, runner = _rig(tmp_path, plan, concurrency=1)

    async def go():
        batch_id = await _start(clock, jobs, blobs, [f"n{i}" for i in range(8)])
        assert await runner.run("k", batch_id, "me")
        done = await jobs.call("k", "batches.get", {"id": batch_id})
        return done, await _lines(blobs, done["error_file_id"])

    done, errors = asyncio.run(go())
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 8, "completed": 2, "failed": 6}
    assert "n3" not in script.calls  # nothing sent after the budget ran out
    assert {r["custom_id"] for r in errors} == {f"n{i}" for i in range(2, 8)}
    assert all(r["response"]["body"]["error"]["code"] == "budget_exceeded" for r in errors)


def test_the_batch_pauses_when_the_keys_remaining_requests_fall_below_its_share(tmp_path):
    out = {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "3",
           "x-ratelimit-reset-requests": "7s"}
    clock, jobs, blobs, script, runner = _rig(tmp_path, {}, out, concurrency=1, max_share=0.5)

    async def go():
        batch_id = await _start(clock, jobs, blobs, ["a", "b", "c"])
        started = clock.monotonic()
        assert await runner.run("k", batch_id, "me")
        return clock.monotonic() - started

    assert asyncio.run(go()) >= 14  # after a and after b: 7 s each (3 left < half of 10)


def test_the_completion_window_ending_expires_the_batch_with_the_rest_in_the_error_file(tmp_path):
    clock, jobs, blobs, script, runner = _rig(tmp_path, {}, concurrency=1)

    async def go():
        batch_id = await _start(clock, jobs, blobs, [f"e{i}" for i in range(5)], window=-1)
        assert await runner.run("k", batch_id, "me")
        done = await jobs.call("k", "batches.get", {"id": batch_id})
        return done, await _lines(blobs, done["error_file_id"])

    done, errors = asyncio.run(go())
    assert done["status"] == "expired" and done["expired_at"] is not None
    assert done["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    assert {r["error"]["code"] for r in errors} == {"batch_expired"} and script.calls == []


def test_a_line_that_raises_in_the_gateway_is_an_error_line_not_a_dead_batch(tmp_path):
    clock, jobs, blobs, script, runner = _rig(tmp_path, {})

    async def go():
        batch_id = await _start(clock, jobs, blobs, ["ok", "raise"])
        assert await runner.run("k", batch_id, "me")
        done = await jobs.call("k", "batches.get", {"id": batch_id})
        return done, await _lines(blobs, done["error_file_id"])

    done, errors = asyncio.run(go())
    assert done["status"] == "completed" and done["request_counts"]["failed"] == 1
    assert errors[0]["custom_id"] == "raise" and errors[0]["error"]["code"] == "internal_error"


def test_a_slice_runs_at_most_its_lines_and_the_next_run_resumes_without_repeats(tmp_path):
    clock, jobs, blobs, script, runner = _rig(tmp_path, {}, concurrency=2)

    async def go():
        batch_id = await _start(clock, jobs, blobs, [f"s{i}" for i in range(7)])
        finished = [await runner.run("k", batch_id, "alarm", max_lines=3) for _ in range(4)]
        done = await jobs.call("k", "batches.get", {"id": batch_id})
        return finished, done, await _lines(blobs, done["output_file_id"])

    finished, done, output = asyncio.run(go())
    assert finished == [False, False, True, True]  # 3 + 3 + 1, then nothing left to do
    assert sorted(script.calls) == sorted(f"s{i}" for i in range(7))  # each sent once
    assert len(output) == 7 and done["status"] == "completed"


def test_a_runner_that_lost_its_lease_stops_and_leaves_the_batch_to_the_new_holder(tmp_path):
    clock, jobs, blobs, script, runner = _rig(tmp_path, {}, concurrency=1, lease_seconds=1.0)
    original = script.__call__
    started = asyncio.Event()

    async def slow(endpoint, body, principal, batch_id):
        await asyncio.sleep(0.05)  # real time: the lease renewal (every lease / 3 s) runs meanwhile
        answer = await original(endpoint, body, principal, batch_id)
        if len(script.calls) >= 2:
            started.set()
        return answer

    runner.run_line = slow

    async def go():
        batch_id = await _start(clock, jobs, blobs, [f"l{i}" for i in range(200)])
        task = asyncio.ensure_future(runner.run("k", batch_id, "a"))
        await started.wait()
        clock.advance(10)  # a paused past its lease: b takes the batch over
        assert await jobs.call("k", "lease.claim", {"id": batch_id, "holder": "b", "now": clock.now(),
                                                    "until": clock.now() + 1000})
        finished = await asyncio.wait_for(task, 10)
        return finished, await jobs.call("k", "batches.get", {"id": batch_id})

    finished, batch = asyncio.run(go())
    assert finished is False and batch["status"] == "in_progress"
    assert len(script.calls) < 200  # it stopped sending; b's run finishes the rest
