"""The local data dir and its files are the owner's alone, whatever the umask: the
directory 0700, the SQLite file (and so its -wal, -shm and -journal, which SQLite creates
with the database file's permissions) and the key files 0600, created so from the start
and tightened when found wider."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) with the directory 0700; one that exists already is
    tightened to 0700 too when this user owns it (it holds the keys: nobody else needs to
    list it). Its files are 0600 regardless."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        if not path.is_dir() or path.stat().st_uid != os.getuid():
            return path
    with contextlib.suppress(OSError):  # mkdir's mode passes through the umask
        path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is 0600 before anything secret is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def tighten_sqlite(path: Path) -> None:
    """0600 on a database file's side files that exist now (the -wal and -shm of a database
    first opened by an older version, under the umask)."""
    for suffix in SQLITE_SIDE_FILES:
        side = Path(str(path) + suffix)
        with contextlib.suppress(FileNotFoundError):
            side.chmod(FILE_MODE)
