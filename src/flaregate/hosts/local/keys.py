"""The local server's own gateway key, for when ``FLAREGATE_API_KEYS`` is not set.

At first start one key is created in the security store (only its digest is kept) and
printed once. Keys from the plain-text key file of earlier versions are moved into the
store, hashed, and the file is deleted.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ...security.access import (
    VISIBLE_PREFIX_CHARS,
    KeyPolicy,
    digest_hex,
    new_key,
    stored_key_shaped,
)
from ...security.store import SecurityStore
from ...security.teams import TEAM_ID, Team, TeamPolicy, widening_field

LEGACY_KEY_FILE = "gateway-keys.txt"


def import_legacy_keys(store: SecurityStore, data_dir: Path) -> int:
    path = data_dir / LEGACY_KEY_FILE
    if not path.exists():
        return 0
    imported, kept_back = 0, False
    for line in path.read_text().splitlines():
        key = line.strip()
        if not key:
            continue
        if not stored_key_shaped(key):  # the store is asked only for keys of that shape
            print(f"flaregate: {LEGACY_KEY_FILE}: a key of another shape than 'fg-' and 43 characters "
                  f"({key[:VISIBLE_PREFIX_CHARS]}...) is not imported; keep it in FLAREGATE_API_KEYS instead",
                  file=sys.stderr)
            kept_back = True  # the file stays, with that key in it
            continue
        digest = digest_hex(key)
        if store.find_key(digest) is None:
            store.create_key("key_" + digest[:16], digest, key[:VISIBLE_PREFIX_CHARS], "imported from key file",
                             KeyPolicy().model_dump(), None)
            imported += 1
    if not kept_back:
        with contextlib.suppress(OSError):
            path.unlink()
    return imported


def ensure_local_key(store: SecurityStore, data_dir: Path) -> str | None:
    """Create a key when the store has no usable one; return it in plain (shown once)."""
    import_legacy_keys(store, data_dir)
    if store.count_active_keys():
        return None
    plain, key_id, digest, prefix = new_key()
    store.create_key(key_id, digest, prefix, "local default", KeyPolicy().model_dump(), None)
    return plain


def ensure_first_key(store: SecurityStore, data_dir: Path, redis_url: str | None) -> str | None:
    """The server's first gateway key, in whichever store its replicas share (see
    :func:`ensure_local_key`); None when one exists, or when Redis cannot be reached (the
    server then starts without making one)."""
    if redis_url is None:
        return ensure_local_key(store, data_dir)
    import asyncio
    import sys

    from ...clock import SystemClock
    from .redis_backend import ensure_shared_key

    try:
        return asyncio.run(ensure_shared_key(redis_url, SystemClock()))
    except Exception as exc:
        print(f"flaregate: could not check Redis for a gateway key ({type(exc).__name__}); none was made",
              file=sys.stderr)
        return None


def move_to_redis(store: SecurityStore, redis_url: str) -> None:
    """Keys and webhooks of this replica's SQLite store go into the replicas' Redis (once:
    they are dropped from the file); a Redis that cannot be reached leaves them for the next start."""
    import asyncio
    import sys

    from ...clock import SystemClock
    from .redis_backend import move_local_records

    try:
        keys, hooks = asyncio.run(move_local_records(redis_url, SystemClock(), store))
    except Exception as exc:
        print(f"flaregate: could not move this replica's stored keys into Redis ({type(exc).__name__});"
              " trying again at the next start", file=sys.stderr)
        return
    if keys or hooks:
        print(f"Moved {keys} gateway keys and {hooks} webhooks from this replica's SQLite store into Redis",
              flush=True)


def keys_command(data_dir: Path, action: str, name: str = "", models: str = "", key_id: str = "",
                 redis_url: str | None = None, team_id: str = "") -> int:
    """``flaregate keys``: manage the key store directly (also while the server runs): the
    local SQLite file, or with ``FLAREGATE_REDIS_URL`` the replicas' shared store in Redis.
    A running server over SQLite notices within KEY_CACHE_SECONDS; over Redis at once."""
    import json

    with _store_calls(data_dir, redis_url) as call:
        return _keys_action(call, action, name, models, key_id, json.dumps, team_id)


def teams_command(data_dir: Path, action: str, team_id: str, spec: dict[str, Any],
                  redis_url: str | None = None) -> int:
    """``flaregate teams``: create, list, show, update or delete teams in the store the
    keys live in (checked as the admin API checks them: a bad field is a message and exit 2)."""
    import json

    if team_id and not TEAM_ID.fullmatch(team_id):
        print(f"flaregate teams {action}: a team id is 1-64 letters, digits or _", file=sys.stderr)
        return 2
    with _store_calls(data_dir, redis_url) as call:
        if action == "list":
            for record in call("teams.list"):
                print(json.dumps(record))
            return 0
        if not team_id:
            print(f"flaregate teams {action}: name the team id", file=sys.stderr)
            return 2
        old = call("teams.get", id=team_id)
        if action == "show":
            if old is None:
                print(f"no team {team_id}", file=sys.stderr)
                return 1
            keys = [k["id"] for k in call("keys.list") if k["policy"].get("team_id") == team_id]
            print(json.dumps({**old, "keys": keys}))
            return 0
        if action == "delete":
            members = [k["id"] for k in call("keys.list")
                       if k["policy"].get("team_id") == team_id and k["revoked_at"] is None]
            if members:
                print(f"team {team_id} still has active keys ({', '.join(members)}): move or revoke them first",
                      file=sys.stderr)
                return 1
            if not call("teams.delete", id=team_id):
                print(f"no team {team_id}", file=sys.stderr)
                return 1
            print(f"deleted {team_id}")
            return 0
        name = spec.pop("name", None)
        base = {} if action == "create" or old is None else {k: v for k, v in old.items() if k in TeamPolicy.model_fields}
        try:
            policy = TeamPolicy.model_validate({**base, **spec}).model_dump()
        except ValidationError as exc:
            print(f"flaregate teams {action}: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", file=sys.stderr)
            return 2
        if action == "create":
            record = call("teams.create", id=team_id, name=name or "", policy=policy)
            if record is None:
                print(f"a team {team_id} exists", file=sys.stderr)
                return 1
        else:
            if old is None:
                print(f"no team {team_id}", file=sys.stderr)
                return 1
            record = call("teams.update", id=team_id, name=old["name"] if name is None else name, policy=policy)
        print(json.dumps(record))
        return 0


@contextlib.contextmanager
def _store_calls(data_dir: Path, redis_url: str | None) -> Any:
    """``call(op, **args)`` on the local SQLite store, or on Redis when it is configured."""
    from ...clock import SystemClock
    from .files import private_dir
    from .storage import SqliteStorage

    if redis_url:
        import asyncio

        from .redis_backend import run_security_op

        def call(op: str, **args: object) -> object:
            return asyncio.run(run_security_op(redis_url, SystemClock(), op, dict(args)))
        yield call
        return
    private_dir(data_dir)
    storage = SqliteStorage(data_dir / "flaregate.sqlite3")
    try:
        store = SecurityStore(storage, SystemClock())
        yield lambda op, **args: store.call(op, args)
    finally:
        storage.close()


def _keys_action(call: Callable[..., Any], action: str, name: str, models: str, key_id: str,
                 dumps: Callable[[Any], str], team_id: str = "") -> int:
    if action == "create":
        plain, new_id, digest, prefix = new_key()
        allowed = [m.strip() for m in models.split(",") if m.strip()] or None
        policy = KeyPolicy(allowed_models=allowed, team_id=team_id or None)
        if team_id:
            team = call("teams.get", id=team_id)
            if team is None:
                print(f"no team {team_id}", file=sys.stderr)
                return 2
            widened = widening_field(Team.model_validate(team), policy)
            if widened is not None:
                print(f"the key would widen its team: {widened[1]}", file=sys.stderr)
                return 2
        call("keys.create", id=new_id, digest=digest, prefix=prefix, name=name,
             policy=policy.model_dump(), expires_at=None)
        print(f"{new_id} {plain}")
        print("Keep the key now: only its hash is stored.")
    elif action == "list":
        for record in call("keys.list"):
            print(dumps(record))
    elif action == "revoke":
        if call("keys.revoke", id=key_id) is None:
            print(f"no key {key_id}")
            return 1
        print(f"revoked {key_id}")
    return 0
