"""The local data dir is the owner's alone, whatever the umask: the directory 0700, the
SQLite file and its -wal/-shm, and the admin key file 0600 (os.stat after each entry
point that creates them: the server's host, `flaregate keys`, the admin key at first start)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flaregate.config import settings_from_vars
from flaregate.hosts.local.app import LocalHost
from flaregate.hosts.local.cli import ADMIN_KEY_FILE, _local_admin_key
from flaregate.hosts.local.keys import keys_command
from flaregate.hosts.local.storage import SqliteStorage


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    """umask 0: without the fix every file would be 0666 and every directory 0777."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_the_hosts_data_dir_and_sqlite_files_are_private(tmp_path, open_umask):
    data = tmp_path / "nested" / ".flaregate"
    host = LocalHost(settings_from_vars({"FLAREGATE_API_KEYS": "gw-key-0123456789"}), data, [])
    try:
        host.storage.exec("CREATE TABLE IF NOT EXISTS probe (x TEXT)")
        host.storage.exec("INSERT INTO probe VALUES ('x')")
        db = data / "flaregate.sqlite3"
        sides = [Path(str(db) + s) for s in ("-wal", "-shm")]
        assert all(p.exists() for p in sides)  # WAL mode: both exist while the database is open
        assert mode(data) == 0o700
        assert {p.name: mode(p) for p in (db, *sides)} == {p.name: 0o600 for p in (db, *sides)}
    finally:
        host.storage.close()


def test_the_admin_key_file_and_the_keys_command_make_private_files(tmp_path, open_umask, capsys):
    data = tmp_path / "fresh"
    key, source = _local_admin_key(None, data)
    assert source == "created" and mode(data) == 0o700 and mode(data / ADMIN_KEY_FILE) == 0o600
    other = tmp_path / "keys-only"
    assert keys_command(other, "create", name="ci") == 0
    assert mode(other) == 0o700 and mode(other / "flaregate.sqlite3") == 0o600


def test_files_left_wider_by_an_older_version_are_tightened(tmp_path, open_umask):
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    (data / ADMIN_KEY_FILE).write_text("fga-older-admin-key-0123456789\n")
    db = data / "flaregate.sqlite3"
    db.touch()
    for path in (data / ADMIN_KEY_FILE, db):
        path.chmod(0o644)
    assert _local_admin_key(None, data) == ("fga-older-admin-key-0123456789", "file")
    storage = SqliteStorage(db)
    try:
        storage.exec("CREATE TABLE t (x)")
        assert mode(data / ADMIN_KEY_FILE) == 0o600 and mode(db) == 0o600
        assert mode(Path(str(db) + "-wal")) == 0o600
    finally:
        storage.close()
    assert mode(data) == 0o755  # SqliteStorage alone leaves the directory be...
    host = LocalHost(settings_from_vars({"FLAREGATE_API_KEYS": "gw-key-0123456789"}), data, [])
    host.storage.close()
    assert mode(data) == 0o700  # ...the server's host tightens an existing one too
