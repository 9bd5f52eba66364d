"""Files only the gateway's user may read, replaced atomically and durably.

The encryption key file and the SMTP relay's sealed queue files must both survive a crash
whole: either the old file or the new one, never half of one, and never readable by
another user for a moment. One writer does it for both: a temporary file created with
mode 0600 next to the target, fsynced, renamed over it, and the directory fsynced.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_private(path: Path, data: bytes) -> None:
    """Create or replace `path` with `data` (mode 0600); returns once it is durable.

    Blocking (file I/O and fsync): async callers run it in a thread."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a created, renamed or deleted entry durable (POSIX; a no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
