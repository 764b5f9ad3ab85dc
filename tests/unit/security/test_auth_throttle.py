"""The per-network throttle on failed authentication (security/auth_throttle.py): past
AUTH_FAILURE_LIMIT failures in AUTH_FAILURE_WINDOW_SECONDS a network (IPv4 /24, IPv6 /48)
gets 429 too_many_auth_failures with Retry-After before any key-store lookup, on API routes,
the admin API, the operator views and signed routes; a key checked in memory (configured,
already in the positive cache, admin, observer) still gets in."""

from __future__ import annotations

import pytest

from flaregate.config import settings_from_vars
from flaregate.errors import GatewayError
from flaregate.http import Headers, Request
from flaregate.security.access import AccessControl, new_key
from flaregate.security.admin import authorize_observer, require_admin
from flaregate.security.auth_throttle import AuthFailureThrottle, throttle_for
from flaregate.security.keys import KeyRing
from tests.support.fakes import FakeClock
from tests.support.security import ADMIN_KEY, CONFIG_KEY, SecureRig, chat_request

from .test_key_lookups import CountingStore

OBSERVER_KEY = "observer-secret-abcdef-0123456789"


def bearer(token: str | None, ip: str | None = "203.0.113.5", path: str = "/v1/models") -> Request:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Request("GET", path, Headers(headers), client_ip=ip)


async def status_of(access: AccessControl, request: Request) -> tuple[int, GatewayError | None]:
    try:
        await access.authenticate(request)
    except GatewayError as exc:
        return exc.status, exc
    return 200, None


def rig_access(limit: int = 3, window: float = 10.0, *stored: str) -> tuple[AccessControl, CountingStore, FakeClock]:
    clock = FakeClock()
    store = CountingStore(*stored)
    access = AccessControl(KeyRing([CONFIG_KEY]), store, clock, cache_seconds=30,
                           throttle=AuthFailureThrottle(limit, window, clock))
    return access, store, clock


async def test_a_network_past_the_limit_is_refused_before_any_lookup_until_the_window_passes():
    access, store, clock = rig_access(3, 10.0)
    for _ in range(3):
        assert (await status_of(access, bearer(new_key()[0])))[0] == 401
    assert store.finds == 3
    for ip in ("203.0.113.5", "203.0.113.200"):  # the same /24
        status, error = await status_of(access, bearer(new_key()[0], ip))
        assert status == 429 and error is not None
        assert error.code == "too_many_auth_failures" and error.headers["retry-after"] == "10"
    assert store.finds == 3  # refused without asking the store
    assert (await status_of(access, bearer(new_key()[0], "203.0.114.5")))[0] == 401  # another /24
    clock.advance(6)
    _, error = await status_of(access, bearer("junk"))
    assert error is not None and error.status == 429 and error.headers["retry-after"] == "4"
    clock.advance(4)  # the window has passed: failures are answered (and counted) again
    assert (await status_of(access, bearer(new_key()[0])))[0] == 401
    assert store.finds == 5


async def test_refused_requests_do_not_extend_the_window():
    access, _, clock = rig_access(2, 10.0)
    for _ in range(2):
        await status_of(access, bearer("junk"))
    for _ in range(9):
        clock.advance(1)
        assert (await status_of(access, bearer("junk")))[0] == 429
    clock.advance(1)
    assert (await status_of(access, bearer("junk")))[0] == 401


async def test_while_throttled_keys_checked_in_memory_still_get_in():
    good, cold = new_key()[0], new_key()[0]
    access, store, _ = rig_access(2, 10.0, good, cold)
    assert (await access.authenticate(bearer(good))).source == "store"  # now in the positive cache
    for _ in range(2):
        await status_of(access, bearer(new_key()[0]))
    finds = store.finds
    assert (await access.authenticate(bearer(CONFIG_KEY))).source == "config"
    assert (await access.authenticate(bearer(good))).source == "store"
    assert store.finds == finds  # the cached key: no lookup
    # A stored key this process has not seen waits for the window (no lookup for it either).
    assert (await status_of(access, bearer(cold)))[0] == 429 and store.finds == finds
    # Missing tokens count as failures too, and are refused alike.
    assert (await status_of(access, bearer(None)))[0] == 429


async def test_ipv6_networks_are_their_48_and_unaddressed_callers_are_never_throttled():
    access, _, _ = rig_access(1, 10.0)
    await status_of(access, bearer("junk", "2001:db8:1:2::5"))
    assert (await status_of(access, bearer("junk", "2001:db8:1:ffff::9")))[0] == 429
    assert (await status_of(access, bearer("junk", "2001:db8:2::9")))[0] == 401
    assert (await status_of(access, bearer("junk", "::ffff:198.51.100.7")))[0] == 401
    assert (await status_of(access, bearer("junk", "198.51.100.8")))[0] == 429  # mapped: the same /24
    for _ in range(5):
        assert (await status_of(access, bearer("junk", None)))[0] == 401
        assert (await status_of(access, bearer("junk", "not-an-address")))[0] == 401


def test_the_networks_remembered_are_bounded():
    throttle = AuthFailureThrottle(1, 10.0, FakeClock(), max_networks=100)
    for i in range(1000):
        throttle.failed(bearer("x", f"10.{i // 256}.{i % 256}.1"))
    assert len(throttle) == 100
    assert throttle.retry_after(bearer("x", "10.3.231.1")) is not None  # the most recent stayed
    assert throttle.retry_after(bearer("x", "10.0.0.1")) is None  # the least recent went


def test_a_limit_of_zero_turns_it_off():
    throttle = AuthFailureThrottle(0, 10.0, FakeClock())
    for _ in range(100):
        throttle.failed(bearer("x"))
    assert throttle.retry_after(bearer("x")) is None and len(throttle) == 0


def test_the_settings_and_their_variables():
    default = settings_from_vars({}).security
    assert (default.auth_failure_limit, default.auth_failure_window_seconds) == (20, 10.0)
    settings = settings_from_vars({"AUTH_FAILURE_LIMIT": "5", "AUTH_FAILURE_WINDOW_SECONDS": "60"})
    throttle = throttle_for(settings)
    assert (throttle.limit, throttle.window) == (5, 60.0)
    assert throttle_for(settings) is throttle  # one per settings object (one gateway)
    assert throttle_for(settings_from_vars({})) is not throttle


def admin_request(key: str | None, path: str = "/admin/keys", ip: str = "198.51.100.9", query: str = "") -> Request:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return Request("GET", path, Headers(headers), client_ip=ip, query={"token": query} if query else {})


def test_admin_and_observer_checks_throttle_bad_keys_but_not_the_right_ones():
    settings = settings_from_vars({"FLAREGATE_ADMIN_KEY": ADMIN_KEY, "FLAREGATE_OBSERVER_KEY": OBSERVER_KEY,
                                   "AUTH_FAILURE_LIMIT": "3"})
    for _ in range(3):
        with pytest.raises(GatewayError) as caught:
            require_admin(admin_request("wrong"), settings)
        assert caught.value.status == 401
    with pytest.raises(GatewayError) as caught:
        authorize_observer(admin_request(None, "/ws", query="wrong"), settings)
    assert caught.value.status == 429 and caught.value.code == "too_many_auth_failures"
    assert int(caught.value.headers["retry-after"]) == 10
    require_admin(admin_request(ADMIN_KEY), settings)  # the admin key: in memory, still in
    authorize_observer(admin_request(None, "/ws", query=OBSERVER_KEY), settings)
    with pytest.raises(GatewayError) as caught:  # read-only: a 403, not an authentication failure
        require_admin(admin_request(OBSERVER_KEY), settings)
    assert caught.value.status == 403 and caught.value.code == "admin_key_required"


async def test_through_the_gateway_api_admin_and_signed_routes_share_one_throttle():
    rig = SecureRig({"AUTH_FAILURE_LIMIT": "4", "SIGNED_ROUTES": "/admin/"})
    ip = "198.51.100.23"  # chat_request's client
    good = (await rig.create_key(name="tenant"))["key"]
    status, _, _ = await rig.call(chat_request(good))  # now in the positive cache
    assert status == 200
    for _ in range(2):
        assert (await rig.call(chat_request(new_key()[0])))[0] == 401
    unsigned = rig.admin("GET", "/admin/keys", sign=False)
    unsigned.client_ip = ip
    assert (await rig.call(unsigned))[0] == 401  # a missing signature is a failure too
    ws = Request("GET", "/ws", Headers({}), query={"token": "wrong"}, client_ip=ip)
    with pytest.raises(GatewayError):
        rig.gateway.authorize_admin(ws)  # the hosts' /ws check
    status, body, headers = await rig.call(chat_request(new_key()[0]))
    assert status == 429 and body["error"]["code"] == "too_many_auth_failures" and headers["retry-after"] == "10"
    assert (await rig.call(unsigned))[0] == 429
    metrics = Request("GET", "/metrics", Headers({"authorization": "Bearer nope"}), client_ip=ip)
    assert (await rig.call(metrics))[0] == 429
    assert (await rig.call(chat_request(good)))[0] == 200
    assert (await rig.call(chat_request(CONFIG_KEY)))[0] == 200
    signed = rig.admin("GET", "/admin/keys")
    signed.client_ip = ip
    assert (await rig.call(signed))[0] == 200
    await rig.gateway.analytics.flush()
    await rig.tasks.drain()
    records = rig.hub.logs.query({"status": "429"})["data"]
    assert len(records) == 1 and records[0]["error_code"] == "too_many_auth_failures"
    assert not records[0].get("key_id")
