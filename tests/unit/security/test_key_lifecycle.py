"""Key rotation with a grace period and a coarse last-used time, over the real SQL store
(and the Redis store, with a real redis-server when one is installed)."""

from __future__ import annotations

import asyncio

import pytest

from flaregate.security.access import new_key
from flaregate.security.store import SecurityStore
from tests.support.fakes import FakeClock, MemorySql
from tests.support.security import SecureRig, chat_request


async def chat_status(rig: SecureRig, key: str) -> tuple[int, str | None]:
    status, body, _ = await rig.call(chat_request(key))
    return status, (body or {}).get("error", {}).get("message")


async def test_rotation_gives_a_new_secret_and_the_old_one_works_until_its_grace_ends():
    rig = SecureRig()
    made = await rig.create_key(name="svc", budget_usd=5)
    status, rotated, _ = await rig.call(rig.admin("POST", f"/admin/keys/{made['id']}/rotate", {"grace_seconds": 600}))
    assert status == 200, rotated
    assert rotated["id"] == made["id"] and rotated["key"] != made["key"] and rotated["policy"]["budget_usd"] == 5
    assert rotated["previous_key_valid_until"] == pytest.approx(rig.clock.now() + 600)
    assert (await chat_status(rig, made["key"]))[0] == 200  # within the grace period
    assert (await chat_status(rig, rotated["key"]))[0] == 200
    rig.clock.advance(601)
    assert (await chat_status(rig, made["key"]))[0] == 401
    assert (await chat_status(rig, rotated["key"]))[0] == 200
    # A second rotation ends the first one's grace at once; revoking ends them all.
    status, again, _ = await rig.call(rig.admin("POST", f"/admin/keys/{made['id']}/rotate", {"grace_seconds": 600}))
    assert status == 200
    status, third, _ = await rig.call(rig.admin("POST", f"/admin/keys/{made['id']}/rotate", {"grace_seconds": 600}))
    assert (await chat_status(rig, again["key"]))[0] == 200 and (await chat_status(rig, third["key"]))[0] == 200
    assert (await chat_status(rig, rotated["key"]))[0] == 401
    assert (await rig.call(rig.admin("DELETE", f"/admin/keys/{made['id']}")))[0] == 200
    assert (await chat_status(rig, again["key"]))[0] == 401 and (await chat_status(rig, third["key"]))[0] == 401
    # A revoked key is not rotated; bad grace periods are a 400.
    assert (await rig.call(rig.admin("POST", f"/admin/keys/{made['id']}/rotate", {})))[0] == 404
    other = await rig.create_key()
    for bad in ({"grace_seconds": -1}, {"grace_seconds": 10**9}, {"grace": 5}):
        status, body, _ = await rig.call(rig.admin("POST", f"/admin/keys/{other['id']}/rotate", bad))
        assert status == 400, body


async def test_grace_zero_refuses_the_old_secret_at_once():
    rig = SecureRig()
    made = await rig.create_key()
    status, rotated, _ = await rig.call(rig.admin("POST", f"/admin/keys/{made['id']}/rotate", {"grace_seconds": 0}))
    assert status == 200
    assert (await chat_status(rig, made["key"]))[0] == 401
    assert (await chat_status(rig, rotated["key"]))[0] == 200


async def test_last_used_is_written_once_a_minute_not_once_a_request():
    rig = SecureRig()
    made = await rig.create_key()
    writes = []
    real_touch = rig.store.touch_keys

    def counting(used, digest=None):
        writes.append(dict(used))
        real_touch(used, digest)
    rig.store._ops["keys.touch"] = counting
    for _ in range(20):
        assert (await chat_status(rig, made["key"]))[0] == 200
    await rig.tasks.drain()
    assert len(writes) == 1
    first = (await rig.call(rig.admin("GET", f"/admin/keys/{made['id']}")))[1]["last_used_at"]
    assert first is not None and first <= rig.clock.now() and first % 60 == 0
    rig.clock.advance(61)
    await chat_status(rig, made["key"])
    await rig.tasks.drain()
    assert len(writes) == 2
    later = (await rig.call(rig.admin("GET", f"/admin/keys/{made['id']}")))[1]["last_used_at"]
    assert later > first


def test_the_sql_store_keeps_the_later_last_use():
    store = SecurityStore(MemorySql(), FakeClock())
    plain, key_id, digest, prefix = new_key()
    store.create_key(key_id, digest, prefix, "", {}, None)
    store.touch_keys({key_id: 120.0})
    store.touch_keys({key_id: 60.0})
    assert store.list_keys()[0]["last_used_at"] == 120.0


def test_the_redis_store_rotates_keeps_the_last_use_credentials_and_the_audit_log(tmp_path):
    from flaregate.hosts.local.redis_backend import RedisSecurityClient, connect
    from tests.support.redis_server import RedisServer

    try:
        server = RedisServer(tmp_path)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    server.start()
    clock = FakeClock()

    async def scenario() -> None:
        redis = connect(server.url)
        try:
            store = RedisSecurityClient(redis, clock)
            _, key_id, digest, prefix = new_key()
            await store.create_key(key_id, digest, prefix, "svc", {"budget_usd": 2}, None)
            _, _, new_digest, new_prefix = new_key()
            rotated = await store.rotate_key(key_id, new_digest, new_prefix, clock.now() + 100)
            assert rotated is not None and rotated["id"] == key_id and rotated["prefix"] == new_prefix
            old = await store.find_key(digest)
            assert old is not None and old["id"] == key_id and old["secret_expires_at"] == clock.now() + 100
            assert old["policy"] == {"budget_usd": 2} and old["digest"] == digest
            assert (await store.find_key(new_digest))["id"] == key_id
            await store.revoke_key(key_id)
            assert (await store.find_key(digest))["revoked_at"] is not None  # the successor's revocation
            assert await store.rotate_key(key_id, "0" * 64, "fg-x", clock.now() + 100) is None
            await store.touch_keys({key_id: 120.0})
            await store.touch_keys({key_id: 60.0})
            assert (await store.list_keys())[0]["last_used_at"] == 120.0
            clock.advance(101)
            assert await store.find_key(digest) is None
            # Scoped credentials and the audit log, as the SQL store answers them.
            made = await store.create_credential("cred_1", "d" * 64, "lead", "team_admin", "red")
            assert made == {"id": "cred_1", "name": "lead", "role": "team_admin", "team_id": "red",
                            "created_at": clock.now(), "revoked_at": None}
            assert (await store.find_credential("d" * 64))["id"] == "cred_1"
            assert (await store.revoke_credential("cred_1"))["revoked_at"] == clock.now()
            assert await store.find_credential("e" * 64) is None
            await store.log_audit("admin", "POST", "/admin/teams", 201, 100)
            clock.advance(50)
            await store.log_audit("cred_1", "DELETE", "/admin/keys/x", 403, 100)
            clock.advance(60)
            await store.log_audit("admin", "PATCH", "/admin/teams/t", 200, 100)
            rows = await store.list_audit(10)
            assert [(r["credential"], r["status"]) for r in rows] == [("admin", 200), ("cred_1", 403)]
            assert [r["path"] for r in await store.list_audit(10, "cred_1")] == ["/admin/keys/x"]
        finally:
            await redis.aclose()
    try:
        asyncio.run(scenario())
    finally:
        server.stop()
