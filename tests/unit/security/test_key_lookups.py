"""Pre-auth load on the key store: a bogus bearer token must not cost a store (Durable
Object) lookup unless it is shaped like a stored key, and no amount of junk may evict a
good key's cached entry (misses live in their own, smaller LRU)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from flaregate.errors import GatewayError
from flaregate.http import Headers, Request
from flaregate.security.access import (
    AccessControl,
    KeyPolicy,
    digest_hex,
    new_key,
    stored_key_shaped,
)
from flaregate.security.keys import KeyRing
from tests.support.fakes import FakeClock

CONFIG_KEY = "any shape at all: configured keys are checked in memory"


class CountingStore:
    """The security-store port with one key in it, counting every call."""

    def __init__(self, *plains: str) -> None:
        self.records = {digest_hex(p): {"id": "key_" + digest_hex(p)[:16], "digest": digest_hex(p), "name": "n",
                                        "policy": KeyPolicy().model_dump(), "expires_at": None, "revoked_at": None}
                        for p in plains}
        self.finds = 0

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        assert op == "keys.find"
        self.finds += 1
        return self.records.get(args["digest"])


def bearer(token: str) -> Request:
    return Request("GET", "/v1/models", Headers({"authorization": f"Bearer {token}"}))


def junk_key() -> str:
    return new_key()[0]  # the shape of a real key, in no store


async def refused(access: AccessControl, token: str) -> None:
    with pytest.raises(GatewayError) as caught:
        await access.authenticate(bearer(token))
    assert caught.value.status == 401


@pytest.mark.parametrize("token", [
    "x", "sk-proj-" + "a" * 40, "fg-short", "fg-" + "a" * 42, "fg-" + "a" * 44, "fg-" + "+" * 43,
    "fga-" + "a" * 43, "FG-" + "a" * 43, "fg-" + "a" * 42 + "=", "\u00e9" * 46, "fg-" + "a" * 21 + " " + "a" * 21,
])
async def test_tokens_no_stored_key_could_have_cost_no_lookup(token):
    store = CountingStore()
    access = AccessControl(KeyRing([CONFIG_KEY]), store, FakeClock(), cache_seconds=30)
    await refused(access, token)
    assert store.finds == 0
    assert (await access.authenticate(bearer(CONFIG_KEY))).source == "config" and store.finds == 0


def test_the_shape_is_the_one_new_key_makes():
    assert all(stored_key_shaped(new_key()[0]) for _ in range(200))


async def test_twenty_thousand_well_shaped_junk_tokens_do_not_evict_a_good_key():
    good = new_key()[0]
    store = CountingStore(good)
    clock = FakeClock()
    access = AccessControl(KeyRing([CONFIG_KEY]), store, clock, cache_seconds=30)
    assert (await access.authenticate(bearer(good))).source == "store" and store.finds == 1
    junk = [junk_key() for _ in range(20_000)]
    for token in junk:
        await refused(access, token)
    assert store.finds == 1 + 20_000  # each well-shaped token is asked once...
    assert len(access._missing) <= 1_000  # ...and remembered in a bounded LRU of its own
    assert (await access.authenticate(bearer(good))).source == "store"
    assert store.finds == 1 + 20_000  # the good key's entry survived: no new lookup
    await refused(access, junk[-1])  # a recent miss is remembered too
    assert store.finds == 1 + 20_000
    clock.advance(31)  # KEY_CACHE_SECONDS still bounds how long anything is believed
    await access.authenticate(bearer(good))
    assert store.finds == 2 + 20_000


async def test_the_found_cache_is_bounded_and_forget_clears_both():
    keys = [new_key()[0] for _ in range(3)]
    store = CountingStore(*keys)
    access = AccessControl(KeyRing([]), store, FakeClock(), cache_seconds=30)
    access._found.limit = 2
    for key in keys:
        await access.authenticate(bearer(key))
    assert len(access._found) == 2 and store.finds == 3
    await access.authenticate(bearer(keys[0]))  # the least recently used went first
    assert store.finds == 4
    await refused(access, junk_key())
    access.forget()  # the admin API's revocation or creation: nothing cached survives
    assert len(access._found) == len(access._missing) == 0


async def test_a_key_created_after_a_miss_works_once_the_cache_is_forgotten():
    plain = new_key()[0]
    store = CountingStore()
    access = AccessControl(KeyRing([]), store, FakeClock(), cache_seconds=30)
    await refused(access, plain)
    store.records.update(CountingStore(plain).records)
    await refused(access, plain)  # the cached miss (KEY_CACHE_SECONDS on other isolates)
    access.forget()
    assert (await access.authenticate(bearer(plain))).source == "store"


def test_random_tokens_are_not_stored_key_shaped():
    assert not any(stored_key_shaped("fg-" + secrets.token_hex(22)[:43] + "!") for _ in range(50))


def test_a_legacy_key_of_another_shape_is_not_imported_and_its_file_stays(tmp_path, capsys):
    from flaregate.clock import SystemClock
    from flaregate.hosts.local.keys import LEGACY_KEY_FILE, import_legacy_keys
    from flaregate.hosts.local.storage import SqliteStorage
    from flaregate.security.store import SecurityStore

    good = new_key()[0]
    (tmp_path / LEGACY_KEY_FILE).write_text(f"{good}\nhand-written-key\n")
    storage = SqliteStorage(tmp_path / "flaregate.sqlite3")
    try:
        assert import_legacy_keys(SecurityStore(storage, SystemClock()), tmp_path) == 1
    finally:
        storage.close()
    assert (tmp_path / LEGACY_KEY_FILE).exists() and "FLAREGATE_API_KEYS" in capsys.readouterr().err
