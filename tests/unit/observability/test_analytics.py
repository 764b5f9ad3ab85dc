"""Analytics: completed events, batches with a bounded delay, and a hub that fails quietly."""

import asyncio
import logging

from flaregate.accounting import PriceTable
from flaregate.observability.analytics import Analytics
from flaregate.routing.settings import RouteTarget
from tests.support.fakes import InlineTasks


class RecordingHub:
    def __init__(self, fail=False):
        self.batches = []
        self.fail = fail

    async def publish(self, events):
        if self.fail:
            raise ConnectionError("hub storage is down")
        self.batches.append(events)


def raw(**kw):
    return {"status": 200, "model": "m", "provider": "p", "latency_ms": 10.0, **kw}


async def test_a_full_batch_is_sent_at_once_and_the_rest_after_the_delay():
    hub, tasks = RecordingHub(), InlineTasks()
    analytics = Analytics(hub, tasks, batch_size=3, batch_delay_ms=50)
    for i in range(7):
        analytics.record(raw(request_id=str(i)))
    publishes = [job for job in tasks.pending if job.__name__ == "_publish"]
    tasks.pending = [job for job in tasks.pending if job not in publishes]
    await asyncio.gather(*publishes)
    assert [len(b) for b in hub.batches] == [3, 3]  # no waiting for the timer
    await tasks.drain()
    assert [len(b) for b in hub.batches] == [3, 3, 1]
    assert [e["request_id"] for b in hub.batches for e in b] == [str(i) for i in range(7)]


async def test_events_wait_at_most_the_delay_and_share_one_publish():
    hub, tasks = RecordingHub(), InlineTasks()
    analytics = Analytics(hub, tasks, batch_size=100, batch_delay_ms=20)
    analytics.record(raw())
    analytics.record(raw())
    assert len(tasks.pending) == 1  # one timer for the whole batch
    await tasks.drain()
    assert [len(b) for b in hub.batches] == [2]
    analytics.record(raw())
    await tasks.drain()
    assert [len(b) for b in hub.batches] == [2, 1]


async def test_a_failing_hub_never_raises_and_the_buffer_stays_bounded(caplog):
    tasks = InlineTasks()
    analytics = Analytics(RecordingHub(fail=True), tasks, batch_size=5, batch_delay_ms=0)
    with caplog.at_level(logging.WARNING, logger="flaregate.analytics"):
        for _ in range(23):
            analytics.record(raw())
        await tasks.drain()
    assert analytics._buffer == []
    assert "could not publish" in caplog.text


def test_complete_fills_in_class_attempts_overhead_and_cost():
    # One price source: the route targets, as for budgets.
    prices = PriceTable({"m": (RouteTarget(provider="dead"),
                               RouteTarget(provider="p", model="gpt-real", input_price_per_1m=2.0,
                                           output_price_per_1m=10.0))})
    analytics = Analytics(RecordingHub(), InlineTasks(), prices=prices)
    event = analytics.complete(raw(upstream_model="gpt-real", upstream_status=200, upstream_ms=7.5,
                                   failed_providers=["dead"], tokens_in=1000, tokens_out=500,
                                   client="203.0.113.0"))
    assert event["error_class"] is None
    assert event["upstream_attempts"] == [["dead", False], ["p", True]]
    assert event["overhead_ms"] == 2.5
    assert event["cost_usd"] == 0.007
    assert "client" not in event and "failed_providers" not in event
    relayed_5xx = analytics.complete(raw(status=502, upstream_status=503))
    assert relayed_5xx["error_class"] == "upstream_error"
    assert relayed_5xx["upstream_attempts"] == [["p", False]]
    assert "cost_usd" not in analytics.complete(raw(model="unpriced"))


async def test_typed_operational_events_are_passed_on_not_counted_or_logged_as_requests(caplog):
    hub, tasks = RecordingHub(), InlineTasks()
    analytics = Analytics(hub, tasks, batch_size=1)
    with caplog.at_level(logging.INFO, logger="flaregate.access"):
        analytics.record({"type": "ratelimit_degraded", "mode": "fail_open", "count": 3})
    await tasks.drain()
    assert hub.batches == [[{"type": "ratelimit_degraded", "mode": "fail_open", "count": 3}]]
    assert "request" not in caplog.text  # no access-log line for it
