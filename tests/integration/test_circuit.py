"""One of two weighted targets goes down mid-run and comes back: every step is visible.

The circuit opens, all traffic moves to the other target, the circuit half-opens after
its (short) cooldown and closes once the target answers again; ``GET /v1/providers``
and the ``/ws`` events show each step.
"""

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.support.mock_upstream import MockUpstreamProcess

from .conftest import ADMIN_KEY, GATEWAY_KEY, TARGET, run_gateway

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}  # the hub (/ws) is the operator's
COOLDOWN = 0.5
BOUND = 60  # requests we are prepared to send while waiting for a state


@pytest.fixture(scope="module")
def pair():
    with MockUpstreamProcess() as a, MockUpstreamProcess() as b:
        yield a, b


@pytest.fixture(scope="module")
def server(pair, tmp_path_factory):
    a, b = pair
    providers = [{"name": "a", "base_url": a.base_url + "/v1"}, {"name": "b", "base_url": b.base_url + "/v1"}]
    routes = {"balanced": {"strategy": "weighted", "targets": [
        {"provider": "a", "model": "gpt-a", "weight": 1}, {"provider": "b", "model": "gpt-b", "weight": 1}]}}
    env = {
        "FLAREGATE_API_KEYS": GATEWAY_KEY,
        "FLAREGATE_ADMIN_KEY": ADMIN_KEY,
        "FLAREGATE_PROVIDERS": json.dumps(providers),
        "FLAREGATE_ROUTES": json.dumps(routes),
        "RATE_LIMIT_CAPACITY": "10000",
        "RATE_LIMIT_REFILL_PER_SECOND": "1000",
        "CACHE_TTL_SECONDS": "0",
        "CIRCUIT_FAILURE_THRESHOLD": "2",
        "CIRCUIT_COOLDOWN_SECONDS": str(COOLDOWN),
        "RETRY_BACKOFF_BASE_SECONDS": "0.01",
    }
    with run_gateway(tmp_path_factory.mktemp("circuit"), env) as gw:
        yield gw


async def circuit_of(http, base_url, provider):
    data = (await http.get(base_url + "/v1/providers")).json()["data"]
    return next(e for e in data if e["provider"] == provider)


async def ask(http, base_url, i):
    body = {"model": "balanced", "messages": [{"role": "user", "content": f"q{i}"}]}
    response = await http.post(base_url + "/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.headers["x-flaregate-provider"]


async def collect(ws, into):
    while True:
        into.append(json.loads(await ws.recv()))


async def test_circuit_opens_moves_traffic_half_opens_and_closes(server, pair):
    a, b = pair
    events: list[dict] = []
    async with websockets.connect(server.ws_url, additional_headers=ADMIN) as ws, \
            httpx.AsyncClient(headers=AUTH, timeout=10) as http:
        listener = asyncio.ensure_future(collect(ws, events))
        try:
            # 1. Both targets healthy: weighted traffic reaches both.
            served = [await ask(http, server.base_url, i) for i in range(20)]
            assert {"a", "b"} <= set(served)
            assert (await circuit_of(http, server.base_url, "a"))["circuit"] == "closed"

            # 2. a goes down. Requests that draw a first fail over to b; its circuit opens.
            a.add_faults([{"kind": "status", "status": 503, "times": -1, "path": "/v1/chat/completions"}])
            for i in range(BOUND):
                assert await ask(http, server.base_url, i) == "b"  # nobody sees the outage
                if (await circuit_of(http, server.base_url, "a"))["circuit"] == "open":
                    break
            entry = await circuit_of(http, server.base_url, "a")
            assert entry["circuit"] == "open" and entry["available"] is False
            assert entry["recent_errors"][-1]["status"] == 503
            calls_when_opened = a.stats()["calls"]["/v1/chat/completions"]

            # 3. While open (well inside the cooldown), all traffic goes to b, and a gets none.
            assert [await ask(http, server.base_url, i) for i in range(3)] == ["b"] * 3
            if (await circuit_of(http, server.base_url, "a"))["circuit"] == "open":
                assert a.stats()["calls"]["/v1/chat/completions"] == calls_when_opened

            # 4. a recovers; after the cooldown a trial request half-opens and closes the circuit.
            a.reset()
            await asyncio.sleep(COOLDOWN + 0.2)
            for i in range(BOUND):
                await ask(http, server.base_url, i)
                if (await circuit_of(http, server.base_url, "a"))["circuit"] == "closed":
                    break
            entry = await circuit_of(http, server.base_url, "a")
            assert entry["circuit"] == "closed" and entry["available"] is True
            served = [await ask(http, server.base_url, i) for i in range(20)]
            assert "a" in served  # traffic is shared again

            # 5. The hub told /ws subscribers about every step.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                transitions = [(e["from"], e["to"]) for e in events if e["type"] == "circuit" and e["provider"] == "a"]
                if ("half_open", "closed") in transitions:
                    break
                await asyncio.sleep(0.05)
        finally:
            listener.cancel()
    assert ("closed", "open") in transitions and ("open", "half_open") in transitions
    assert transitions[-1] == ("half_open", "closed")
    assert transitions.index(("closed", "open")) < transitions.index(("open", "half_open"))
    failovers = [e for e in events if e["type"] == "failover"]
    assert failovers and all(e["from"] == "a/gpt-a" and e["to"] == "b/gpt-b" for e in failovers)
    assert all(e.get("protocol") == 1 for e in events)


@pytest.mark.skipif(TARGET == "edge", reason="active probes are the local host's background task; "
                    "the Worker has none (a cron trigger would run them there)")
def test_active_probes_close_a_recovered_circuit_without_client_traffic(tmp_path):
    with MockUpstreamProcess() as mock:
        providers = [{"name": "solo", "base_url": mock.base_url + "/v1"}]
        env = {"FLAREGATE_API_KEYS": GATEWAY_KEY, "FLAREGATE_PROVIDERS": json.dumps(providers),
               "FLAREGATE_ROUTES": json.dumps({"solo": ["solo/gpt-x"]}), "CACHE_TTL_SECONDS": "0",
               "UPSTREAM_MAX_ATTEMPTS": "1", "CIRCUIT_FAILURE_THRESHOLD": "1",
               "CIRCUIT_COOLDOWN_SECONDS": "0.3", "HEALTH_PROBE_INTERVAL_SECONDS": "0.1"}
        with run_gateway(tmp_path / "probes", env) as gw:
            mock.add_faults([{"kind": "status", "status": 500, "path": "/v1/chat/completions"},
                             {"kind": "status", "status": 500, "path": "/v1/models"}])
            body = {"model": "solo", "messages": [{"role": "user", "content": "x"}]}
            assert httpx.post(gw.base_url + "/v1/chat/completions", json=body, headers=AUTH).status_code == 502
            chats = mock.stats()["calls"]["/v1/chat/completions"]
            states = []
            for _ in range(100):  # bounded wait for the probe to close it
                entry = httpx.get(gw.base_url + "/v1/providers", headers=AUTH).json()["data"][0]
                states.append(entry["circuit"])
                if entry["circuit"] == "closed":
                    break
                time.sleep(0.05)
            assert states[0] == "open" and states[-1] == "closed"
            stats = mock.stats()
            assert stats["calls"]["/v1/chat/completions"] == chats  # no client request was spent
            assert stats["calls"]["/v1/models"] >= 2  # a failed probe, then the one that closed it
