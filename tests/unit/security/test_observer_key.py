"""The read-only observer key (FLAREGATE_OBSERVER_KEY): the operator views (/metrics, /ws,
/v1/analytics, the request log) without the bodies a record keeps, and nothing under
/admin/; production refuses a weak one and one that is the admin key or the signing secret."""

from __future__ import annotations

import pytest

from flaregate.config import InsecureConfigError, settings_from_vars
from flaregate.http import Headers, Request
from flaregate.observability.logs import secrets_of
from tests.support.security import ADMIN_KEY, CONFIG_KEY, SecureRig, chat_request

OBSERVER_KEY = "observer-secret-abcdef-0123456789"
STRONG_ADMIN = "fga-" + "a1" * 20
STRONG_SIGNING = "sig-" + "b2" * 20
STRONG_OBSERVER = "fgo-" + "d4" * 20


def view(path: str, key: str, query: dict[str, str] | None = None) -> Request:
    return Request("GET", path, Headers({"authorization": f"Bearer {key}"}), query=query or {},
                   client_ip="192.0.2.10")


@pytest.fixture
def rig() -> SecureRig:
    return SecureRig({"FLAREGATE_OBSERVER_KEY": OBSERVER_KEY, "LOG_BODIES": "both"})


async def logged_chat(rig: SecureRig) -> str:
    request = chat_request(CONFIG_KEY, content="a private prompt")
    request.headers = Headers({**dict(request.headers.items()), "x-request-id": "req_observed_1"})
    status, _, _ = await rig.call(request)
    assert status == 200
    await rig.gateway.analytics.flush()
    await rig.tasks.drain()
    return "req_observed_1"


async def test_the_observer_key_reads_the_operator_views(rig):
    await logged_chat(rig)
    for path in ("/metrics", "/v1/analytics", "/v1/logs"):
        assert (await rig.gateway.handle(view(path, OBSERVER_KEY))).status == 200, path
    ws = Request("GET", "/ws", Headers({"sec-websocket-protocol": f"flaregate.v1, bearer.{OBSERVER_KEY}"}),
                 client_ip="192.0.2.10")
    assert rig.gateway.authorize_admin(ws) == "flaregate.v1"
    assert rig.gateway.authorize_admin(Request("GET", "/ws", query={"token": OBSERVER_KEY})) is None
    page = (await rig.call(view("/v1/logs", OBSERVER_KEY)))[1]["data"]
    assert page and all("request_body" not in r for r in page)


async def test_request_log_bodies_are_for_the_admin_key_only(rig):
    request_id = await logged_chat(rig)
    _, as_admin, _ = await rig.call(view(f"/v1/logs/{request_id}", ADMIN_KEY))
    assert "a private prompt" in as_admin["request_body"] and as_admin["response_body"]
    status, as_observer, _ = await rig.call(view(f"/v1/logs/{request_id}", OBSERVER_KEY))
    assert status == 200 and as_observer["request_id"] == request_id
    assert "request_body" not in as_observer and "response_body" not in as_observer
    assert as_observer["bodies_withheld"] is True and "a private prompt" not in str(as_observer)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/admin/keys", None), ("POST", "/admin/keys", {"name": "x"}), ("GET", "/admin/webhooks", None),
    ("GET", "/admin/cache/stats", None), ("POST", "/admin/cache/purge", {"namespace": "x"}),
])
async def test_the_observer_key_opens_nothing_under_admin(rig, method, path, body):
    # Even signed (it cannot sign: the signing secret is the admin key's), it is not the admin key.
    status, answer, _ = await rig.call(rig.admin(method, path, body, key=OBSERVER_KEY))
    assert status == 403 and answer["error"]["code"] == "admin_key_required", answer
    unsigned = await rig.call(rig.admin(method, path, body, key=OBSERVER_KEY, sign=False))
    assert unsigned[0] == 401


async def test_without_the_setting_the_observer_key_is_just_a_wrong_key():
    rig = SecureRig()
    status, answer, _ = await rig.call(view("/v1/analytics", OBSERVER_KEY))
    assert status == 401 and answer["error"]["code"] == "invalid_admin_key"


def test_the_observer_key_is_redacted_like_every_secret():
    settings = settings_from_vars({"FLAREGATE_OBSERVER_KEY": OBSERVER_KEY})
    assert settings.security.observer_key is not None and OBSERVER_KEY in secrets_of(settings)
    assert OBSERVER_KEY not in repr(settings)
    assert settings_from_vars({"FLAREGATE_OBSERVER_KEY": "  "}).security.observer_key is None


@pytest.mark.parametrize(("observer", "named"), [
    ("fgo-change-me-0123456789abcdef", "FLAREGATE_OBSERVER_KEY is a placeholder"),
    ("short-observer", "FLAREGATE_OBSERVER_KEY is shorter than"),
    (STRONG_ADMIN, "FLAREGATE_OBSERVER_KEY must differ from FLAREGATE_ADMIN_KEY"),
    (STRONG_SIGNING, "FLAREGATE_OBSERVER_KEY must differ from FLAREGATE_ADMIN_KEY and FLAREGATE_SIGNING_SECRET"),
])
def test_production_refuses_a_weak_or_shared_observer_key(observer, named):
    with pytest.raises(InsecureConfigError) as info:
        settings_from_vars({"ENVIRONMENT": "production", "FLAREGATE_ADMIN_KEY": STRONG_ADMIN,
                            "FLAREGATE_SIGNING_SECRET": STRONG_SIGNING, "FLAREGATE_OBSERVER_KEY": observer})
    assert named in str(info.value) and observer not in str(info.value)


def test_production_takes_a_strong_distinct_observer_key():
    settings = settings_from_vars({"ENVIRONMENT": "production", "FLAREGATE_ADMIN_KEY": STRONG_ADMIN,
                                   "FLAREGATE_SIGNING_SECRET": STRONG_SIGNING, "FLAREGATE_OBSERVER_KEY": STRONG_OBSERVER})
    assert settings.security.observer_key is not None
