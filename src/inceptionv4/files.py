"""What kind of file a path is: the one check every reader and writer of user paths shares, so
that a FIFO, a device or a socket is named and refused instead of read, blocked on or replaced."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def file_kind(mode: int) -> str:
    """Words for a file of ``mode`` (an ``os.stat`` result's ``st_mode``): "a FIFO", "a folder", ..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "a special file"


def special_kind(path: str | os.PathLike) -> str | None:
    """None if ``path`` is a regular file (a link to one included) or does not exist; else what
    it is, in words. Asking does not open it, so a FIFO cannot block the caller."""
    try:
        mode = os.stat(Path(path)).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None if stat.S_ISREG(mode) else file_kind(mode)
