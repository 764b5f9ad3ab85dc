"""The local server's key store helpers: first-start key, legacy file import, the CLI."""

import sqlite3

from flaregate.clock import SystemClock
from flaregate.hosts.local.cli import main
from flaregate.hosts.local.keys import ensure_local_key
from flaregate.hosts.local.storage import SqliteStorage
from flaregate.security.access import digest_hex
from flaregate.security.store import SecurityStore


def test_first_start_creates_one_key_and_later_starts_none(tmp_path):
    storage = SqliteStorage(tmp_path / "flaregate.sqlite3")
    store = SecurityStore(storage, SystemClock())
    key = ensure_local_key(store, tmp_path)
    assert key and key.startswith("fg-")
    assert ensure_local_key(store, tmp_path) is None
    assert store.find_key(digest_hex(key))["revoked_at"] is None
    storage.close()
    assert key.encode() not in (tmp_path / "flaregate.sqlite3").read_bytes()


def test_keys_cli_create_list_revoke(tmp_path, capsys):
    assert main(["keys", "create", "--data-dir", str(tmp_path), "--name", "ci", "--models", "mock-1,gpt-*"]) == 0
    key_id, plain = capsys.readouterr().out.split("\n")[0].split()
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and plain not in listing and '"gpt-*"' in listing
    assert main(["keys", "revoke", key_id, "--data-dir", str(tmp_path)]) == 0
    assert main(["keys", "revoke", "key_missing", "--data-dir", str(tmp_path)]) == 1
    db = sqlite3.connect(tmp_path / "flaregate.sqlite3")
    assert db.execute("SELECT revoked_at IS NOT NULL FROM gateway_keys WHERE id = ?", (key_id,)).fetchone() == (1,)
    db.close()


def test_local_admin_key_is_created_once_in_a_0600_file_and_a_configured_one_wins(tmp_path):
    from flaregate.hosts.local.cli import ADMIN_KEY_FILE, _local_admin_key

    key, source = _local_admin_key(None, tmp_path)
    assert source == "created" and key.startswith("fga-")
    path = tmp_path / ADMIN_KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600  # plain on purpose (the HMAC signing secret), owner only
    assert _local_admin_key(None, tmp_path) == (key, "file")
    assert _local_admin_key("configured-admin-key", tmp_path) == ("configured-admin-key", None)
