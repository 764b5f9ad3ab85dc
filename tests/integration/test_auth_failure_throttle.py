"""The per-network throttle on failed authentication against the real server (and, with
FLAREGATE_TARGET=edge, the Worker under `wrangler dev`, whose network is cf-connecting-ip):
past AUTH_FAILURE_LIMIT failures a network gets 429 on the API, /admin/, the operator views
and /ws, while keys checked in memory still work. Every request here comes from 127.0.0.1,
one network: the test waits out the window before it ends."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env
from .test_observer_access import OBSERVER, OBSERVER_KEY, admin, chat, ws_status

LIMIT, WINDOW = 5, 4.0


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    env = upstream_env(upstream.base_url, AUTH_FAILURE_LIMIT=str(LIMIT), AUTH_FAILURE_WINDOW_SECONDS=str(WINDOW),
                       FLAREGATE_OBSERVER_KEY=OBSERVER_KEY, CACHE_TTL_SECONDS="0")
    with run_gateway(tmp_path_factory.mktemp("auth-throttle"), env) as gateway:
        yield gateway


def bad_key() -> str:
    return "fg-" + secrets.token_urlsafe(32)  # the shape of a stored key: it would cost a lookup


def throttled(response: httpx.Response) -> bool:
    return response.status_code == 429 and response.json()["error"]["code"] == "too_many_auth_failures"


def wait_out(started: float) -> None:
    time.sleep(max(0.0, started + WINDOW + 0.5 - time.monotonic()))


def test_a_network_failing_authentication_past_the_limit_gets_429_on_api_admin_and_ws(server):
    warm, cold = (admin(server, "POST", "/admin/keys", {"name": name}).json()["key"] for name in ("warm", "cold"))
    assert chat(server, warm).status_code == 200  # now in this process's positive key cache
    started = time.monotonic()
    for _ in range(LIMIT):
        assert chat(server, bad_key()).status_code == 401
    refused = chat(server, bad_key())
    assert throttled(refused), refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW
    # The throttle covers every way in, before any lookup.
    assert throttled(httpx.get(server.base_url + "/v1/models", headers={"authorization": f"Bearer {bad_key()}"}))
    assert throttled(admin(server, "GET", "/admin/keys", key="wrong-admin-key"))
    assert throttled(httpx.get(server.base_url + "/admin/keys", headers={"authorization": "Bearer nope"}))
    assert throttled(httpx.get(server.base_url + "/metrics?token=wrong"))
    assert ws_status(server, subprotocols=["flaregate.v1", "bearer.wrong"]) == 429
    # Keys checked in memory still get in: configured, positively cached, admin, observer.
    assert chat(server, GATEWAY_KEY).status_code == 200
    assert chat(server, warm).status_code == 200
    assert admin(server, "GET", "/admin/keys").status_code == 200
    assert httpx.get(server.base_url + "/metrics", headers=OBSERVER).status_code == 200
    assert ws_status(server, subprotocols=["flaregate.v1", f"bearer.{ADMIN_KEY}"]) == 101
    assert throttled(chat(server, cold))  # a stored key this process has not seen waits for the window
    wait_out(started)
    assert chat(server, bad_key()).status_code == 401  # the window passed: answered (and counted) again
    assert chat(server, cold).status_code == 200
    wait_out(time.monotonic())
