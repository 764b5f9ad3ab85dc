"""Gateway keys in the security store: hashed at rest, per-key policy, revocation, expiry;
the admin API that manages them, behind the admin key and request signing."""

import json

import pytest

from flaregate.config import settings_from_vars
from flaregate.errors import GatewayError
from flaregate.http import Headers, Request
from flaregate.security.admin import require_admin
from tests.support.security import ADMIN_KEY, CONFIG_KEY, SecureRig, chat_request


def all_stored_text(rig: SecureRig) -> str:
    """Every value of every row of every table, as one string."""
    chunks = []
    for table in rig.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in rig.sql.exec(f'SELECT * FROM "{table["name"]}"'):
            chunks.extend(str(v) for v in row.values())
    return "\n".join(chunks)


async def test_created_key_works_and_only_its_hash_is_stored():
    rig = SecureRig()
    created = await rig.create_key(name="ci")
    plain = created["key"]
    assert plain.startswith("fg-") and created["prefix"] == plain[:7] and created["id"].startswith("key_")
    status, body, _ = await rig.call(chat_request(plain))
    assert status == 200, body
    assert plain not in all_stored_text(rig)
    status, listing, _ = await rig.call(rig.admin("GET", "/admin/keys"))
    assert status == 200
    [entry] = listing["data"]
    assert entry["id"] == created["id"] and "key" not in entry and "digest" not in entry
    assert plain not in json.dumps(listing)


async def test_revocation_takes_effect_at_once():
    rig = SecureRig()
    created = await rig.create_key()
    assert (await rig.call(chat_request(created["key"])))[0] == 200
    status, body, _ = await rig.call(rig.admin("DELETE", f"/admin/keys/{created['id']}"))
    assert status == 200 and body["revoked"] is True and body["revoked_at"] is not None
    status, body, _ = await rig.call(chat_request(created["key"]))
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert (await rig.call(rig.admin("DELETE", "/admin/keys/key_nope")))[0] == 404
    # The configured key is not affected.
    assert (await rig.call(chat_request(CONFIG_KEY)))[0] == 200


async def test_allowed_models_are_enforced_with_a_403():
    rig = SecureRig()
    key = (await rig.create_key(allowed_models=["mock-1"]))["key"]
    assert (await rig.call(chat_request(key, "mock-1")))[0] == 200
    status, body, _ = await rig.call(chat_request(key, "mock-2"))
    assert status == 403
    assert body["error"] == {"message": "This API key may not use the model 'mock-2'.", "type": "permission_error",
                             "code": "model_not_allowed", "param": "model"}
    models = await rig.call(Request("GET", "/v1/models", Headers({"authorization": f"Bearer {key}"})))
    assert [m["id"] for m in models[1]["data"]] == ["mock-1"]


async def test_glob_models_allowed_routes_and_expiry():
    rig = SecureRig()
    globbed = (await rig.create_key(allowed_models=["mock-*"]))["key"]
    assert (await rig.call(chat_request(globbed, "mock-2")))[0] == 200
    assert (await rig.call(chat_request(globbed, "a")))[0] == 403
    models_only = (await rig.create_key(allowed_routes=["/v1/models"]))["key"]
    status, body, _ = await rig.call(chat_request(models_only))
    assert status == 403 and body["error"]["code"] == "route_not_allowed"
    assert (await rig.call(Request("GET", "/v1/models", Headers({"authorization": f"Bearer {models_only}"}))))[0] == 200
    short = (await rig.create_key(expires_in_seconds=60, rate_limit_policy="gold", budget_usd=5))
    assert short["policy"]["rate_limit_policy"] == "gold" and short["policy"]["budget_usd"] == 5
    assert (await rig.call(chat_request(short["key"])))[0] == 200
    rig.clock.advance(61)
    status, body, _ = await rig.call(chat_request(short["key"]))
    assert status == 401 and "expired" in body["error"]["message"]


async def test_key_lookups_are_cached_but_a_revocation_elsewhere_is_seen_after_the_ttl():
    """The edge bound: another isolate's revocation is seen within KEY_CACHE_SECONDS."""
    rig = SecureRig({"KEY_CACHE_SECONDS": "30"})
    created = await rig.create_key()
    other_isolate = rig.make_gateway()
    assert (await other_isolate.handle(chat_request(created["key"]))).status == 200
    await rig.call(rig.admin("DELETE", f"/admin/keys/{created['id']}"))
    assert (await other_isolate.handle(chat_request(created["key"]))).status == 200  # still cached
    rig.clock.advance(31)
    assert (await other_isolate.handle(chat_request(created["key"]))).status == 401


@pytest.mark.parametrize(
    ("vars", "key", "status", "code"),
    [
        ({"FLAREGATE_ADMIN_KEY": ""}, ADMIN_KEY, 403, "admin_disabled"),
        ({}, None, 401, "invalid_admin_key"),
        ({}, "wrong-admin-key", 401, "invalid_admin_key"),
        ({}, CONFIG_KEY, 401, "invalid_admin_key"),  # a gateway key is not the admin key
    ],
)
async def test_admin_api_needs_the_admin_key(vars, key, status, code):
    rig = SecureRig({"SIGNED_ROUTES": "", **vars})
    got, body, _ = await rig.call(rig.admin("GET", "/admin/keys", key=key, sign=False))
    assert (got, body["error"]["code"]) == (status, code)
    assert ADMIN_KEY not in json.dumps(body)


async def test_admin_key_also_accepted_as_x_admin_key_and_require_admin_is_reusable():
    settings = settings_from_vars({"FLAREGATE_ADMIN_KEY": ADMIN_KEY})
    require_admin(Request("POST", "/admin/x", Headers({"x-admin-key": ADMIN_KEY})), settings)
    with pytest.raises(GatewayError) as exc:
        require_admin(Request("POST", "/admin/x", Headers({"x-admin-key": ADMIN_KEY + "x"})), settings)
    assert exc.value.status == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{nope", "invalid_json"),
        (b"[]", "invalid_json"),
        (json.dumps({"allowed_models": "mock-1"}).encode(), "invalid_value"),
        (json.dumps({"unknown": 1}).encode(), "invalid_value"),
        (json.dumps({"budget_usd": -1}).encode(), "invalid_value"),
        (json.dumps({"expires_in_seconds": 0}).encode(), "invalid_value"),
    ],
)
async def test_bad_admin_bodies_get_400(body, code):
    rig = SecureRig()
    status, answer, _ = await rig.call(rig.admin("POST", "/admin/keys", body))
    assert (status, answer["error"]["code"]) == (400, code)


async def test_admin_wrong_method_and_unknown_paths():
    rig = SecureRig()
    status, body, headers = await rig.call(rig.admin("PUT", "/admin/keys"))
    assert status == 405 and headers["allow"] == "GET, POST"
    assert (await rig.call(rig.admin("GET", "/admin/nothing")))[0] == 404
