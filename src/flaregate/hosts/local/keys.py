"""The local server's own gateway key, for when ``FLAREGATE_API_KEYS`` is not set.

At first start one key is created in the security store (only its digest is kept) and
printed once. Keys from the plain-text key file of earlier versions are moved into the
store, hashed, and the file is deleted.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ...security.access import VISIBLE_PREFIX_CHARS, KeyPolicy, digest_hex, new_key
from ...security.store import SecurityStore

LEGACY_KEY_FILE = "gateway-keys.txt"


def import_legacy_keys(store: SecurityStore, data_dir: Path) -> int:
    path = data_dir / LEGACY_KEY_FILE
    if not path.exists():
        return 0
    imported = 0
    for line in path.read_text().splitlines():
        key = line.strip()
        if not key:
            continue
        digest = digest_hex(key)
        if store.find_key(digest) is None:
            store.create_key("key_" + digest[:16], digest, key[:VISIBLE_PREFIX_CHARS], "imported from key file",
                             KeyPolicy().model_dump(), None)
            imported += 1
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


def keys_command(data_dir: Path, action: str, name: str = "", models: str = "", key_id: str = "") -> int:
    """``flaregate keys``: manage the local key store directly (also while the server runs;
    a running server notices within KEY_CACHE_SECONDS)."""
    import json

    from ...clock import SystemClock
    from .storage import SqliteStorage

    data_dir.mkdir(parents=True, exist_ok=True)
    storage = SqliteStorage(data_dir / "flaregate.sqlite3")
    try:
        store = SecurityStore(storage, SystemClock())
        if action == "create":
            plain, new_id, digest, prefix = new_key()
            allowed = [m.strip() for m in models.split(",") if m.strip()] or None
            store.create_key(new_id, digest, prefix, name, KeyPolicy(allowed_models=allowed).model_dump(), None)
            print(f"{new_id} {plain}")
            print("Keep the key now: only its hash is stored.")
        elif action == "list":
            for record in store.list_keys():
                print(json.dumps(record))
        elif action == "revoke":
            if store.revoke_key(key_id) is None:
                print(f"no key {key_id}")
                return 1
            print(f"revoked {key_id}")
        return 0
    finally:
        storage.close()
