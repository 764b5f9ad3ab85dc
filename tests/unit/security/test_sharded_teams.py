"""Teams, rotation, last use, scoped credentials and the audit log over SECURITY_SHARDS
objects: teams are placed by id and found again after the count changes, a rotated key's
new and old secrets are both found wherever their digests place them (and a revocation or a
policy change reaches every copy), and every operation a store offers is one the sharded
store routes."""

from __future__ import annotations

import pytest

from flaregate.security.store import OPERATIONS
from flaregate.sharding import shard_for

from .test_sharded_store import T0, create, make


async def test_teams_spread_by_id_and_survive_a_change_of_count():
    three, objects = make(3)
    for i in range(30):
        made = await three.call("teams.create", {"id": f"team_{i}", "name": f"t{i}", "policy": {"budget_usd_day": i}})
        assert made is not None and made["id"] == f"team_{i}"
    held = [len(shard.store.list_teams()) for shard in objects]
    assert sum(held) == 30 and min(held) > 3  # spread, each on one shard only
    for i in range(30):
        home = objects[shard_for(f"team_{i}", 3)].store
        assert home.get_team(f"team_{i}") is not None
    assert await three.call("teams.create", {"id": "team_4", "name": "again", "policy": {}}) is None
    five, objects = make(5, objects, previous=3)
    for i in range(30):
        found = await five.call("teams.get", {"id": f"team_{i}"})
        assert found is not None and found["budget_usd_day"] == i
    moved = next(f"team_{i}" for i in range(30) if shard_for(f"team_{i}", 5) != shard_for(f"team_{i}", 3))
    assert await five.call("teams.create", {"id": moved, "name": "twin", "policy": {}}) is None  # no second copy
    updated = await five.call("teams.update", {"id": moved, "name": "renamed", "policy": {"budget_usd_day": 99}})
    assert updated["name"] == "renamed" and (await five.call("teams.get", {"id": moved}))["budget_usd_day"] == 99
    assert sorted(t["id"] for t in await five.call("teams.list", {})) == sorted(f"team_{i}" for i in range(30))
    assert await five.call("teams.delete", {"id": moved}) is True
    assert await five.call("teams.get", {"id": moved}) is None
    assert await five.call("teams.delete", {"id": moved}) is False


async def test_a_rotated_key_is_found_by_both_secrets_and_every_change_reaches_its_copies():
    store, objects = make(4)
    made = await create(store, 1)
    old_home = shard_for("digest-1", 4)
    new_digest = next(f"new-{n}" for n in range(100) if shard_for(f"new-{n}", 4) != old_home)
    rotated = await store.call("keys.rotate", {"id": made["id"], "digest": new_digest, "prefix": "fg-new",
                                               "valid_until": T0 + 3600})
    assert rotated is not None and rotated["prefix"] == "fg-new"
    current = await store.call("keys.find", {"digest": new_digest})
    previous = await store.call("keys.find", {"digest": "digest-1"})
    assert current["id"] == previous["id"] == made["id"]
    assert "secret_expires_at" not in current and previous["secret_expires_at"] == T0 + 3600
    assert [k["id"] for k in await store.call("keys.list", {})] == [made["id"]]  # two copies, one key
    await store.call("keys.touch", {"used": {made["id"]: T0 + 60}, "digest": new_digest})
    assert (await store.call("keys.list", {}))[0]["last_used_at"] == T0 + 60
    moved = await store.call("keys.update", {"id": made["id"], "policy": {"team_id": "other"}})
    assert moved["policy"] == {"team_id": "other"}
    assert (await store.call("keys.find", {"digest": "digest-1"}))["policy"] == {"team_id": "other"}
    assert (await store.call("keys.find", {"digest": new_digest}))["policy"] == {"team_id": "other"}
    third = next(f"third-{n}" for n in range(100) if shard_for(f"third-{n}", 4) not in (old_home,))
    await store.call("keys.rotate", {"id": made["id"], "digest": third, "prefix": "fg-3rd", "valid_until": T0 + 60})
    assert await store.call("keys.find", {"digest": "digest-1"}) is None  # a second rotation ends the first's grace
    assert (await store.call("keys.find", {"digest": new_digest}))["secret_expires_at"] == T0 + 60
    assert (await store.call("keys.find", {"digest": third}))["prefix"] == "fg-3rd"
    revoked = await store.call("keys.revoke", {"id": made["id"]})
    assert revoked["revoked_at"] is not None
    for digest in (new_digest, third):
        assert (await store.call("keys.find", {"digest": digest}))["revoked_at"] is not None
    assert await store.call("keys.rotate", {"id": "nope", "digest": "x", "prefix": "p", "valid_until": T0}) is None


async def test_credentials_audit_and_pins_stay_on_the_first_shard():
    store, objects = make(3)
    await store.call("credentials.create", {"id": "cred_1", "digest": "d1", "name": "ops", "role": "read_only",
                                            "team_id": None})
    assert (await store.call("credentials.find", {"digest": "d1"}))["id"] == "cred_1"
    await store.call("audit.log", {"credential": "cred_1", "method": "POST", "path": "/admin/keys", "status": 201,
                                   "keep_seconds": 3600})
    assert [r["path"] for r in await store.call("audit.list", {"limit": 10})] == ["/admin/keys"]
    assert objects[0].store.list_credentials() and not objects[1].store.list_credentials()


@pytest.mark.parametrize("op", sorted(OPERATIONS))
async def test_every_store_operation_is_routed(op):
    store, _ = make(3)
    args = {"keys.find": {"digest": "d"}, "keys.create": {"id": "k", "digest": "d", "prefix": "p", "name": "",
                                                           "policy": {}, "expires_at": None},
            "keys.revoke": {"id": "k"}, "keys.update": {"id": "k", "policy": {}},
            "keys.rotate": {"id": "k", "digest": "e", "prefix": "p", "valid_until": T0},
            "keys.touch": {"used": {"k": T0}, "digest": "d"},
            "keys.adopt": {"record": {"id": "k", "digest": "d", "prefix": "p", "name": "", "policy": {},
                                      "created_at": T0}},
            "nonces.use": {"nonce": "n", "expires_at": T0 + 60},
            "teams.create": {"id": "t", "name": "", "policy": {}}, "teams.get": {"id": "t"},
            "teams.update": {"id": "t", "name": "", "policy": {}}, "teams.delete": {"id": "t"},
            "webhooks.create": {"id": "w", "url": "https://example.com", "events": ["*"], "secret": "s"},
            "webhooks.delete": {"id": "w"}, "webhooks.for_event": {"event": "x"},
            "deliveries.log": {"webhook_id": "w", "delivery_id": "d", "event": "x", "attempt": 1, "status": 200,
                               "error": None, "delivered": True},
            "deliveries.list": {"webhook_id": "w"},
            "credentials.create": {"id": "c", "digest": "d", "name": "", "role": "read_only", "team_id": None},
            "credentials.find": {"digest": "d"}, "credentials.revoke": {"id": "c"},
            "audit.log": {"credential": "c", "method": "POST", "path": "/", "status": 200, "keep_seconds": 60},
            "mcp_pins.observe": {"tools": {}}, "mcp_pins.approve": {"tool": "s.t", "digest": "h"}}
    try:
        await store.call(op, args.get(op, {}))
    except ValueError as error:
        assert "unknown security-store operation" not in str(error), op
    except TypeError:
        pass  # the arguments above are not this store method's: routed all the same
