"""The Worker's batched ``call_soon`` (hosts/edge/event_loop.py) on CPython, with the runtime's
microtasks and its next turn played by recorders (or by the loop's own ``call_soon``)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from flaregate.hosts.edge.event_loop import PromiseRejected, ReadyBatches

owner: contextvars.ContextVar[Any] = contextvars.ContextVar("test_owner")


class Runtime:
    """Records each one-shot callback the batches ask for; runs them on demand."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def schedule(self, run: Any) -> None:
        self.pending.append(run)

    def run_all(self) -> None:
        while self.pending:
            self.pending.pop(0)()


loop = asyncio.new_event_loop()


def in_context(name: Any) -> contextvars.Context:
    ctx = contextvars.copy_context()
    ctx.run(owner.set, name)
    return ctx


def make() -> tuple[ReadyBatches, Runtime]:
    """Batches whose microtasks are recorded in the returned Runtime (the next turn, unused
    by these tests, in another one)."""
    runtime = Runtime()
    return ReadyBatches(loop, runtime.schedule, Runtime().schedule, owner), runtime


def test_ready_callbacks_of_one_request_run_in_order_from_one_runtime_callback():
    batches, runtime = make()
    ran: list[int] = []
    ctx = in_context("request-1")
    for i in range(5):
        batches.call_soon(ran.append, i, context=ctx)
    assert len(runtime.pending) == 1 and ran == []
    runtime.run_all()
    assert ran == [0, 1, 2, 3, 4]


def test_each_request_gets_its_own_runtime_callback():
    batches, runtime = make()
    ran: list[str] = []
    a, b = in_context("a"), in_context("b")
    batches.call_soon(ran.append, "a1", context=a)
    batches.call_soon(ran.append, "b1", context=b)
    batches.call_soon(ran.append, "a2", context=a)
    assert len(runtime.pending) == 2
    runtime.pending.pop(1)()  # b's runs alone
    assert ran == ["b1"]
    runtime.run_all()
    assert ran == ["b1", "a1", "a2"]


def test_a_callback_made_ready_during_a_batch_waits_for_the_next_one():
    batches, runtime = make()
    ran: list[str] = []
    ctx = in_context("r")

    def first() -> None:
        ran.append("first")
        batches.call_soon(ran.append, "later", context=ctx)

    batches.call_soon(first, context=ctx)
    runtime.pending.pop(0)()
    assert ran == ["first"] and len(runtime.pending) == 1
    runtime.pending.pop(0)()
    assert ran == ["first", "later"]


def test_a_cancelled_handle_does_not_run():
    batches, runtime = make()
    ran: list[int] = []
    ctx = in_context("r")
    batches.call_soon(ran.append, 1, context=ctx).cancel()
    batches.call_soon(ran.append, 2, context=ctx)
    runtime.run_all()
    assert ran == [2]


def test_system_exit_goes_to_the_loops_handler_when_it_has_one():
    runtime, turn = Runtime(), Runtime()
    batches = ReadyBatches(loop, runtime.schedule, turn.schedule, owner)
    codes: list[Any] = []
    loop._system_exit_handler = codes.append  # type: ignore[attr-defined]  # WebLoop's hook
    try:
        ctx = in_context("r")
        ran: list[int] = []
        batches.call_soon(lambda: (_ for _ in ()).throw(SystemExit(7)), context=ctx)
        batches.call_soon(ran.append, 2, context=ctx)
        runtime.run_all()
        assert codes == [7] and ran == []
        turn.run_all()  # the rest, at the runtime's next turn
        assert ran == [2]
    finally:
        del loop._system_exit_handler  # type: ignore[attr-defined]


def test_an_exception_goes_to_the_loops_handler_and_the_rest_still_run():
    batches, runtime = make()
    seen: list[Any] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context["exception"]))
    ran: list[int] = []
    ctx = in_context("r")
    batches.call_soon(lambda: 1 / 0, context=ctx)
    batches.call_soon(ran.append, 2, context=ctx)
    runtime.run_all()
    assert ran == [2] and isinstance(seen[0], ZeroDivisionError)
    loop.set_exception_handler(None)


def test_system_exit_propagates_and_the_rest_run_in_a_later_callback():
    runtime, turn = Runtime(), Runtime()
    batches = ReadyBatches(loop, runtime.schedule, turn.schedule, owner)
    ran: list[int] = []
    ctx = in_context("r")

    def stop() -> None:
        raise SystemExit(3)

    batches.call_soon(stop, context=ctx)
    batches.call_soon(ran.append, 2, context=ctx)
    with pytest.raises(SystemExit):
        runtime.pending.pop(0)()
    assert ran == [] and runtime.pending == []  # the rest wait for the runtime's next turn
    assert len(turn.pending) == 1
    turn.run_all()
    assert ran == [2]


def test_asyncio_work_in_a_request_completes_with_fewer_runtime_callbacks_than_callbacks():
    """Futures, tasks and sleeps on a loop whose call_soon is batched: the same results, and
    a future's wake-up and done callbacks share one runtime callback."""
    real = asyncio.new_event_loop()
    original = real.call_soon
    scheduled = 0
    handles = 0

    def schedule(run: Any) -> None:
        nonlocal scheduled
        scheduled += 1
        original(run)

    batches = ReadyBatches(real, schedule, schedule, owner)

    def counting(callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        nonlocal handles
        handles += 1
        return batches.call_soon(callback, *args, context=context)

    real.call_soon = counting  # type: ignore[method-assign,assignment]

    async def request() -> list[int]:
        owner.set("request")
        out = []
        for i in range(10):
            future = real.create_future()
            future.add_done_callback(lambda _f: None)  # a second done callback, as WebLoop adds
            real.call_later(0, future.set_result, i)
            out.append(await future)
            await asyncio.sleep(0)
        inner = [real.create_task(asyncio.sleep(0, result=n)) for n in range(3)]
        out.extend(await asyncio.gather(*inner))
        return out

    try:
        result = real.run_until_complete(request())
    finally:
        real.close()
    assert result == [*range(10), 0, 1, 2]
    assert handles > scheduled > 0


def test_batches_run_as_microtasks_until_a_chain_of_them_reschedules_itself_too_long():
    from flaregate.hosts.edge.event_loop import MAX_MICROTASK_CHAIN

    runtime, microtasks = Runtime(), Runtime()
    batches = ReadyBatches(loop, microtasks.schedule, runtime.schedule, owner)
    ctx = in_context("spinning")
    turns = 0

    def spin() -> None:  # what ``while True: await asyncio.sleep(0)`` does
        nonlocal turns
        turns += 1
        batches.call_soon(spin, context=ctx)

    batches.call_soon(spin, context=ctx)
    assert len(microtasks.pending) == 1 and runtime.pending == []
    while microtasks.pending:  # the microtask checkpoint: runs until nothing is queued
        microtasks.pending.pop(0)()
    assert turns == MAX_MICROTASK_CHAIN
    assert len(runtime.pending) == 1  # then it waits for the runtime's next turn, where I/O runs
    runtime.pending.pop(0)()
    assert len(microtasks.pending) == 1  # and starts a new chain from there


def test_a_batch_made_ready_by_another_requests_batch_starts_its_own_chain():
    runtime, microtasks = Runtime(), Runtime()
    batches = ReadyBatches(loop, microtasks.schedule, runtime.schedule, owner)
    ran: list[str] = []
    a, b = in_context("a"), in_context("b")
    batches.call_soon(lambda: batches.call_soon(ran.append, "b", context=b), context=a)
    microtasks.pending.pop(0)()
    assert len(microtasks.pending) == 1 and runtime.pending == []
    microtasks.pending.pop(0)()
    assert ran == ["b"]


def test_with_microtasks_a_callback_outside_a_request_is_a_microtask_of_its_own():
    runtime, microtasks = Runtime(), Runtime()
    batches = ReadyBatches(loop, microtasks.schedule, runtime.schedule, owner)
    ran: list[int] = []
    outside = contextvars.Context()
    batches.call_soon(ran.append, 1, context=outside)
    batches.call_soon(ran.append, 2, context=outside)
    assert len(microtasks.pending) == 2 and runtime.pending == []  # not batched together
    microtasks.pending.pop(0)()
    assert ran == [1]
    microtasks.pending.pop(0)()
    assert ran == [1, 2]


# -- settle: a JS promise's reaction resolving the awaiting future --------------------------------
def test_a_settling_promise_runs_what_it_makes_ready_in_its_own_reaction():
    """What a future's resolution makes ready (its done callbacks, and what those make ready
    in turn) runs inside settle(), with no runtime callback asked for."""
    runtime, turn = Runtime(), Runtime()
    batches = ReadyBatches(loop, runtime.schedule, turn.schedule, owner)
    ctx = in_context("r")
    ran: list[Any] = []
    future: asyncio.Future[int] = loop.create_future()
    # The future's own callbacks go through the loop's call_soon: here, the batches'.
    loop.call_soon = batches.call_soon  # type: ignore[method-assign]
    try:
        future.add_done_callback(lambda f: ran.append(f.result()), context=ctx)
        future.add_done_callback(lambda f: batches.call_soon(ran.append, "next", context=ctx), context=ctx)
        batches.settle(future.set_result, future, 42)
    finally:
        del loop.call_soon  # type: ignore[method-assign]
    assert ran == [42, "next"]
    assert runtime.pending == [] and turn.pending == []


def test_settle_leaves_a_future_that_is_already_done_alone():
    batches, runtime = make()
    future: asyncio.Future[int] = loop.create_future()
    future.cancel()
    batches.settle(future.set_result, future, 1)  # set_result would raise InvalidStateError
    assert future.cancelled() and runtime.pending == []


def test_settle_with_an_exception_reaches_the_awaiting_task():
    real = asyncio.new_event_loop()
    original = real.call_soon
    batches = ReadyBatches(real, original, original, owner)
    future: asyncio.Future[int] = real.create_future()
    done_inside: list[bool] = []

    async def waiter() -> str:
        try:
            await future
        except ValueError as exc:
            return f"caught {exc}"
        return "no exception"

    def reaction(task: asyncio.Task[str]) -> None:  # a promise's reaction: no task is running
        real.call_soon = batches.call_soon  # type: ignore[method-assign]
        try:
            batches.settle(future.set_exception, future, ValueError("upstream broke"))
        finally:
            real.call_soon = original  # type: ignore[method-assign]
        done_inside.append(task.done())

    async def main() -> str:
        task = real.create_task(waiter())
        await asyncio.sleep(0)  # the task now awaits the future
        original(reaction, task)
        return await task

    try:
        assert real.run_until_complete(main()) == "caught upstream broke"
    finally:
        real.close()
    assert done_inside == [True]  # it ran to its end inside settle()


def test_settled_rounds_that_keep_making_each_other_ready_wait_for_the_next_turn():
    from flaregate.hosts.edge.event_loop import MAX_MICROTASK_CHAIN

    runtime, turn = Runtime(), Runtime()
    batches = ReadyBatches(loop, runtime.schedule, turn.schedule, owner)
    ctx = in_context("spinning")
    turns = 0

    def spin() -> None:
        nonlocal turns
        turns += 1
        batches.call_soon(spin, context=ctx)

    future: asyncio.Future[None] = loop.create_future()
    batches.settle(lambda _value: batches.call_soon(spin, context=ctx), future, None)
    assert turns == MAX_MICROTASK_CHAIN  # one per round
    assert runtime.pending == [] and len(turn.pending) == 1  # the rest: at the runtime's next turn
    turn.pending.pop(0)()
    assert turns == MAX_MICROTASK_CHAIN + 1 and len(runtime.pending) == 1  # back to microtask batches


def test_a_settle_inside_a_settle_runs_its_own_callbacks_first():
    """A JSPI suspension can let the runtime settle another promise while a settled callback
    runs: the inner settle runs what it made ready at once, the outer's queue is untouched."""
    batches, runtime = make()
    ctx = in_context("r")
    ran: list[str] = []
    inner: asyncio.Future[None] = loop.create_future()
    outer: asyncio.Future[None] = loop.create_future()

    def outer_resolved(_value: Any) -> None:
        batches.call_soon(ran.append, "outer queued", context=ctx)
        batches.settle(lambda _v: batches.call_soon(ran.append, "inner", context=ctx), inner, None)
        ran.append("outer resumed")

    batches.settle(outer_resolved, outer, None)
    assert ran == ["inner", "outer resumed", "outer queued"] and runtime.pending == []


@pytest.mark.parametrize("reason", [None, "a string", {"a": "plain object"}])
def test_a_rejection_with_no_exception_reaches_the_awaiting_task_as_promise_rejected(reason):
    """A cancelled stream's promises reject with ``undefined`` (None here): set_exception
    would refuse it, and the task awaiting the promise would never resume."""
    real = asyncio.new_event_loop()
    original = real.call_soon
    batches = ReadyBatches(real, original, original, owner)
    future: asyncio.Future[int] = real.create_future()

    async def waiter() -> Any:
        try:
            await future
        except PromiseRejected as exc:
            return exc.reason
        return "no exception"

    async def main() -> Any:
        task = real.create_task(waiter())
        await asyncio.sleep(0)
        original(batches.settle_rejection, future, reason)
        return await task

    try:
        assert real.run_until_complete(main()) == reason
    finally:
        real.close()


def test_a_rejection_with_an_exception_keeps_it():
    batches, _ = make()
    future: asyncio.Future[int] = loop.create_future()
    error = ValueError("upstream broke")
    batches.settle_rejection(future, error)
    assert future.exception() is error
