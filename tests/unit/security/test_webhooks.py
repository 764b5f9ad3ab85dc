"""Webhook targets, signed deliveries with retries and a delivery log, and the events the
core raises by itself (provider down/up, failover, rate-limit saturation, error rate)."""

import json

import pytest

from flaregate.ports import UpstreamError
from flaregate.providers.mock import StaticResponse
from flaregate.security.signing import verify_webhook
from flaregate.security.webhooks import TargetRefused, check_target
from tests.support.security import CONFIG_KEY, SecureRig, chat_request


class Receiver:
    """The upstream-transport port as seen by webhooks: answers from a script per URL."""

    def __init__(self, script_by_host=None, default=200):
        self.script_by_host = script_by_host or {}
        self.default = default
        self.deliveries = []

    async def send(self, method, url, headers, body, timeout):
        if "invalid/v1" in url:  # the providers a and b of the rig: down
            raise UpstreamError("connection refused")
        self.deliveries.append({"url": url, "headers": dict(headers), "body": body})
        script = self.script_by_host.get(url, [])
        step = script.pop(0) if script else self.default
        if isinstance(step, Exception):
            raise step
        return StaticResponse(step, {}, [b"ok"])


@pytest.mark.parametrize(
    "url",
    ["http://example.com/hook", "https://127.0.0.1/hook", "https://10.0.0.5/x", "https://192.168.1.1/",
     "https://[::1]/x", "https://[fd00::1]/x", "https://169.254.169.254/latest", "https://localhost/x",
     "https://db.internal/x", "https://printer.local/", "https://intranet/", "ftp://example.com/",
     "https://user:pw@example.com/", "https://0.0.0.0/", "https://[::ffff:127.0.0.1]/", "not a url",
     "https://example.com:99999/"],
)
def test_private_and_odd_targets_are_refused(url):
    with pytest.raises(TargetRefused):
        check_target(url, allow_private=False)


def test_public_targets_and_the_development_switch():
    assert check_target("https://hooks.example.com/flaregate", allow_private=False)
    assert check_target("https://8.8.8.8/x", allow_private=False)
    with pytest.raises(TargetRefused):  # documentation range: not global
        check_target("https://203.0.113.10/x", allow_private=False)
    assert check_target("http://127.0.0.1:9999/hook", allow_private=True)
    with pytest.raises(TargetRefused):
        check_target("ftp://127.0.0.1/", allow_private=True)


async def register(rig, url, events=None, **extra):
    body = {"url": url, **({"events": events} if events else {}), **extra}
    status, answer, _ = await rig.call(rig.admin("POST", "/admin/webhooks", body))
    assert status == 201, answer
    return answer


async def test_registration_list_delete_and_refusals():
    rig = SecureRig()
    status, body, _ = await rig.call(rig.admin("POST", "/admin/webhooks", {"url": "https://127.0.0.1/x"}))
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "webhook_target_refused", "url")
    status, body, _ = await rig.call(rig.admin("POST", "/admin/webhooks", {"url": "https://h.example.com/", "events": ["nope"]}))
    assert (status, body["error"]["param"]) == (400, "events")
    hook = await register(rig, "https://h.example.com/", ["failover"])
    assert hook["secret"].startswith("whsec_") and hook["id"].startswith("wh_")
    listing = (await rig.call(rig.admin("GET", "/admin/webhooks")))[1]["data"]
    assert [h["id"] for h in listing] == [hook["id"]] and "secret" not in listing[0]
    assert (await rig.call(rig.admin("DELETE", f"/admin/webhooks/{hook['id']}")))[0] == 200
    assert (await rig.call(rig.admin("DELETE", f"/admin/webhooks/{hook['id']}")))[0] == 404


async def test_deliveries_are_signed_retried_with_backoff_and_logged(monkeypatch):
    sleeps = []

    async def fake_sleep(seconds):
        sleeps.append(seconds)

    monkeypatch.setattr("flaregate.security.webhooks.asyncio.sleep", fake_sleep)
    url = "https://h.example.com/hook"
    receiver = Receiver({url: [500, UpstreamError("reset"), 503, 200]})
    rig = SecureRig({"WEBHOOK_MAX_ATTEMPTS": "5", "WEBHOOK_RETRY_BASE_SECONDS": "0.5"}, transport=receiver)
    hook = await register(rig, url, ["webhook.test"])
    status, _, _ = await rig.call(rig.admin("POST", f"/admin/webhooks/{hook['id']}/test"))
    assert status == 202 and receiver.deliveries == []  # nothing is sent before the response
    await rig.tasks.drain()
    assert len(receiver.deliveries) == 4 and sleeps == [0.5, 1.0, 2.0]
    for delivery in receiver.deliveries:
        assert verify_webhook(hook["secret"], delivery["headers"], delivery["body"], now=rig.clock.now())
        assert not verify_webhook("whsec_wrong", delivery["headers"], delivery["body"], now=rig.clock.now())
    event = json.loads(receiver.deliveries[0]["body"])
    assert event["type"] == "webhook.test" and event["data"] == {"webhook_id": hook["id"]}
    assert len({json.loads(d["body"])["id"] for d in receiver.deliveries}) == 1  # one event, retried
    log = (await rig.call(rig.admin("GET", f"/admin/webhooks/{hook['id']}/deliveries")))[1]["data"]
    assert [(e["attempt"], e["status"], e["delivered"]) for e in reversed(log)] == [
        (1, 500, False), (2, None, False), (3, 503, False), (4, 200, True)]
    assert "reset" in log[-2]["error"]


async def test_a_receiver_that_never_answers_2xx_gets_a_bounded_number_of_attempts(monkeypatch):
    async def no_sleep(seconds):
        return None

    monkeypatch.setattr("flaregate.security.webhooks.asyncio.sleep", no_sleep)
    receiver = Receiver(default=500)
    rig = SecureRig({"WEBHOOK_MAX_ATTEMPTS": "3"}, transport=receiver)
    hook = await register(rig, "https://h.example.com/x")
    rig.gateway.webhooks.emit("failover", {"model": "m"})
    await rig.tasks.drain()
    assert len(receiver.deliveries) == 3
    log = (await rig.call(rig.admin("GET", f"/admin/webhooks/{hook['id']}/deliveries")))[1]["data"]
    assert [e["delivered"] for e in log] == [False] * 3


async def test_a_failover_webhook_carries_the_requests_tags():
    receiver = Receiver()
    rig = SecureRig({"UPSTREAM_MAX_ATTEMPTS": "2"}, transport=receiver)
    await register(rig, "https://h.example.com/tags", ["failover"])
    status, _, _ = await rig.call(chat_request(CONFIG_KEY, "ab", {"x-flaregate-metadata": '{"team": "core"}'}))
    assert status == 502
    await rig.tasks.drain()
    failover = next(json.loads(d["body"]) for d in receiver.deliveries if json.loads(d["body"])["type"] == "failover")
    assert failover["data"]["tags"] == {"team": "core"}


async def test_core_events_provider_down_failover_and_up(monkeypatch):
    receiver = Receiver()
    rig = SecureRig({"UPSTREAM_MAX_ATTEMPTS": "2"}, transport=receiver)  # one pass: a, then b
    await register(rig, "https://h.example.com/all")
    for _ in range(3):  # a and b both unreachable
        status, _, _ = await rig.call(chat_request(CONFIG_KEY, "ab"))
        assert status == 502
    await rig.tasks.drain()
    types = [json.loads(d["body"])["type"] for d in receiver.deliveries]
    assert types.count("failover") == 3
    assert types.count("provider.down") == 2  # a and b, once each
    failover = next(json.loads(d["body"]) for d in receiver.deliveries if json.loads(d["body"])["type"] == "failover")
    assert failover["data"] == {"model": "ab", "from": "a", "to": "b", "reason": "unreachable"}

    async def healthy(method, url, headers, body, timeout):
        if "invalid/v1" in url:
            payload = {"choices": [{"message": {"role": "assistant", "content": "ok"}}], "usage": {}}
            return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(payload).encode()])
        return await Receiver.send(receiver, method, url, headers, body, timeout)

    monkeypatch.setattr(receiver, "send", healthy)
    assert (await rig.call(chat_request(CONFIG_KEY, "ab")))[0] == 200
    await rig.tasks.drain()
    up = [json.loads(d["body"]) for d in receiver.deliveries if json.loads(d["body"])["type"] == "provider.up"]
    assert [e["data"]["provider"] for e in up] == ["a"]


async def test_rate_limit_saturation_and_high_error_rate_events():
    receiver = Receiver()
    rig = SecureRig({"RATE_LIMIT_CAPACITY": "2", "RATE_LIMIT_REFILL_PER_SECOND": "0.001"}, transport=receiver)
    await register(rig, "https://h.example.com/all", ["rate_limit.saturated", "error_rate.high"])
    statuses = [(await rig.call(chat_request(CONFIG_KEY)))[0] for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    await rig.tasks.drain()
    saturated = [json.loads(d["body"]) for d in receiver.deliveries]
    assert [e["type"] for e in saturated] == ["rate_limit.saturated"]  # once per key, not per request
    assert saturated[0]["data"]["key_id"].startswith("key_") and CONFIG_KEY not in json.dumps(saturated)

    rig = SecureRig(transport=receiver)
    receiver.deliveries.clear()
    await register(rig, "https://h.example.com/all", ["error_rate.high"])
    for _ in range(20):
        await rig.call(chat_request(CONFIG_KEY, "a"))  # provider a is down: 502
    await rig.tasks.drain()
    assert [json.loads(d["body"])["type"] for d in receiver.deliveries] == ["error_rate.high"]
