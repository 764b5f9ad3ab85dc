"""Circuit changes reach webhook subscribers (circuit.open / circuit.close) and the hub."""

import json

from flaregate.providers.mock import StaticResponse
from tests.support.security import CONFIG_KEY, SecureRig, chat_request
from tests.unit.security.test_webhooks import Receiver, register


async def test_circuit_open_and_close_are_webhook_events_too(monkeypatch):
    receiver = Receiver()
    rig = SecureRig({"CIRCUIT_FAILURE_THRESHOLD": "1", "CIRCUIT_COOLDOWN_SECONDS": "5", "UPSTREAM_MAX_ATTEMPTS": "1"},
                    transport=receiver)
    await register(rig, "https://h.example.com/all", ["circuit.open", "circuit.close"])
    assert (await rig.call(chat_request(CONFIG_KEY, "a")))[0] == 502  # a is down: its circuit opens
    await rig.tasks.drain()
    rig.clock.advance(5)

    async def healthy(method, url, headers, body, timeout):
        if "invalid/v1" in url:
            payload = {"choices": [{"message": {"role": "assistant", "content": "ok"}}], "usage": {}}
            return StaticResponse(200, {"content-type": "application/json"}, [json.dumps(payload).encode()])
        return await Receiver.send(receiver, method, url, headers, body, timeout)

    monkeypatch.setattr(receiver, "send", healthy)
    assert (await rig.call(chat_request(CONFIG_KEY, "a")))[0] == 200  # the trial closes it
    await rig.tasks.drain()
    events = [json.loads(d["body"]) for d in receiver.deliveries]
    assert [e["type"] for e in events] == ["circuit.open", "circuit.close"]
    assert events[0]["data"]["provider"] == "a" and events[0]["data"]["from"] == "closed"
    hub_types = [json.loads(m)["type"] for m in rig.hub_broadcaster.sent]
    assert hub_types.count("circuit") == 3  # open, half_open, closed
