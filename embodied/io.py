"""Atomic file writes: a temp file in the same folder, flushed to disk, then renamed over the
target, so readers see the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on success it replaces ``path``.

    On an exception the temp file is removed and ``path`` is left as it was.

    Args:
        path: the file to write (its folder is created).
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``json.dumps(data, indent=2)`` to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_figure(figure: Any, path: str | Path) -> Path:
    """Save a matplotlib ``figure`` as PNG at ``path`` atomically (folder created) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_write(path, "wb") as f:
            figure.savefig(f, format="png")
    finally:
        plt.close(figure)
    return path
