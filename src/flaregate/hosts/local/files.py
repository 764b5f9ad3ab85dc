"""The local data dir and its files are the owner's alone, whatever the umask: the
directory 0700 when this process creates it, the SQLite file (and so its -wal, -shm and
-journal, which SQLite creates with the database file's permissions) and the key files
0600, created so from the start and tightened when found wider."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("flaregate.local")

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) with the directory 0700. A directory that already
    exists keeps its mode (it may be shared on purpose, or ``.``); one that others can
    enter gets a warning, the files in it are 0600 regardless."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("data dir %s is mode %04o: others can list it (its files are 0600); "
                        "chmod 700 it to keep it private", path, mode)
        return path
    path.chmod(DIR_MODE)  # mkdir's mode passes through the umask
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
