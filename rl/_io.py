"""Atomic file writes: a reader sees the old file or the new one, never a part.

One mechanism for every file the project writes that another process (a resumed run, a
study's collector, a reader of reports) may read while it is being replaced: the bytes go
to a temporary file in the same directory (same file system), are flushed and fsynced,
then ``os.replace`` renames it over the target (atomic on POSIX and Windows). A writer
killed at any instant leaves the old file intact and, at worst, a hidden ``.NAME.*.tmp``
file, which :func:`remove_stale_temps` clears.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_save", "remove_stale_temps"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a binary temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; these are ordinary files
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically.

    Non-finite floats are written as NaN/Infinity (Python's json reads them back); callers
    that need strict JSON pass the object through :func:`rl._json.jsonable` first.
    """
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def atomic_save(obj: Any, path: Path | str) -> None:
    """``torch.save(obj, path)`` atomically (checkpoints, cached weights)."""
    import torch  # only the writers of checkpoints pay for the import

    atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(folder: Path | str) -> int:
    """Delete the temp files a killed writer left in ``folder``; returns how many."""
    n = 0
    for stale in Path(folder).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
        n += 1
    return n
